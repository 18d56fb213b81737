/**
 * Dependencies end to end (`after`), a real dispatcher and executor on loopback: a diamond runs
 * in order (checked from the tasks' own timings), a failing branch cancels its dependants with
 * DEPENDENCY_FAILED (transitively) while the other branch runs, cycles and unknown ids are
 * refused at submit, and held tasks survive a restart of the dispatcher.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type TaskResult } from '../client/index.js';
import { Procs, exited, freePort, startDispatcher, startExecutor, waitExecutors, within } from './helpers.js';

async function allResults(url: string, tasks: Parameters<Awaited<ReturnType<typeof connect>>['submitMany']>[0], opts: { session?: string } = {}) {
  const client = await connect(url, { connectTimeoutMs: 60_000, ...opts });
  const summary = await client.submitMany(tasks);
  const out = new Map<string, TaskResult>();
  if (client.outstanding > 0) {
    for await (const r of client.results()) {
      out.set(r.id, r);
      if (client.outstanding === 0) break;
    }
  }
  await client.close();
  return { summary, results: out };
}

test('a diamond runs in order, from the tasks own timings; a failing branch cancels its dependants', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '4']);
  await waitExecutors(d.url, 1);
  const sh = (s: string) => ['sh', '-c', s];
  const { summary, results } = await within(
    allResults(d.url, [
      // Submitted in reverse: order within a submit does not matter.
      { id: 'join', cmd: sh('sleep 0.05'), after: ['left', 'right'] },
      { id: 'left', cmd: sh('sleep 0.2'), after: ['top'] },
      { id: 'right', cmd: sh('sleep 0.1'), after: ['top'] },
      { id: 'top', cmd: sh('sleep 0.1') },
      // A failing branch: fail → mid → leaf are cancelled; ok-side runs.
      { id: 'fail', cmd: sh('exit 4'), maxAttempts: 1 },
      { id: 'mid', builtin: 'noop', after: ['fail'] },
      { id: 'leaf', builtin: 'noop', after: ['mid', 'ok-side'] },
      { id: 'ok-side', builtin: 'noop' },
    ]),
    90_000,
    'the diamond and the failing branch',
  );
  assert.deepEqual(summary.rejected, []);
  const r = (id: string) => results.get(id)!;
  for (const id of ['top', 'left', 'right', 'join', 'ok-side']) assert.equal(r(id).status, 'succeeded', id);
  const started = (id: string) => r(id).timings.started!;
  const finished = (id: string) => r(id).timings.finished;
  assert.ok(started('left') >= finished('top') && started('right') >= finished('top'), 'both branches start after top finished');
  assert.ok(started('join') >= finished('left') && started('join') >= finished('right'), 'join starts after both branches finished');
  assert.equal(r('fail').status, 'failed');
  for (const id of ['mid', 'leaf']) {
    assert.equal(r(id).status, 'cancelled', id);
    assert.equal(r(id).error?.code, 'DEPENDENCY_FAILED', id);
    assert.equal(r(id).timings.started, null, `${id} never ran`);
  }
  assert.match(r('mid').error!.message, /dependency fail ended failed/);
  assert.match(r('leaf').error!.message, /dependency mid ended cancelled \(DEPENDENCY_FAILED\)/);
  assert.equal(results.size, 8, 'one result each');
});

test('a cycle and an unknown id are refused at submit with their codes; the rest of the submit runs', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);
  const { summary, results } = await allResults(d.url, [
    { id: 'x', builtin: 'noop', after: ['y'] },
    { id: 'y', builtin: 'noop', after: ['z'] },
    { id: 'z', builtin: 'noop', after: ['x'] },
    { id: 'ghost', builtin: 'noop', after: ['nobody'] },
    { id: 'fine', builtin: 'noop' },
  ]);
  assert.deepEqual(
    Object.fromEntries(summary.rejected.map((x) => [x.id, x.code])),
    { x: 'DEPENDENCY_CYCLE', y: 'DEPENDENCY_CYCLE', z: 'DEPENDENCY_CYCLE', ghost: 'DEPENDENCY_UNKNOWN' },
  );
  assert.match(summary.rejected.find((x) => x.id === 'ghost')!.message, /nobody/);
  assert.deepEqual([...results.keys()], ['fine']);
});

test('held tasks survive kill -9: pending counts are rebuilt from the stored states', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  const args = ['--port', String(port), '--data-dir', dataDir];
  let d = await startDispatcher(procs, args);
  // No executor yet: everything waits, the dependants held.
  const client = await connect(d.url, { connectTimeoutMs: 60_000 });
  const session = client.session.id;
  await client.submitMany([{ id: 'first', builtin: 'noop' }, { id: 'second', builtin: 'noop', after: ['first'] }, { id: 'third', builtin: 'noop', after: ['second', 'first'] }], { until: 'accepted' });
  await client.close();
  const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
  d = await startDispatcher(procs, args);
  startExecutor(procs, d.url, ['--slots', '3']);
  const again = await connect(d.url, { session, connectTimeoutMs: 60_000 });
  const got: TaskResult[] = [];
  await within(
    (async () => {
      for await (const r of again.results()) {
        got.push(r);
        if (got.length === 3) break;
      }
    })(),
    90_000,
    'the three results after the restart',
  );
  await again.close();
  assert.deepEqual(got.map((r) => [r.id, r.status]), [['first', 'succeeded'], ['second', 'succeeded'], ['third', 'succeeded']]);
  assert.ok(got[1].timings.dispatched! >= got[0].timings.finished && got[2].timings.dispatched! >= got[1].timings.finished);
});
