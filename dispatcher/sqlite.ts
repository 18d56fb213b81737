/**
 * The SQLite layer shared by the dispatcher thread (open, check, recover) and the store's writer
 * thread (commits): schema, pragmas, statements, and the mapping of SQLite errors to our codes.
 *
 * Tables are keyed so that no secondary index is needed: tasks by (session, uid) and results by
 * (session, seq), which makes a session's rows contiguous (cheap to collect) and turns both
 * inserts into appends. A result is never an update of its task's row: finishing a task appends
 * one row, the cheapest write SQLite has.
 */
import { accessSync, constants, mkdirSync } from 'node:fs';
import Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import { ErrorCode, FalconetError, type ExecutorInfo, type TaskResult, type TaskSpec } from '../protocol/index.js';
import type { StoredCounters } from './status.js';

export const SCHEMA_VERSION = 4;

/**
 * Steps from each older schema to the next, applied in order at open, in one transaction with
 * the version they bring. Fresh files get SCHEMA (the latest) directly.
 */
const MIGRATIONS: Record<number, string> = {
  // 1 → 2: sessions carry their key (issue 14); sessions of version 1 have none (NULL).
  1: 'ALTER TABLE sessions ADD COLUMN key TEXT',
  // 2 → 3: new result rows are tuples (encodeResult); the maps of version 2 still read. Nothing to
  // rewrite: the version only keeps a dispatcher that reads maps alone off a file with tuples.
  2: '',
  // 3 → 4: the task counters ride in a session row the commit writes anyway (batchWriter).
  3: 'ALTER TABLE sessions ADD COLUMN counters TEXT',
};
export const TASK_STATE = { queued: 0, dispatched: 1, finished: 2 } as const;
export const TASK_STATE_NAME = ['queued', 'dispatched', 'finished'] as const;

/** One unfinished task's whole state, as written: one row per commit, however often it changed. */
export type TaskRow = [
  session: string,
  uid: number,
  id: string,
  /** The spec on the row's first write (an object in a batch, msgpack in the file); else null. */
  spec: TaskSpec | Uint8Array | null,
  state: number,
  attempt: number,
  lost: number,
  executor: string | null,
  submittedAt: number,
  dispatchedAt: number | null,
];

/**
 * A finished task's result: appended, never updated; its presence is what "finished" means. The
 * SQLite store carries it already encoded ({@link encodeResult}, on the dispatcher thread); the
 * PostgreSQL store carries the object and encodes it at commit.
 */
export type ResultRow = [session: string, seq: number, uid: number, result: TaskResult | Uint8Array];

/** The non-task changes of a commit, in order. */
export type StoreOp =
  | { op: 'dropSession'; id: string }
  | { op: 'executor'; id: string; info: ExecutorInfo; registeredAt: number }
  | { op: 'dropExecutor'; id: string }
  | { op: 'putInstance'; id: string; record: string; at: number }
  | { op: 'dropInstance'; id: string }
  /** A memoized result (memo.ts), in the commit of the result it copies. */
  | { op: 'memo'; key: string; result: TaskResult | Uint8Array; at: number }
  | { op: 'dropMemo'; before: number };

/**
 * A row as a batch carries it to the writer: its session as an index into {@link CommitBatch.ids}
 * (a batch names few sessions and many rows: one 36-character string per session rather than per
 * row to encode, decode and collect), resolved to the id again on the writer thread.
 */
export type InBatch<R> = R extends [string, ...infer Rest] ? [number | string, ...Rest] : never;

/** Everything one commit writes. */
export interface CommitBatch {
  /** The sessions of `rows` and `results`, by their index there. */
  ids: string[];
  rows: Array<InBatch<TaskRow>>;
  results: Array<InBatch<ResultRow>>;
  ops: StoreOp[];
  sessions: Array<[id: string, createdAt: number, acked: number, leaseMs: number | null, key: string | null]>;
  /** The core's task counters as JSON (StoredCounters), kept with the changes they count (batchWriter). */
  counters?: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, acked INTEGER NOT NULL, lease_ms INTEGER, key TEXT, counters TEXT);
