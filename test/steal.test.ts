/**
 * Work stealing (dispatcher/steal.ts, the executor's `#giveBack`): the dispatcher takes tasks
 * that have not started back from an executor whose local queue holds them while another
 * executor's slots are free. The pure core and window through the real codec first, then real
 * processes: the stolen tasks run on the idle executor, once each, with no attempt counted; a
 * steal that races with a start leaves the started task where it runs; an executor that did not
 * announce `steal` is never asked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pack } from 'msgpackr';
import { connect, type TaskResult } from '../client/index.js';
import { STEAL_CAP, localityKey, type DispatcherToClient, type DispatcherToExecutor, type TaskSpec } from '../protocol/index.js';
import { AdaptiveWindow } from '../executor/window.js';
import { Harness } from './core-harness.js';
import { fromExecutor } from './wire.js';
import { Procs, raw, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

type ToExec = DispatcherToExecutor;

const only = <T extends ToExec['t']>(msgs: Array<DispatcherToClient | ToExec>, t: T) => msgs.filter((m): m is Extract<ToExec, { t: T }> => m.t === t);
const results = (msgs: Array<DispatcherToClient | ToExec>) => msgs.filter((m): m is Extract<DispatcherToClient, { t: 'result' }> => m.t === 'result').map((m) => m.result);
const sleeps = (n: number, ms: number): TaskSpec[] => Array.from({ length: n }, (_, i) => ({ id: `t${i}`, builtin: 'sleep' as const, ms }));

test('core: an idle executor gets the tasks a busy one gives back, same attempt, nothing counted; a started one stays', { timeout: 10_000 }, () => {
  const h = new Harness({ prefetch: 3 });
  h.client(1);
  h.executor(10, { slots: 1 }, [STEAL_CAP]);
  h.submit(1, sleeps(4, 1000));
  h.core.schedule();
  const held = only(h.take(10), 'task');
  assert.equal(held.length, 4, 'one slot and a prefetch of 3: all four wait on e10');
  h.executor(11, { slots: 2 }, [STEAL_CAP]);
  h.core.schedule();
  const [steal, ...more] = only(h.take(10), 'steal');
  assert.deepEqual({ steal, more }, { steal: { t: 'steal', n: 2 }, more: [] }, 'as many as e11 has free slots (e10 holds 3 beyond its slot)');
  h.core.schedule();
  assert.equal(only(h.take(10), 'steal').length, 0, 'one steal in flight per executor');
  // The race: t2 started on e10 before the steal arrived, so only t3 comes back.
  const [, , t2, t3] = held;
  h.returned(10, [{ uid: t3.uid, attempt: t3.attempt }]);
  const moved = only(h.take(11), 'task');
  assert.deepEqual(moved.map((m) => [m.spec.id, m.attempt]), [['t3', 1]], 'straight to the free slot, under the same attempt number');
  // A name it no longer holds (t3 now belongs to e11) changes nothing.
  h.returned(10, [{ uid: t3.uid, attempt: t3.attempt }]);
  assert.equal(only(h.take(11), 'task').length, 0);
  // e10's report of t3 (it gave it back) is not its to make.
  h.done(10, t3.uid, t3.attempt);
  for (const m of held.filter((x) => x !== t3)) h.done(10, m.uid, m.attempt);
  h.done(11, t3.uid, t3.attempt);
  assert.ok(only(h.take(10), 'error').some((m) => m.code === 'ATTEMPT_NOT_YOURS'), 'the giver cannot report a task it gave back');
  const rs = results(h.take(1));
  assert.deepEqual(rs.map((r) => r.id).sort(), ['t0', 't1', 't2', 't3'], 'each result once');
  for (const r of rs) assert.deepEqual([r.id, r.status, r.attempts], [r.id, 'succeeded', 1]);
  assert.equal(rs.find((r) => r.id === 't3')?.executor, 'e11');
  assert.equal(rs.find((r) => r.id === 't2')?.executor, 'e10', 'the started one ran where it started');
  assert.deepEqual(h.core.steals, { asked: 1, returned: 1 });
  assert.equal(h.core.view.dispatched, 4, 'the dispatch counter counts each attempt once: a given-back one is not counted again');
});

test('core: an executor that did not announce steal is never asked; nor while tasks wait at the dispatcher', { timeout: 10_000 }, () => {
  const h = new Harness({ prefetch: 3 });
  h.client(1);
  h.executor(10, { slots: 1 }, []);
  h.submit(1, sleeps(4, 1000));
  h.core.schedule();
  assert.equal(only(h.take(10), 'task').length, 4);
  h.executor(11, { slots: 2 }, [STEAL_CAP]);
  h.core.schedule();
  assert.equal(only(h.take(10), 'steal').length, 0, 'an older executor is never asked');
  // A stealing executor with a backlog, but tasks still queued here: the free slots take those.
  const s = new Harness({ prefetch: 3 });
  s.client(1);
  s.executor(10, { slots: 1 }, [STEAL_CAP]);
  s.submit(1, sleeps(6, 1000));
  s.core.schedule();
  s.executor(11, { slots: 1 }, [STEAL_CAP]);
  s.core.schedule();
  assert.equal(only(s.take(11), 'task').length, 2, 'e11 takes the two still queued (one slot, one prefetched)');
  assert.equal(only(s.take(10), 'steal').length, 0, 'nothing to steal for: no free slot is left');
});

test('core: under max-cache-hit a given-back task that waits for the executor holding its input goes back there, not to a free slot elsewhere', { timeout: 10_000 }, () => {
  const h = new Harness({ prefetch: 3, dataPolicy: 'max-cache-hit', cacheWaitMs: 60_000 });
  h.client(1);
  h.executor(10, { slots: 1 }, [STEAL_CAP]);
  const input = { src: 's3://b/k', dst: 'in.bin' };
  const hb = fromExecutor({ t: 'hb', at: h.now, holds: [localityKey(input)] });
  if (hb.t === 'hb') h.core.executorSeen(10, hb.data, hb.holds);
  h.submit(1, Array.from({ length: 4 }, (_, i) => ({ id: `d${i}`, cmd: ['true'], inputs: [input] })));
  h.core.schedule();
  const held = only(h.take(10), 'task');
  assert.equal(held.length, 4);
  h.executor(11, { slots: 1 }, [STEAL_CAP]);
  h.core.schedule();
  assert.deepEqual(only(h.take(10), 'steal'), [{ t: 'steal', n: 1 }], 'a steal is asked: the dispatcher cannot tell which waiting tasks hold data');
  h.returned(10, [{ uid: held[3].uid, attempt: held[3].attempt }]);
  h.core.schedule();
  assert.equal(only(h.take(11), 'task').length, 0, 'not to the executor without its input');
  assert.deepEqual(only(h.take(10), 'task').map((m) => [m.spec.id, m.attempt]), [['d3', 1]], 'back to its holder, same attempt');
  h.core.schedule();
  assert.equal(only(h.take(10), 'steal').length, 0, 'and its holder is not asked again at once');
});

test('window: with a stealing dispatcher long tasks keep one task per slot waiting on a large executor', { timeout: 10_000 }, () => {
  const plain = new AdaptiveWindow({ slots: 2000, initialRoundTripMs: 2 });
  const stealing = new AdaptiveWindow({ slots: 2000, initialRoundTripMs: 2, stealing: true });
  assert.deepEqual([plain.extra, stealing.extra], [0, 0], 'before any task ended: exactly the slots');
  plain.taskRan(1000);
  stealing.taskRan(1000);
  assert.deepEqual([plain.extra, stealing.extra], [0, 2000], 'a task of 500 round trips, 2 finishing per ms');
  assert.deepEqual([plain.openDelayMs(0), stealing.openDelayMs(0), stealing.openDelayMs(2000)], [0, 500, 0], 'a long-task window opens half a task later, out of the burst; nothing to open: no wait');
  for (let i = 0; i < 300; i++) stealing.taskRan(1);
  assert.ok(stealing.extra >= 1000, `short tasks: the bandwidth-delay product as before, up to maxExtra (${stealing.extra})`);
  const short = stealing.extra;
  assert.equal(stealing.setStealing(false), short, 'short tasks do not depend on stealing');
  const half = new AdaptiveWindow({ slots: 10_000, stealing: true, longShare: 0.5 });
  half.taskRan(5000);
  assert.equal(half.extra, 5000);
  const small = new AdaptiveWindow({ slots: 8, stealing: true });
  small.taskRan(1000);
  assert.equal(small.extra, 0, '8 slots of 1 s tasks finish 8 tasks/s: a round trip per turn costs nothing, no window');
  assert.equal(half.setStealing(false), 0, 'a dispatcher that does not steal: long tasks get no window');
});

/** Waits for `n` results of `client`'s stream, by id; fails on a second result for an id. */
async function collect(client: Awaited<ReturnType<typeof connect>>, n: number): Promise<Map<string, TaskResult>> {
  const byId = new Map<string, TaskResult>();
  for await (const r of client.results()) {
    assert.ok(!byId.has(r.id), `a second result for ${r.id}`);
    byId.set(r.id, r);
    if (byId.size === n) break;
  }
  return byId;
}

