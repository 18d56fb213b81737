/**
 * The provisioner's view of several dispatchers (dispatcher/provisioner/fleet.ts), pure: real
 * cores (test/core-harness.ts), a follower's report passed through JSON as the `dispatchers`
 * table carries it, merged on the leader. The processes and the database are covered in
 * test/scale-out.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterFleet, reportFleet, type FleetReport, type RemoteReport } from '../dispatcher/provisioner/fleet.js';
import { Harness } from './core-harness.js';

/** The provisioner's instances: an EC2 instance (its executor names it) and a local one (its id). */
const INSTANCES = new Set(['i-0abc', 'local-7-1']);
const ours = (e: { info: { id: string; instanceId?: string } }) => INSTANCES.has(e.info.instanceId ?? '') || INSTANCES.has(e.info.id);
const viaDatabase = (r: FleetReport): FleetReport => JSON.parse(JSON.stringify(r)) as FleetReport;

test('a report names only the provisioner\'s executors, the free slots of the others, and the requests only typed instances could run', { timeout: 10_000 }, () => {
  const f = new Harness();
  f.client(1);
  f.submit(1, [
    ...Array.from({ length: 5 }, (_, i) => ({ id: `n${i}`, builtin: 'noop' as const })),
    { id: 'g0', builtin: 'noop', resources: { gpus: 1 } },
    { id: 'g1', builtin: 'noop', resources: { gpus: 1 } },
  ]);
  f.executor(10, { id: 'operator', slots: 2 });
  f.executor(11, { id: 'exec-a', instanceId: 'i-0abc', slots: 1 });
  f.core.schedule();
  const r = viaDatabase(reportFleet(f.core.view, INSTANCES, f.now));
  assert.deepEqual(r.executors.map((e) => [e.id, e.instanceId, e.running, e.connected]), [['exec-a', 'i-0abc', 1, true]]);
  assert.equal(r.queued, 4, '2 plain tasks and 2 GPU tasks wait');
  assert.equal(r.free, 0, "the operator's executor is full");
  assert.deepEqual(r.shapes.map((s) => [s.request.key, s.tasks]), [['gpus=1', 2]]);
  // An executor not ours that could run the GPU request: its tasks are plain queue depth again.
  f.executor(12, { id: 'gpu-box', slots: 1, resources: { cpus: 1, gpus: 1 } });
  assert.deepEqual(reportFleet(f.core.view, INSTANCES, f.now).shapes, []);
});

test('the leader sums every queue, sees its executors wherever they are (the newest report first), and drains them where they are', { timeout: 10_000 }, () => {
  const leader = new Harness();
  // exec-a registered with the leader first and then moved: its record here waits out its lease.
  leader.executor(20, { id: 'exec-a', instanceId: 'i-0abc', slots: 1 });
  leader.core.executorGone(20);
  leader.executor(21, { id: 'local-7-1', slots: 2 });
  leader.client(1);
  leader.submit(1, Array.from({ length: 3 }, (_, i) => ({ id: `l${i}`, builtin: 'noop' as const })));
  leader.core.schedule();
  const follower = new Harness();
  follower.client(1);
  follower.submit(1, Array.from({ length: 10 }, (_, i) => ({ id: `f${i}`, builtin: 'noop' as const })));
  follower.executor(10, { id: 'operator', slots: 4 });
  follower.executor(11, { id: 'exec-a', instanceId: 'i-0abc', slots: 1 });
  follower.core.schedule();
  const fresh = viaDatabase(reportFleet(follower.core.view, INSTANCES, follower.now));
  // A third dispatcher's older report still shows exec-a, idle: the newer one (busy) counts.
  const stale = viaDatabase({ ...fresh, queued: 0, free: 0, executors: fresh.executors.map((e) => ({ ...e, running: 0, idleMs: 5000 })), shapes: [] });
  const reports: RemoteReport[] = [{ dispatcher: 'old', ageMs: 3000, report: stale }, { dispatcher: 'follower', ageMs: 200, report: fresh }];
  const drained: string[] = [];
  const fleet = new ClusterFleet(leader.core, () => reports, (id) => drained.push(id), { now: () => leader.now });

  // Leader: 3 queued, 2 taken by its own executor; follower: 10 queued, 5 taken, 5 left over.
  assert.equal(fleet.demand(ours), 1 + 5);
  const seen = fleet.executors();
  const a = seen.filter((e) => e.info.id === 'exec-a');
  assert.equal(a.length, 1, 'once');
  assert.deepEqual([a[0].connected, a[0].running], [true, 1], 'from where it is connected now, the newest report');
  assert.ok(seen.some((e) => e.info.id === 'local-7-1' && e.connected));
  assert.ok(!seen.some((e) => e.info.id === 'operator'), "the follower's executors not ours are not listed");

  fleet.drain('exec-a');
  assert.deepEqual(drained, ['exec-a'], 'an executor connected elsewhere is drained by order');
  fleet.drain('local-7-1');
  assert.deepEqual(drained, ['exec-a']);
  assert.ok(leader.take(21).some((m) => m.t === 'drain'), 'one connected here is drained here');

  // Idle elsewhere: its idle time counts from the report's age.
  reports.splice(1, 1);
  const idle = fleet.executors().find((e) => e.info.id === 'exec-a')!;
  assert.equal(idle.idleSince, leader.now - 3000 - 5000);
});
