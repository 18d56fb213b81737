/**
 * Several dispatchers (issue 15, item 3), with real dispatchers on port 0, each with its own data
 * dir: executors, the SDK and the CLI given a list move to the next dispatcher when one dies or
 * cannot be reached; a dispatcher's MOVED sends them where their session lives, and a redirect
 * loop backs off. A "dead" URL is a port that was bound and then closed. The MOVED peers are tiny
 * `ws` servers here that speak the real codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect } from 'node:net';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, ErrorCode, FalconetError, type StateChange } from '../client/index.js';
import { compileInbound, DispatcherToClientSchemas, PROTOCOL_VERSION, type DispatcherToClient } from '../protocol/index.js';
import { movedPeer } from './moved-peer.js';
import { Link, type RetryInfo } from '../protocol/link.js';
import { MAX_MOVES } from '../protocol/dial-plan.js';
import { requestAny } from '../client/http-get.js';
import { FAST, Procs, freePort, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, waitForLine, within } from './helpers.js';

const deadUrl = async () => `ws://127.0.0.1:${await freePort()}`;

/** Resolves with the first state change that `pred` accepts. */
function stateWhere(client: { onState(l: (c: StateChange) => void): () => void }, pred: (c: StateChange) => boolean): Promise<StateChange> {
  return new Promise((resolve) => {
    const off = client.onState((c) => {
      if (pred(c)) {
        off();
        resolve(c);
      }
    });
  });
}

test('an executor given A,B registers with B when A is killed (SIGKILL) and runs B’s tasks', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const a = await startDispatcher(procs);
  // B is not there yet: wherever the executor's random order starts, it can only register with A.
  const portB = await freePort();
  startExecutor(procs, `${a.url},ws://127.0.0.1:${portB}`, ['--id', 'mover', '--slots', '2']);
  await waitExecutors(a.url, 1);
  const b = await startDispatcher(procs, ['--port', String(portB)]);
  process.kill(a.proc.pid!, 'SIGKILL');
  await waitFor('the executor to register with B', async () => (await status(b.url)).executors.some((e) => e.id === 'mover' && e.state !== 'disconnected'));
  const client = await connect(b.url, { connectTimeoutMs: 30_000 });
  t.after(() => client.close());
  const results = await Promise.all([1, 2, 3].map((i) => client.submit({ cmd: ['echo', `on B ${i}`] })));
  for (const [i, r] of results.entries()) {
    assert.equal(r.status, 'succeeded', JSON.stringify(r));
    assert.equal(r.executor, 'mover');
    assert.equal(r.stdout, `on B ${i + 1}\n`);
  }
});

test('an SDK client given dead,B connects to B; a client on A whose A dies moves to B, says so, and its new tasks finish there', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const [a, b] = await Promise.all([startDispatcher(procs), startDispatcher(procs)]);
  startExecutor(procs, a.url, ['--id', 'on-a']);
  startExecutor(procs, b.url, ['--id', 'on-b']);
  await Promise.all([waitExecutors(a.url, 1), waitExecutors(b.url, 1)]);

  const first = await connect(`${await deadUrl()},${b.url}`, { connectTimeoutMs: 30_000 });
  t.after(() => first.close());
  assert.equal(first.dispatcher, b.url);
  const r = await first.submit({ cmd: ['echo', 'past the dead one'] });
  assert.equal(r.status, 'succeeded');
  assert.equal(r.executor, 'on-b');

  const changes: StateChange[] = [];
  const mover = await connect([a.url, b.url], { connectTimeoutMs: 30_000, onState: (c) => changes.push(c) });
  t.after(() => mover.close());
  assert.equal(mover.dispatcher, a.url, 'a client starts at the first of its list');
  assert.equal((await mover.submit({ cmd: ['echo', 'on A'] })).executor, 'on-a');
  const moved = stateWhere(mover, (c) => c.state === 'connected');
  process.kill(a.proc.pid!, 'SIGKILL');
  const back = await within(moved, 60_000, 'the client to connect to B');
  assert.equal(back.dispatcher, b.url);
  const lost = changes.find((c) => c.state === 'reconnecting')!;
  assert.equal(lost.dispatcher, a.url, 'the state change names the dispatcher lost…');
  assert.equal(lost.next, b.url, '…and the one dialed next');
  // Single-node dispatchers do not share sessions: B does not know this one (the lead's PG tests
  // cover resuming across dispatchers). What the client can say, it says.
  assert.equal(back.resumed, false);
  const after = await mover.submit({ cmd: ['echo', 'on B now'] });
  assert.equal(after.status, 'succeeded');
  assert.equal(after.executor, 'on-b');
});

test('MOVED: a peer that redirects the hello to B gets the SDK welcomed by B, where its tasks finish', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const b = await startDispatcher(procs);
  startExecutor(procs, b.url, ['--id', 'b-exec']);
  await waitExecutors(b.url, 1);
  const peer = await movedPeer(() => b.url);
  t.after(() => peer.close());
  const client = await connect(peer.url, { connectTimeoutMs: 30_000 });
  t.after(() => client.close());
  assert.equal(client.dispatcher, b.url);
  assert.equal(peer.connections(), 1);
  const r = await client.submit({ cmd: ['echo', 'redirected'] });
  assert.equal(r.status, 'succeeded');
  assert.equal(r.stdout, 'redirected\n');
});

