/**
 * The embedded durable store: SQLite in WAL mode through better-sqlite3 (docs/architecture.md
 * says why). On the dispatcher thread it is the core's Journal: each state change is recorded
 * as it happens (a changed task as its whole current row, so several changes between commits
 * cost one write), and `commit()` hands the batch to the writer thread (store-writer.ts). The
 * adapter sends the acknowledgements a batch implies only once its commit resolves.
 *
 * Recovery reads the file on this thread before the dispatcher serves; the writer thread then
 * takes the file over for the rest of the run.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CommitTrace, TRACE_FILE, traceClock } from './commit-trace.js';
import type Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import { ErrorCode, FalconetError, type ExecutorInfo, type TaskResult, type TaskSpec } from '../protocol/index.js';
import type { DispatcherCore, RestoredTask } from './core.js';
import type { ExecutorRecord, SessionRecord, TaskRecord } from './model.js';
import type { DurableStore, Recovered } from './durable-store.js';
import { TASK_STATE, TASK_STATE_NAME, blobs, decodeResult, encodeResult, openDatabase, storeError, storedCounters, type CommitBatch, type InBatch, type ResultRow, type StoreOp, type TaskRow } from './sqlite.js';
import type { LookupRequest, MemoRequest, WriterData, WriterReply } from './store-writer.js';
import { Buckets } from './histogram.js';
import type { StoredCounters } from './status.js';

export interface StoreOptions {
  dataDir: string;
  /** `full`: fsync at every commit (survives power loss). `normal`: survives a process crash. */
  sync: 'full' | 'normal';
}

export type { Recovered } from './durable-store.js';

