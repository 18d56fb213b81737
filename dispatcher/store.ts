/**
 * The embedded durable store: SQLite in WAL mode through better-sqlite3 (docs/architecture.md
 * says why). It is the core's Journal: every state change is buffered here as it happens and
 * written in one transaction per event-loop turn (group commit) by `commit()`, which the adapter
 * calls before it sends any acknowledgement. A task accepted and dispatched in the same turn is
 * one INSERT, not an INSERT and an UPDATE.
 *
 * Tables are keyed so that no secondary index is needed: tasks by (session, uid), which makes a
 * session's rows contiguous (cheap to collect) and appends in order.
 */
import { accessSync, constants, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { ErrorCode, FalconetError, type ExecutorInfo, type TaskResult, type TaskSpec } from '../protocol/index.js';
import type { DispatcherCore, RestoredTask } from './core.js';
import type { ExecutorRecord, Journal, SessionRecord, TaskRecord } from './model.js';

const SCHEMA_VERSION = 1;
const STATE = { queued: 0, dispatched: 1, finished: 2 } as const;
const STATE_NAME = ['queued', 'dispatched', 'finished'] as const;
/** Rows per multi-row INSERT: fewer statement executions per committed task. */
const INSERT_BATCH = 64;

export interface StoreOptions {
  dataDir: string;
  /** `full`: fsync at every commit (survives power loss). `normal`: survives a process crash. */
  sync: 'full' | 'normal';
}

type TaskRow = [session: string, uid: number, id: string, spec: Buffer | null, state: number, attempt: number, lost: number, executor: string | null, submittedAt: number, dispatchedAt: number | null, seq: number | null, result: Buffer | null];

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, acked INTEGER NOT NULL, lease_ms INTEGER);
CREATE TABLE IF NOT EXISTS tasks (
  session TEXT NOT NULL, uid INTEGER NOT NULL, id TEXT NOT NULL, spec BLOB, state INTEGER NOT NULL,
  attempt INTEGER NOT NULL, lost INTEGER NOT NULL, executor TEXT, submitted_at INTEGER NOT NULL,
  dispatched_at INTEGER, seq INTEGER, result BLOB,
  PRIMARY KEY (session, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS executors (id TEXT PRIMARY KEY, info BLOB NOT NULL, registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at INTEGER NOT NULL);
`;

function storeError(err: unknown, file: string): FalconetError {
  const code = (err as { code?: string }).code ?? '';
  const msg = (err as Error).message;
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    return new FalconetError(ErrorCode.STORE_CORRUPT, `the store ${file} is corrupted or truncated (${msg}); refusing to start on it. Move it aside to start empty, or restore it from a backup`);
  }
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
    return new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the store ${file} is held by another dispatcher`);
  }
  if (code === 'SQLITE_FULL') return new FalconetError(ErrorCode.STORE_FAILED, `the disk holding ${file} is full: ${msg}`);
  return new FalconetError(ErrorCode.STORE_UNAVAILABLE, `cannot use the store ${file}: ${msg}`);
}

export class SqliteStore implements Journal {
  readonly file: string;
  readonly #db: Database.Database;
  readonly #packr = new Packr({ useRecords: false });
  #inserts: TaskRow[] = [];
  /** Rows inserted in this batch, by uid: later changes in the same batch edit them in place. */
  #pending = new Map<number, TaskRow>();
  #ops: Array<() => void> = [];
  #sessions = new Set<SessionRecord>();
  readonly #st;

