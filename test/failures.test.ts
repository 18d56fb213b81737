/** Executors that die, stop, or lose the network; timeouts and cancels. All real processes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type Client, type TaskResult } from '../client/index.js';
import { LEASE_MS, Procs, alive, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

/** Resolves when the dispatcher shows `id` running on the named executor. */
async function runningOn(url: string, executor: string): Promise<void> {
  await waitFor(`a task running on ${executor}`, async () => (await status(url)).executors.find((e) => e.id === executor && e.running > 0));
}

/** Collects every result the session yields, to check exactly-once delivery. */
function collect(client: Client): TaskResult[] {
  const seen: TaskResult[] = [];
  void (async () => {
    for await (const r of client.results()) seen.push(r);
  })();
  return seen;
}

test('an executor killed with kill -9 mid-task: its task is re-queued and completes elsewhere', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const a = startExecutor(procs, d.url, ['--id', 'A', '--slots', '1']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const pending = client.submit({ id: 'victim', cmd: ['sleep', '1'] });
  await runningOn(d.url, 'A');
  a.kill('SIGKILL');
  startExecutor(procs, d.url, ['--id', 'B', '--slots', '1']);
  const r = await pending;
  assert.equal(r.status, 'succeeded');
  assert.equal(r.executor, 'B');
  assert.equal(r.attempts, 2);
});

test('an executor stopped with SIGSTOP is found by missed heartbeats; the result comes once', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const a = startExecutor(procs, d.url, ['--id', 'A', '--slots', '1']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const seen = collect(client);
  await client.submitMany([{ id: 'frozen', builtin: 'sleep', ms: 1500 }], { until: 'accepted' });
  await runningOn(d.url, 'A');
  startExecutor(procs, d.url, ['--id', 'B', '--slots', '1']);
  a.kill('SIGSTOP');
  await waitFor('A to be declared lost', async () => !(await status(d.url)).executors.some((e) => e.id === 'A'), LEASE_MS + 13_000);
  await waitFor('the result', () => seen.length > 0, 15_000);
  assert.equal(seen[0].executor, 'B');
  assert.equal(seen[0].attempts, 2);
  a.kill('SIGCONT'); // A wakes up with a stale attempt: it must not produce a second result
  await waitExecutors(d.url, 2);
  // A's stale attempt settles (its 1.5 s sleep is long over): reported and discarded, or cancelled.
  await waitFor('A with nothing running', async () => (await status(d.url)).executors.find((e) => e.id === 'A' && e.running === 0), 15_000);
  // A negative property ("no second result") has no event to wait for: give a stale result that
  // got through the time to reach the client (a few ms; 1 s for a loaded host).
  await sleep(1000);
  assert.equal(seen.length, 1, JSON.stringify(seen.map((r) => [r.executor, r.attempts])));
});

/** A TCP relay that can cut every connection and refuse new ones for a while. */
async function relay(target: number) {
  const sockets = new Set<Socket>();
  let open = true;
  const server = createServer((inbound) => {
    if (!open) return inbound.destroy();
    const outbound = tcpConnect(target, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      open = true;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('results produced while the executor was disconnected arrive after it reconnects', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--lease-ms', '5000']);
  const r = await relay(d.port);
  t.after(() => r.close());
  startExecutor(procs, `ws://127.0.0.1:${r.port}`, ['--id', 'far', '--slots', '1']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const pidFile = join(procs.tmpDir(), 'pid');
  const pending = client.submit({ id: 'offline', cmd: ['sh', '-c', `echo $$ > ${pidFile}; sleep 0.5; echo finished`] });
  await runningOn(d.url, 'far');
  r.cut();
  await waitFor('the executor to show as disconnected', async () => (await status(d.url)).executors[0]?.state === 'disconnected');
  // The task ends while the link is down: its process is gone (not even a zombie: reaped).
  await waitFor('the task to end', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '' && !alive(Number(readFileSync(pidFile, 'utf8'))), 15_000);
  // The executor stamps the end when it hears of the exit, within milliseconds; the margin is for a
  // loaded host. Not a synchronisation that can pass wrongly: finished < restoredAt is asserted.
  await sleep(300);
  const restoredAt = Date.now();
  r.restore();
  const result = await pending;
  assert.equal(result.status, 'succeeded');
  assert.equal(result.stdout, 'finished\n');
  assert.equal(result.attempts, 1, 'not run again');
  assert.ok(result.timings.finished < restoredAt, `finished at ${result.timings.finished}, ${result.timings.finished - restoredAt} ms after the link came back: not the undelivered-result path`);
});

test('a task timeout kills its whole process group', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const r = await client.submit({ cmd: ['sh', '-c', 'sleep 30 & echo $!; wait'], timeoutMs: 500 });
  assert.equal(r.status, 'timed_out');
  assert.equal(r.error?.code, 'TASK_TIMEOUT');
  const grandchild = Number(r.stdout.trim());
  assert.ok(grandchild > 0, `grandchild pid printed: ${r.stdout}`);
  await waitFor('the background sleep to die', () => !alive(grandchild), 5000);
});

test('cancel of a queued and of a running task', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--id', 'one', '--slots', '1']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const running = client.submit({ id: 'long', cmd: ['sleep', '30'] });
  const queued = client.submit({ id: 'behind', cmd: ['echo', 'never'] });
  await runningOn(d.url, 'one');
  const started = Date.now();
  assert.equal(await client.cancel(['long', 'behind']), 2);
  const [a, b] = await Promise.all([running, queued]);
  assert.equal(b.status, 'cancelled');
  assert.equal(b.attempts, 0);
  assert.equal(a.status, 'cancelled');
  assert.equal(a.error?.code, 'TASK_CANCELLED');
  assert.ok(Date.now() - started < 5000, 'the running process was killed, not waited for');
  assert.equal(await client.cancel(['long']), 0, 'finished tasks cannot be cancelled again');
});
