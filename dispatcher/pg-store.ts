/**
 * The PostgreSQL store (`--store postgres://…`): the same Journal and group commit as SqliteStore,
 * on a database several dispatchers can share (issue 15).
 *
 * Changes are recorded as they happen (a changed task as its whole current row), and `commit()`
 * sends the batch as column arrays to `falconet_commit` (pg-schema.ts): ONE round trip per group
 * commit, whatever its size. One commit is in flight at a time; the next batch gathers meanwhile,
 * so batches grow with load exactly as with SQLite. Blobs (specs, results, executor infos) are
 * encoded at commit time, not when recorded: a task accepted and finished between two commits
 * never has its spec encoded at all.
 *
 * Queries (stored results, memo) go through a separate small pool so that they never wait behind
 * a commit on the commit connection.
 */
import pg from 'pg';
import { ErrorCode, FalconetError, type AttemptResult, type ExecutorInfo, type TaskResult, type TaskSpec } from '../protocol/index.js';
import type { DispatcherCore } from './core.js';
import type { DurableStore, Recovered } from './durable-store.js';
import { Buckets } from './histogram.js';
import type { ExecutorRecord, SessionRecord, TaskRecord } from './model.js';
import { displayName, fromPgText, migrate, partitionOf, pgStoreError, toPgText } from './pg-schema.js';
import { TASK_STATE, TASK_STATE_NAME, blobs, type ResultRow, type TaskRow } from './sqlite.js';
import type { StoredCounters } from './status.js';

export interface PgStoreOptions {
  /** postgres://user:password@host:port/database (or postgresql://). */
  url: string;
  /** This dispatcher's id (a uuid per process): written on its executors, checked by fences. */
  owner: string;
}

/** The partitions a commit may write and the epochs this dispatcher holds them at; null: no check. */
export type Fence = { ids: number[]; epochs: number[] } | null;

/** Rows fetched per round trip while recovering: big tables stream, never one array. */
const FETCH = 10_000;

