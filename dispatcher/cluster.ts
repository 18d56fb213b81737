/**
 * Several dispatchers over one PostgreSQL database (docs/scale-out.md). Each live dispatcher
 * leases a share of the partitions; it holds in memory, schedules and commits only the sessions
 * of its partitions, and every commit is fenced by their epochs (pg-store.ts), so a dispatcher
 * that lost a partition (paused past its lease, cut off) can no longer write to it. This file is
 * the thin adapter: one loop that renews, claims and gives back leases (the plan is pure:
 * lease-plan.ts), loads partitions it takes over, passes on results that reached the wrong
 * dispatcher (the inbox), keeps executors' signs of life, and holds the provisioner's leadership
 * (a session advisory lock: it goes with the connection when a dispatcher dies).
 *
 * Failure policy: fail-stop. A dispatcher that finds one of its leases taken, or could not renew
 * them within a lease period, stops (STORE_FENCED) instead of serving stale state; its executors
 * and clients move to the others, and whatever it had not committed was never acknowledged.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { ErrorCode, FalconetError, type AttemptResult, type ExecutorInfo, type TaskResult, type TaskSpec } from '../protocol/index.js';
import { fromPgText, toPgText } from './pg-schema.js';
import { TASK_STATE, TASK_STATE_NAME, blobs } from './sqlite.js';
import type { DispatcherCore } from './core.js';
import { planLeases, planMoves, type PartitionRow } from './lease-plan.js';
import type { ClusterMembership } from './partition-host.js';
import type { SessionRouter } from './http-api.js';
import { FleetExchange } from './fleet-exchange.js';
import type { ClusterFleet } from './provisioner/fleet.js';

/** Uids each dispatcher incarnation draws from its own range: 2^26 tasks before it takes another. */
export const UID_BLOCK = 2 ** 26;
/** An executor idle this long may be sent to a dispatcher whose tasks wait. */
const IDLE_BEFORE_MOVE_MS = 1000;
/** The advisory lock whose holder runs the provisioner. */
const LEADER_LOCK = 0x66616c63; // 'falc'

/** What the cluster needs of the PostgreSQL store. */
export interface ClusterStore {
  /** The partitions (and epochs) every commit must still hold; checked in the commit's transaction. */
  setFence(fence: () => { ids: number[]; epochs: number[] } | null): void;
  /** A result for another dispatcher's task, written to the inbox in the next commit. */
  forwardResult(partition: number, executor: string, result: AttemptResult): void;
  /** An inbox row applied here, deleted in the next commit (with the result it brought). */
  dropInbox(uid: number, attempt: number): void;
  commit(): Promise<void> | null;
}

export interface ClusterOptions {
  url: string;
  /** This dispatcher's id (unique per process) and the URL clients and executors reach it at. */
  id: string;
  advertise: string;
  partitions: number;
  partitionOf(sessionId: string): number;
  /** How long a lease lasts; renewed every third of it. */
  leaseMs: number;
  /** How often the inbox of results for this dispatcher's partitions is read. */
  inboxPollMs: number;
  store: ClusterStore;
  log: Logger;
  /** Ends the process: a lease was lost (fail-stop). */
  onFatal(err: Error): void;
  /** Runs after results were taken from the inbox or partitions were loaded: schedule and commit. */
  wake(): void;
  /** The live dispatchers' URLs, after each round that read them (executors are told: `peers`). */
  onPeers?(urls: string[]): void;
  /** Leadership of the provisioner was won (true) or lost (false); may come during {@link Cluster.start}. */
  onLeader?(leader: boolean, cluster: Cluster): void;
}

/** One live dispatcher, as GET /api/dispatchers and `falconet status` show it. */
export interface DispatcherEntry {
  id: string;
  url: string;
  partitions: number;
  leader: boolean;
  self: boolean;
}

