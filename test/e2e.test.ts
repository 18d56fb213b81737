/** End to end through real processes: `up`, both dispatch modes, start order, and the CLI. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { createServer, isIP, type Socket } from 'node:net';
import { connect, type TaskResult, type TaskSpec } from '../client/index.js';
import { FAST, Procs, exited, freePort, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, waitForLine } from './helpers.js';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

test('many tasks through `up`: noop and command tasks spread over its executors', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const up = procs.spawn(['up', '--port', '0', '--executors', '3', '--slots', '4', '--data-dir', procs.tmpDir(), ...FAST]);
  const [, url] = await waitForLine(up, /listening on (ws:\/\/\S+)/);
  await waitExecutors(url, 3);
  const client = await connect(url);
  const tasks: TaskSpec[] = [];
  for (let i = 0; i < 3000; i++) tasks.push(i % 100 === 0 ? { id: `echo${i}`, cmd: ['echo', `n=${i}`] } : { id: `n${i}`, builtin: 'noop' });
  const results: TaskResult[] = [];
  const reading = (async () => {
    for await (const r of client.results()) {
      results.push(r);
      if (results.length === tasks.length) break;
    }
  })();
  const summary = await client.submitMany(tasks, { maxInFlight: 500 });
  await reading;
  assert.equal(summary.accepted, 3000);
  assert.equal(new Set(results.map((r) => r.id)).size, 3000, 'each task exactly once');
  assert.ok(results.every((r) => r.status === 'succeeded'));
  assert.equal(results.find((r) => r.id === 'echo200')?.stdout, 'n=200\n');
  const executors = new Set(results.map((r) => r.executor));
  assert.ok(executors.size >= 2, `work spread over executors: ${[...executors].join(',')}`);
  await client.close();
  // SIGTERM: `up` stops its executors and exits cleanly.
  const exit = exited(up, 20_000, '`up` after SIGTERM');
  up.kill('SIGTERM');
  assert.equal((await exit).code, 0);
});

test('pull and push executors side by side, and a pull-only fleet', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--mode', 'pull', '--slots', '3', '--id', 'puller']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  const only = await Promise.all(Array.from({ length: 30 }, () => client.submit({ builtin: 'sleep', ms: 5 })));
  assert.ok(only.every((r) => r.status === 'succeeded' && r.executor === 'puller'));
  startExecutor(procs, d.url, ['--mode', 'push', '--slots', '3', '--id', 'pusher']);
  await waitExecutors(d.url, 2);
  const both = await Promise.all(Array.from({ length: 300 }, () => client.submit({ builtin: 'sleep', ms: 5 })));
  const by = new Set(both.map((r) => r.executor));
  assert.deepEqual([...by].sort(), ['puller', 'pusher']);
  const s = await status(d.url);
  assert.deepEqual(s.executors.map((e) => e.mode).sort(), ['pull', 'push']);
  await client.close();
});

test('prefetch: tasks beyond the slots wait on the executor, never run beyond its slots, and cancel while waiting', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--prefetch', '3']);
  startExecutor(procs, d.url, ['--slots', '2', '--id', 'two']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const runs = Array.from({ length: 5 }, (_, i) => client.submit({ id: `p${i}`, builtin: 'sleep', ms: 300 }));
  // All five are on the executor at once (2 slots + 3 prefetched): cancel the last while it waits.
  await waitFor('five assigned', async () => (await status(d.url)).tasks.running === 5);
  assert.equal(await client.cancel(['p4']), 1);
  const results = await Promise.all(runs);
  const cancelled = results.find((r) => r.id === 'p4')!;
  assert.equal(cancelled.status, 'cancelled');
  assert.equal(cancelled.error?.code, 'TASK_CANCELLED');
  const ran = results.filter((r) => r.id !== 'p4');
  assert.ok(ran.every((r) => r.status === 'succeeded'));
  // Never more than two at once: at every start, at most one other attempt overlaps it.
  for (const r of ran) {
    const at = r.timings.started! + 1;
    const overlapping = ran.filter((o) => o !== r && o.timings.started! <= at && o.timings.finished > at);
    assert.ok(overlapping.length <= 1, `${r.id} overlapped ${overlapping.map((o) => o.id)}`);
  }
  // The waiting ones started as the first ones finished, not all at once.
  const starts = ran.map((r) => r.timings.started!).sort((a, b) => a - b);
  assert.ok(starts[3] - starts[0] >= 250, `starts ${starts.map((s) => s - starts[0])}`);
});

test('prefetch with the spawn helper: commands wait in the helper, builtins in the executor; never beyond the slots; cancel while waiting', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--prefetch', '4']);
  startExecutor(procs, d.url, ['--slots', '2', '--id', 'helperq']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  // one command first: the helper is running and said hello, so later commands may wait in it
  assert.equal((await client.submit({ cmd: ['true'] })).status, 'succeeded');
  const specs: TaskSpec[] = [
    { id: 'q0', cmd: ['/bin/sleep', '0.3'] },
    { id: 'q1', cmd: ['/bin/sleep', '0.3'] },
    { id: 'q2', cmd: ['/bin/sh', '-c', 'echo ran; sleep 0.3'] }, // waits in the helper: cancelled there
    { id: 'q3', cmd: ['/bin/sleep', '0.3'] }, // waits in the helper
    { id: 'q4', builtin: 'sleep', ms: 300 }, // waits in the executor; holds a slot when it runs
    // Waits at least 0.6 s (two waves of 0.3 s) before it starts, then runs 0.1 s: timed from
    // its assignment it would time out before it starts; from its real start it has 400 ms to spare.
    { id: 'q5', cmd: ['/bin/sleep', '0.1'], timeoutMs: 500 },
  ];
  const runs = specs.map((s) => client.submit(s));
  await waitFor('six assigned', async () => (await status(d.url)).tasks.running === 6);
  assert.equal(await client.cancel(['q2']), 1);
  const results = await Promise.all(runs);
  const cancelled = results.find((r) => r.id === 'q2')!;
  assert.deepEqual([cancelled.status, cancelled.error?.code, cancelled.stdout], ['cancelled', 'TASK_CANCELLED', '']);
  const ran = results.filter((r) => r.id !== 'q2');
  assert.ok(ran.every((r) => r.status === 'succeeded'), JSON.stringify(ran.map((r) => [r.id, r.status, r.error?.message])));
  // Never beyond the two slots. Only start times are compared: the helper stamps a start as it
  // happens, while `finished` is stamped when the executor reads the result, which the helper
  // writes after it started the next queued task (and a loaded machine reads it later still). With
  // two slots, a third start needs a slot turned over: at least the shortest run (0.1 s) later.
  const starts = ran.map((r) => r.timings.started!).sort((a, b) => a - b);
  for (let i = 0; i + 2 < starts.length; i++) {
    assert.ok(starts[i + 2] - starts[i] >= 90, `three tasks started within ${starts[i + 2] - starts[i]} ms: starts ${starts.map((x) => x - starts[0])}`);
  }
  assert.ok(starts[4] - starts[0] >= 500, `three waves: starts ${starts.map((s) => s - starts[0])}`);
});

test('executors started before the dispatcher retry and register once it is up', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}`;
  // Before the dispatcher, the port is held by a listener that drops every connection at once:
  // each one is an executor's dial that failed. (The executor logs nothing for a failed dial at
  // any FALCONET_LOG level, so this is how the test sees them.)
  const dials: Socket[] = [];
  const refuser = createServer((s) => {
    dials.push(s);
    s.destroy();
  });
  await new Promise<void>((r) => refuser.listen(port, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => refuser.close(() => r())));
  startExecutor(procs, url, ['--id', 'early1']);
  startExecutor(procs, url, ['--id', 'early2']);
  // Two executors, four failed dials: at least one executor dialed, failed and redialed.
  await waitFor('the executors to dial, fail and dial again', () => dials.length >= 4, 30_000);
  await new Promise<void>((r) => refuser.close(() => r()));
  const failedDials = dials.length;
  procs.spawn(['dispatcher', '--port', String(port), '--store', 'memory', ...FAST]).stdout!.resume();
  const s = await waitExecutors(url, 2);
  assert.deepEqual(s.executors.map((e) => e.id).sort(), ['early1', 'early2']);
  t.diagnostic(`${failedDials} failed dials before the dispatcher came up`);
  const client = await connect(url);
  assert.equal((await client.submit({ cmd: ['true'] })).status, 'succeeded');
  await client.close();
});

// The executor sends its memory in the hello, but the status JSON has no memory field
// (ExecutorStatus, dispatcher/status.ts): not claimed here.
test('registration reports hostname, addresses, slots, labels, version and boot phases', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const hostAddresses = () => Object.values(networkInterfaces()).flatMap((list) => (list ?? []).filter((a) => !a.internal).map((a) => a.address));
  const before = hostAddresses();
  startExecutor(procs, d.url, ['--slots', '7', '--labels', 'zone=a,gpu=none', '--id', 'reg']);
  const [e] = (await waitExecutors(d.url, 1)).executors;
  const after = hostAddresses();
  assert.equal(e.id, 'reg');
  assert.equal(e.slots, 7);
  assert.deepEqual(e.labels, { zone: 'a', gpu: 'none' });
  assert.ok(e.hostname.length > 0);
  // The executor runs on this host: it lists this host's non-loopback addresses, each once. (Only
  // those the host had throughout are required: other tests add and remove interfaces meanwhile.)
  assert.equal(new Set(e.addresses).size, e.addresses.length, `each once: ${e.addresses}`);
  for (const a of before.filter((x) => after.includes(x))) assert.ok(e.addresses.includes(a), `${a} missing from ${e.addresses}`);
  for (const a of e.addresses) assert.ok(isIP(a) !== 0 && a !== '127.0.0.1' && a !== '::1', `address ${JSON.stringify(a)}`);
  assert.equal(e.version, PACKAGE_VERSION, 'the executor reports the package version');
  assert.equal(e.boot?.[0]?.phase, 'started', `boot phases ${JSON.stringify(e.boot)}`);
});

test('CLI: run prints the output and exits with the task exit code; submit streams JSON lines', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '4']);
  await waitExecutors(d.url, 1);
  const env = { FALCONET_URL: d.url };
  const hello = await runCli(procs, ['run', '--', 'echo', 'hello'], { env });
  assert.equal(hello.code, 0);
  assert.equal(hello.stdout, 'hello\n');
  const three = await runCli(procs, ['run', '--', 'sh', '-c', 'echo oops >&2; exit 3'], { env });
  assert.equal(three.code, 3);
  assert.match(three.stderr, /oops/);
  const envd = await runCli(procs, ['run', '--env', 'GREETING=hi there', '--', 'sh', '-c', 'echo "$GREETING"'], { env });
  assert.equal(envd.stdout, 'hi there\n');
  const timeout = await runCli(procs, ['run', '--timeout', '0.3', '--', 'sleep', '10'], { env });
  assert.equal(timeout.code, 124);
  const missing = await runCli(procs, ['run', '--', '/no/such/program'], { env });
  assert.equal(missing.code, 127);
  assert.match(missing.stderr, /SPAWN_FAILED/);

  const lines = Array.from({ length: 500 }, (_, i) => JSON.stringify({ id: `j${i}`, builtin: 'noop' })).join('\n');
  const sub = await runCli(procs, ['submit', '--file', '-'], { env, input: lines });
  assert.equal(sub.code, 0, sub.stderr);
  const results = sub.stdout.trim().split('\n').map((l) => JSON.parse(l) as TaskResult);
  assert.equal(results.length, 500);
  assert.equal(new Set(results.map((r) => r.id)).size, 500);

  const st = await runCli(procs, ['status', '--json'], { env });
  assert.equal(st.code, 0);
  assert.equal(JSON.parse(st.stdout).executors.length, 1);
});

test('drain: the executor finishes what it runs, takes nothing new, and exits; --idle-exit exits when idle', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const drained = startExecutor(procs, d.url, ['--id', 'drainee', '--slots', '2']);
  const drainedExit = exited(drained, 30_000, 'the drained executor');
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const running = client.submit({ id: 'long', cmd: ['sh', '-c', 'sleep 0.5; echo finished'] });
  await waitFor('the task running', async () => (await status(d.url)).tasks.running === 1);
  await client.drain('drainee');
  const later = client.submit({ id: 'later', builtin: 'noop' });
  const r = await running;
  assert.equal(r.stdout, 'finished\n', 'the running task completes');
  assert.equal((await drainedExit).code, 0);
  startExecutor(procs, d.url, ['--id', 'fresh']);
  assert.equal((await later).executor, 'fresh', 'nothing new went to the draining executor');
  await assert.rejects(client.drain('no-such-executor'), (e: Error & { code?: string }) => e.code === 'NOT_FOUND');

  const idle = startExecutor(procs, d.url, ['--id', 'idler', '--idle-exit', '0.3']);
  const { code } = await exited(idle, 20_000, 'the --idle-exit 0.3 executor');
  assert.equal(code, 0);
  const metrics = await (await fetch(d.url.replace('ws', 'http') + '/metrics')).text();
  assert.match(metrics, /falconet_tasks_finished_total\{status="succeeded"\} 2/);
});
