/**
 * The PostgreSQL store against a real PostgreSQL (test/postgres.ts): tasks through a dispatcher on
 * it, kill -9 and restart on the same database, servers and databases that cannot be used,
 * schema versions and concurrent migration, and the partition fence.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TaskResult } from '../client/index.js';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { PgStore } from '../dispatcher/pg-store.js';
import { PARTITIONS, SCHEMA_VERSION, partitionOf } from '../dispatcher/pg-schema.js';
import { Procs, exited, freePort, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, type Dispatcher } from './helpers.js';
import { query, startPostgres, type PgServer } from './postgres.js';

let server: PgServer | null = null;
let skip: string | false = false;
let dbs = 0;

before(async () => {
  const s = await startPostgres();
  if ('skip' in s) skip = s.skip;
  else server = s;
});
after(() => server?.stop());

/** A fresh database on the shared server, for one test. */
const freshDb = () => server!.newDatabase(`t${++dbs}`);


function jsonLines(text: string): TaskResult[] {
  return text.trim() === '' ? [] : text.trim().split('\n').map((l) => JSON.parse(l) as TaskResult);
}

/** Every id of `ids` exactly once among `results`, all succeeded. */
function exactlyOnce(results: TaskResult[], ids: string[]): void {
  assert.equal(results.length, ids.length, 'one result per task, none twice');
  const seen = new Set(results.map((r) => r.id));
  assert.equal(seen.size, ids.length);
  for (const id of ids) assert.ok(seen.has(id), `result for ${id}`);
  const bad = results.filter((r) => r.status !== 'succeeded').slice(0, 3);
  assert.deepEqual(bad, []);
}

test('tasks through a dispatcher on PostgreSQL: every result once, and the rows are in the database', { timeout: 180_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const url = await freshDb();
  const d = await startDispatcher(procs, ['--store', url]);
  startExecutor(procs, d.url, ['--slots', '8']);
  await waitExecutors(d.url, 1);
  const ids = Array.from({ length: 1000 }, (_, i) => `a${i}`);
  const input = ids.map((id) => JSON.stringify({ id, builtin: 'noop' })).join('\n');
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '--session', 'pg-a', '--file', '-'], { input, timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  exactlyOnce(jsonLines(r.stdout), ids);
  // Acknowledged means committed: the results are rows of the session's partition already.
  const [row] = await query<{ n: string; p: number }>(url, 'SELECT count(*) AS n, min(partition) AS p FROM results WHERE session = $1', ['pg-a']);
  assert.equal(Number(row.n), 1000);
  assert.equal(row.p, partitionOf('pg-a'));
  const [exec] = await query<{ n: string }>(url, 'SELECT count(*) AS n FROM executors WHERE dispatcher IS NOT NULL');
  assert.equal(Number(exec.n), 1, 'the executor is recorded with its dispatcher');
  // The longest client lease the protocol allows (30 days) is more than a 32-bit int of ms.
  const client = await connect(d.url, { leaseMs: 30 * 24 * 3600 * 1000 });
  t.after(() => client.close());
  assert.equal((await client.submit({ builtin: 'noop' })).status, 'succeeded');
  const [lease] = await query<{ lease_ms: string }>(url, 'SELECT lease_ms FROM sessions WHERE id = $1', [client.session.id]);
  assert.equal(Number(lease.lease_ms), 30 * 24 * 3600 * 1000);
});

