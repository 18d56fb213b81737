/**
 * The SDK's paths all end (issue "every path ends", client side): large batches, duplicate ids,
 * bad or unreachable addresses, close() with work in flight, and the results() iterator. Each
 * test runs real dispatcher and executor processes and the SDK in this process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, ErrorCode, FalconetError, type Client, type StateChange, type TaskSpec } from '../client/index.js';
import { Procs, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

const hasCode = (code: string) => (e: unknown) => e instanceof FalconetError && e.code === code;

/** A dispatcher (in memory) with one executor, and a client of it closed at the end. */
async function cluster(t: { after(fn: () => unknown): void }, executorArgs: string[] = ['--slots', '4']): Promise<{ url: string; client: Client }> {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory']);
  if (executorArgs.length) {
    startExecutor(procs, d.url, executorArgs);
    await waitExecutors(d.url, 1);
  }
  const client = await connect(d.url);
  t.after(() => client.close());
  return { url: d.url, client };
}

test('a 20 MiB submit batch (2,000 tasks of 10 KB) goes out as several frames and every task succeeds', { timeout: 120_000 }, async (t) => {
  // Before the fix the one 20 MiB submit message threw FRAME_TOO_LARGE from setImmediate in
  // Link.#flush and killed this process.
  const { client } = await cluster(t);
  const pad = 'x'.repeat(10_000);
  const tasks: TaskSpec[] = Array.from({ length: 2000 }, (_, i) => ({ id: `big-${i}`, builtin: 'noop', env: { PAD: pad, N: String(i) } }));
  const results = await Promise.all(tasks.map((task) => client.submit(task)));
  assert.equal(results.length, 2000);
  assert.equal(new Set(results.map((r) => r.id)).size, 2000);
  assert.ok(results.every((r) => r.status === 'succeeded'), 'all succeeded');
});

test('a single task too large for any frame rejects its submit with FRAME_TOO_LARGE; the client goes on', { timeout: 60_000 }, async (t) => {
  const { client } = await cluster(t);
  // 200 env entries of 100 KB: 20 MB in one task, above the 16 MiB frame limit.
  const env: Record<string, string> = {};
  for (let i = 0; i < 200; i++) env[`V${i}`] = 'y'.repeat(100_000);
  const small = client.submit({ id: 'small', builtin: 'noop' });
  await assert.rejects(client.submit({ id: 'huge', builtin: 'noop', env }), hasCode(ErrorCode.FRAME_TOO_LARGE));
  assert.equal((await small).status, 'succeeded', 'the other task of the same turn still went out');
});

test('a duplicate id resolves with the pending or buffered result, or rejects TASK_DUPLICATE; it never hangs', { timeout: 60_000 }, async (t) => {
  const { client } = await cluster(t);
  // Pending in this client: the second submit shares the first one's result.
  const first = client.submit({ id: 'dup', builtin: 'sleep', ms: 200 });
  const second = client.submit({ id: 'dup', builtin: 'noop' });
  const [a, b] = await Promise.all([first, second]);
  assert.equal(a.id, 'dup');
  assert.equal(a.status, 'succeeded');
  assert.equal(a, b, 'the same result');
  // Finished and handed out (and acknowledged) before: the dispatcher names it known, finished.
  await assert.rejects(client.submit({ id: 'dup', builtin: 'noop' }), hasCode(ErrorCode.TASK_DUPLICATE));
  // Finished and still unread in the SDK's buffer (submitted with no waiter): that result answers.
  await client.submitMany([{ id: 'buffered', builtin: 'noop' }]);
  const again = await client.submit({ id: 'buffered', builtin: 'noop' });
  assert.equal(again.id, 'buffered');
  assert.equal(again.status, 'succeeded');
  assert.equal(client.outstanding, 0, 'taken out of the results stream: not handed out twice');
  // And the session still works.
  assert.equal((await client.submit({ id: 'after', builtin: 'noop' })).status, 'succeeded');
});