CREATE TABLE IF NOT EXISTS tasks (
  session TEXT NOT NULL, uid INTEGER NOT NULL, id TEXT NOT NULL, spec BLOB, state INTEGER NOT NULL,
  attempt INTEGER NOT NULL, lost INTEGER NOT NULL, executor TEXT, submitted_at INTEGER NOT NULL,
  dispatched_at INTEGER,
  PRIMARY KEY (session, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
  session TEXT NOT NULL, seq INTEGER NOT NULL, uid INTEGER NOT NULL, result BLOB NOT NULL,
  PRIMARY KEY (session, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS executors (id TEXT PRIMARY KEY, info BLOB NOT NULL, registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, result BLOB NOT NULL, at INTEGER NOT NULL);
`;

/**
 * Rows per multi-row statement: one statement execution writes this many changes. A batch's
 * remainder (fewer rows) goes out in one statement of its exact size, prepared once and kept,
 * rather than row by row: a commit of n rows costs about n / BATCH + 1 executions.
 */
const BATCH = 64;
/** Inserts new tasks and updates changed ones in one statement; the spec is written once. */
const UPSERT = (rows: number) => `INSERT INTO tasks VALUES ${Array(rows).fill('(?,?,?,?,?,?,?,?,?,?)').join(',')}
  ON CONFLICT (session, uid) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,
    lost = excluded.lost, executor = excluded.executor, dispatched_at = excluded.dispatched_at`;
const APPEND = (rows: number) => `INSERT OR IGNORE INTO results VALUES ${Array(rows).fill('(?,?,?,?)').join(',')}`;

/** Multi-row statements of one table by row count (1..BATCH), prepared on first use. */
class Batched {
  readonly #byRows: Array<Database.Statement | undefined> = [];
  /** One parameter array per size, refilled for every execution: no garbage per row. */
  readonly #params: unknown[][] = [];
  constructor(
    private readonly db: Database.Database,
    private readonly sql: (rows: number) => string,
  ) {}

  /** Writes `rows` in ceil(rows / BATCH) executions. */
  run(rows: unknown[][]): void {
    for (let i = 0; i < rows.length; i += BATCH) {
      const n = Math.min(BATCH, rows.length - i);
      const st = (this.#byRows[n] ??= this.db.prepare(this.sql(n)));
      const params = (this.#params[n] ??= []);
      let k = 0;
      for (let r = i; r < i + n; r++) for (const v of rows[r]) params[k++] = v;
      st.run(params);
    }
  }
}

/** Maps a SQLite (or file system) failure to a stable code with a message that says what to do. */
export function storeError(err: unknown, file: string): FalconetError {
  if (err instanceof FalconetError) return err;
  const code = (err as { code?: string }).code ?? '';
  const msg = (err as Error).message;
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') {
    return new FalconetError(ErrorCode.STORE_CORRUPT, `the store ${file} is corrupted or truncated (${msg}); refusing to start on it. Move it aside to start empty, or restore it from a backup`);
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the store ${file} is held by another dispatcher`);
  }
  if (code.startsWith('SQLITE_FULL')) return new FalconetError(ErrorCode.STORE_FAILED, `the disk holding ${file} is full: ${msg}`);
  return new FalconetError(ErrorCode.STORE_UNAVAILABLE, `cannot use the store ${file}: ${msg}`);
}

/**
 * Opens the store file, creating it and its directory if needed, with the pragmas every
 * connection uses, and checks it: a corrupted or foreign file is refused, never emptied.
 */
