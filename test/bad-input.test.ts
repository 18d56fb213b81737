/**
 * Bad input of every kind gets a stable code; the dispatcher keeps serving everyone else and
 * loses nothing it had accepted. Frames are fed raw, as the ws test suite does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pack } from 'msgpackr';
import { connect, FalconetError, PROTOCOL_VERSION } from '../client/index.js';
import { Procs, TEST_TRANSPORT, exited, freePort, raw, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, waitForLine, within } from './helpers.js';

const hello = { t: 'hello', v: PROTOCOL_VERSION, role: 'client', caps: [] };

test('malformed, unknown, invalid and oversized input: clear codes, nothing accepted is lost', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--max-frame-bytes', '65536', '--hello-timeout-ms', '300']);

  // Accepted before the storm, with no executor yet: these must all complete afterwards.
  const good = await connect(d.url);
  t.after(() => good.close());
  const results = Array.from({ length: 50 }, (_, i) => good.submit({ id: `keep${i}`, builtin: 'noop' }));

  const garbage = await raw(d.url);
  garbage.ws.send(Buffer.from([0xc1, 0xff, 0x00, 0x13]));
  assert.equal((await garbage.next()).code, 'BAD_FRAME');
  assert.equal((await garbage.closed).reason, 'BAD_FRAME');

  const text = await raw(d.url);
  text.ws.send('{"t":"hello"}');
  assert.equal((await text.next()).code, 'BAD_FRAME');

  const notArray = await raw(d.url);
  notArray.ws.send(pack({ t: 'hello' }));
  assert.equal((await notArray.next()).code, 'BAD_FRAME');

  const noHello = await raw(d.url);
  noHello.ws.send(pack([{ t: 'submit', ref: 1, tasks: [] }]));
  assert.equal((await noHello.next()).code, 'HELLO_REQUIRED');

  const future = await raw(d.url);
  future.ws.send(pack([{ ...hello, v: 99 }]));
  const mismatch = await future.next();
  assert.equal(mismatch.code, 'VERSION_MISMATCH');
  assert.equal(mismatch.retryable, false);

  const silent = await raw(d.url);
  assert.equal((await silent.next()).code, 'HELLO_TIMEOUT');

  // Per-message problems cost only the message; the connection keeps working.
  const c = await raw(d.url);
  c.ws.send(pack([hello, { t: 'frobnicate' }, { t: 'submit', ref: 5, tasks: 'nope' }, { t: 'submit', ref: 6, tasks: [{ builtin: 'noop' }, { cmd: 'not-an-array' }] }]));
  assert.equal((await c.next((m) => m.t === 'welcome')).t, 'welcome');
  assert.equal((await c.next((m) => m.t === 'error')).code, 'UNKNOWN_MESSAGE');
  const invalid = await c.next((m) => m.t === 'error');
  assert.deepEqual([invalid.code, invalid.ref], ['INVALID_MESSAGE', 5]);
  const accepted = await c.next((m) => m.t === 'accepted');
  assert.equal(accepted.accepted, 1);
  assert.equal((accepted.rejected as Array<{ code: string }>)[0].code, 'TASK_INVALID');

  // Oversized: between the limit and twice it we answer FRAME_TOO_LARGE; beyond, the transport
  // cuts it off unread (ws with a 1009 close frame; uWS drops the TCP connection: 1006).
  // (After the hello: before it, the smaller --hello-max-bytes applies; see fuzz.test.ts.)
  const big = await raw(d.url);
  big.ws.send(pack([hello]));
  await big.next((m) => m.t === 'welcome');
  big.ws.send(pack([{ t: 'submit', ref: 1, tasks: [{ builtin: 'noop', env: { X: 'x'.repeat(60_000), Y: 'y'.repeat(20_000) } }] }]));
  assert.equal((await big.next((m) => m.t === 'error')).code, 'FRAME_TOO_LARGE');
  assert.equal((await big.closed).code, 1009);
  const huge = await raw(d.url);
  huge.ws.send(Buffer.alloc(200_000, 0x90));
  assert.equal((await huge.closed).code, TEST_TRANSPORT === 'uws' ? 1006 : 1009);

  // The dispatcher still serves, and every task accepted before the storm completes.
  startExecutor(procs, d.url);
  const all = await Promise.all(results);
  assert.equal(all.length, 50);
  assert.ok(all.every((r) => r.status === 'succeeded'));
});

test('a client that stops reading is dropped as a slow consumer; on resume it gets every result once', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--max-buffered-bytes', '65536']);
  startExecutor(procs, d.url, ['--slots', '8']);
  await waitExecutors(d.url, 1);
  const slow = await raw(d.url);
  slow.ws.send(pack([{ ...hello, session: 'slow' }]));
  await slow.next((m) => m.t === 'welcome');
  // 200 results of 50 KB each: far more than the socket buffers and the 64 KiB allowed to wait.
  const tasks = Array.from({ length: 200 }, (_, i) => ({ id: `big${i}`, cmd: ['head', '-c', '50000', '/dev/zero'] }));
  slow.ws.send(pack([{ t: 'submit', ref: 1, tasks }]));
  await slow.next((m) => m.t === 'accepted');
  const socket = (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  socket.pause();
  // Read again as soon as the dispatcher drops us: it closes the socket for good 2 s after its
  // close frame (outbound.ts), and what it sent before must be read by then to be seen.
  await waitForLine(d.proc, /slow consumer dropped/, 30_000, 'stderr');
  socket.resume();
  const closed = await within(slow.closed, 15_000, 'the slow consumer to be closed');
  const error = slow.messages.find((m) => m.t === 'error');
  assert.equal(error?.code, 'SLOW_CONSUMER', `the error sent before the close: ${JSON.stringify(error)}`);
  assert.equal(error?.retryable, true);
  assert.deepEqual(closed, { code: 1008, reason: 'SLOW_CONSUMER' });
  await waitFor('every task finished', async () => (await status(d.url)).tasks.finished.succeeded === 200, 60_000);
  // Resuming the session (as the SDK does after any drop) gets every result, each once.
  const back = await connect(d.url, { session: 'slow' });
  t.after(() => back.close());
  const ids = new Set<string>();
  for await (const r of back.results()) {
    assert.equal(r.status, 'succeeded');
    assert.ok(!ids.has(r.id), `${r.id} twice`);
    ids.add(r.id);
    if (back.outstanding === 0) break;
  }
  // The raw client consumed none of them (it never acknowledged): all 200 come again.
  assert.equal(ids.size, 200);
  assert.equal((await status(d.url)).tasks.finished.succeeded, 200);
});

test('tokens: a wrong token and a token of the wrong role are refused with codes', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--client-token', 'c-secret', '--executor-token', 'e-secret']);
  await assert.rejects(connect(d.url, { token: 'nope' }), (e: FalconetError) => e.code === 'AUTH_FAILED');
  await assert.rejects(connect(d.url), (e: FalconetError) => e.code === 'AUTH_FAILED');
  await assert.rejects(connect(d.url, { token: 'e-secret' }), (e: FalconetError) => e.code === 'AUTH_WRONG_ROLE');

  const impostor = startExecutor(procs, d.url, [], { FALCONET_TOKEN: 'c-secret' });
  let stderr = '';
  impostor.stderr!.on('data', (b: Buffer) => (stderr += b));
  const { code } = await exited(impostor, 20_000, 'the refused executor');
  assert.equal(code, 2, 'an executor refused for good exits instead of retrying forever');
  assert.match(stderr, /AUTH_WRONG_ROLE/);

  startExecutor(procs, d.url, ['--token', 'e-secret']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url, { token: 'c-secret' });
  assert.equal((await client.submit({ cmd: ['echo', 'ok'] })).stdout, 'ok\n');
  await client.close();

  const leaked = await runCli(procs, ['run', '--', 'sh', '-c', 'echo "[$FALCONET_TOKEN]"'], { env: { FALCONET_URL: d.url, FALCONET_TOKEN: 'c-secret' } });
  assert.equal(leaked.stdout, '[]\n', 'tasks do not see the executor credential');
});

test('a non-loopback address without tokens is refused unless --insecure', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const r = await runCli(procs, ['dispatcher', '--host', '0.0.0.0', '--port', '0']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /INSECURE_CONFIG/);
});

test('bad CLI arguments: usage errors with exit code 2', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const cases: string[][] = [
    ['frobnicate'],
    ['run'],
    ['run', '--bogus', '--', 'true'],
    ['executor', '--slots', 'many'],
    ['executor', '--mode', 'sideways'],
    ['dispatcher', '--port', '99999'],
    ['dispatcher', '--lease-ms', '100', '--heartbeat-ms', '100'],
    ['cancel'],
    ['run', '--env', 'NOEQUALS', '--', 'true'],
    ['watch', 'some-session', '--connect-timeout', 'soon'],
  ];
  for (const args of cases) {
    const r = await runCli(procs, args);
    assert.equal(r.code, 2, `falconet ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /USAGE/, args.join(' '));
  }
});

test('a client command whose reader goes away (| head) exits quietly, not with an unhandled EPIPE', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const cli = procs.spawn(['status', '--dispatcher', d.url]);
  cli.stdout!.destroy(); // the reader is gone before the command writes a byte
  let stderr = '';
  cli.stderr!.on('data', (b: Buffer) => (stderr += b));
  const { code } = await exited(cli, 20_000, 'falconet status with its stdout gone');
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|Unhandled/);
});

test('a client command against a port nobody answers: UNREACHABLE after --connect-timeout, exit 3', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const started = Date.now();
  const r = await runCli(procs, ['run', '--dispatcher', `ws://127.0.0.1:${port}`, '--connect-timeout', '0.5', '--', 'true']);
  assert.equal(r.code, 3, r.stderr); // issue 11: 3 is "dispatcher unreachable or credential refused"
  assert.match(r.stderr, /UNREACHABLE: no dispatcher answered/);
  assert.ok(Date.now() - started < 20_000, 'gave up at its timeout, not hung');
});

test('submit: a bad line from stdin is reported with its line number; reading stops there (exit 2), --skip-invalid goes on', { timeout: 120_000 }, async (t) => {
  // Issue 11 changed this: from stdin, submit stops at the first bad line (JSON or schema) unless
  // --skip-invalid; it used to skip bad lines and submit the rest. test/cli-input.test.ts has more.
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url);
  await waitExecutors(d.url, 1);
  const input = ['{"builtin":"noop","id":"a"}', '{not json', '{"cmd":"oops","id":"b"}', '{"builtin":"noop","id":"c"}'].join('\n');
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '--file', '-'], { input });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /<stdin>:2: not JSON/);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l).id), ['a']);
  const skip = await runCli(procs, ['submit', '--dispatcher', d.url, '--file', '-', '--skip-invalid'], { input: input.replace('"a"', '"a2"').replace('"c"', '"c2"') });
  assert.equal(skip.code, 0, skip.stderr);
  assert.match(skip.stderr, /<stdin>:2: not JSON/);
  assert.match(skip.stderr, /<stdin>:3: \/cmd: Expected array/);
  const lines = skip.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => [l.id, l.line, l.status]).sort(), [['a2', 1, 'succeeded'], ['c2', 4, 'succeeded']]);
});