export class SqliteStore implements DurableStore {
  readonly file: string;
  /** For people: the file (DurableStore). */
  get name(): string {
    return this.file;
  }
  #db: Database.Database | null;
  #writer: Worker | null = null;
  /** FALCONET_COMMIT_TRACE: each commit's steps timed (commit-trace.ts); null when off. */
  readonly #trace = TRACE_FILE === undefined ? null : new CommitTrace(TRACE_FILE);
  /** Encodes a whole batch for the writer thread: one buffer, records for the repeated shapes. */
  readonly #batchPackr = new Packr({ useRecords: true });
  /** Tasks changed since the last commit: their whole current state, by uid. */
  #rows = new Map<number, TaskRow>();
  #results: ResultRow[] = [];
  #ops: StoreOp[] = [];
  #sessions = new Set<SessionRecord>();
  #n = 0;
  #waiting = new Map<number, { resolve(): void; reject(e: Error): void }>();
  #lookups = new Map<number, (results: Array<Uint8Array | null>) => void>();
  #failure: FalconetError | null = null;
  /** Resolves once the writer thread serves (memo reads may be asked for during recovery). */
  #writerReady: Promise<boolean>;
  #setWriterReady: (ok: boolean) => void = () => {};
  /** The core's task counters, written with every commit (metrics survive a restart). */
  #counters: (() => StoredCounters) | null = null;
  /** The number of the newest counters in the file, handed to the writer (sqlite.ts, storedCounters). */
  #countersSeq = 0;
  /** For /metrics: seconds from handing a batch to the writer until it is on disk, and changes per batch. */
  readonly commitSeconds = new Buckets([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
  readonly batchChanges = new Buckets([1, 4, 16, 64, 256, 1024, 4096, 16384, 65536]);

  private constructor(readonly options: StoreOptions) {
    this.file = join(options.dataDir, 'falconet.db');
    this.#db = openDatabase(options.dataDir, this.file, options.sync);
    this.#writerReady = new Promise((resolve) => (this.#setWriterReady = resolve));
  }

  /** Opens (or creates) the store under `dataDir`; throws FalconetError STORE_* when it cannot. */
  static open(options: StoreOptions): SqliteStore {
    return new SqliteStore(options);
  }

  /** Loads everything kept into the core, then hands the file to the writer thread. */
  async recover(core: DispatcherCore): Promise<Recovered> {
    const db = this.#db!;
    const found: Recovered = { sessions: 0, queued: 0, dispatched: 0, finished: 0, executors: 0, instances: [] };
    try {
      for (const [info, at] of db.prepare('SELECT info, registered_at FROM executors').raw().iterate() as Iterable<[Buffer, number]>) {
        core.restoreExecutor(blobs.unpack(info) as ExecutorInfo, at);
        found.executors++;
      }
      for (const [key, at] of db.prepare('SELECT key, at FROM memo ORDER BY at').raw().iterate() as Iterable<[string, number]>) core.restoreMemo(key, at);
      for (const s of db.prepare('SELECT id, created_at, acked, lease_ms, key FROM sessions').raw().iterate() as Iterable<[string, number, number, number | null, string | null]>) {
        core.restoreSession(s[0], s[1], s[2], s[3], s[4]);
        found.sessions++;
      }
      const results = new Map<number, [seq: number, result: Buffer, session: string]>();
      for (const [session, seq, uid, result] of db.prepare('SELECT session, seq, uid, result FROM results').raw().iterate() as Iterable<[string, number, number, Buffer]>) {
        results.set(uid, [seq, result, session]);
      }
      const rows = db.prepare('SELECT * FROM tasks ORDER BY uid').raw().iterate() as Iterable<TaskRow>;
      for (const r of rows) {
        const done = results.get(r[1]);
        const state = done ? 'finished' : TASK_STATE_NAME[r[4]];
        const task: RestoredTask = {
          session: r[0], uid: r[1], id: r[2], spec: !done && r[3] ? (blobs.unpack(r[3] as Uint8Array) as TaskSpec) : null, state,
          attempt: r[5], lost: r[6], executor: r[7], submittedAt: r[8], dispatchedAt: r[9],
          seq: done ? done[0] : null, result: done ? decodeResult(done[1]) : null,
        };
        core.restoreTask(task);
        found[state]++;
        if (done) results.delete(r[1]);
      }
      // Tasks that finished before their row was ever written have only their result row.
      for (const [uid, [seq, blob, session]] of results) {
        const result = decodeResult(blob);
        const submittedAt = result.timings.submitted;
        core.restoreTask({ session, uid, id: result.id, spec: null, state: 'finished', attempt: result.attempts, lost: 0, executor: null, submittedAt, dispatchedAt: null, seq, result });
        found.finished++;
      }
      const { counters, seq } = storedCounters(db);
      if (counters !== null) core.restoreCounters(counters);
      this.#countersSeq = seq;
      for (const r of db.prepare('SELECT id, record FROM instances').all() as Array<{ id: string; record: string }>) {
        found.instances.push({ id: r.id, record: JSON.parse(r.record) });
      }
    } catch (err) {
      throw storeError(err, this.file);
    } finally {
      db.close();
      this.#db = null;
    }
    core.finishRestore();
    this.#counters = () => core.view.counters();
    await this.#startWriter();
    return found;
  }

  #startWriter(): Promise<void> {
    const data: WriterData = { dataDir: this.options.dataDir, file: this.file, sync: this.options.sync, countersSeq: this.#countersSeq, trace: this.#trace !== null };
    const writer = new Worker(new URL('./store-writer.js', import.meta.url), { workerData: data });
    this.#writer = writer;
    return new Promise((resolve, reject) => {
      writer.on('message', (m: WriterReply) => {
        if (m.kind === 'ready') {
          this.#setWriterReady(true);
          return resolve();
        }
        if (m.kind === 'committed') {
          if (m.t) this.#trace?.answered(m.n, m.t);
          const w = this.#waiting.get(m.n);
          this.#waiting.delete(m.n);
          return w?.resolve();
        }
        if (m.kind === 'found') {
          const answer = this.#lookups.get(m.n);
          this.#lookups.delete(m.n);
          return answer?.(m.results);
        }
        this.#fail(new FalconetError(m.code as ErrorCode, m.message));
        reject(this.#failure);
      });
      writer.on('error', (err) => {
        this.#fail(new FalconetError(ErrorCode.STORE_FAILED, `store writer crashed: ${err.message}`));
        reject(this.#failure);
      });
    });
  }

  #fail(err: FalconetError): void {
    this.#failure ??= err;
    this.#setWriterReady(false);
    for (const w of this.#waiting.values()) w.reject(this.#failure);
    this.#waiting.clear();
    for (const answer of this.#lookups.values()) answer([]); // queries answer without stored results
    this.#lookups.clear();
  }

  // ---- Journal: record now, write at commit -----------------------------------------------------

  taskAccepted(t: TaskRecord): void {
    this.#rows.set(t.uid, [t.session.id, t.uid, t.id, t.spec, TASK_STATE.queued, t.attempt, t.lost, null, t.submittedAt, null]);
  }

  taskDispatched(t: TaskRecord): void {
    this.#touch(t, TASK_STATE.dispatched);
  }

  taskRequeued(t: TaskRecord): void {
    this.#touch(t, TASK_STATE.queued);
  }

  taskFinished(t: TaskRecord, seq: number, result: TaskResult): void {
    // The result row says "finished" and carries the id (kept for idempotent resubmits); recovery
    // reads nothing else of a finished task (its row, if any, only gives way to the result). So
    // no change of its row made since the last commit is written: a task accepted and finished
    // between two commits needs no row at all, and one written before keeps its row as it is on
    // disk (a dispatch and its result in one commit: the common case under load, one row update
    // fewer per task).
    this.#rows.delete(t.uid);
    // Encoded now, as the bytes the file keeps: the writer stores them without decoding them
    // from the batch and encoding them again (sqlite.ts, encodeResult).
    this.#results.push([t.session.id, seq, t.uid, encodeResult(result)]);
  }

  #touch(t: TaskRecord, state: number): void {
    const executor = state === TASK_STATE.queued ? null : (t.executor?.info.id ?? null);
    const row = this.#rows.get(t.uid);
    if (row === undefined) {
      // A spec goes with the row's first write only; later writes of the row keep the stored one.
      this.#rows.set(t.uid, [t.session.id, t.uid, t.id, null, state, t.attempt, t.lost, executor, t.submittedAt, t.dispatchedAt]);
      return;
    }
    // Changed again before its commit (accepted and dispatched in one, the common case): the
    // pending row is updated in place rather than replaced by a new array.
    row[4] = state;
    row[5] = t.attempt;
    row[6] = t.lost;
    row[7] = executor;
    row[9] = t.dispatchedAt;
  }

  sessionChanged(s: SessionRecord): void {
    this.#sessions.add(s); // written once per commit, however often its cursor moved
  }

  sessionCollected(s: SessionRecord): void {
    this.#sessions.delete(s);
    this.#ops.push({ op: 'dropSession', id: s.id });
  }

  executorRegistered(e: ExecutorRecord): void {
    this.#ops.push({ op: 'executor', id: e.info.id, info: { ...e.info, running: [] }, registeredAt: e.registeredAt });
  }

  executorRemoved(e: ExecutorRecord): void {
    this.#ops.push({ op: 'dropExecutor', id: e.info.id });
  }

  memoRecorded(key: string, result: TaskResult, at: number): void {
    this.#ops.push({ op: 'memo', key, result, at });
  }

  memoExpired(before: number): void {
    this.#ops.push({ op: 'dropMemo', before });
  }

  /**
   * The result memoized under `key`, or null: what is recorded but not yet committed comes from
   * memory, the rest from the writer thread (after every commit handed to it before).
   */
  async lookupMemo(key: string): Promise<TaskResult | null> {
    for (let i = this.#ops.length - 1; i >= 0; i--) {
      const o = this.#ops[i];
      if (o.op === 'memo' && o.key === key) return o.result as TaskResult;
    }
    if (!this.#writer && !(await this.#writerReady)) return null;
    if (!this.#writer || this.#failure) return null;
    const n = ++this.#n;
    const found = await new Promise<Array<Uint8Array | null>>((resolve) => {
      this.#lookups.set(n, resolve);
      this.#writer!.postMessage({ memo: n, key } satisfies MemoRequest);
    });
    return found[0] ? (blobs.unpack(found[0]) as TaskResult) : null;
  }

  /** Provisioner instance records (the elastic-executors issue). */
  putInstance(id: string, record: unknown): void {
    this.#ops.push({ op: 'putInstance', id, record: JSON.stringify(record), at: Date.now() });
  }

  dropInstance(id: string): void {
    this.#ops.push({ op: 'dropInstance', id });
  }

  /**
   * Hands everything recorded since the last commit to the writer. Returns null when there was
   * nothing to write, else a promise that resolves once it is on disk (rejects STORE_FAILED).
   */
  commit(): Promise<void> | null {
    if (this.#failure) return Promise.reject(this.#failure);
    if (!this.#writer) return null; // closed: shutdown is over
    if (this.#rows.size === 0 && this.#results.length === 0 && this.#ops.length === 0 && this.#sessions.size === 0) return null;
    // Each row's session goes as an index into `ids` (rows are this commit's own: changed in place).
    const ids: string[] = [];
    const index = new Map<string, number>();
    let last = '';
    let at = -1;
    const indexOf = (id: string): number => {
      if (id !== last) {
        last = id;
        at = index.get(id) ?? -1;
        if (at < 0) index.set(id, (at = ids.push(id) - 1));
      }
      return at;
    };
    const rows: Array<InBatch<TaskRow>> = [...this.#rows.values()];
    for (const r of rows) r[0] = indexOf(r[0] as string);
    const results: Array<InBatch<ResultRow>> = this.#results;
    for (const r of results) r[0] = indexOf(r[0] as string);
    const batch: CommitBatch = {
      ids,
      rows,
      results,
      ops: this.#ops,
      sessions: [...this.#sessions].map((s) => [s.id, s.createdAt, s.acked, s.leaseMs, s.key]),
      ...(this.#counters ? { counters: JSON.stringify(this.#counters()) } : {}),
    };
    this.batchChanges.observe(batch.rows.length + batch.results.length + batch.ops.length + batch.sessions.length);
    const started = performance.now();
    const traced = this.#trace ? traceClock() : 0;
    this.#rows = new Map();
    this.#results = [];
    this.#ops = [];
    this.#sessions = new Set();
    const n = ++this.#n;
    // One encoded buffer, moved (not cloned) to the writer: far cheaper than cloning the rows.
    const bytes = new Uint8Array(this.#batchPackr.pack(batch)); // a copy with its own ArrayBuffer
    this.#trace?.sent(n, traced, batch.rows.length, batch.results.length, bytes.length);
    return new Promise((resolve, reject) => {
      this.#waiting.set(n, {
        resolve: () => {
          this.commitSeconds.observe((performance.now() - started) / 1000);
          resolve();
        },
        reject,
      });
      this.#writer!.postMessage({ n, bytes }, [bytes.buffer]);
    });
  }

  /**
   * Stored results by (session, seq), for task queries: what is recorded but not yet committed
   * comes from memory, the rest from the writer thread (which owns the file). null: not stored.
   */
  async lookupResults(refs: Array<{ session: string; seq: number }>): Promise<Array<TaskResult | null>> {
    const out: Array<TaskResult | null> = refs.map(({ session, seq }) => {
      const pending = this.#results.find((r) => r[0] === session && r[1] === seq);
      return pending ? decodeResult(pending[3] as Uint8Array) : null;
    });
    const ask = refs.map((r, i) => (out[i] === null ? i : -1)).filter((i) => i >= 0);
    if (ask.length === 0 || !this.#writer || this.#failure) return out;
    const n = ++this.#n;
    const found = await new Promise<Array<Uint8Array | null>>((resolve) => {
      this.#lookups.set(n, resolve);
      this.#writer!.postMessage({ lookup: n, refs: ask.map((i) => [refs[i].session, refs[i].seq]) } satisfies LookupRequest);
    });
    ask.forEach((i, k) => {
      const blob = found[k];
      if (blob) out[i] = decodeResult(blob);
    });
    return out;
  }

  /** Writes what is left and stops the writer. */
  async close(): Promise<void> {
    const last = this.commit();
    let failure: unknown = null;
    // A failed last commit must reach the operator (the caller exits non-zero); nothing it held
    // was acknowledged, so nothing acknowledged is lost.
    if (last) await last.catch((err: unknown) => (failure = err));
    const writer = this.#writer;
    if (writer) {
      this.#writer = null;
      await new Promise<void>((resolve) => {
        writer.once('exit', () => resolve());
        writer.postMessage('close');
      });
      this.#trace?.flush();
    }
    if (failure) throw failure;
  }
}
