/**
 * Live output (issue 12, item 4): `falconet logs ID [-f]`, the SDK's `client.logs(id)`, and the
 * dispatcher's bounded per-reader buffer. Process-level tests run a real dispatcher and executor
 * on loopback; the buffer's unit test drives the pure LogStreams through the real codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pack } from 'msgpackr';
import { Codec, compileInbound, DispatcherToClientSchemas, type DispatcherToClient, type DispatcherToExecutor } from '../protocol/index.js';
import { LogStreams } from '../dispatcher/log-streams.js';
import { newExecutor, newSession, newTask } from '../dispatcher/model.js';
import { connect } from '../client/index.js';
import { Procs, exited, raw, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, waitForLine, within } from './helpers.js';

// ---- the pure core: readers, snapshots, the bounded buffer ---------------------------------------

function world(readerBufferBytes: number) {
  const orders: Array<{ conn: number; msg: DispatcherToExecutor }> = [];
  const logs = new LogStreams({ toExecutor: (conn, msg) => orders.push({ conn, msg }) }, { readerBufferBytes });
  const session = newSession('s', 0, null, null, null);
  const exec = newExecutor({ id: 'e1', hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: '0', incarnation: 'i', mode: 'push', running: [] }, 7, 0, 0);
  const task = newTask(1, 'job', session, { cmd: ['x'] }, 0);
  task.state = 'dispatched';
  task.attempt = 1;
  task.executor = exec;
  return { orders, logs, exec, task };
}

/** What a reader on `conn` would receive, through the real codec and the client's validator. */
function received(logs: LogStreams, conn: number): Array<Extract<DispatcherToClient, { t: 'log' }>> {
  const codec = new Codec({ maxFrameBytes: 1 << 20 });
  const validate = compileInbound<DispatcherToClient>(DispatcherToClientSchemas);
  const out: Array<Extract<DispatcherToClient, { t: 'log' }>> = [];
  for (const frame of codec.encode(logs.take(conn, 64 * 1024))) {
    for (const raw of codec.decode(frame)) {
      const v = validate(raw);
      assert.ok(v.ok, `a valid log message: ${JSON.stringify(raw).slice(0, 200)}`);
      if (v.ok && v.msg.t === 'log') out.push(v.msg);
    }
  }
  return out;
}

test('log streams: a snapshot, then live output; a slow reader is bounded and told what it lost; tail off when the last reader leaves', { timeout: 30_000 }, () => {
  const { orders, logs, exec, task } = world(1000);
  logs.watch(100, 1, task, true);
  assert.deepEqual(orders.map((o) => o.msg), [{ t: 'tail', uid: 1, attempt: 1, on: true }], 'the executor is asked to stream');
  logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stdout', data: 'live before the snapshot\n' }] });
  logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stdout', data: 'head\n' }], snapshot: true, dropped: 3 });
  logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stderr', data: 'e1\n' }, { stream: 'stdout', data: 'o1\n' }] });
  let got = received(logs, 100);
  assert.deepEqual(
    got.map((m) => [m.dropped ?? 0, m.chunks.map((c) => `${c.stream}:${c.data}`).join('')]),
    [[3, 'stdout:head\nstderr:e1\nstdout:o1\n']],
    'output before the snapshot is skipped; the snapshot says what the executor no longer had',
  );

  // A second reader (not following) gets a snapshot of its own; the first skips that one.
  logs.watch(100, 2, task, false);
  assert.equal(orders.length, 2);
  logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stdout', data: 'head\no1\n' }], snapshot: true });
  got = received(logs, 100);
  assert.deepEqual(got.map((m) => [m.ref, m.chunks.length, m.end?.status]), [[2, 1, 'running']], 'the one-shot reader: what there is now, then its end');

  // The first reader stops reading: its buffer (1,000 bytes) fills, the rest is dropped and counted.
  for (let i = 0; i < 50; i++) logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stdout', data: 'x'.repeat(99) + '\n' }] });
  assert.equal(logs.heldBytes, 1000, 'a reader with a 1,000-byte buffer holds that much at most');
  got = received(logs, 100); // it reads again
  assert.equal(got.reduce((n, m) => n + m.chunks.reduce((k, c) => k + c.data.length, 0), 0), 1000, 'what fitted');
  assert.equal(got.filter((m) => m.dropped).length, 0);
  logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stdout', data: 'after\n' }] });
  got = received(logs, 100);
  assert.deepEqual(got.map((m) => [m.dropped, m.chunks[0].data]), [[4000, 'after\n']], 'the gap is marked where it is, with what it lost');

  // The attempt is lost and the task runs again: a note, then the next attempt's output.
  logs.requeued(task, 'its executor was lost');
  task.attempt = 2;
  logs.dispatched(task);
  assert.deepEqual(orders.at(-1)!.msg, { t: 'tail', uid: 1, attempt: 2, on: true });
  logs.output(exec, { t: 'out', uid: 1, attempt: 1, chunks: [{ stream: 'stdout', data: 'stale attempt\n' }] });
  logs.output(exec, { t: 'out', uid: 1, attempt: 2, chunks: [], snapshot: true });
  logs.output(exec, { t: 'out', uid: 1, attempt: 2, chunks: [{ stream: 'stdout', data: 'second\n' }] });
  logs.finished(task, 'succeeded');
  got = received(logs, 100);
  assert.deepEqual(
    got.map((m) => [m.note ?? '', m.chunks.map((c) => c.data).join(''), m.end?.status ?? '']),
    [['attempt 1 ended without a result (its executor was lost); following attempt 2', 'second\n', 'succeeded']],
  );
  assert.equal(logs.active, false, 'nothing kept once the task ended');
  assert.equal(logs.readers, 0);

  // A reader that goes away: the executor stops streaming.
  task.state = 'dispatched';
  logs.watch(200, 1, task, true);
  logs.clientGone(200);
  assert.deepEqual(orders.at(-1)!.msg, { t: 'tail', uid: 1, attempt: 2, on: false });
  assert.equal(logs.active, false);
});

