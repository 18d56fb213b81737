/**
 * The deferred commit (dispatcher/outbound.ts, #deferCommit): a turn that only acknowledges
 * submissions it has just assigned waits for the next turn before its commit starts, so that a
 * short task's acceptance and result share one fsync. What must hold whatever the executor does:
 * the deferral is bounded (an executor that never answers does not hold the acknowledgement
 * back), and the acknowledgement still comes only after the commit (kill -9 right after it loses
 * nothing). That the deferral saves a commit per short task is a speed figure: bench/latency.ts
 * reports commits per task.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../client/index.js';
import { Procs, exited, freePort, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

test('an acceptance whose executor never answers still comes, and only once committed: kill -9 right after it keeps the task', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  // Heartbeats to clients are held messages too and would end a deferral: make them rarer than
  // this test's timeout, so that only the deferral's own bound can let the acceptance out.
  const at = () => startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir, '--heartbeat-ms', '300000', '--lease-ms', '600000']);
  let d = await at();
  const executor = startExecutor(procs, d.url, ['--slots', '1']);
  await waitExecutors(d.url, 1);
  // Stopped, the executor takes the assignment's frame into its socket buffer and never answers:
  // the turn that accepted the task must commit without the next turn the deferral waits for.
  executor.kill('SIGSTOP');
  t.after(() => executor.kill('SIGCONT'));

  const client = await connect(d.url);
  const summary = await client.submitMany([{ id: 'held', builtin: 'sleep', ms: 60_000 }], { until: 'accepted' });
  assert.equal(summary.accepted, 1);
  const s = await status(d.url);
  assert.equal(s.tasks.running, 1, 'the task was assigned in the turn that accepted it');

  const gone = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await gone;
  void client.close();
  d = await at();
  const after = await waitFor('the restarted dispatcher to hold the accepted task', async () => {
    const x = await status(d.url);
    return x.tasks.queued + x.tasks.running === 1 && x;
  });
  assert.equal(after.tasks.submitted, 1, 'acknowledged means committed: the task survived kill -9');
});
