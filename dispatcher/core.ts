/**
 * The dispatcher's pure core: a thin facade that routes validated messages to the session table,
 * the executor registry, the task lifecycle and the scheduler, each in its own file. It does no
 * network I/O and reads time and new ids only from what it is given. It answers through the
 * Outbox and records every state change through the Journal, in order; the adapter commits the
 * journal before it sends what the outbox holds for clients, so nothing is acknowledged before it
 * is durable (when the store is durable). Adapters read it through `view`, never its records.
 */
import {
  ErrorCode,
  PROTOCOL_VERSION,
  fitText,
  LIMITS,
  taskProblem,
  type AttemptResult,
  type ClientMessage,
  type DataCounters,
  type DispatcherToClient,
  type DispatcherToExecutor,
  type ExecutorInfo,
  type Msg,
  type SessionInfo,
  type TaskResult,
  type TaskSpec,
} from '../protocol/index.js';
import { newTask, nullJournal, randomIds, systemClock, type Clock, type ConnId, type ExecutorRecord, type IdSource, type Journal, type SessionRecord } from './model.js';
import { SessionTable } from './sessions.js';
import { ExecutorRegistry } from './registry.js';
import { Scheduler, type SchedulerOptions } from './scheduler.js';
import { TaskLifecycle } from './lifecycle.js';
import { CoreView } from './view.js';
import { findTasks, sessionInfos, type Found, type TaskFilter } from './queries.js';
import { Rates, snapshotOf, type StatusSnapshot, type StoredCounters } from './status.js';
import { Memo, type MemoLoader } from './memo.js';

/** How long a restarted dispatcher waits at least for the executors of its store to come back. */
const RESTORE_GRACE_MS = 12_000;

/** A task row as the store kept it. */
export interface RestoredTask {
  uid: number;
  session: string;
  id: string;
  spec: TaskSpec | null;
  state: 'queued' | 'dispatched' | 'finished';
  attempt: number;
  lost: number;
  executor: string | null;
  submittedAt: number;
  dispatchedAt: number | null;
  seq: number | null;
  result: TaskResult | null;
}

/** Where the core's answers go; the adapter buffers them per connection. */
export interface Outbox {
  toClient(conn: ConnId, msg: DispatcherToClient): void;
  toExecutor(conn: ConnId, msg: DispatcherToExecutor): void;
  /**
   * The dispatcher has this attempt's report: tell its executor, once the report is durable, so
   * that it can forget the result (it sends it again after a reconnect until then).
   */
  resultReceived(conn: ConnId, uid: number, attempt: number): void;
  /** Ends a connection with an error code (lease expired, superseded by a newer one). */
  close(conn: ConnId, code: ErrorCode, message: string): void;
}

export interface CoreOptions extends SchedulerOptions {
  /** How often both sides send heartbeats; announced at welcome. */
  heartbeatMs: number;
  /** How long an executor may be silent before its attempts are re-queued. */
  leaseMs: number;
  /** Tasks sent to a push-mode executor beyond its free slots (0: never wait behind a long task). */
  prefetch: number;
  /** Attempts a task gets when it does not say. */
  defaultMaxAttempts: number;
  /** Hand-backs without fault (reconnect, drain) a task may take before it ends lost. Default 20. */
  maxRequeues?: number;
  maxFrameBytes: number;
  /** How long a finished session (no unfinished tasks, no client) is kept before it is collected. */
  retentionMs: number;
}

export class DispatcherCore {
  readonly rates: Rates;
  readonly startedAt: number;
  /** The read-only face of the core, for status, metrics, the server and the provisioner. */
  readonly view: CoreView;
  readonly #sessions: SessionTable;
  readonly #registry: ExecutorRegistry;
  readonly #scheduler: Scheduler;
  readonly #tasks: TaskLifecycle;
  readonly #memo: Memo;