export function openDatabase(dataDir: string, file: string, sync: 'full' | 'normal'): Database.Database {
  try {
    mkdirSync(dataDir, { recursive: true });
    accessSync(dataDir, constants.W_OK);
  } catch (err) {
    throw new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the data dir ${dataDir} is not writable: ${(err as Error).message}`);
  }
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { timeout: 0 });
    // Exclusive before WAL: no shared-memory index, and a second dispatcher cannot open it.
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma('journal_size_limit = 67108864'); // truncate the WAL back to 64 MiB after checkpoints
    db.pragma('cache_size = -65536'); // 64 MiB: updates of rows written minutes ago hit memory
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw Object.assign(new Error(String(check)), { code: 'SQLITE_CORRUPT' });
    db.exec(SCHEMA);
    const version = db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).pluck().get() as string | undefined;
    if (version === undefined) db.prepare(`INSERT INTO meta VALUES ('schema', ?)`).run(String(SCHEMA_VERSION));
    else if (Number(version) > SCHEMA_VERSION || !Number.isInteger(Number(version))) {
      throw new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the store ${file} has schema ${version}; this dispatcher reads ${SCHEMA_VERSION} and older`);
    } else migrate(db, Number(version));
    return db;
  } catch (err) {
    db?.close();
    throw storeError(err, file);
  }
}

/** Brings a file of schema `from` to SCHEMA_VERSION, step by step, in one transaction. */
function migrate(db: Database.Database, from: number): void {
  if (from === SCHEMA_VERSION) return;
  db.transaction(() => {
    for (let v = from; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]);
    db.prepare(`UPDATE meta SET value = ? WHERE key = 'schema'`).run(String(SCHEMA_VERSION));
  })();
}

/** The encoding of specs, results and executor infos in the file (self-contained per value). */
export const blobs = new Packr({ useRecords: false });

/** The keys of a result that {@link encodeResult} writes by position, in order; the rest go in a trailing map. */
export const RESULT_FIELDS = ['id', 'status', 'exitCode', 'signal', 'stdout', 'stderr', 'truncated', 'attempts', 'executor', 'timings'] as const;
/** The optional keys of a result, kept in the tuple's trailing map when present. */
export const RESULT_EXTRAS = ['error', 'environment', 'cached'] as const;

/**
 * A result as stored in the SQLite file (schema 3): a msgpack array of its fields by position,
 * the timings flattened, and a map of the optional keys only when one is set. Why not a map: the
 * dispatcher thread encodes it as the task finishes and the writer thread stores the bytes as they
 * come, so the writer no longer decodes every result from the batch and encodes it again as a
 * map; an array of values costs about half a map's encoding (no key strings) and is 78 bytes
 * for a no-op's result against 197 (less to write, checkpoint and read back).
 */
export function encodeResult(r: TaskResult): Uint8Array {
  const t = r.timings;
  const tuple: unknown[] = [r.id, r.status, r.exitCode, r.signal, r.stdout, r.stderr, r.truncated, r.attempts, r.executor, t.submitted, t.dispatched, t.started, t.finished];
  if (r.error !== undefined || r.environment !== undefined || r.cached !== undefined) {
    const extras: Partial<TaskResult> = {};
    if (r.error !== undefined) extras.error = r.error;
    if (r.environment !== undefined) extras.environment = r.environment;
    if (r.cached !== undefined) extras.cached = r.cached;
    tuple.push(extras);
  }
  return blobs.pack(tuple);
}

/** Reads a stored result: a tuple of schema 3 ({@link encodeResult}) or a map of schema 2. */
export function decodeResult(blob: Uint8Array): TaskResult {
  const v = blobs.unpack(blob) as unknown[] | TaskResult;
  if (!Array.isArray(v)) return v;
  const result: TaskResult = {
    id: v[0] as string, status: v[1] as TaskResult['status'], exitCode: v[2] as number | null, signal: v[3] as string | null,
    stdout: v[4] as string, stderr: v[5] as string, truncated: v[6] as boolean, attempts: v[7] as number, executor: v[8] as string | null,
    timings: { submitted: v[9] as number, dispatched: v[10] as number | null, started: v[11] as number | null, finished: v[12] as number },
  };
  return v.length > 13 ? Object.assign(result, v[13] as Partial<TaskResult>) : result;
}

/**
 * The newest task counters kept in the file (see batchWriter: in `meta` or in a session row),
 * and their number, from which the writer numbers the next ones. Counters of schema 3 and older
 * (in `meta`, unnumbered) count as number 0.
 */