/** int8 as a JS number (uids, seqs and times stay far below 2^53); everything else as pg does. */
const types = {
  getTypeParser: ((oid: number, format?: string) => (oid === 20 ? Number : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};

const COMMIT_SQL = `SELECT falconet_commit(${[
  'text', 'int[]', 'bigint[]',
  'text[]', 'bigint[]', 'int[]', 'text[]', 'bytea[]', 'smallint[]', 'int[]', 'int[]', 'text[]', 'bigint[]', 'bigint[]',
  'text[]', 'bigint[]', 'bigint[]', 'int[]', 'bytea[]',
  'text[]',
  'text[]', 'int[]', 'bigint[]', 'bigint[]', 'bigint[]', 'text[]',
  'text', 'text[]', 'bytea[]', 'bigint[]', 'text[]',
  'text[]', 'text[]', 'bigint[]', 'text[]',
  'text[]', 'bytea[]', 'bigint[]', 'bigint',
  'bigint[]', 'int[]',
  'bigint[]', 'int[]', 'int[]', 'text[]', 'bytea[]',
  'text', 'text',
].map((t, i) => `$${i + 1}::${t}`).join(', ')})`;

/** What a handed-over batch still answers for until its commit resolves (queries read it). */
interface InFlight {
  results: ResultRow[];
  memo: Map<string, TaskResult>;
}

export class PgStore implements DurableStore {
  readonly name: string;
  readonly owner: string;
  #client: pg.Client;
  #pool: pg.Pool;
  #open = true;
  #rows = new Map<number, TaskRow>();
  #results: ResultRow[] = [];
  #sessions = new Set<SessionRecord>();
  #dropSessions: string[] = [];
  /** Last change per id wins: an executor registered then removed in one batch ends removed. */
  #executors = new Map<string, { info: ExecutorInfo; registeredAt: number } | null>();
  #instances = new Map<string, { record: string; at: number } | null>();
  #memo = new Map<string, { result: TaskResult; at: number }>();
  #dropMemoBefore: number | null = null;
  #dropInbox: Array<[uid: number, attempt: number]> = [];
  #forward: Array<[uid: number, attempt: number, partition: number, executor: string, result: AttemptResult]> = [];
  #inFlight: InFlight[] = [];
  #last: Promise<void> = Promise.resolve();
  #failure: FalconetError | null = null;
  #fence: () => Fence = () => null;
  #counters: (() => StoredCounters) | null = null;
  readonly commitSeconds = new Buckets([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
  readonly batchChanges = new Buckets([1, 4, 16, 64, 256, 1024, 4096, 16384, 65536]);

  private constructor(options: PgStoreOptions, client: pg.Client) {
    this.name = displayName(options.url);
    this.owner = options.owner;
    this.#client = client;
    this.#pool = new pg.Pool({ connectionString: options.url, max: 2, types, connectionTimeoutMillis: 10_000, application_name: 'falconet-query' });
    // A lost connection is reported by the next commit (which fails); an idle pool client's loss is harmless.
    this.#pool.on('error', () => {});
    client.on('error', (err) => this.#fail(new FalconetError(ErrorCode.STORE_FAILED, `lost the connection to the store ${this.name}: ${err.message}`)));
  }

  /**
   * Connects, applies migrations (under an advisory lock, so that dispatchers starting together
   * do not race) and returns the store. Throws FalconetError STORE_UNAVAILABLE when the server
   * cannot be used (with what to do), STORE_FAILED otherwise.
   */
  static async open(options: PgStoreOptions): Promise<PgStore> {
    const name = displayName(options.url);
    const client = new pg.Client({ connectionString: options.url, types, connectionTimeoutMillis: 10_000, keepAlive: true, application_name: 'falconet' });
    client.on('error', () => {}); // replaced by the store's own handler once open
    try {
      await client.connect();
      await migrate(client, name);
    } catch (err) {
      await client.end().catch(() => {});
      throw pgStoreError(err, name);
    }
    client.removeAllListeners('error');
    return new PgStore(options, client);
  }

  /**
   * The fence every commit carries (several dispatchers): the partitions this dispatcher owns and
   * their epochs. A commit whose fence no longer holds is refused with STORE_FENCED.
   */
  setFence(fence: () => Fence): void {
    this.#fence = fence;
  }

  /**
   * Loads what is kept into the core, in SqliteStore's order (executors, memo, sessions, tasks by
   * uid, results, counters, instances), from one snapshot. With `partitions`, only their sessions,
   * tasks and results, and only the executors this dispatcher registered.
   */
  async recover(core: DispatcherCore, partitions?: number[]): Promise<Recovered> {
    const found: Recovered = { sessions: 0, queued: 0, dispatched: 0, finished: 0, executors: 0, instances: [] };
    const c = this.#client;
    const only = partitions ? ' WHERE partition = ANY($1::int[])' : '';
    const args = partitions ? [partitions] : [];
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const executors = partitions ? await c.query('SELECT info, registered_at FROM executors WHERE dispatcher = $1', [this.owner]) : await c.query('SELECT info, registered_at FROM executors');
      for (const r of executors.rows as Array<{ info: Buffer; registered_at: number }>) {
        core.restoreExecutor(blobs.unpack(r.info) as ExecutorInfo, r.registered_at);
        found.executors++;
      }
      for await (const [key, at] of this.#stream('SELECT key, at FROM memo ORDER BY at', [])) core.restoreMemo(fromPgText(key as string), at as number);
      for await (const s of this.#stream(`SELECT id, created_at, acked, lease_ms, key FROM sessions${only}`, args)) {
        core.restoreSession(fromPgText(s[0] as string), s[1] as number, s[2] as number, s[3] as number | null, s[4] === null ? null : fromPgText(s[4] as string));
        found.sessions++;
      }
      const results = new Map<number, [seq: number, result: Buffer, session: string]>();
      for await (const [session, seq, uid, result] of this.#stream(`SELECT session, seq, uid, result FROM results${only}`, args)) {
        results.set(uid as number, [seq as number, result as Buffer, fromPgText(session as string)]);
      }
      const sql = `SELECT session, uid, id, spec, state, attempt, lost, executor, submitted_at, dispatched_at FROM tasks${only} ORDER BY uid`;
      for await (const r of this.#stream(sql, args)) {
        const uid = r[1] as number;
        const done = results.get(uid);
        const state = done ? 'finished' : TASK_STATE_NAME[r[4] as number];
        core.restoreTask({
          session: fromPgText(r[0] as string), uid, id: fromPgText(r[2] as string), spec: !done && r[3] ? (blobs.unpack(r[3] as Buffer) as TaskSpec) : null, state,
          attempt: r[5] as number, lost: r[6] as number, executor: r[7] === null ? null : fromPgText(r[7] as string), submittedAt: r[8] as number, dispatchedAt: r[9] as number | null,
          seq: done ? done[0] : null, result: done ? (blobs.unpack(done[1]) as TaskResult) : null,
        });
        found[state]++;
        if (done) results.delete(uid);
      }
      // Tasks that finished before their row was ever written have only their result row.
      for (const [uid, [seq, blob, session]] of results) {
        const result = blobs.unpack(blob) as TaskResult;
        core.restoreTask({ session, uid, id: result.id, spec: null, state: 'finished', attempt: result.attempts, lost: 0, executor: null, submittedAt: result.timings.submitted, dispatchedAt: null, seq, result });
        found.finished++;
      }
      const counters = await c.query<{ value: string }>(`SELECT value FROM falconet_meta WHERE key = 'counters'`);
      if (counters.rows[0]) core.restoreCounters(JSON.parse(counters.rows[0].value) as StoredCounters);
      const instances = await c.query<{ id: string; record: string }>('SELECT id, record FROM instances');
      for (const r of instances.rows) found.instances.push({ id: fromPgText(r.id), record: JSON.parse(r.record) });
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw pgStoreError(err, this.name);
    }
    core.finishRestore();
    this.#counters = () => core.view.counters();
    return found;
  }

  /** The rows of `sql` through a cursor, FETCH rows at a time (inside recover's transaction). */
  async *#stream(sql: string, values: unknown[]): AsyncGenerator<unknown[]> {
    await this.#client.query(`DECLARE falconet_recover NO SCROLL CURSOR FOR ${sql}`, values);
    for (;;) {
      const page = await this.#client.query({ text: `FETCH ${FETCH} FROM falconet_recover`, rowMode: 'array' });
      for (const row of page.rows as unknown[][]) yield row;
      if (page.rows.length < FETCH) break;
    }
    await this.#client.query('CLOSE falconet_recover');
  }

  #fail(err: FalconetError): void {
    this.#failure ??= err;
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
    // As SqliteStore: the result row is what "finished" means; a task row never written needs none.
    const pending = this.#rows.get(t.uid);
    if (pending && pending[3] !== null) this.#rows.delete(t.uid);
    this.#results.push([t.session.id, seq, t.uid, result]);
  }

  #touch(t: TaskRecord, state: number): void {
    const spec = this.#rows.get(t.uid)?.[3] ?? null; // the spec goes with the row's first write only
    const executor = state === TASK_STATE.queued ? null : (t.executor?.info.id ?? null);
    this.#rows.set(t.uid, [t.session.id, t.uid, t.id, spec, state, t.attempt, t.lost, executor, t.submittedAt, t.dispatchedAt]);
  }

  sessionChanged(s: SessionRecord): void {
    this.#sessions.add(s);
  }

  sessionCollected(s: SessionRecord): void {
    this.#sessions.delete(s);
    this.#dropSessions.push(s.id);
  }

  executorRegistered(e: ExecutorRecord): void {
    this.#executors.set(e.info.id, { info: { ...e.info, running: [] }, registeredAt: e.registeredAt });
  }

  executorRemoved(e: ExecutorRecord): void {
    this.#executors.set(e.info.id, null);
  }

  memoRecorded(key: string, result: TaskResult, at: number): void {
    this.#memo.set(key, { result, at });
  }

  memoExpired(before: number): void {
    this.#dropMemoBefore = Math.max(before, this.#dropMemoBefore ?? before);
  }

  putInstance(id: string, record: unknown): void {
    this.#instances.set(id, { record: JSON.stringify(record), at: Date.now() });
  }

  dropInstance(id: string): void {
    this.#instances.set(id, null);
  }

  /** A result in `inbox` (a result that reached a dispatcher not owning its task) has been taken: delete it with the next commit. */
  dropInbox(uid: number, attempt: number): void {
    this.#dropInbox.push([uid, attempt]);
  }

  /** A result for a task of another dispatcher's partition: into the inbox with this batch (cluster.ts). */
  forwardResult(partition: number, executor: string, result: AttemptResult): void {
    this.#forward.push([result.uid, result.attempt, partition, executor, result]);
  }

  /**
   * Sends everything recorded since the last commit in one call of falconet_commit. Returns null
   * when there was nothing to write, else a promise that resolves once committed (rejects
   * STORE_FAILED, or STORE_FENCED when the fence no longer holds: nothing of the batch is written).
   */
  commit(): Promise<void> | null {
    if (this.#failure) return Promise.reject(this.#failure);
    if (!this.#open) return null;
    const changes = this.#rows.size + this.#results.length + this.#sessions.size + this.#dropSessions.length + this.#executors.size + this.#instances.size + this.#memo.size + this.#dropInbox.length + this.#forward.length + (this.#dropMemoBefore === null ? 0 : 1);
    if (changes === 0) return null;
    this.batchChanges.observe(changes);
    const started = performance.now();
    const values = this.#encode();
    const handed: InFlight = { results: this.#results, memo: new Map([...this.#memo].map(([k, v]) => [k, v.result])) };
    this.#reset();
    this.#inFlight.push(handed);
    // Chained: at most one commit on the connection at a time, in the order they were made.
    const done = this.#last.then(() => {
      if (this.#failure) throw this.#failure;
      return this.#client.query({ name: 'falconet_commit', text: COMMIT_SQL, values });
    }).then(
      () => {
        this.#inFlight.splice(this.#inFlight.indexOf(handed), 1);
        this.commitSeconds.observe((performance.now() - started) / 1000);
      },
      (err: unknown) => {
        this.#inFlight.splice(this.#inFlight.indexOf(handed), 1);
        const e = pgStoreError(err, this.name);
        // A fenced commit wrote nothing and leaves the connection usable: the caller decides.
        if (e.code !== ErrorCode.STORE_FENCED) this.#fail(e);
        throw e;
      },
    );
    this.#last = done.catch(() => {});
    return done;
  }

  /** The batch as falconet_commit's column arrays (blobs encoded here, once per commit). */
  #encode(): unknown[] {
    const fence = this.#fence();
    const rows = [...this.#rows.values()];
    const col = <T>(src: T[], f: (x: T) => unknown) => src.map(f);
    const sessions = [...this.#sessions];
    // Rows other dispatchers may write too (executors that moved, shared memo keys) go in key
    // order: two commits locking the same rows always take them in the same order (no deadlock).
    const byKey = (a: [string, unknown], b: [string, unknown]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    const execs = ([...this.#executors].filter(([, v]) => v !== null) as Array<[string, { info: ExecutorInfo; registeredAt: number }]>).sort(byKey);
    const instances = [...this.#instances].filter(([, v]) => v !== null) as Array<[string, { record: string; at: number }]>;
    const memo = [...this.#memo].sort(byKey);
    return [
      this.owner, fence?.ids ?? [], fence?.epochs ?? [],
      col(rows, (r) => toPgText(r[0])), col(rows, (r) => r[1]), col(rows, (r) => partitionOf(r[0])), col(rows, (r) => toPgText(r[2])),
      col(rows, (r) => (r[3] === null ? null : blobs.pack(r[3]))), col(rows, (r) => r[4]), col(rows, (r) => r[5]), col(rows, (r) => r[6]),
      col(rows, (r) => (r[7] === null ? null : toPgText(r[7]))), col(rows, (r) => r[8]), col(rows, (r) => r[9]),
      col(this.#results, (r) => toPgText(r[0])), col(this.#results, (r) => r[1]), col(this.#results, (r) => r[2]), col(this.#results, (r) => partitionOf(r[0])),
      col(this.#results, (r) => blobs.pack(r[3])),
      this.#dropSessions.map(toPgText),
      col(sessions, (s) => toPgText(s.id)), col(sessions, (s) => partitionOf(s.id)), col(sessions, (s) => s.createdAt), col(sessions, (s) => s.acked),
      col(sessions, (s) => s.leaseMs), col(sessions, (s) => (s.key === null ? null : toPgText(s.key))),
      this.owner, col(execs, (e) => toPgText(e[0])), col(execs, (e) => blobs.pack(e[1].info)), col(execs, (e) => e[1].registeredAt),
      [...this.#executors].filter(([, v]) => v === null).sort(byKey).map(([id]) => toPgText(id)),
      col(instances, (i) => toPgText(i[0])), col(instances, (i) => i[1].record), col(instances, (i) => i[1].at),
      [...this.#instances].filter(([, v]) => v === null).map(([id]) => toPgText(id)),
      col(memo, (m) => toPgText(m[0])), col(memo, (m) => blobs.pack(m[1].result)), col(memo, (m) => m[1].at), this.#dropMemoBefore,
      col(this.#dropInbox, (d) => d[0]), col(this.#dropInbox, (d) => d[1]),
      col(this.#forward, (f) => f[0]), col(this.#forward, (f) => f[1]), col(this.#forward, (f) => f[2]), col(this.#forward, (f) => toPgText(f[3])), col(this.#forward, (f) => blobs.pack(f[4])),
      this.#counters ? 'counters' : null, this.#counters ? JSON.stringify(this.#counters()) : null,
    ];
  }

  #reset(): void {
    this.#rows = new Map();
    this.#results = [];
    this.#sessions = new Set();
    this.#dropSessions = [];
    this.#executors = new Map();
    this.#instances = new Map();
    this.#memo = new Map();
    this.#dropMemoBefore = null;
    this.#dropInbox = [];
    this.#forward = [];
  }

  /** The memoized result under `key`: recorded or in flight first, then the database. */
  async lookupMemo(key: string): Promise<TaskResult | null> {
    let pending = this.#memo.get(key)?.result;
    for (let i = this.#inFlight.length - 1; !pending && i >= 0; i--) pending = this.#inFlight[i].memo.get(key);
    if (pending) return pending;
    if (this.#failure || !this.#open) return null;
    try {
      const r = await this.#pool.query<{ result: Buffer }>('SELECT result FROM memo WHERE key = $1', [toPgText(key)]);
      return r.rows[0] ? (blobs.unpack(r.rows[0].result) as TaskResult) : null;
    } catch {
      return null; // not found: the task runs instead
    }
  }

  /** Stored results by (session, seq): recorded or in flight first, then one query for the rest. */
  async lookupResults(refs: Array<{ session: string; seq: number }>): Promise<Array<TaskResult | null>> {
    const batches = [this.#results, ...this.#inFlight.map((b) => b.results)];
    const out: Array<TaskResult | null> = refs.map(({ session, seq }) => {
      for (const rows of batches) {
        const hit = rows.find((r) => r[0] === session && r[1] === seq);
        if (hit) return hit[3] as TaskResult;
      }
      return null;
    });
    const ask = refs.map((r, i) => (out[i] === null ? i : -1)).filter((i) => i >= 0);
    if (ask.length === 0 || this.#failure || !this.#open) return out;
    try {
      const r = await this.#pool.query<{ session: string; seq: number; result: Buffer }>(
        'SELECT r.session, r.seq, r.result FROM results r JOIN unnest($1::text[], $2::bigint[]) AS q(session, seq) ON r.session = q.session AND r.seq = q.seq',
        [ask.map((i) => toPgText(refs[i].session)), ask.map((i) => refs[i].seq)],
      );
      const byKey = new Map(r.rows.map((row) => [`${row.seq}\u0000${row.session}`, row.result]));
      for (const i of ask) {
        const blob = byKey.get(`${refs[i].seq}\u0000${toPgText(refs[i].session)}`);
        if (blob) out[i] = blobs.unpack(blob) as TaskResult;
      }
    } catch {} // a query is not worth failing the store over
    return out;
  }

  /** Writes what is left, then closes the connections. */
  async close(): Promise<void> {
    const last = this.commit();
    let failure: unknown = null;
    // A failed last commit must reach the operator; nothing it held was acknowledged.
    if (last) await last.catch((err: unknown) => (failure = err));
    await this.#last;
    if (this.#open) {
      this.#open = false;
      await Promise.all([this.#client.end().catch(() => {}), this.#pool.end().catch(() => {})]);
    }
    if (failure) throw failure;
  }
}