test('MOVED loop: a peer that always redirects to itself makes the link back off after a few redirects', { timeout: 60_000 }, async (t) => {
  const peer = await movedPeer((self) => self);
  t.after(() => peer.close());
  const retries: RetryInfo[] = [];
  let settle!: () => void;
  const enough = new Promise<void>((resolve) => (settle = resolve));
  // The window: until the third backoff, or 50 connections (what a loop without a bound reaches at once).
  peer.onConnection(() => peer.connections() >= 50 && settle());
  const link = new Link<DispatcherToClient>({
    url: peer.url,
    validate: compileInbound<DispatcherToClient>(DispatcherToClientSchemas),
    hello: () => ({ t: 'hello', v: PROTOCOL_VERSION, role: 'client', caps: ['batch'] }),
    onUp: () => assert.fail('the peer never welcomes'),
    onMessage: () => {},
    onFatal: (err) => assert.fail(`not fatal: ${err.code} ${err.message}`),
    onRetry: (r) => {
      retries.push(r);
      if (retries.filter((x) => x.backoff).length >= 3) settle();
    },
    initialBackoffMs: 1,
    maxBackoffMs: 5,
  });
  link.start();
  await within(enough, 30_000, 'three backoffs or 50 connections');
  const connections = peer.connections();
  await link.close();
  assert.ok(connections <= MAX_MOVES + 3, `${connections} connections before the third backoff: the redirects are not bounded`);
  assert.deepEqual(retries.slice(0, MAX_MOVES + 1).map((r) => r.backoff), [...Array(MAX_MOVES).fill(false), true]);
  assert.ok(retries.every((r) => r.moved === peer.url));
});

test('CLI: status and tasks with --dispatcher dead,B answer from B; a malformed entry exits 2 (USAGE) naming it', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const b = await startDispatcher(procs);
  const list = `${await deadUrl()},${b.url}`;
  const st = await runCli(procs, ['status', '--json', '--dispatcher', list]);
  assert.equal(st.code, 0, st.stderr);
  assert.ok(JSON.parse(st.stdout).tasks, st.stdout);
  startExecutor(procs, b.url, ['--id', 'cli-exec']);
  const run = await runCli(procs, ['run', '--', 'echo', 'via FALCONET_URL'], { env: { FALCONET_URL: list } });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, 'via FALCONET_URL\n');
  const tasks = await runCli(procs, ['tasks', '--json', '--dispatcher', list]);
  assert.equal(tasks.code, 0, tasks.stderr);
  const bad = await runCli(procs, ['status', '--dispatcher', `${b.url},http//nope`]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /USAGE: dispatcher list entry 2 of 2: "http\/\/nope" is not a dispatcher address/);
});

test('a DNS name with several addresses: each is a candidate, dialed by address (resolver injected: no /etc/hosts here)', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const b = await startDispatcher(procs);
  startExecutor(procs, b.url, ['--id', 'named']);
  await waitExecutors(b.url, 1);
  // The dispatcher listens on 127.0.0.1 only, so 127.0.0.2 (also loopback) refuses.
  const refused = await new Promise<string>((resolve) => {
    const s = netConnect({ host: '127.0.0.2', port: b.port });
    s.once('connect', () => (s.destroy(), resolve('connected')));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  assert.equal(refused, 'ECONNREFUSED');
  const asked: string[] = [];
  const client = await connect(`ws://dispatchers.test:${b.port}`, {
    connectTimeoutMs: 30_000,
    resolve: async (host) => (asked.push(host), [{ address: '127.0.0.2', family: 4 }, { address: '127.0.0.1', family: 4 }]),
  });
  t.after(() => client.close());
  assert.deepEqual(asked, ['dispatchers.test']);
  assert.equal(client.dispatcher, `ws://dispatchers.test:${b.port}`, 'the URL keeps its name (Host header, TLS server name)');
  assert.equal((await client.submit({ cmd: ['echo', 'by address'] })).stdout, 'by address\n');
  // Only the refusing address: the error names it, so it was dialed, not the name (ENOTFOUND).
  await assert.rejects(
    connect(`ws://dispatchers.test:${b.port}`, { connectTimeoutMs: 1500, resolve: async () => [{ address: '127.0.0.2', family: 4 }] }),
    (e: unknown) => e instanceof FalconetError && e.code === ErrorCode.UNREACHABLE && /ECONNREFUSED 127\.0\.0\.2/.test(e.message),
  );
});

test('wss:// to a name dialed by address: the certificate is verified for the name (it holds no IP), over ws and https', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dir = procs.tmpDir();
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=failover test CA']);
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:dispatchers.test\nbasicConstraints=CA:FALSE\n');
  openssl(['req', ...ec, '-keyout', 'd.key', '-out', 'd.csr', '-subj', '/CN=dispatchers.test']);
  openssl(['x509', '-req', '-in', 'd.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'd.pem', '-days', '2', '-extfile', 'ext.cnf']);
  const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
  const proc = procs.spawn(['dispatcher', '--port', '0', ...FAST, '--data-dir', procs.tmpDir(), '--tls-cert', join(dir, 'd.pem'), '--tls-key', join(dir, 'd.key')]);
  const [, port] = await waitForLine(proc, /listening on wss:\/\/127\.0\.0\.1:(\d+)/, 60_000);
  const url = `wss://dispatchers.test:${port}`;
  const resolve = async () => [{ address: '127.0.0.1', family: 4 }];
  const client = await connect(url, { ca, resolve, connectTimeoutMs: 30_000 });
  t.after(() => client.close());
  assert.equal(client.dispatcher, url);
  const res = await requestAny([url], '/api/status', { ca, resolve, timeoutMs: 30_000 });
  assert.equal(res.status, 200);
  assert.equal(res.url, `https://dispatchers.test:${port}/api/status`);
});