export function storedCounters(db: Database.Database): { counters: StoredCounters | null; seq: number } {
  let counters: StoredCounters | null = null;
  let seq = -1;
  const texts = db.prepare(`SELECT value FROM meta WHERE key = 'counters' UNION ALL SELECT counters FROM sessions WHERE counters IS NOT NULL`).pluck().all() as string[];
  for (const text of texts) {
    const { c = 0, ...kept } = JSON.parse(text) as StoredCounters & { c?: number };
    if (c > seq) [counters, seq] = [kept, c];
  }
  return { counters, seq: Math.max(seq, 0) };
}

/**
 * Returns a function that writes one batch in one transaction. Specs and other values arrive as
 * objects and are encoded here, on the writer thread, so the dispatch loop never pays for it;
 * results arrive as the bytes to store (encodeResult, cheaper there than records in the batch).
 */
export function batchWriter(db: Database.Database, countersSeq: number, onStatements?: () => void): (batch: CommitBatch) => void {
  const st = {
    upsert: new Batched(db, UPSERT),
    append: new Batched(db, APPEND),
    dropSessionResults: db.prepare('DELETE FROM results WHERE session = ?'),
    session: db.prepare('INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET acked = excluded.acked, lease_ms = excluded.lease_ms, counters = excluded.counters'),
    dropSessionTasks: db.prepare('DELETE FROM tasks WHERE session = ?'),
    dropSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    executor: db.prepare('INSERT OR REPLACE INTO executors VALUES (?, ?, ?)'),
    dropExecutor: db.prepare('DELETE FROM executors WHERE id = ?'),
    putInstance: db.prepare('INSERT OR REPLACE INTO instances VALUES (?, ?, ?)'),
    dropInstance: db.prepare('DELETE FROM instances WHERE id = ?'),
    meta: db.prepare('INSERT OR REPLACE INTO meta VALUES (?, ?)'),
    memo: db.prepare('INSERT OR REPLACE INTO memo VALUES (?, ?, ?)'),
    dropMemo: db.prepare('DELETE FROM memo WHERE at < ?'),
  };
  return db.transaction((b: CommitBatch) => {
    for (const row of b.rows) {
      row[0] = b.ids[row[0] as number];
      if (row[3] !== null) row[3] = blobs.pack(row[3]);
    }
    for (const row of b.results) {
      row[0] = b.ids[row[0] as number];
      if (!(row[3] instanceof Uint8Array)) row[3] = encodeResult(row[3]);
    }
    st.upsert.run(b.rows);
    st.append.run(b.results);
    // After the task rows: a collected session's delete must see its final rows.
    for (const o of b.ops) {
      switch (o.op) {
        case 'dropSession':
          st.dropSessionTasks.run(o.id);
          st.dropSessionResults.run(o.id);
          st.dropSession.run(o.id);
          break;
        case 'executor':
          st.executor.run(o.id, blobs.pack(o.info), o.registeredAt);
          break;
        case 'dropExecutor':
          st.dropExecutor.run(o.id);
          break;
        case 'putInstance':
          st.putInstance.run(o.id, o.record, o.at);
          break;
        case 'dropInstance':
          st.dropInstance.run(o.id);
          break;
        case 'memo':
          st.memo.run(o.key, blobs.pack(o.result), o.at);
          break;
        case 'dropMemo':
          st.dropMemo.run(o.before);
          break;
      }
    }
    // The counters go where this commit writes anyway: the first session row if there is one
    // (after the drops above, so it survives the commit), else `meta`. A separate `meta` write
    // would add a page to the commit: a fifth of a one-task commit's time with `--sync full`.
    // Each copy carries a number that grows with every commit; recovery takes the highest
    // (storedCounters), so older copies left in other rows are harmless.
    const counters = b.counters === undefined ? null : `{"c":${++countersSeq},${b.counters.slice(1)}`;
    for (let i = 0; i < b.sessions.length; i++) st.session.run(...b.sessions[i], i === 0 ? counters : null);
    if (counters !== null && b.sessions.length === 0) st.meta.run('counters', counters);
    onStatements?.();
  });
}