export class Cluster implements ClusterMembership, SessionRouter {
  readonly partitions: number;
  /** Held partitions and their epochs (the fence). */
  readonly #held = new Map<number, number>();
  #rows: PartitionRow[] = [];
  #live = new Map<string, string>();
  #leaderId: string | null = null;
  #leader = false;
  readonly #pool: pg.Pool;
  #leaderClient: pg.PoolClient | null = null;
  #core: DispatcherCore | null = null;
  #timers: NodeJS.Timeout[] = [];
  #round: Promise<void> | null = null;
  #lastRenew = Date.now();
  #renewing: Promise<void> | null = null;
  /** The database's clock minus ours at the last read (ms): lease ends are in its time. */
  #clockSkew = 0;
  #stopped = false;
  /** Inbox rows applied here whose deletion is not yet committed: not applied twice. */
  #applied = new Set<string>();
  /** The newest memo entry read (ms): later rounds read only what is newer. */
  #memoAt = 0;
  /** Fleet reports and drain orders: the provisioner's view of the whole cluster. */
  readonly #fleet: FleetExchange;

  constructor(readonly o: ClusterOptions) {
    this.partitions = o.partitions;
    this.#pool = new pg.Pool({ connectionString: o.url, max: 6, application_name: `falconet-${o.id}` });
    this.#pool.on('error', (err) => o.log.warn({ err: err.message }, 'cluster: database connection lost'));
    this.#fleet = new FleetExchange(this.#pool, o.id, o.log);
    o.store.setFence(() => (this.#held.size === 0 ? null : { ids: [...this.#held.keys()], epochs: [...this.#held.values()] }));
  }

  partitionOf(sessionId: string): number {
    return this.o.partitionOf(sessionId);
  }

  newSessionId(): string {
    const held = [...this.#held.keys()];
    // A random id lands in a held partition with probability held/256: a few tries at most.
    for (let i = 0; i < 100_000 && held.length > 0; i++) {
      const id = randomUUID();
      if (this.#held.has(this.o.partitionOf(id))) return id;
    }
    throw new FalconetError(ErrorCode.MOVED, 'this dispatcher holds no partition: no new session can be opened here');
  }

  /** See {@link SessionRouter.route}. */
  route(session: string | undefined): string | null {
    if (session === undefined) return this.holdsAny ? null : (this.anyOther() ?? '');
    if (this.owns(this.o.partitionOf(session))) return null;
    const to = this.ownerOf(session);
    // Never to itself: its own earlier incarnation's leases, not yet taken.
    return to === null || to === this.o.advertise ? '' : to;
  }

  owns(partition: number): boolean {
    return this.#held.has(partition);
  }

  /** True while this dispatcher holds at least one partition (it can open new sessions). */
  get holdsAny(): boolean {
    return this.#held.size > 0;
  }

  foreignResult(partition: number, executor: string, result: AttemptResult): void {
    this.o.store.forwardResult(partition, executor, result);
  }

  /**
   * Joins: announces this dispatcher, takes a uid range, and runs the first round so that it
   * holds its share before it serves. Then rounds run every third of a lease.
   */
  async start(core: DispatcherCore): Promise<void> {
    this.#core = core;
    // This process's earlier incarnation at the same address (killed, restarted in place) is dead:
    // the port is ours now. Its leases end at once rather than after --partition-lease-ms.
    await this.#pool.query(
      `WITH gone AS (DELETE FROM dispatchers WHERE url = $1 AND id <> $2 RETURNING id)
       UPDATE partitions SET lease_until = NULL WHERE owner IN (SELECT id FROM gone)`,
      [this.o.advertise, this.o.id],
    );
    const block = await this.#pool.query<{ n: string }>(`SELECT nextval('uid_blocks') AS n`);
    core.partitions.join(this, Number(block.rows[0].n) * UID_BLOCK);
    this.#renew();
    await this.#renewing;
    await this.#runRound();
    const every = Math.max(50, Math.floor(this.o.leaseMs / 3));
    this.#timers.push(setInterval(() => this.#renew(), every));
    this.#timers.push(setInterval(() => void this.#runRound(), every));
    this.#timers.push(setInterval(() => void this.#pollInbox(), this.o.inboxPollMs));
  }

  /** The dispatcher that should serve `sessionId`, when it is not this one: its URL, or null when its partition is between owners. */
  ownerOf(sessionId: string): string | null {
    const row = this.#rows[this.o.partitionOf(sessionId)];
    if (!row?.owner || row.owner === this.o.id) return null;
    // A lease run out: its owner is most likely dead; the client should wait, not dial it.
    if (row.leaseUntil === null || row.leaseUntil < Date.now() + this.#clockSkew) return null;
    return this.#live.get(row.owner) ?? null;
  }

  /** A live dispatcher holding partitions (for a new session when this one holds none). */
  anyOther(): string | null {
    for (const [id, url] of this.#live) if (id !== this.o.id && this.#rows.some((r) => r.owner === id)) return url;
    return null;
  }

  /** Live dispatchers and their partitions. */
  dispatchers(): DispatcherEntry[] {
    const counts = new Map<string, number>();
    for (const r of this.#rows) if (r.owner !== null) counts.set(r.owner, (counts.get(r.owner) ?? 0) + 1);
    return [...this.#live].map(([id, url]) => ({ id, url, partitions: counts.get(id) ?? 0, leader: id === this.#leaderId, self: id === this.o.id }));
  }

  /** The provisioner's instance records (for a new leader's provisioner). */
  async instances(): Promise<Array<{ id: string; record: unknown }>> {
    const r = await this.#pool.query<{ id: string; record: string }>('SELECT id, record FROM instances');
    return r.rows.map((i) => ({ id: fromPgText(i.id), record: JSON.parse(i.record) as unknown }));
  }

  get leader(): boolean {
    return this.#leader;
  }

  /** What the provisioner scales on the leader: every dispatcher's queue, its executors wherever they are. */
  fleet(): ClusterFleet {
    return this.#fleet.fleet(this.#core!);
  }

  /** How long an executor may be missing from every report while it moves between dispatchers. */
  get fleetGraceMs(): number {
    return 2 * this.o.leaseMs;
  }

  #runRound(): Promise<void> {
    if (this.#round || this.#stopped) return this.#round ?? Promise.resolve();
    this.#round = this.#roundOnce()
      .catch((err: unknown) => {
        const e = err as Error;
        if (e instanceof FalconetError && e.code === ErrorCode.STORE_FENCED) return this.#fail(e);
        this.o.log.warn({ err: e.message }, 'cluster: lease round failed');
      })
      .finally(() => (this.#round = null));
    return this.#round;
  }

  /**
   * Presence and renewal, on a timer of their own so that nothing else a round does (loading
   * partitions, moving executors, memo keys) delays them. A lease found taken means this
   * dispatcher was presumed dead: it stops. Partitions given back or taken meanwhile are not
   * counted as lost (they left or joined `#held` around the query).
   */
  #renew(): void {
    if (this.#renewing || this.#stopped || !this.#core) return;
    const core = this.#core;
    const { id, advertise, leaseMs } = this.o;
    const ttl = `${leaseMs} milliseconds`;
    const began = Date.now();
    const held = [...this.#held];
    this.#renewing = (async () => {
      // An executor is alive while the dispatcher its row names is (no per-executor write).
      const idleSince = Date.now() - IDLE_BEFORE_MOVE_MS;
      await this.#pool.query(
        `INSERT INTO dispatchers (id, url, started_at, seen_at, queued, executors, idle, fleet) VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET seen_at = clock_timestamp(), url = excluded.url, queued = excluded.queued,
           executors = excluded.executors, idle = excluded.idle, fleet = excluded.fleet`,
        [id, advertise, core.view.queued, core.partitions.connected(), core.partitions.idleCount(idleSince), this.#fleet.report(core)],
      );
      if (held.length) {
        const ok = await this.#locked<{ id: number }>(
          held.map(([p]) => p),
          `UPDATE partitions p SET lease_until = clock_timestamp() + $2::interval FROM unnest($3::int[], $4::bigint[]) AS f(id, epoch)
           WHERE p.id = f.id AND p.epoch = f.epoch AND p.owner = $1 RETURNING p.id`,
          [id, ttl, held.map(([p]) => p), held.map(([, e]) => e)],
        );
        const kept = new Set(ok.rows.map((r) => r.id));
        const lost = held.filter(([p, e]) => !kept.has(p) && this.#held.get(p) === e).map(([p]) => p);
        if (lost.length) throw new FalconetError(ErrorCode.STORE_FENCED, `partitions ${lost.slice(0, 8).join(', ')}${lost.length > 8 ? '…' : ''} were taken over by another dispatcher (this one was presumed dead)`);
      }
      this.#lastRenew = began;
    })()
      .catch((err: unknown) => {
        const e = err as Error;
        if (e instanceof FalconetError && e.code === ErrorCode.STORE_FENCED) return this.#fail(e);
        this.o.log.warn({ err: e.message }, 'cluster: renewing leases failed');
        if (Date.now() - this.#lastRenew > leaseMs) {
          this.#fail(new FalconetError(ErrorCode.STORE_FENCED, `could not renew partition leases for ${Date.now() - this.#lastRenew} ms (lease ${leaseMs} ms): stopping rather than serving partitions another dispatcher may hold now (${e.message})`));
        }
      })
      .finally(() => (this.#renewing = null));
  }

  async #roundOnce(): Promise<void> {
    const { id, leaseMs } = this.o;
    const core = this.#core!;
    const ttl = `${leaseMs} milliseconds`;
    const idleSince = Date.now() - IDLE_BEFORE_MOVE_MS;
    const read = await this.#pool.query<{ id: number; owner: string | null; epoch: string; until: number | null; now: number }>(
      `SELECT id, owner, epoch, extract(epoch FROM lease_until) * 1000 AS until, extract(epoch FROM clock_timestamp()) * 1000 AS now FROM partitions ORDER BY id`,
    );
    const live = await this.#pool.query<{ id: string; url: string; queued: string; executors: number; idle: number; fleet: string | null; age: number }>(
      `SELECT id, url, queued, executors, idle, fleet, extract(epoch FROM clock_timestamp() - seen_at) * 1000 AS age
       FROM dispatchers WHERE seen_at > clock_timestamp() - $1::interval`,
      [ttl],
    );
    this.#live = new Map(live.rows.map((r) => [r.id, r.url]));
    this.o.onPeers?.([...this.#live.values()]);
    // Idle executors go where tasks wait (executors run only their dispatcher's partitions).
    const loads = live.rows.map((r) => ({ id: r.id, url: r.url, queued: Number(r.queued), executors: r.executors, idle: r.id === id ? core.partitions.idleCount(idleSince) : r.idle }));
    const move = planMoves(id, loads);
    if (move) {
      const sent = core.partitions.sendAway(move.n, idleSince, move.to);
      if (sent) this.o.log.info({ executors: sent, to: move.to }, 'cluster: idle executors sent where tasks wait');
    }
    this.#rows = read.rows.map((r) => ({ id: r.id, owner: r.owner, epoch: Number(r.epoch), leaseUntil: r.until === null ? null : Number(r.until) }));
    const now = read.rows.length ? Number(read.rows[0].now) : Date.now();
    this.#clockSkew = now - Date.now();
    // Renewal has its own timer (#renewOnce): rows of ours here are only for the share count.
    const plan = planLeases({ me: id, now, rows: this.#rows, live: [...this.#live.keys()], busy: core.partitions.busyPartitions() });

    // Give back idle partitions beyond our share: forget their sessions, then free the rows.
    if (plan.release.length) {
      const ids = plan.release.map((r) => r.id);
      for (const p of ids) {
        this.#held.delete(p);
        core.partitions.release(p);
      }
      await this.o.store.commit();
      await this.#locked(ids, `UPDATE partitions SET owner = NULL, lease_until = NULL WHERE id = ANY($1::int[]) AND owner = $2`, [ids, id]);
      this.o.log.info({ partitions: ids.length }, 'cluster: gave back partitions');
    }

    if (plan.claim.length) {
      const got = await this.#locked<{ id: number; epoch: string }>(
        plan.claim.map((r) => r.id),
        `UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_until = clock_timestamp() + $2::interval
         WHERE id = ANY($3::int[]) AND (owner IS NULL OR lease_until IS NULL OR lease_until < clock_timestamp()) RETURNING id, epoch`,
        [id, ttl, plan.claim.map((r) => r.id)],
      );
      if (got.rows.length) {
        const ids = got.rows.map((r) => r.id);
        const loaded = await this.#load(core, ids);
        // Held (fenced, and open to new sessions) only once loaded.
        for (const r of got.rows) this.#held.set(r.id, Number(r.epoch));
        const from = plan.claim.filter((r) => r.owner !== null && ids.includes(r.id)).map((r) => r.owner);
        this.o.log.info({ partitions: ids.length, ...loaded, ...(from.length ? { from: [...new Set(from)] } : {}) }, 'cluster: took partitions');
        this.o.wake();
      }
    }
    await this.#keepAlive(core);
    await this.#fleet.refresh(core, live.rows);
    await this.#syncMemo(core);
    await this.#lead();
  }

  /**
   * Memo keys recorded by any dispatcher (results stay in the database and are read on a hit):
   * keys newer than the last read, with a minute of overlap for commits that landed late.
   */
  async #syncMemo(core: DispatcherCore): Promise<void> {
    const rows = await this.#pool.query<{ key: string; at: string }>('SELECT key, at FROM memo WHERE at > $1 ORDER BY at LIMIT 100000', [this.#memoAt - 60_000]);
    for (const r of rows.rows) {
      core.restoreMemo(fromPgText(r.key), Number(r.at));
      this.#memoAt = Math.max(this.#memoAt, Number(r.at));
    }
  }

  /**
   * Loads partitions just taken into the core, from one snapshot: the executors their running
   * attempts are on (adopted: they come back here, or report through the inbox from wherever they
   * went), sessions, tasks in uid order, results. Like PgStore.recover, on a connection of its own
   * (the store's is busy committing).
   */
  async #load(core: DispatcherCore, ids: number[]): Promise<{ sessions: number; tasks: number; results: number }> {
    const c = await this.#pool.connect();
    const sessionIds: string[] = [];
    let tasks = 0;
    let finished = 0;
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const q = <T extends unknown[]>(text: string) => c.query<T>({ text, values: [ids], rowMode: 'array' }).then((r) => r.rows);
      for (const [info, at] of await q<[Buffer, string]>(
        `SELECT info, registered_at FROM executors WHERE id IN (SELECT DISTINCT executor FROM tasks WHERE partition = ANY($1::int[]) AND state = ${TASK_STATE.dispatched} AND executor IS NOT NULL)`,
      )) {
        core.restoreExecutor(blobs.unpack(info) as ExecutorInfo, Number(at));
      }
      for (const s of await q<[string, string, string, string | null, string | null]>(`SELECT id, created_at, acked, lease_ms, key FROM sessions WHERE partition = ANY($1::int[])`)) {
        const id = fromPgText(s[0]);
        core.restoreSession(id, Number(s[1]), Number(s[2]), s[3] === null ? null : Number(s[3]), s[4] === null ? null : fromPgText(s[4]));
        sessionIds.push(id);
      }
      const results = new Map<number, [seq: number, result: Buffer, session: string]>();
      for (const [session, seq, uid, result] of await q<[string, string, string, Buffer]>(`SELECT session, seq, uid, result FROM results WHERE partition = ANY($1::int[])`)) {
        results.set(Number(uid), [Number(seq), result, fromPgText(session)]);
      }
      const rows = await q<[string, string, string, Buffer | null, number, number, number, string | null, string, string | null]>(
        `SELECT session, uid, id, spec, state, attempt, lost, executor, submitted_at, dispatched_at FROM tasks WHERE partition = ANY($1::int[]) ORDER BY uid`,
      );
      await c.query('COMMIT');
      for (const r of rows) {
        const uid = Number(r[1]);
        const done = results.get(uid);
        core.restoreTask({
          session: fromPgText(r[0]), uid, id: fromPgText(r[2]), spec: !done && r[3] ? (blobs.unpack(r[3]) as TaskSpec) : null, state: done ? 'finished' : TASK_STATE_NAME[r[4]],
          attempt: r[5], lost: r[6], executor: r[7] === null ? null : fromPgText(r[7]), submittedAt: Number(r[8]), dispatchedAt: r[9] === null ? null : Number(r[9]),
          seq: done ? done[0] : null, result: done ? (blobs.unpack(done[1]) as TaskResult) : null,
        });
        if (done) results.delete(uid);
        else tasks++;
      }
      for (const [uid, [seq, blob, session]] of results) {
        const result = blobs.unpack(blob) as TaskResult;
        core.restoreTask({ session, uid, id: result.id, spec: null, state: 'finished', attempt: result.attempts, lost: 0, executor: null, submittedAt: result.timings.submitted, dispatchedAt: null, seq, result });
        finished++;
      }
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
    core.finishRestore(sessionIds);
    return { sessions: sessionIds.length, tasks, results: finished };
  }

  /**
   * Runs `sql` in a transaction that first locks the partition rows `ids` in id order: commits
   * lock them (FOR SHARE) in that order too, so a lease update and a commit never deadlock.
   */
  async #locked<T extends pg.QueryResultRow>(ids: number[], sql: string, values: unknown[]): Promise<pg.QueryResult<T>> {
    const c = await this.#pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT id FROM partitions WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE', [ids]);
      const r = await c.query<T>(sql, values);
      await c.query('COMMIT');
      return r;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  /** Executors our adopted attempts run on, alive at another dispatcher: their records here do not expire. */
  async #keepAlive(core: DispatcherCore): Promise<void> {
    const waiting = core.partitions.awaited();
    if (waiting.length === 0) return;
    const alive = await this.#pool.query<{ id: string }>(
      `SELECT e.id FROM executors e JOIN dispatchers d ON d.id = e.dispatcher
       WHERE e.id = ANY($1::text[]) AND e.dispatcher <> $2 AND d.seen_at > clock_timestamp() - $3::interval`,
      [waiting.map(toPgText), this.o.id, `${this.o.leaseMs} milliseconds`],
    );
    core.partitions.aliveElsewhere(alive.rows.map((r) => fromPgText(r.id)));
  }

  /** The provisioner's leader: whoever holds the advisory lock, on a connection of its own. */
  async #lead(): Promise<void> {
    if (!this.#leader) {
      const client = await this.#pool.connect();
      const got = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [LEADER_LOCK]).catch(() => ({ rows: [{ ok: false }] }));
      if (got.rows[0].ok) {
        this.#leaderClient = client;
        this.#leader = true;
        client.on('error', () => this.#loseLead());
        this.o.log.info('cluster: leading the provisioner');
        this.o.onLeader?.(true, this);
      } else client.release();
    }
    const who = await this.#pool.query<{ app: string }>(
      `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.granted AND l.objid = $1 LIMIT 1`,
      [LEADER_LOCK],
    );
    this.#leaderId = who.rows[0]?.app.replace(/^falconet-/, '') ?? null;
  }

  #loseLead(): void {
    if (!this.#leader) return;
    this.#leader = false;
    this.#leaderClient?.release(true);
    this.#leaderClient = null;
    this.o.log.warn('cluster: lost the provisioner lead (its database connection closed)');
    this.o.onLeader?.(false, this);
  }

  /** Results other dispatchers received for our partitions' tasks. */
  async #pollInbox(): Promise<void> {
    if (this.#held.size === 0 || this.#stopped || !this.#core) return;
    try {
      const rows = await this.#pool.query<{ uid: string; attempt: number; executor: string; result: Buffer }>(
        `SELECT uid, attempt, executor, result FROM inbox WHERE partition = ANY($1::int[]) ORDER BY at LIMIT 10000`,
        [[...this.#held.keys()]],
      );
      const present = new Set<string>();
      let took = 0;
      for (const r of rows.rows) {
        const key = `${r.uid}:${r.attempt}`;
        present.add(key);
        if (this.#applied.has(key) || !this.#held.has(Number(r.uid) % this.partitions)) continue;
        this.#applied.add(key);
        this.#core.partitions.remoteResult(fromPgText(r.executor), blobs.unpack(r.result) as AttemptResult);
        this.o.store.dropInbox(Number(r.uid), r.attempt);
        took++;
      }
      for (const key of this.#applied) if (!present.has(key)) this.#applied.delete(key);
      if (took) this.o.wake();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cluster: reading the inbox failed');
    }
  }

  #fail(err: FalconetError): void {
    if (this.#stopped) return;
    this.o.log.error({ code: err.code }, err.message);
    void this.stop(false);
    this.o.onFatal(err);
  }

  /**
   * Leaves: stops the loop; with `release` (a graceful stop, after the store's last commit) frees
   * this dispatcher's partitions and presence so that the others take them at their next round.
   */
  async stop(release = true): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    await this.#round?.catch(() => {});
    await this.#renewing?.catch(() => {});
    try {
      if (release) {
        await this.#pool.query(`UPDATE partitions SET owner = NULL, lease_until = NULL WHERE owner = $1`, [this.o.id]);
        await this.#pool.query(`DELETE FROM dispatchers WHERE id = $1`, [this.o.id]);
      }
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cluster: could not give back partitions; they move when their leases run out');
    }
    this.#leaderClient?.release(true);
    this.#leaderClient = null;
    await this.#pool.end().catch(() => {});
  }
}