// ---- real processes ------------------------------------------------------------------------------

/** A task that prints a line to stdout and one to stderr every 100 ms for 3 s. */
const TICKER = { cmd: ['/bin/sh', '-c', 'for i in $(seq 1 30); do echo out-$i; echo err-$i >&2; sleep 0.1; done'] };

test('logs -f streams a running task as it writes, in order, stdout and stderr apart; then logs of the finished task prints its tail', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  // The durable store: a finished task's output is read back from its stored result.
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  let finished = false;
  const result = client.submit({ id: 'ticker', ...TICKER }).then((r) => ((finished = true), r));

  const cli = procs.spawn(['logs', '-f', 'ticker', '--dispatcher', d.url]);
  let stdout = '';
  let stderr = '';
  cli.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  cli.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  await waitForLine(cli, /out-1\n/, 60_000);
  assert.equal(finished, false, 'the first line arrived while the task still ran');
  const exit = await exited(cli, 120_000, 'falconet logs -f');
  const r = await within(result, 60_000, 'the ticker result');
  assert.equal(r.status, 'succeeded');
  assert.equal(exit.code, 0, stderr);
  const lines = (text: string, tag: string) => text.split('\n').filter((l) => l.startsWith(`${tag}-`));
  const expected = (tag: string) => Array.from({ length: 30 }, (_, i) => `${tag}-${i + 1}`);
  assert.deepEqual(lines(stdout, 'out'), expected('out'), 'every stdout line, once, in order');
  assert.equal(lines(stdout, 'err').length, 0, 'no stderr on stdout');
  assert.deepEqual(lines(stderr, 'err'), expected('err'), 'every stderr line, once, in order');

  // The same through the SDK, for the finished task: its result's output, then the end.
  const pieces: string[] = [];
  const stream = client.logs('ticker');
  for await (const p of stream) pieces.push(`${p.stream}:${p.data}`);
  assert.deepEqual(await stream.ended, { status: 'succeeded', attempt: 1 });
  assert.equal(pieces.join('\n'), `stdout:${r.stdout}\nstderr:${r.stderr}`);

  // And the CLI without -f: the tail, exit 0.
  const once = await runCli(procs, ['logs', 'ticker', '--dispatcher', d.url]);
  assert.equal(once.code, 0, once.stderr);
  assert.equal(once.stdout, r.stdout);
  assert.equal(once.stderr, r.stderr);
});

test('logs of an unknown id: NOT_FOUND (CLI exit 1, the SDK rejects)', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory']);
  const out = await runCli(procs, ['logs', 'no-such-task', '--dispatcher', d.url]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /NOT_FOUND: no task no-such-task/);
  const client = await connect(d.url);
  t.after(() => client.close());
  const stream = client.logs('no-such-task', { follow: true });
  await assert.rejects(stream.ended, (e: Error & { code?: string }) => e.code === 'NOT_FOUND');
  await assert.rejects(async () => {
    for await (const _ of stream) void _;
  }, (e: Error & { code?: string }) => e.code === 'NOT_FOUND');
});

test('a reader that does not read: the dispatcher holds a bounded buffer for it, drops the rest and says how much', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory']);
  startExecutor(procs, d.url, ['--slots', '1']);
  await waitExecutors(d.url, 1);
  const total = 48 << 20;
  const peer = await raw(d.url);
  t.after(() => peer.ws.terminate());
  peer.ws.send(pack([{ t: 'hello', v: 1, role: 'client', caps: ['batch'] }]));
  await peer.next((m) => m.t === 'welcome');
  // Follows it from the queue: the reader waits for the task to start.
  peer.ws.send(pack([
    { t: 'submit', ref: 1, tasks: [{ id: 'flood', cmd: ['/bin/sh', '-c', `head -c ${total} /dev/zero | tr '\\0' x; echo; echo done >&2`] }] },
    { t: 'logs', ref: 2, id: 'flood', follow: true },
  ]));
  await peer.next((m) => m.t === 'log' && m.ref === 2);
  peer.ws.pause(); // stops reading: the kernel's buffers fill, then the dispatcher's

  // The task ends while the reader reads nothing; what the dispatcher held for it stayed bounded.
  let maxHeld = 0;
  await waitFor('the flood to end', async () => {
    const s = (await status(d.url)) as unknown as { tasks: { running: number; queued: number }; logs: { heldBytes: number } };
    maxHeld = Math.max(maxHeld, s.logs.heldBytes);
    return s.tasks.running + s.tasks.queued === 0;
  }, 120_000);
  assert.ok(maxHeld <= 1 << 20, `at most the 1 MiB reader buffer was held (${maxHeld} bytes)`);

  peer.ws.resume();
  const end = await peer.next((m) => m.t === 'log' && m.ref === 2 && m.end !== undefined, 120_000);
  const logs = peer.messages.filter((m) => m.t === 'log' && m.ref === 2) as Array<{ chunks: Array<{ stream: string; data: string }>; dropped?: number }>;
  const got = logs.reduce((n, m) => n + m.chunks.reduce((k, c) => k + c.data.length, 0), 0);
  const dropped = logs.reduce((n, m) => n + (m.dropped ?? 0), 0);
  assert.equal((end.end as { status: string }).status, 'succeeded');
  assert.ok(dropped > 0, 'the reader is told output was dropped');
  assert.ok(got < total, `it did not get all ${total} bytes (${got})`);
  assert.equal(got + dropped, total + 1 + 5, `what came and what was dropped add up (${got} + ${dropped})`);
});