test('real processes: tasks waiting on a busy executor move to an idle one and run there once, no attempt counted', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory', '--prefetch', '5']);
  startExecutor(procs, d.url, ['--slots', '1', '--id', 'busy']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const reading = collect(client, 6);
  // One long task runs on `busy`; five short ones wait behind it there (its prefetch).
  const tasks: TaskSpec[] = [{ id: 'long', builtin: 'sleep', ms: 6000 }, ...Array.from({ length: 5 }, (_, i) => ({ id: `s${i}`, builtin: 'sleep' as const, ms: 200 }))];
  assert.equal((await client.submitMany(tasks, { until: 'accepted' })).accepted, 6);
  await waitFor('all six on busy', async () => {
    const s = await status(d.url);
    return s.tasks.queued === 0 && s.tasks.running === 6;
  });
  startExecutor(procs, d.url, ['--slots', '4', '--id', 'idle']);
  const byId = await reading;
  const where = [...byId.values()].map((r) => [r.id, r.executor, r.status, r.attempts]).sort();
  assert.deepEqual(
    where,
    [['long', 'busy', 'succeeded', 1], ['s0', 'idle', 'succeeded', 1], ['s1', 'idle', 'succeeded', 1], ['s2', 'idle', 'succeeded', 1], ['s3', 'idle', 'succeeded', 1], ['s4', 'idle', 'succeeded', 1]],
    'the four newest waiting tasks (as many as idle had free slots) moved to idle, then the fifth once those ended: each ran once, attempt 1',
  );
});

