/**
 * Results stored as the bytes the dispatcher thread encoded (issue 13, CPU per durable task): the
 * SQLite store keeps each result as a compact tuple (dispatcher/sqlite.ts, encodeResult) that the
 * writer thread stores without decoding it. What must hold: every field of every kind of result
 * reads back identically, after a kill -9 too; files of schema 2 (results as maps) still read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { connect, type TaskResult } from '../client/index.js';
import { ErrorCode, TaskResultSchema } from '../protocol/index.js';
import { RESULT_EXTRAS, RESULT_FIELDS, SCHEMA_VERSION, blobs, decodeResult, encodeResult } from '../dispatcher/sqlite.js';
import { Procs, exited, freePort, startDispatcher, startExecutor, waitExecutors, type Dispatcher } from './helpers.js';

const FULL: TaskResult = {
  id: 'r1', status: 'failed', exitCode: null, signal: 'SIGKILL', stdout: 'out ✓\n', stderr: 'err', truncated: true, attempts: 3, executor: 'e-1',
  timings: { submitted: 1764740000123.5, dispatched: 1764740000125, started: null, finished: 1764740000127 },
  error: { code: ErrorCode.TASK_TIMEOUT, message: 'too slow' },
  environment: { name: 'venv', key: 'k1', reused: false, phases: [{ phase: 'setup', at: 1 }] },
  cached: true,
};
const PLAIN: TaskResult = {
  id: 'g:7', status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, attempts: 1, executor: null,
  timings: { submitted: 1, dispatched: null, started: null, finished: 2 },
};

/** The stored result blobs and the schema version of the store in `dataDir` (opening it replays the WAL). */
function storedResults(dataDir: string): { results: Buffer[]; schema: unknown } {
  const db = new Database(join(dataDir, 'falconet.db'));
  try {
    return { results: db.prepare('SELECT result FROM results').pluck().all() as Buffer[], schema: db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).pluck().get() };
  } finally {
    db.close();
  }
}

test('a result encoded for the file decodes to the same result, optional keys absent or present; every schema key is covered', { timeout: 10_000 }, () => {
  for (const r of [FULL, PLAIN, { ...PLAIN, error: { code: FULL.error!.code, message: 'm' } }, { ...PLAIN, cached: false }]) {
    const back = decodeResult(encodeResult(r));
    assert.deepStrictEqual(back, r);
    assert.deepStrictEqual(Object.keys(back).sort(), Object.keys(r).sort());
  }
  // A key added to the protocol's result must be added to the codec, or it would be dropped.
  assert.deepStrictEqual([...RESULT_FIELDS, ...RESULT_EXTRAS].sort(), Object.keys(TaskResultSchema.properties).sort());
  // Schema 2 stored maps: still read as they are.
  assert.deepStrictEqual(decodeResult(blobs.pack(FULL)), FULL);
  assert.ok(encodeResult(PLAIN).length < blobs.pack(PLAIN).length / 2, 'the tuple is the smaller encoding');
});

async function kill9(d: Dispatcher): Promise<void> {
  const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
}

/** What a comparison of results should see: their JSON form (the wire and the store both drop undefined). */
const plain = (r: TaskResult): unknown => JSON.parse(JSON.stringify(r));

test('results of every kind survive a kill -9 as the tuples the writer stored, and read back identically after the restart', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  const args = ['--port', String(port), '--data-dir', dataDir];
  let d = await startDispatcher(procs, args);
  startExecutor(procs, d.url, ['--slots', '4']);
  await waitExecutors(d.url, 1);

  const client = await connect(d.url);
  const specs = [
    { id: 'noop', builtin: 'noop' as const },
    { id: 'echo', cmd: ['sh', '-c', 'echo "out ✓"; echo err >&2'] },
    { id: 'exit3', cmd: ['sh', '-c', 'exit 3'] },
    { id: 'missing', cmd: ['/nonexistent/falconet-test-binary'] },
    { id: 'memo1', builtin: 'noop' as const, cacheKey: 'same-key' },
  ];
  const delivered = new Map<string, TaskResult>();
  for (const r of await Promise.all(specs.map((s) => client.submit(s)))) delivered.set(r.id, r);
  // The same cacheKey after the first finished: the memoized result (cached: true) is stored too.
  const cached = await client.submit({ id: 'memo2', builtin: 'noop', cacheKey: 'same-key' });
  delivered.set(cached.id, cached);
  assert.equal(cached.cached, true);
  assert.equal(delivered.get('exit3')!.exitCode, 3);
  assert.ok(delivered.get('missing')!.error, 'an unstartable command carries its error');
  assert.match(delivered.get('echo')!.stdout, /out ✓/);
  await client.close();
  // Every result above was acknowledged to the client, so it is on disk: no clean shutdown.
  await kill9(d);

  // The file as the writer left it (opening it replays the WAL): every result a tuple.
  const { results: stored, schema } = storedResults(dataDir);
  assert.equal(schema, String(SCHEMA_VERSION));
  assert.equal(stored.length, delivered.size);
  for (const blob of stored) assert.ok(Array.isArray(blobs.unpack(blob)), 'a stored result is a tuple');

  d = await startDispatcher(procs, args);
  const again = await connect(d.url);
  try {
    for (const [id, result] of delivered) {
      const info = await again.task(id);
      assert.deepStrictEqual(plain(info.result!), plain(result), `task ${id} reads back as it was delivered`);
    }
  } finally {
    await again.close();
  }
});

test('a store of schema 2 (results as maps) opens as the current schema: its results read as they were, new ones are tuples', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  const args = ['--port', String(port), '--data-dir', dataDir];
  let d = await startDispatcher(procs, args);
  startExecutor(procs, d.url);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  const old = await client.submit({ id: 'old', cmd: ['sh', '-c', 'echo old'] });
  await client.close();
  await kill9(d);
  // Make the file what a dispatcher of schema 2 wrote: its result as a map, the version 2.
  const db = new Database(join(dataDir, 'falconet.db'));
  db.prepare('UPDATE results SET result = ?').run(blobs.pack(decodeResult(db.prepare('SELECT result FROM results').pluck().get() as Buffer)));
  db.prepare(`UPDATE meta SET value = '2' WHERE key = 'schema'`).run();
  db.exec('ALTER TABLE sessions DROP COLUMN counters'); // schema 4's
  db.close();

  d = await startDispatcher(procs, args);
  const again = await connect(d.url);
  try {
    assert.deepStrictEqual(plain((await again.task('old')).result!), plain(old));
    await again.submit({ id: 'new', builtin: 'noop' });
  } finally {
    await again.close();
  }
  await kill9(d);
  const { results: rows, schema } = storedResults(dataDir);
  assert.equal(schema, String(SCHEMA_VERSION));
  assert.deepStrictEqual(rows.map((b) => Array.isArray(blobs.unpack(b))).sort(), [false, true]);
});