  private constructor(readonly options: StoreOptions, private readonly log: Logger) {
    this.file = join(options.dataDir, 'falconet.db');
    try {
      mkdirSync(options.dataDir, { recursive: true });
      accessSync(options.dataDir, constants.W_OK);
    } catch (err) {
      throw new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the data dir ${options.dataDir} is not writable: ${(err as Error).message}`);
    }
    try {
      this.#db = new Database(this.file, { timeout: 0 });
      // Exclusive before WAL: no shared-memory index, and a second dispatcher cannot open it.
      this.#db.pragma('locking_mode = EXCLUSIVE');
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
      const check = this.#db.pragma('quick_check', { simple: true });
      if (check !== 'ok') throw Object.assign(new Error(String(check)), { code: 'SQLITE_CORRUPT' });
      this.#db.exec(SCHEMA);
      const version = this.#db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).pluck().get() as string | undefined;
      if (version === undefined) this.#db.prepare(`INSERT INTO meta VALUES ('schema', ?)`).run(String(SCHEMA_VERSION));
      else if (Number(version) !== SCHEMA_VERSION) {
        throw new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the store ${this.file} has schema ${version}; this dispatcher reads ${SCHEMA_VERSION}`);
      }
    } catch (err) {
      if (err instanceof FalconetError) throw err;
      throw storeError(err, this.file);
    }
    const db = this.#db;
    const row = '(?,?,?,?,?,?,?,?,?,?,?,?)';
    this.#st = {
      insertOne: db.prepare(`INSERT OR IGNORE INTO tasks VALUES ${row}`),
      insertMany: db.prepare(`INSERT OR IGNORE INTO tasks VALUES ${Array(INSERT_BATCH).fill(row).join(',')}`),
      dispatch: db.prepare('UPDATE tasks SET state = 1, attempt = ?, executor = ?, dispatched_at = ? WHERE session = ? AND uid = ?'),
      requeue: db.prepare('UPDATE tasks SET state = 0, lost = ?, executor = NULL WHERE session = ? AND uid = ?'),
      finish: db.prepare('UPDATE tasks SET state = 2, attempt = ?, executor = ?, seq = ?, result = ?, spec = NULL WHERE session = ? AND uid = ?'),
      session: db.prepare('INSERT INTO sessions VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET acked = excluded.acked, lease_ms = excluded.lease_ms'),
      dropSessionTasks: db.prepare('DELETE FROM tasks WHERE session = ?'),
      dropSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
      executor: db.prepare('INSERT OR REPLACE INTO executors VALUES (?, ?, ?)'),
      dropExecutor: db.prepare('DELETE FROM executors WHERE id = ?'),
      putInstance: db.prepare('INSERT OR REPLACE INTO instances VALUES (?, ?, ?)'),
      dropInstance: db.prepare('DELETE FROM instances WHERE id = ?'),
    };
  }

  /** Opens (or creates) the store under `dataDir`; throws FalconetError STORE_* when it cannot. */
  static open(options: StoreOptions, log: Logger): SqliteStore {
    return new SqliteStore(options, log);
  }

  /** Loads everything kept into the core. Returns what was found, for the log. */
  recover(core: DispatcherCore): { sessions: number; queued: number; dispatched: number; finished: number; executors: number } {
    const db = this.#db;
    const counts = { sessions: 0, queued: 0, dispatched: 0, finished: 0, executors: 0 };
    try {
      for (const e of db.prepare('SELECT info, registered_at FROM executors').raw().iterate() as Iterable<[Buffer, number]>) {
        core.restoreExecutor(this.#packr.unpack(e[0]) as ExecutorInfo, e[1]);
        counts.executors++;
      }
      for (const s of db.prepare('SELECT id, created_at, acked, lease_ms FROM sessions').raw().iterate() as Iterable<[string, number, number, number | null]>) {
        core.restoreSession(s[0], s[1], s[2], s[3]);
        counts.sessions++;
      }
      const rows = db.prepare('SELECT session, uid, id, spec, state, attempt, lost, executor, submitted_at, dispatched_at, seq, result FROM tasks ORDER BY uid').raw().iterate() as Iterable<TaskRow>;
      for (const r of rows) {
        const state = STATE_NAME[r[4]];
        const restored: RestoredTask = {
          session: r[0], uid: r[1], id: r[2], spec: r[3] ? (this.#packr.unpack(r[3]) as TaskSpec) : null, state,
          attempt: r[5], lost: r[6], executor: r[7], submittedAt: r[8], dispatchedAt: r[9], seq: r[10],
          result: r[11] ? (this.#packr.unpack(r[11]) as TaskResult) : null,
        };
        core.restoreTask(restored);
        counts[state]++;
      }
    } catch (err) {
      throw storeError(err, this.file);
    }
    core.finishRestore();
    return counts;
  }

  // ---- Journal: buffer now, write at commit -----------------------------------------------------

  taskAccepted(t: TaskRecord): void {
    const row: TaskRow = [t.session.id, t.uid, t.id, this.#packr.pack(t.spec), STATE.queued, t.attempt, t.lost, null, t.submittedAt, null, null, null];
    this.#inserts.push(row);
    this.#pending.set(t.uid, row);
  }

  taskDispatched(t: TaskRecord): void {
    const row = this.#pending.get(t.uid);
    const executor = t.executor?.info.id ?? null;
    if (row) {
      row[4] = STATE.dispatched;
      row[5] = t.attempt;
      row[7] = executor;
      row[9] = t.dispatchedAt;
    } else {
      const args = [t.attempt, executor, t.dispatchedAt, t.session.id, t.uid];
      this.#ops.push(() => this.#st.dispatch.run(args));
    }
  }

  taskRequeued(t: TaskRecord): void {
    const row = this.#pending.get(t.uid);
    if (row) {
      row[4] = STATE.queued;
      row[6] = t.lost;
      row[7] = null;
    } else {
      const args = [t.lost, t.session.id, t.uid];
      this.#ops.push(() => this.#st.requeue.run(args));
    }
  }

  taskFinished(t: TaskRecord, seq: number, result: TaskResult): void {
    const blob = this.#packr.pack(result);
    const executor = t.executor?.info.id ?? null;
    const row = this.#pending.get(t.uid);
    if (row) {
      row[3] = null;
      row[4] = STATE.finished;
      row[5] = t.attempt;
      row[7] = executor;
      row[10] = seq;
      row[11] = blob;
    } else {
      const args = [t.attempt, executor, seq, blob, t.session.id, t.uid];
      this.#ops.push(() => this.#st.finish.run(args));
    }
  }

  sessionChanged(s: SessionRecord): void {
    this.#sessions.add(s); // written once per commit, however often its cursor moved
  }

  sessionCollected(s: SessionRecord): void {
    this.#sessions.delete(s);
    const id = s.id;
    this.#ops.push(() => {
      this.#st.dropSessionTasks.run(id);
      this.#st.dropSession.run(id);
    });
  }

  executorRegistered(e: ExecutorRecord): void {
    const args = [e.info.id, this.#packr.pack({ ...e.info, running: [] }), e.registeredAt];
    this.#ops.push(() => this.#st.executor.run(args));
  }

  executorRemoved(e: ExecutorRecord): void {
    const id = e.info.id;
    this.#ops.push(() => this.#st.dropExecutor.run(id));
  }

  /** Provisioner instance records (the elastic-executors issue). */
  putInstance(id: string, record: unknown): void {
    const args = [id, JSON.stringify(record), Date.now()];
    this.#ops.push(() => this.#st.putInstance.run(args));
  }

  dropInstance(id: string): void {
    this.#ops.push(() => this.#st.dropInstance.run(id));
  }

  instances(): Array<{ id: string; record: unknown }> {
    return (this.#db.prepare('SELECT id, record FROM instances').all() as Array<{ id: string; record: string }>).map((r) => ({ id: r.id, record: JSON.parse(r.record) }));
  }

  /** Writes everything buffered since the last commit in one transaction. Throws STORE_FAILED. */
  commit(): void {
    if (this.#inserts.length === 0 && this.#ops.length === 0 && this.#sessions.size === 0) return;
    const inserts = this.#inserts;
    const ops = this.#ops;
    const sessions = this.#sessions;
    this.#inserts = [];
    this.#ops = [];
    this.#sessions = new Set();
    this.#pending.clear();
    try {
      this.#db.transaction(() => {
        let i = 0;
        for (; i + INSERT_BATCH <= inserts.length; i += INSERT_BATCH) this.#st.insertMany.run(inserts.slice(i, i + INSERT_BATCH).flat());
        for (; i < inserts.length; i++) this.#st.insertOne.run(inserts[i]);
        for (const op of ops) op();
        for (const s of sessions) this.#st.session.run(s.id, s.createdAt, s.acked, s.leaseMs);
      })();
    } catch (err) {
      throw storeError(err, this.file);
    }
  }

  /** Bytes the store occupies (database plus write-ahead log), for status and tests. */
  size(): number {
    const pages = this.#db.pragma('page_count', { simple: true }) as number;
    const pageSize = this.#db.pragma('page_size', { simple: true }) as number;
    return pages * pageSize;
  }

  close(): void {
    try {
      this.commit();
    } finally {
      this.#db.close();
    }
  }
}