test('kill -9 of a PostgreSQL-backed dispatcher mid-run, twice: every task finishes exactly once', { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const url = await freshDb();
  const port = await freePort();
  const start = () => startDispatcher(procs, ['--port', String(port), '--store', url]);
  let d: Dispatcher = await start();
  startExecutor(procs, d.url, ['--slots', '40']);
  startExecutor(procs, d.url, ['--slots', '40']);
  await waitExecutors(d.url, 2);
  const n = 5000;
  const ids = Array.from({ length: n }, (_, i) => `k${i}`);
  const input = ids.map((id) => JSON.stringify({ id, builtin: 'sleep', ms: 10 })).join('\n');
  const sub = await runCli(procs, ['submit', '--dispatcher', d.url, '--detach', '--file', '-'], { input });
  assert.equal(sub.code, 0, sub.stderr);
  const session = sub.stdout.trim();
  // Detached submit returned: every task is acknowledged, so every one must finish.
  const watch = procs.spawn(['watch', '--dispatcher', d.url, session]);
  let watched = '';
  let watchErr = '';
  watch.stdout!.on('data', (b: Buffer) => (watched += b));
  watch.stderr!.on('data', (b: Buffer) => (watchErr += b));
  const watchDone = exited(watch, 240_000, 'watch to see every result and exit');
  await waitFor('watch attached', async () => (await status(d.url)).sessions.connected === 1);
  for (const share of [0.2, 0.5]) {
    // Crash points: once a share of the run has finished (counted in the database), mid-stream.
    await waitFor(`${share * 100}% of the tasks finished`, async () => {
      const [row] = await query<{ n: string }>(url, 'SELECT count(*) AS n FROM results');
      return Number(row.n) >= share * n;
    }, 120_000);
    const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
    d.proc.kill('SIGKILL');
    await exit;
    d = await start();
  }
  const w = await watchDone;
  assert.equal(w.code, 0, `watch exited ${w.code}: ${watchErr.slice(-2000)}`);
  exactlyOnce(jsonLines(watched), ids);
  const [row] = await query<{ n: string }>(url, 'SELECT count(*) AS n FROM results WHERE session = $1', [session]);
  assert.equal(Number(row.n), n, 'one stored result per task');
});

test('after kill -9, a task query and a memo hit read what PostgreSQL stored, for ids with NUL too', { timeout: 120_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const url = await freshDb();
  const port = await freePort();
  const start = () => startDispatcher(procs, ['--port', String(port), '--store', url]);
  let d = await start();
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);
  const file = join(procs.tmpDir(), 'runs');
  // Appends a line per run: the file says how often the command really ran.
  const cmd = ['sh', '-c', `echo run >> '${file}'; echo ran`];
  // PostgreSQL text holds no NUL; the wire's ids may (the store escapes them).
  const session = 'sess\u0000m';
  let client = await connect(d.url, { session, sessionKey: 'k'.repeat(15) + '\u0000' });
  const first = await client.submit({ id: 'm\u00001', cmd, cacheKey: 'key\u0000m' });
  assert.equal(first.status, 'succeeded');
  await client.close(); // its results acknowledged: from now on only the store holds m1's result
  const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
  d = await start();
  await waitExecutors(d.url, 1);
  client = await connect(d.url, { session, sessionKey: 'k'.repeat(15) + '\u0000' });
  t.after(() => client.close());
  const info = await client.task('m\u00001');
  assert.equal(info.result?.status, 'succeeded', JSON.stringify(info));
  assert.equal(info.result?.stdout.trim(), 'ran');
  const second = await client.submit({ id: 'm\u00002', cmd, cacheKey: 'key\u0000m' });
  assert.equal(second.cached, true, 'the memoized result, read from the database');
  assert.equal(second.stdout.trim(), 'ran');
  assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 1, 'the command ran once');
});