test('real processes: a steal that races with a start leaves the started task where it runs; an old executor is never asked', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory', '--prefetch', '3']);
  // A hand-written executor: it announces `steal` as the agent does and answers as if one task
  // had started just before the steal arrived.
  const info = (id: string) => ({ id, hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: id, mode: 'push', running: [] });
  const client = await connect(d.url);
  t.after(() => client.close());
  const reading = collect(client, 8);
  // An older executor (no `steal` in its hello) first, holding four tasks (one slot, a prefetch of 3).
  const old = await raw(d.url);
  t.after(() => old.ws.close());
  old.ws.send(pack([{ t: 'hello', v: 1, role: 'executor', caps: ['batch', 'push'], executor: info('old') }]));
  await old.next((m) => m.t === 'welcome');
  assert.equal((await client.submitMany(Array.from({ length: 4 }, (_, i) => ({ id: `o${i}`, builtin: 'sleep' as const, ms: 100 })), { until: 'accepted' })).accepted, 4);
  const olds: Array<{ uid: number; attempt: number; spec: { id: string } }> = [];
  for (let i = 0; i < 4; i++) olds.push((await old.next((m) => m.t === 'task')) as unknown as (typeof olds)[number]);
  const x = await raw(d.url);
  t.after(() => x.ws.close());
  x.ws.send(pack([{ t: 'hello', v: 1, role: 'executor', caps: ['batch', 'push', STEAL_CAP], executor: info('racer') }]));
  await x.next((m) => m.t === 'welcome');
  assert.equal((await client.submitMany(sleeps(4, 100), { until: 'accepted' })).accepted, 4);
  const got: typeof olds = [];
  for (let i = 0; i < 4; i++) got.push((await x.next((m) => m.t === 'task')) as unknown as (typeof got)[number]);
  // An idle real executor with two slots: the dispatcher asks racer for two.
  startExecutor(procs, d.url, ['--slots', '2', '--id', 'idle']);
  const steal = (await x.next((m) => m.t === 'steal')) as { n: number };
  assert.equal(steal.n, 2);
  // got[2] started meanwhile: only got[3] comes back. Later asks find nothing more.
  x.ws.send(pack([{ t: 'returned', tasks: [{ uid: got[3].uid, attempt: got[3].attempt }] }]));
  const answering = (async () => {
    for (;;) {
      const m = await x.next((mm) => mm.t === 'steal' || mm.t === 'ack');
      if (m.t === 'ack') return;
      x.ws.send(pack([{ t: 'returned', tasks: [] }]));
    }
  })();
  const now = Date.now();
  const done = (g: (typeof got)[number]) => ({ t: 'done', result: { uid: g.uid, attempt: g.attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, startedAt: now, finishedAt: now } });
  // The idle executor's result of got[3] comes first (event-ordered: wait for it), then racer's three and old's four.
  const first = await waitFor('the given-back task to finish on idle', async () => {
    const s = (await (await fetch(d.url.replace('ws', 'http') + `/api/tasks/${got[3].spec.id}`)).json()) as { state: string; executor: string | null };
    return s.state === 'succeeded' && s;
  });
  assert.equal(first.executor, 'idle');
  x.ws.send(pack(got.slice(0, 3).map(done)));
  old.ws.send(pack(olds.map(done)));
  await answering;
  const byId = await reading;
  assert.deepEqual([...byId.values()].map((r) => [r.id, r.executor, r.attempts]).sort(), [
    ['o0', 'old', 1], ['o1', 'old', 1], ['o2', 'old', 1], ['o3', 'old', 1],
    ['t0', 'racer', 1], ['t1', 'racer', 1], ['t2', 'racer', 1], ['t3', 'idle', 1],
  ]);
  assert.equal(old.messages.filter((m) => m.t === 'steal').length, 0, 'the older executor was never asked, though idle slots waited while it held tasks');
});
