/**
 * The µWebSockets.js transport (`--transport uws`), named explicitly so every run covers it
 * (the full protocol suites run over it with FALCONET_TEST_TRANSPORT=uws). Where a behaviour
 * must match, the test runs it on both transports and compares.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pack } from 'msgpackr';
import { connect, FalconetError, PROTOCOL_VERSION } from '../client/index.js';
import { Procs, exited, raw, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, within, noUwsBinary } from './helpers.js';
import { loadUws } from '../dispatcher/transport-uws.js';
import type { StatusSnapshot } from '../dispatcher/status.js';

type Msg = Record<string, unknown>;

const hello = { t: 'hello', v: PROTOCOL_VERSION, role: 'client', caps: [] };
const http = (url: string) => url.replace(/^ws/, 'http').replace('0.0.0.0', '127.0.0.1');


test('uws: bad frames, hello timeout, frame limits and tokens get the codes and close codes ws gives', { skip: noUwsBinary }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--transport', 'uws', '--max-frame-bytes', '65536', '--hello-timeout-ms', '300', '--client-token', 'c-secret', '--executor-token', 'e-secret']);
  const res = await fetch(http(d.url) + '/healthz');
  assert.match(res.headers.get('uwebsockets') ?? '', /\d+/, 'served by µWebSockets.js');

  const garbage = await raw(d.url);
  garbage.ws.send(Buffer.from([0xc1, 0xff, 0x00, 0x13]));
  assert.equal((await garbage.next()).code, 'BAD_FRAME');
  assert.deepEqual(await garbage.closed, { code: 1008, reason: 'BAD_FRAME' });

  const text = await raw(d.url);
  text.ws.send('{"t":"hello"}');
  assert.equal((await text.next()).code, 'BAD_FRAME');

  const noHello = await raw(d.url);
  noHello.ws.send(pack([{ t: 'submit', ref: 1, tasks: [] }]));
  assert.equal((await noHello.next()).code, 'HELLO_REQUIRED');

  const silent = await raw(d.url);
  const timedOut = await silent.next();
  assert.deepEqual([timedOut.code, timedOut.retryable], ['HELLO_TIMEOUT', true]);
  assert.equal((await silent.closed).reason, 'HELLO_TIMEOUT');

  const c = await raw(d.url);
  c.ws.send(pack([{ ...hello, token: 'c-secret' }, { t: 'frobnicate' }, { t: 'submit', ref: 5, tasks: 'nope' }]));
  assert.equal((await c.next((m) => m.t === 'welcome')).t, 'welcome');
  assert.equal((await c.next((m) => m.t === 'error')).code, 'UNKNOWN_MESSAGE');
  const invalid = await c.next((m) => m.t === 'error');
  assert.deepEqual([invalid.code, invalid.ref], ['INVALID_MESSAGE', 5]);

  const big = await raw(d.url);
  big.ws.send(pack([hello, { t: 'submit', ref: 1, tasks: [{ builtin: 'noop', env: { X: 'x'.repeat(70_000) } }] }]));
  assert.equal((await big.next((m) => m.t === 'error')).code, 'FRAME_TOO_LARGE');
  assert.deepEqual(await big.closed, { code: 1009, reason: 'FRAME_TOO_LARGE' });
  const huge = await raw(d.url);
  huge.ws.send(Buffer.alloc(200_000, 0x90));
  assert.equal((await huge.closed).code, 1006, 'beyond twice the limit uWS drops the connection unread (ws: 1009)');

  await assert.rejects(connect(d.url, { token: 'nope' }), (e: FalconetError) => e.code === 'AUTH_FAILED');
  await assert.rejects(connect(d.url, { token: 'e-secret' }), (e: FalconetError) => e.code === 'AUTH_WRONG_ROLE');
  startExecutor(procs, d.url, ['--token', 'e-secret']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url, { token: 'c-secret' });
  assert.equal((await client.submit({ cmd: ['echo', 'over uws'] })).stdout, 'over uws\n');
  await client.close();
});

test('HTTP API: the same status codes, headers and JSON on ws and uws', { skip: noUwsBinary }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const seen: Record<string, unknown[]> = {};
  for (const transport of ['ws', 'uws']) {
    // A non-loopback bind turns HTTP auth on; requests still go to 127.0.0.1 only.
    const d = await startDispatcher(procs, ['--transport', transport, '--host', '0.0.0.0', '--client-token', 'c-secret', '--executor-token', 'e-secret', '--store', 'memory']);
    const url = d.url.replace('0.0.0.0', '127.0.0.1');
    // The same work on both, so that the states compared below are not empty: one executor of
    // the same id, five tasks with the same outcomes.
    const ex = startExecutor(procs, url, ['--id', 'same', '--slots', '2', '--labels', 'k=v', '--token', 'e-secret']);
    await waitExecutors(url, 1, 'c-secret');
    const client = await connect(url, { token: 'c-secret' });
    const outcomes = await Promise.all([
      client.submit({ id: 'a', cmd: ['true'] }),
      client.submit({ id: 'b', cmd: ['sh', '-c', 'exit 3'] }),
      client.submit({ id: 'c', builtin: 'noop' }),
      client.submit({ id: 'd', cmd: ['echo', 'x'] }),
      client.submit({ id: 'e', builtin: 'sleep', ms: 10 }),
    ]);
    assert.deepEqual(outcomes.map((r) => r.status), ['succeeded', 'failed', 'succeeded', 'succeeded', 'succeeded'], transport);
    await client.close();
    await waitFor(`${transport}: the executor idle with 5 completed`, async () => {
      const e = (await status(url, 'c-secret')).executors[0];
      return e?.state === 'idle' && e.completed === 5;
    });
    const get = async (path: string, token?: string) => {
      const res = await fetch(http(d.url) + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      const body = await res.text();
      return [path, res.status, res.headers.get('content-type'), res.headers.get('cache-control'), path === '/metrics' ? body.includes('falconet_tasks_queued') : JSON.parse(body)];
    };
    const st = (await get('/api/status', 'c-secret'))[4] as StatusSnapshot;
    // What differs between two runs by nature (pids, times) is left out of the comparison, and so
    // are the host's addresses: other tests (network namespaces) add and remove interfaces meanwhile.
    const executors = st.executors.map((e) => ({ id: e.id, state: e.state, hostname: e.hostname, slots: e.slots, running: e.running, mode: e.mode, labels: e.labels, version: e.version, completed: e.completed }));
    seen[transport] = [
      await get('/healthz'),
      await get('/api/status'),
      await get('/api/status', 'e-secret'),
      await get('/metrics', 'c-secret'),
      await get('/no/such?x=1', 'c-secret'),
      [st.tasks, executors, st.slots, st.sessions.total],
    ];
    ex.kill('SIGKILL');
    d.proc.kill('SIGKILL');
  }
  assert.deepEqual(seen.uws, seen.ws);
  assert.equal((seen.ws[5] as [{ submitted: number }])[0].submitted, 5, 'the states compared are not empty');
  assert.equal((seen.ws[1] as unknown[])[1], 401, 'status needs the client token');
});

for (const transport of ['ws', 'uws']) {
  const skip = transport === 'uws' ? noUwsBinary : false;
  test(`${transport}: a client that stops reading loses nothing: ~20 MB of results wait and arrive in order`, { skip, timeout: 180_000 }, async (t) => {
    const procs = new Procs();
    t.after(() => procs.killAll());
    const d = await startDispatcher(procs, ['--transport', transport, '--store', 'memory']);
    startExecutor(procs, d.url, ['--slots', '8']);
    await waitExecutors(d.url, 1);
    const c = await raw(d.url);
    const n = 400;
    const tasks = Array.from({ length: n }, (_, i) => ({ id: `big${i}`, cmd: ['sh', '-c', `head -c 50000 /dev/zero | tr '\\0' ${i % 10}`] }));
    c.ws.send(pack([hello, { t: 'submit', ref: 1, tasks }]));
    await c.next((m) => m.t === 'accepted');
    c.ws.pause(); // stop reading: the dispatcher's side of the socket fills up
    await waitFor('every task finished', async () => (await status(d.url)).tasks.finished.succeeded === n, 60_000);
    c.ws.resume();
    const results: Msg[] = [];
    while (results.length < n) results.push(await c.next((m) => m.t === 'result'));
    assert.deepEqual(results.map((m) => m.seq), Array.from({ length: n }, (_, i) => (results[0].seq as number) + i), 'in order, none missing');
    const outs = results.map((m) => m.result as { id: string; stdout: string });
    assert.equal(new Set(outs.map((r) => r.id)).size, n);
    assert.ok(outs.every((r) => r.stdout.length === 50_000 && r.stdout[0] === r.id.at(-1)));
  });

  test(`${transport}: SIGTERM closes every peer with 1001 SHUTTING_DOWN and exits 0`, { skip }, async (t) => {
    const procs = new Procs();
    t.after(() => procs.killAll());
    const d = await startDispatcher(procs, ['--transport', transport, '--store', 'memory']);
    const c = await raw(d.url);
    c.ws.send(pack([hello]));
    await c.next((m) => m.t === 'welcome');
    const exit = exited(d.proc, 15_000, `the ${transport} dispatcher after SIGTERM`);
    d.proc.kill('SIGTERM');
    assert.deepEqual(await within(c.closed, 15_000, 'the close frame'), { code: 1001, reason: 'SHUTTING_DOWN' });
    assert.equal((await exit).code, 0);
  });
}

test('uws that cannot load is TRANSPORT_UNAVAILABLE; a bad --transport is USAGE', { timeout: 120_000 }, async (t) => {
  assert.throws(() => loadUws('no-such-package-for-falconet'), (e: FalconetError) => e.code === 'TRANSPORT_UNAVAILABLE' && /not installed/.test(e.message));
  // A package without a binary for this Node (the package's JS fallback is never used).
  assert.throws(() => loadUws('ws'), (e: FalconetError) => e.code === 'TRANSPORT_UNAVAILABLE' && /no working binary/.test(e.message));
  const procs = new Procs();
  t.after(() => procs.killAll());
  for (const cmd of ['dispatcher', 'up']) {
    const r = await runCli(procs, [cmd, '--port', '0', '--store', 'memory', '--transport', 'quic']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /USAGE: --transport must be ws or uws/);
  }
});