test('connect to an address where nothing listens rejects once with UNREACHABLE naming the URL and the socket error, and leaves nothing behind', { timeout: 120_000 }, async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const states: string[] = [];
    const started = Date.now();
    await assert.rejects(connect('127.0.0.1:1', { connectTimeoutMs: 500, onState: (c: StateChange) => states.push(c.state) }), (e: unknown) => {
      assert.ok(e instanceof FalconetError, String(e));
      assert.equal(e.code, ErrorCode.UNREACHABLE);
      assert.match(e.message, /ws:\/\/127\.0\.0\.1:1/);
      assert.match(e.message, /ECONNREFUSED/);
      return true;
    });
    assert.ok(Date.now() - started >= 450, 'it kept dialing until the timeout');
    assert.deepEqual(states, ['connecting', 'closed']);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(unhandled, []);
  // The same in a process of its own: it catches the rejection, and then exits by itself because
  // no timer or socket is left (the code before the fix died 10 s later on an unhandled rejection).
  const index = fileURLToPath(new URL('../client/index.js', import.meta.url));
  const script = `
    import { connect } from ${JSON.stringify(index)};
    process.on('unhandledRejection', (r) => { console.log('UNHANDLED', String(r)); process.exitCode = 3; });
    connect('127.0.0.1:1', { connectTimeoutMs: 300 }).then(() => console.log('CONNECTED'), (e) => console.log('REJECTED', e.code));
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  assert.equal(out.trim(), 'REJECTED UNREACHABLE');
  assert.equal(code, 0);
});

test('a URL that is no dispatcher address rejects with USAGE at once', { timeout: 10_000 }, async () => {
  for (const bad of ['http://127.0.0.1:1', 'localhost', 'not a url', 'ftp://x:1']) {
    await assert.rejects(connect(bad, { connectTimeoutMs: 300 }), hasCode(ErrorCode.USAGE), bad);
  }
});

test('close() rejects every pending submit, submitMany and request with CLIENT_CLOSED; later calls reject too', { timeout: 120_000 }, async (t) => {
  const { url, client } = await cluster(t, []); // no executor: nothing finishes
  const submits = [client.submit({ id: 'c1', builtin: 'noop' }), client.submit({ id: 'c2', builtin: 'noop' })];
  const many = client.submitMany([{ id: 'c3', builtin: 'noop' }]);
  // Handlers first, as a program awaiting them would have: the rejections come during close().
  const outcomes = [...submits, many].map((p) => p.then(() => 'resolved', (e: unknown) => e));
  await waitFor('queued', async () => (await status(url)).tasks.queued === 3);
  await client.close();
  for (const outcome of await Promise.all(outcomes)) assert.ok(hasCode(ErrorCode.CLIENT_CLOSED)(outcome), String(outcome));
  let late: Promise<unknown> | undefined;
  assert.doesNotThrow(() => (late = client.submit({ builtin: 'noop' })), 'never a synchronous throw');
  await assert.rejects(late!, hasCode(ErrorCode.CLIENT_CLOSED));
  await assert.rejects(client.cancel(['c1']), hasCode(ErrorCode.CLIENT_CLOSED));
  assert.equal(client.state, 'closed');
});

test('results(): a next() abandoned in a race still delivers on the next call; return() detaches', { timeout: 120_000 }, async (t) => {
  const { client } = await cluster(t);
  const it = client.results();
  const timedOut = Symbol('timed out');
  const first = it.next();
  const raced = await Promise.race([first, sleep(50, timedOut)]);
  assert.equal(raced, timedOut);
  // Asked again while the abandoned next() still waits: the same promise, so its result is not
  // lost. (Asked only after it resolved, the iterator cannot tell an abandoned promise from one
  // that was read: since acceptance and result can share a frame, ask before submitting.)
  const again = it.next();
  assert.equal(again, first);
  await client.submitMany([{ id: 'r1', builtin: 'noop' }], { until: 'accepted' });
  const got = await again;
  assert.equal(got.done, false);
  assert.equal(got.value?.id, 'r1');
  // A pending next() of an iterator that is returned ends, and the result goes elsewhere.
  const it2 = client.results();
  const pending = it2.next();
  await it2.return!();
  assert.deepEqual(await pending, { value: undefined, done: true });
  await client.submitMany([{ id: 'r2', builtin: 'noop' }], { until: 'accepted' });
  const it3 = client.results();
  assert.equal((await it3.next()).value?.id, 'r2');
});

test('the connection state is observable: connected, reconnecting when the dispatcher goes, connected (resumed) when it is back', { timeout: 60_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const data = procs.tmpDir();
  const d = await startDispatcher(procs, ['--data-dir', data]);
  const changes: StateChange[] = [];
  const client = await connect(d.url, { onState: (c) => changes.push(c), initialBackoffMs: 50, maxBackoffMs: 200 });
  t.after(() => client.close());
  assert.equal(client.state, 'connected');
  const down = new Promise<void>((resolve) => {
    const off = client.onState((c) => c.state === 'reconnecting' && (off(), resolve()));
  });
  d.proc.kill('SIGKILL');
  await down;
  assert.equal(client.state, 'reconnecting');
  const up = new Promise<StateChange>((resolve) => {
    const off = client.onState((c) => c.state === 'connected' && (off(), resolve(c)));
  });
  await startDispatcher(procs, ['--data-dir', data, '--port', String(d.port)]);
  const back = await up;
  assert.equal(back.resumed, true);
  assert.deepEqual(changes.map((c) => c.state), ['connecting', 'connected', 'reconnecting', 'connected']);
});
