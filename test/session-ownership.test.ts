/**
 * Sessions belong to whoever opened them (issue 14, item 3): resuming, watching and cancelling
 * another client's session needs its key, cancelling across sessions the administrator token,
 * over WebSocket (SDK, CLI) and HTTP alike, and the keys survive a kill -9 of the dispatcher.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../client/index.js';
import { Procs, exited, freePort, runCli, startDispatcher, startExecutor, waitExecutors, waitFor, type Dispatcher } from './helpers.js';

const CLIENT = 'client-secret-0001';
const ADMIN = 'admin-secret-00001';
const EXEC = 'executor-secret-01';
const codeOf = (e: unknown) => (e as { code?: string }).code;

async function start(procs: Procs, port: number, dataDir: string): Promise<Dispatcher> {
  return startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir, '--client-token', CLIENT, '--executor-token', EXEC, '--admin-token', ADMIN]);
}

test('sessions belong to whoever opened them: keys for resume, watch and cancel; the admin token across sessions; kept across kill -9', { timeout: 240_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  let d = await start(procs, port, dataDir);
  startExecutor(procs, d.url, ['--slots', '4'], { FALCONET_TOKEN: EXEC });
  await waitExecutors(d.url, 1, CLIENT);
  const owner = ['--dispatcher', d.url, '--token', CLIENT];
  // A stranger holds the client token but not the key: its own, empty state dir.
  const stranger = { env: { FALCONET_STATE_DIR: procs.tmpDir() } };

  // t0 and t1 wait for a label nobody has, so they are still there to cancel at the end.
  const input = Array.from({ length: 8 }, (_, i) => `{"id":"t${i}","cmd":["sleep","0.3"]${i < 2 ? ',"labels":{"pool":"none"}' : ''}}`).join('\n') + '\n';
  const sub = await runCli(procs, ['submit', '--detach', ...owner, '-'], { input });
  assert.equal(sub.code, 0, sub.stderr);
  const session = sub.stdout.trim();
  assert.match(sub.stderr, /its key is in /);

  // The key is durable: a kill -9 and a restart on the same data dir change nothing below.
  const gone = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await gone;
  d = await start(procs, port, dataDir);

  // Without the key: the SDK is refused at once (no redial loop), the CLI exits 3 saying why.
  await assert.rejects(connect(d.url, { token: CLIENT, session, connectTimeoutMs: 20_000 }), (e) => codeOf(e) === 'SESSION_FORBIDDEN');
  await assert.rejects(connect(d.url, { token: CLIENT, session, sessionKey: 'not-the-key-000000' }), (e) => codeOf(e) === 'SESSION_FORBIDDEN');
  const watchNoKey = await runCli(procs, ['watch', ...owner, session], stranger);
  assert.equal(watchNoKey.code, 3, watchNoKey.stderr);
  assert.match(watchNoKey.stderr, /SESSION_FORBIDDEN: session \S+ belongs to the client that opened it/);
  const cancelNoKey = await runCli(procs, ['cancel', ...owner, '--session', session, '--all'], stranger);
  assert.equal(cancelNoKey.code, 3, cancelNoKey.stderr);
  const cancelById = await runCli(procs, ['cancel', ...owner, 't0', 't1'], stranger);
  assert.equal(cancelById.code, 3, cancelById.stderr);
  assert.match(cancelById.stdout, /cancelled 0/, cancelById.stderr);
  assert.match(cancelById.stderr, /SESSION_FORBIDDEN/);

  // Over HTTP as well: submitting into it or cancelling across sessions.
  const http = d.url.replace(/^ws/, 'http');
  const post = (path: string, body: unknown, token = CLIENT) =>
    fetch(http + path, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const intrude = await post('/api/tasks', { session, tasks: [{ builtin: 'noop' }] });
  assert.equal(intrude.status, 403);
  assert.equal(((await intrude.json()) as { error: { code: string } }).error.code, 'SESSION_FORBIDDEN');
  const everywhere = await post('/api/tasks/cancel', { ids: ['t0'] });
  assert.equal(everywhere.status, 403);
  assert.equal(((await everywhere.json()) as { error: { code: string } }).error.code, 'ADMIN_REQUIRED');

  // The owner (the key saved by its submit) cancels and watches: nothing was cancelled before.
  const mine = await runCli(procs, ['cancel', ...owner, '--session', session, 't0', 't1']);
  assert.equal(mine.code, 0, mine.stderr);
  assert.match(mine.stdout, /cancelled 2/);
  const watch = await runCli(procs, ['watch', ...owner, session], { timeoutMs: 90_000 });
  assert.equal(watch.code, 1, watch.stderr);
  const lines = watch.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: string; status: string });
  assert.deepEqual(lines.map((r) => `${r.id} ${r.status}`).sort(), ['t0 cancelled', 't1 cancelled', ...[2, 3, 4, 5, 6, 7].map((i) => `t${i} succeeded`)]);

  // Cancelling in another session needs its key; in every session, the administrator token.
  const other = await connect(d.url, { token: CLIENT });
  t.after(() => other.close());
  const long = other.submit({ id: 'long', cmd: ['sleep', '60'] });
  const long2 = other.submit({ id: 'long2', cmd: ['sleep', '60'] });
  const admin = await connect(d.url, { token: ADMIN });
  t.after(() => admin.close());
  await waitFor('the long tasks accepted', () => admin.task('long2').then(() => true, () => false), 30_000);
  const plain = await connect(d.url, { token: CLIENT });
  t.after(() => plain.close());
  await assert.rejects(plain.cancel([], { session: '*', all: true }), (e) => codeOf(e) === 'ADMIN_REQUIRED');
  await assert.rejects(plain.cancel(['long'], { session: other.session.id }), (e) => codeOf(e) === 'SESSION_FORBIDDEN');
  await assert.rejects(plain.cancel(['long'], { session: other.session.id, key: 'wrong-key-00000000' }), (e) => codeOf(e) === 'SESSION_FORBIDDEN');
  assert.equal(await plain.cancel(['long'], { session: other.session.id, key: other.session.key }), 1, 'with the key');
  assert.equal(await admin.cancel(['long2'], { session: '*' }), 1, 'the administrator, in every session');
  assert.equal((await long).status, 'cancelled');
  assert.equal((await long2).status, 'cancelled');
});