  constructor(
    readonly options: CoreOptions,
    private readonly out: Outbox,
    private readonly clock: Clock = systemClock,
    private readonly journal: Journal = nullJournal,
    ids: IdSource = randomIds,
  ) {
    this.startedAt = clock.now();
    this.rates = new Rates(this.startedAt);
    this.#sessions = new SessionTable(journal, ids);
    this.#registry = new ExecutorRegistry(journal);
    this.#scheduler = new Scheduler(options, this.#registry, (task, exec, now) => this.#tasks.dispatch(task, exec, now));
    const limits = { defaultMaxAttempts: options.defaultMaxAttempts, maxRequeues: options.maxRequeues ?? 20 };
    this.#memo = new Memo({ finishCached: (task, result) => this.#tasks.finishCached(task, result), enqueue: (task) => this.#scheduler.enqueue(task) }, journal, clock);
    this.#tasks = new TaskLifecycle(limits, this.#sessions, this.#registry, this.#scheduler, out, journal, clock, this.rates, this.#memo);
    this.view = new CoreView(this, this.#sessions, this.#registry, this.#scheduler, this.#tasks);
  }

  // ---- clients ----------------------------------------------------------------------------------

  /** A client passed the handshake: resume its session or open a new one, welcome it, replay. */
  openSession(conn: ConnId, sessionId: string | undefined, cursor: number | undefined, leaseMs?: number): void {
    const { session, resumed, displaced } = this.#sessions.open(conn, this.clock.now(), sessionId, cursor, leaseMs);
    if (displaced !== null) this.out.close(displaced, ErrorCode.AUTH_FAILED, 'session taken over by a newer connection');
    this.out.toClient(conn, {
      t: 'welcome',
      v: PROTOCOL_VERSION,
      role: 'client',
      session: session.id,
      resumed,
      cursor: session.acked,
      unfinished: session.tasks.size,
      unacked: session.unacked.length,
      heartbeatMs: this.options.heartbeatMs,
      maxFrameBytes: this.options.maxFrameBytes,
      caps: ['batch', 'sessions', 'cancel', 'drain'],
    });
    // Everything finished but not acknowledged, in order: the client may have missed it.
    const replay = session.unacked;
    for (let i = 0; i < replay.length; i++) {
      const remaining = replay.length - 1 - i + session.tasks.size;
      this.out.toClient(conn, { t: 'result', seq: replay[i].seq, remaining, result: replay[i].result });
    }
  }

  /** Accepts a batch of tasks; invalid ones are rejected one by one, the rest go in. */
  submit(conn: ConnId, msg: Msg<ClientMessage, 'submit'>): void {
    const session = this.#sessions.of(conn);
    if (!session) return;
    const now = this.clock.now();
    const rejected: Array<{ index: number; id?: string; code: string; message: string }> = [];
    const known: Array<{ index: number; id: string; finished: boolean }> = [];
    // Tasks accepted by this submit have uids from here on: a duplicate id within it is found on
    // the (rare) path where the session already has the id, with no per-task bookkeeping.
    const firstUid = this.#tasks.nextUid;
    let accepted = 0;
    for (let i = 0; i < msg.tasks.length; i++) {
      const raw = msg.tasks[i];
      const problem = taskProblem(raw);
      if (problem !== null) {
        const id = (raw as { id?: unknown } | null)?.id;
        rejected.push({ index: i, ...(typeof id === 'string' ? { id } : {}), code: ErrorCode.TASK_INVALID, message: problem });
        continue;
      }
      const spec = raw as TaskSpec;
      if (this.#tasks.accept(session, spec, now) !== null) {
        accepted++;
        continue;
      }
      const id = spec.id!;
      if ((session.tasks.get(id)?.uid ?? 0) >= firstUid) {
        rejected.push({ index: i, id, code: ErrorCode.TASK_DUPLICATE, message: `id ${id} appears earlier in this submit` });
        continue;
      }
      // Idempotent resubmit: one task; the client learns which, so no waiter hangs on it.
      accepted++;
      known.push({ index: i, id, finished: !session.tasks.has(id) });
    }
    this.out.toClient(conn, { t: 'accepted', ref: msg.ref, accepted, remaining: session.tasks.size, rejected, ...(known.length ? { known } : {}) });
  }

  /** The client consumed every result up to `cursor`. */
  ack(conn: ConnId, cursor: number): void {
    const session = this.#sessions.of(conn);
    if (session) this.#sessions.ack(session, cursor);
  }

  /** Cancels tasks by id in the caller's session, a named one, or every session (`*`). */
  cancel(conn: ConnId, msg: Msg<ClientMessage, 'cancel'>): void {
    const own = this.#sessions.of(conn);
    if (!own) return;
    let count = 0;
    for (const s of this.#sessionsIn(msg.session === '*' ? undefined : (msg.session ?? own.id))) {
      count += this.#cancelIn(s, msg.all ? [...s.tasks.keys()] : msg.ids);
    }
    this.out.toClient(conn, { t: 'reply', ref: msg.ref, ok: true, count });
  }

  clientGone(conn: ConnId): void {
    this.#sessions.detach(conn, this.clock.now());
  }

  // ---- executors --------------------------------------------------------------------------------

  /** An executor passed the handshake: register it, or resume it and reconcile what it runs. */
  registerExecutor(conn: ConnId, received: ExecutorInfo): void {
    // A copy: strings decoded from a frame can be slices of one string of the whole frame, and
    // the record lives as long as the executor (19,000 retained hello frames add up).
    const info = structuredClone(received);
    const registered = this.#registry.register(conn, info, this.clock.now(), this.options.prefetch);
    if (registered === null) {
      this.out.close(conn, ErrorCode.EXECUTOR_ID_IN_USE, `executor id ${info.id} is held by another live connection; retrying later may work once it is gone`);
      return;
    }
    const { exec, displaced, missing } = registered;
    if (info.draining) {
      exec.draining = true; // it drains on its own (its end is near): see executorLifetime
      this.#registry.stopCredit(exec);
    }
    if (displaced !== null) this.out.close(displaced, ErrorCode.EXECUTOR_ID_IN_USE, 'this executor registered again on a newer connection');
    // Attempts we think it holds but it does not: a crash when a new incarnation came back,
    // else the assignment or its result was lost in transit (or we restarted before committing).
    for (const { task, crashed } of missing) this.#tasks.takenBack(task, exec, crashed ? 'crash' : 'requeue');
    this.out.toExecutor(conn, {
      t: 'welcome',
      v: PROTOCOL_VERSION,
      role: 'executor',
      heartbeatMs: this.options.heartbeatMs,
      leaseMs: this.options.leaseMs,
      maxFrameBytes: this.options.maxFrameBytes,
      caps: ['batch', 'push', 'pull', 'cancel', 'drain', 'ack', 'lifetime'],
    });
    // Attempts it runs that are no longer its own (re-queued after its lease, or finished).
    for (const r of info.running) {
      if (exec.running.get(r.uid)?.attempt !== r.attempt) this.out.toExecutor(conn, { t: 'cancel', uid: r.uid, attempt: r.attempt });
    }
  }

  /** A pull-mode executor asks for `n` more tasks. */
  pull(conn: ConnId, n: number): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (exec && !exec.draining) this.#registry.addCredit(exec, n);
  }