test('a server that does not answer, or a database that does not exist: STORE_UNAVAILABLE with what to do, no hang', { timeout: 120_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const nobody = `postgres://falconet:secret@127.0.0.1:${await freePort()}/falconet`;
  let r = await runCli(procs, ['dispatcher', '--port', '0', '--store', nobody], { timeoutMs: 60_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /STORE_UNAVAILABLE.*no PostgreSQL server answers there/);
  assert.doesNotMatch(r.stderr, /secret/, 'the password is not printed');
  // FALCONET_STORE_URL is read when --store is absent.
  const missing = server!.url.replace(/\/falconet$/, '/no_such_db');
  r = await runCli(procs, ['dispatcher', '--port', '0'], { env: { FALCONET_STORE_URL: missing }, timeoutMs: 60_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /STORE_UNAVAILABLE.*database does not exist/);
});

test('the server goes away mid-run: the dispatcher acknowledges nothing more and exits with STORE_FAILED', { timeout: 120_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  t.after(() => procs.killAll());
  // A server of its own: this test stops it.
  const own = await startPostgres();
  assert.ok(!('skip' in own));
  t.after(() => own.stop());
  const d = await startDispatcher(procs, ['--store', own.url]);
  let stderr = '';
  d.proc.stderr!.on('data', (b: Buffer) => (stderr += b));
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close().catch(() => {}));
  assert.equal((await client.submit({ builtin: 'noop' })).status, 'succeeded');
  const exit = exited(d.proc, 60_000, 'the dispatcher after its store went away');
  await own.stop();
  // The next change needs a commit, which cannot happen: it is never acknowledged.
  const late = client.submitMany([{ id: 'late', builtin: 'noop' }], { until: 'accepted' });
  late.catch(() => {});
  const { code } = await exit;
  assert.equal(code, 1);
  assert.match(stderr, /STORE_FAILED/);
});

test('schema: a newer version is refused; dispatchers starting together on a fresh database all migrate; an older one is migrated', { timeout: 120_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const newer = await freshDb();
  await (await PgStore.open({ url: newer, owner: 'setup' })).close();
  await query(newer, `UPDATE falconet_meta SET value = $1 WHERE key = 'schema'`, [String(SCHEMA_VERSION + 1)]);
  const r = await runCli(procs, ['dispatcher', '--port', '0', '--store', newer], { timeoutMs: 60_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`STORE_UNAVAILABLE.*schema ${SCHEMA_VERSION + 1}`));

  const fresh = await freshDb();
  // Stores opened at once in this process (the tightest race) and two dispatcher processes.
  const [stores] = await Promise.all([
    Promise.all(Array.from({ length: 4 }, (_, i) => PgStore.open({ url: fresh, owner: `o${i}` }))),
    startDispatcher(procs, ['--store', fresh]),
    startDispatcher(procs, ['--store', fresh]),
  ]);
  await Promise.all(stores.map((s) => s.close()));
  const [meta] = await query<{ value: string }>(fresh, `SELECT value FROM falconet_meta WHERE key = 'schema'`);
  assert.equal(meta.value, String(SCHEMA_VERSION));
  const [parts] = await query<{ n: string }>(fresh, 'SELECT count(*) AS n FROM partitions');
  assert.equal(Number(parts.n), PARTITIONS, 'the partitions were filled once');

  // A database at version 1 (before fleet reports and drain orders) is brought up to date at start.
  const old = await freshDb();
  await (await PgStore.open({ url: old, owner: 'setup' })).close();
  await query(old, `ALTER TABLE dispatchers DROP COLUMN fleet; DROP TABLE drains; UPDATE falconet_meta SET value = '1' WHERE key = 'schema'`);
  await startDispatcher(procs, ['--store', old]);
  const [migrated] = await query<{ value: string }>(old, `SELECT value FROM falconet_meta WHERE key = 'schema'`);
  assert.equal(migrated.value, String(SCHEMA_VERSION));
  await query(old, `SELECT fleet FROM dispatchers; SELECT executor FROM drains`);
});

test('a commit whose fence no longer holds is refused with STORE_FENCED and writes nothing', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const url = await freshDb();
  const store = await PgStore.open({ url, owner: 'me' });
  t.after(() => store.close().catch(() => {}));
  await query(url, `UPDATE partitions SET owner = 'me', epoch = 3 WHERE id IN (1, 2)`);
  let fence = { ids: [1, 2], epochs: [3, 2] }; // partition 2 moved on to epoch 3: ours is stale
  store.setFence(() => fence);
  store.putInstance('i-stale', { state: 'running' });
  await assert.rejects(store.commit()!, (err: unknown) => err instanceof FalconetError && err.code === ErrorCode.STORE_FENCED && /no longer owns 1 of the 2/.test(err.message));
  assert.deepEqual(await query(url, 'SELECT id FROM instances'), [], 'nothing of the fenced batch is written');
  await query(url, `UPDATE partitions SET owner = 'other' WHERE id = 1`);
  fence = { ids: [1], epochs: [3] }; // right epoch, another owner
  store.putInstance('i-owner', {});
  await assert.rejects(store.commit()!, (err: unknown) => err instanceof FalconetError && err.code === ErrorCode.STORE_FENCED);
  fence = { ids: [2], epochs: [3] }; // held: the commit goes through, on the same connection
  store.putInstance('i-held', {});
  await store.commit();
  assert.deepEqual(await query(url, 'SELECT id FROM instances'), [{ id: 'i-held' }]);
});