  /** Any sign of life from an executor renews its lease; heartbeats also carry its data counters and holdings. */
  executorSeen(conn: ConnId, data?: DataCounters, holds?: string[]): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (!exec) return;
    if (data) exec.data = data;
    if (holds) this.#registry.setHolds(exec, new Set(holds));
  }

  /** An attempt finished on an executor; its report is acknowledged whatever became of it. */
  attemptDone(conn: ConnId, r: AttemptResult): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (!exec) return;
    if (this.#tasks.reported(exec, r) === 'refused') {
      const message = `attempt ${r.attempt} of task ${r.uid} was not given to executor ${exec.info.id}; its report changes nothing`;
      this.out.toExecutor(conn, { t: 'error', code: ErrorCode.ATTEMPT_NOT_YOURS, message, retryable: false });
    }
    // Acknowledged whatever became of it: an honest executor then forgets what it cannot deliver.
    this.out.resultReceived(conn, r.uid, r.attempt);
  }

  /**
   * An executor's report that broke the protocol (too large, mis-shaped) but names its attempt:
   * the attempt ends failed with RESULT_INVALID instead of waiting forever behind live heartbeats.
   */
  attemptInvalid(conn: ConnId, uid: number, attempt: number, problem: string): void {
    const now = this.clock.now();
    const message = fitText(`the executor's report of this attempt was refused: ${problem}`, LIMITS.errorChars);
    const error = { code: ErrorCode.RESULT_INVALID, message };
    this.attemptDone(conn, { uid, attempt, status: 'failed', exitCode: null, signal: null, stdout: '', stderr: '', truncated: false, startedAt: now, finishedAt: now, error });
  }

  /**
   * The executor learned when it ends (lifetime.ts): tasks whose timeoutMs exceeds what is left no
   * longer start on it (scheduler.ts), and once it drains, nothing does. Its running attempts come
   * back with its `bye` at the deadline, re-queued without counting as crashes.
   */
  executorLifetime(conn: ConnId, endsAt: number, reason: string, draining: boolean): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (!exec) return;
    exec.info.endsAt = endsAt;
    exec.info.endReason = reason;
    if (draining) {
      exec.info.draining = true;
      exec.draining = true;
      this.#registry.stopCredit(exec);
    }
  }

  /** The executor announced it is leaving (drained, or idle past its limit). */
  executorBye(conn: ConnId): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (exec) {
      exec.leaving = true;
      this.#registry.stopCredit(exec);
    }
  }

  executorGone(conn: ConnId): void {
    const exec = this.#registry.detach(conn);
    // A planned departure frees its record now; a loss waits out the lease for a reconnect.
    if (exec?.leaving) this.#remove(exec, false);
  }

  /** Stops sending work to an executor and tells it to finish what it runs and exit. */
  drain(executorId: string): boolean {
    const exec = this.#registry.get(executorId);
    if (!exec) return false;
    exec.draining = true;
    this.#registry.stopCredit(exec);
    if (exec.conn !== null) this.out.toExecutor(exec.conn, { t: 'drain' });
    return true;
  }

  #remove(exec: ExecutorRecord, lost: boolean): void {
    for (const task of this.#registry.remove(exec)) this.#tasks.takenBack(task, exec, lost ? 'crash' : 'requeue');
  }

  // ---- time and scheduling ----------------------------------------------------------------------

  /** Expires executor leases and client leases, collects old sessions. Call every fraction of `leaseMs`. */
  tick(): void {
    const now = this.clock.now();
    for (const exec of this.#registry.expired(now, this.options.leaseMs)) {
      if (exec.conn !== null) this.out.close(exec.conn, ErrorCode.TASK_EXECUTOR_LOST, 'lease expired: no heartbeat');
      this.#remove(exec, !exec.leaving);
    }
    for (const session of this.#sessions.expire(now, this.options.retentionMs)) {
      // Its client is gone past its lease (a killed workflow engine): free the executors.
      for (const task of [...session.tasks.values()]) this.#tasks.cancel(task, 'its client lease expired');
    }
    this.#memo.expire(now, this.options.retentionMs);
    this.rates.sample(now, this.#tasks.dispatched);
  }

  /** Matches queued tasks to executors with credit. Call once per batch of inbound messages. */
  schedule(): void {
    this.#scheduler.schedule(this.clock.now());
  }

  // ---- recovery: the store hands back what it kept, before the dispatcher serves ---------------

  /**
   * Memoized results (memo.ts): `wake` runs after tasks finish asynchronously; `load` reads a
   * result from the durable store (without it, results are kept in memory). Call before recovery.
   */
  connectMemo(wake: () => void, load?: MemoLoader): void {
    this.#memo.connect(wake, load);
  }

  /** A memoized key the store kept; call oldest first, before the tasks. */
  restoreMemo(key: string, at: number): void {
    this.#memo.restore(key, at);
  }

  restoreSession(id: string, createdAt: number, acked: number, leaseMs: number | null): void {
    this.#sessions.restore(id, createdAt, acked, leaseMs, this.clock.now());
  }

  /**
   * An executor that held leases before the restart. It gets a lease from now to come back, and
   * at least RESTORE_GRACE_MS: executors redial with a backoff of up to 10 s, so with a short
   * --lease-ms their running attempts would otherwise be counted lost before they could report.
   */
  restoreExecutor(info: ExecutorInfo, registeredAt: number): void {
    const grace = Math.max(0, RESTORE_GRACE_MS - this.options.leaseMs);
    this.#registry.restore(info, registeredAt, this.clock.now() + grace);
  }

  /** One task from the store. Call in uid order so that FIFO order survives a restart. */
  restoreTask(row: RestoredTask): void {
    const session = this.#sessions.get(row.session);
    if (!session) return;
    if (row.state === 'finished') {
      this.#tasks.restoreUid(row.uid);
      this.#sessions.restoreFinished(session, row.id, row.seq!, row.result!);
      return;
    }
    const exec = row.state === 'dispatched' && row.executor !== null ? this.#registry.get(row.executor) : undefined;
    const task = newTask(row.uid, row.id, session, row.spec!, row.submittedAt);
    task.attempt = row.attempt;
    task.lost = row.lost;
    task.dispatchedAt = row.dispatchedAt;
    this.#tasks.restore(task, exec);
  }

  /** The task counters the store kept (metrics stay monotonic across a restart). */
  restoreCounters(c: StoredCounters): void {
    this.#tasks.dispatched = c.dispatched;
    this.rates.restore(c, this.clock.now(), c.dispatched);
  }

  finishRestore(): void {
    this.#sessions.finishRestore();
  }

  // ---- queries and detached submits (HTTP) ------------------------------------------------------

  /** Tasks by id (any session) or by listing; see queries.ts. */
  findTasks(filter: TaskFilter): Found {
    return findTasks(this.#sessions, this.#registry, filter, this.clock.now());
  }

  sessionInfos(): SessionInfo[] {
    return sessionInfos(this.#sessions);
  }

  /**
   * Submits tasks for a client without a result stream (HTTP) into `sessionId`, all or nothing:
   * if any task is invalid nothing is accepted and the problems are returned.
   */
  submitDetached(sessionId: string, raw: unknown[]): { ids: string[] } | { problems: Array<{ index: number; message: string }> } {
    const problems: Array<{ index: number; message: string }> = [];
    const ids = new Set<string>();
    raw.forEach((t, index) => {
      const problem = taskProblem(t);
      const id = (t as { id?: unknown } | null)?.id;
      if (problem !== null) problems.push({ index, message: problem });
      else if (typeof id === 'string' && ids.has(id)) problems.push({ index, message: `id ${id} appears earlier in this request` });
      else if (typeof id === 'string') ids.add(id);
    });
    if (problems.length > 0) return { problems };
    const now = this.clock.now();
    const session = this.#sessions.ensureDetached(sessionId, now);
    const accepted: string[] = [];
    for (const t of raw as TaskSpec[]) accepted.push(this.#tasks.accept(session, t, now)?.id ?? t.id!);
    return { ids: accepted };
  }

  /** Cancels tasks by id in every session (or in `sessionId`); returns how many it stopped. */
  cancelIds(ids: string[], sessionId?: string): number {
    let count = 0;
    for (const session of this.#sessionsIn(sessionId)) count += this.#cancelIn(session, ids);
    return count;
  }

  /** Every session (undefined), or the one named if it exists. */
  #sessionsIn(sessionId: string | undefined): SessionRecord[] {
    if (sessionId === undefined) return [...this.#sessions.values()];
    const one = this.#sessions.get(sessionId);
    return one ? [one] : [];
  }

  #cancelIn(session: SessionRecord, ids: string[]): number {
    let count = 0;
    for (const id of ids) {
      const task = session.tasks.get(id);
      if (task && this.#tasks.cancel(task)) count++;
    }
    return count;
  }

  /** A point-in-time view for /api/status and `falconet status`. */
  status(): StatusSnapshot {
    return snapshotOf(this.view, this.clock.now());
  }
}
