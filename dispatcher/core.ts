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
  STEAL_CAP,
  WINDOW_CAP,
  fitText,
  LIMITS,
  taskProblem,
  type AttemptResult,
  type ClientMessage,
  type DataCounters,
  type DispatcherToClient,
  type DispatcherToExecutor,
  type ExecutorInfo,
  type ExecutorMessage,
  type Msg,
  type SessionInfo,
  type TaskResult,
  type TaskSpec,
  type WireError,
  wireError,
} from '../protocol/index.js';
import { newSession, newTask, nullJournal, randomIds, systemClock, unfinishedOf, type Clock, type ConnId, type ExecutorRecord, type IdSource, type JobArray, type Journal, type SessionRecord, type TaskRecord } from './model.js';
import { TaskExtras } from './task-extras.js';
import { anyAfter, planAfter } from './dependencies.js';
import { SessionTable, forbidden, mayUse, type OpenRequest } from './sessions.js';
import { ExecutorRegistry } from './registry.js';
import { Scheduler, type SchedulerOptions } from './scheduler.js';
import { TaskLifecycle } from './lifecycle.js';
import { CoreView } from './view.js';
import { findTasks, sessionInfos, type Found, type TaskFilter } from './queries.js';
import { Rates, snapshotOf, type StatusSnapshot, type StoredCounters } from './status.js';
import { LogStreams, type LogMessage } from './log-streams.js';
import { PartitionHost } from './partition-host.js';
import { Memo, type MemoLoader } from './memo.js';
import { Stealer } from './steal.js';

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
  /**
   * Ends a connection with an error code (lease expired, superseded by a newer one). `to` goes
   * with MOVED: the dispatcher the peer should dial instead (a ws:// or wss:// URL).
   */
  close(conn: ConnId, code: ErrorCode, message: string, to?: string): void;
}

export interface CoreOptions extends SchedulerOptions {
  /** How often both sides send heartbeats; announced at welcome. */
  heartbeatMs: number;
  /** How long an executor may be silent before its attempts are re-queued. */
  leaseMs: number;
  /**
   * Tasks sent to a push-mode executor beyond its free slots: a fixed number (0: never wait behind
   * a long task), or `auto`, each executor's own adaptive window (its `window` messages).
   */
  prefetch: number | 'auto';
  /** Attempts a task gets when it does not say. */
  defaultMaxAttempts: number;
  /** Hand-backs without fault (reconnect, drain) a task may take before it ends lost. Default 20. */
  maxRequeues?: number;
  maxFrameBytes: number;
  /** How long a finished session (no unfinished tasks, no client) is kept before it is collected. */
  retentionMs: number;
  /** Bytes of live output waiting for one `logs` reader at most (default 1 MiB); beyond, dropped and counted. */
  logReaderBufferBytes?: number;
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
  readonly #extras: TaskExtras;
  /** Restored tasks and arrays that name dependencies: wired again once everything is back. */
  #restoredHeld: Array<TaskRecord | JobArray> = [];
  /** Readers of live output (`logs`): empty, and free, unless someone reads. */
  readonly #logs: LogStreams;
  readonly #memo: Memo;
  /** Work stealing: takes tasks that have not started back from busy executors for free slots. */
  readonly #stealer: Stealer;
  /** Several dispatchers over one database: this one's partitions (inert when alone). */
  readonly partitions: PartitionHost;

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
    this.#logs = new LogStreams(out, { readerBufferBytes: options.logReaderBufferBytes ?? 1 << 20 });
    this.#scheduler = new Scheduler(options, this.#registry, (task, exec, now) => {
      this.#tasks.dispatch(task, exec, now);
      if (this.#logs.active) this.#logs.dispatched(task);
    });
    const limits = { defaultMaxAttempts: options.defaultMaxAttempts, maxRequeues: options.maxRequeues ?? 20 };
    this.#memo = new Memo({ finishCached: (task, result) => this.#tasks.finishCached(task, result), enqueue: (task) => this.#scheduler.enqueue(task) }, journal, clock);
    this.#tasks = new TaskLifecycle(limits, this.#sessions, this.#registry, this.#scheduler, out, journal, clock, this.rates, this.#memo);
    this.#extras = new TaskExtras(this.#tasks);
    this.#tasks.extras = this.#extras;
    this.#tasks.observer = this.#logs;
    this.#stealer = new Stealer(this.#registry, this.#scheduler, this.#tasks, out);
    this.view = new CoreView(this, this.#sessions, this.#registry, this.#scheduler, this.#tasks);
    this.partitions = new PartitionHost(this.#sessions, this.#registry, this.#tasks, clock, ids, out);
  }

  // ---- clients ----------------------------------------------------------------------------------

  /**
   * A client passed the handshake: resume its session or open a new one, welcome it, replay.
   * Returns the refusal (no key, a wrong one, another reader) for the caller to close with.
   */
  openSession(conn: ConnId, req: OpenRequest, admin: boolean, silent?: (holder: ConnId) => boolean): WireError | null {
    const opened = this.#sessions.open(conn, this.clock.now(), req, admin, silent);
    if ('refused' in opened) return wireError(opened.refused, opened.message);
    const { session, resumed, replaced } = opened;
    if (replaced !== null) this.out.close(replaced, ErrorCode.SESSION_BUSY, 'silent past its heartbeats: taken to be dead, the session went to a newer connection');
    this.out.toClient(conn, {
      t: 'welcome',
      v: PROTOCOL_VERSION,
      role: 'client',
      session: session.id,
      resumed,
      cursor: session.acked,
      unfinished: unfinishedOf(session),
      unacked: session.unacked.length,
      heartbeatMs: this.options.heartbeatMs,
      maxFrameBytes: this.options.maxFrameBytes,
      caps: ['batch', 'sessions', 'cancel', 'drain'],
      ...(session.key !== null ? { key: session.key } : {}),
    });
    // Everything finished but not acknowledged, in order: the client may have missed it.
    const replay = session.unacked;
    for (let i = 0; i < replay.length; i++) {
      const remaining = replay.length - 1 - i + unfinishedOf(session);
      this.out.toClient(conn, { t: 'result', seq: replay[i].seq, remaining, result: replay[i].result });
    }
    return null;
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
    // Dependencies are checked for the whole submit first (order within it does not matter).
    const problems = anyAfter(msg.tasks) ? msg.tasks.map(taskProblem) : null;
    const refusals = problems ? planAfter(session, msg.tasks, problems) : null;
    const held: Array<TaskRecord | JobArray> = [];
    for (let i = 0; i < msg.tasks.length; i++) {
      const raw = msg.tasks[i];
      const problem = problems ? problems[i] : taskProblem(raw);
      if (problem !== null) {
        const id = (raw as { id?: unknown } | null)?.id;
        rejected.push({ index: i, ...(typeof id === 'string' ? { id } : {}), code: ErrorCode.TASK_INVALID, message: problem });
        continue;
      }
      const spec = raw as TaskSpec;
      const refused = refusals?.get(i);
      if (refused) {
        rejected.push({ index: i, ...(spec.id !== undefined ? { id: spec.id } : {}), ...refused });
        continue;
      }
      const record = this.#tasks.accept(session, spec, now);
      if (record !== null) {
        accepted++;
        if (spec.after !== undefined) held.push(record);
        continue;
      }
      const id = spec.id!;
      if ((session.tasks.get(id)?.uid ?? session.arrays?.get(id)?.uid ?? 0) >= firstUid) {
        rejected.push({ index: i, id, code: ErrorCode.TASK_DUPLICATE, message: `id ${id} appears earlier in this submit` });
        continue;
      }
      // Idempotent resubmit: one task; the client learns which, so no waiter hangs on it.
      accepted++;
      known.push({ index: i, id, finished: !session.tasks.has(id) && !(session.arrays?.get(id)?.unfinished ?? 0) });
    }
    for (const record of held) this.#extras.wire(record);
    this.out.toClient(conn, { t: 'accepted', ref: msg.ref, accepted, remaining: unfinishedOf(session), rejected, ...(known.length ? { known } : {}) });
  }

  /** The client consumed every result up to `cursor`. */
  ack(conn: ConnId, cursor: number): void {
    const session = this.#sessions.of(conn);
    if (session) this.#sessions.ack(session, cursor);
  }

  /**
   * Cancels tasks by id in the caller's session, in a named one (with its key), or in every
   * session (`*`: the administrator only). A refusal changes nothing.
   */
  cancel(conn: ConnId, msg: Msg<ClientMessage, 'cancel'>, admin: boolean): void {
    const own = this.#sessions.of(conn);
    if (!own) return;
    const named = msg.session === undefined || msg.session === own.id ? own : msg.session === '*' ? null : this.#sessions.get(msg.session);
    let refusal: WireError | null = null;
    if (msg.session === '*' && !admin) refusal = wireError(ErrorCode.ADMIN_REQUIRED, 'cancelling in every session (session "*") needs the administrator token');
    else if (named && named !== own && !mayUse(named, msg.key, admin)) {
      const f = forbidden(named.id, msg.key);
      refusal = wireError(f.refused, f.message);
    }
    if (refusal) return this.out.toClient(conn, { t: 'reply', ref: msg.ref, ok: false, error: refusal });
    let count = 0;
    for (const s of named ? [named] : msg.session === '*' ? this.#sessions.values() : []) {
      count += this.#cancelIn(s, msg.all ? [...s.tasks.keys(), ...(s.arrays?.keys() ?? [])] : msg.ids);
    }
    this.out.toClient(conn, { t: 'reply', ref: msg.ref, ok: true, count });
  }

  clientGone(conn: ConnId): void {
    this.#sessions.detach(conn, this.clock.now());
    this.#logs.clientGone(conn);
  }

  /**
   * A `logs` request: an unfinished task gets a reader here (answered by `log` messages the adapter
   * takes with {@link takeLogs}); a finished one is returned for the adapter to answer from its
   * result (which may be in the store only); an unknown id is answered NOT_FOUND.
   */
  readLogs(conn: ConnId, msg: Msg<ClientMessage, 'logs'>): Found | null {
    if (!this.#sessions.of(conn)) return null;
    if (msg.stop) {
      this.#logs.stop(conn, msg.ref);
      return null;
    }
    const scope = this.#sessionsIn(msg.session);
    for (let i = scope.length - 1; i >= 0; i--) {
      const task = scope[i].tasks.get(msg.id);
      if (task) {
        this.#logs.watch(conn, msg.ref, task, msg.follow === true);
        return null;
      }
      if (scope[i].finishedIds.has(msg.id)) return findTasks(this.#sessions, this.#registry, { ids: [msg.id], session: scope[i].id });
    }
    this.out.toClient(conn, { t: 'error', ref: msg.ref, code: ErrorCode.NOT_FOUND, message: `no task ${msg.id}${msg.session ? ` in session ${msg.session}` : ''}`, retryable: false });
    return null;
  }

  /** Connections with live output waiting for them. */
  get logsWaiting(): ReadonlySet<ConnId> {
    return this.#logs.waiting;
  }

  /** The `log` messages waiting for `conn`, about `maxBytes` of output each at most. */
  takeLogs(conn: ConnId, maxBytes: number): LogMessage[] {
    return this.#logs.take(conn, maxBytes);
  }

  /** Live output readers and the bytes waiting for them (bounded: readers × the reader buffer). */
  logStats(): { readers: number; heldBytes: number; tasks: number } {
    return { readers: this.#logs.readers, heldBytes: this.#logs.heldBytes, tasks: this.#logs.active ? this.#logs.tasks : 0 };
  }

  // ---- executors --------------------------------------------------------------------------------

  /**
   * An executor passed the handshake: register it, or resume it and reconcile what it runs.
   * `caps`: its hello's capabilities (`steal`: it may be asked to give back tasks).
   */
  registerExecutor(conn: ConnId, received: ExecutorInfo, caps: readonly string[] = []): void {
    // A copy: strings decoded from a frame can be slices of one string of the whole frame, and
    // the record lives as long as the executor (19,000 retained hello frames add up).
    const info = structuredClone(received);
    const registered = this.#registry.register(conn, info, this.clock.now(), this.options.prefetch === 'auto' ? 0 : this.options.prefetch);
    if (registered === null) {
      this.out.close(conn, ErrorCode.EXECUTOR_ID_IN_USE, `executor id ${info.id} is held by another live connection; retrying later may work once it is gone`);
      return;
    }
    const { exec, displaced, missing } = registered;
    this.#stealer.reset(exec, caps.includes(STEAL_CAP));
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
      // `steal`: this dispatcher takes back tasks that have not started (steal.ts), so a window may hold long tasks too.
      caps: ['batch', 'push', 'pull', 'cancel', 'drain', 'ack', 'lifetime', STEAL_CAP, ...(this.options.prefetch === 'auto' ? [WINDOW_CAP] : [])],
    });
    // Attempts it runs that are no longer its own (re-queued after its lease, or finished). Those
    // of another dispatcher's partitions (it moved here when its own died) run on: their results
    // reach their owner through the store (partition-host.ts).
    for (const r of info.running) {
      if (exec.running.get(r.uid)?.attempt !== r.attempt && !this.partitions.foreign(r.uid)) this.out.toExecutor(conn, { t: 'cancel', uid: r.uid, attempt: r.attempt });
    }
    if (this.#logs.active) this.#logs.executorBack(exec);
  }

  /** Live output of an attempt someone reads; like any message, a sign of life. */
  attemptOutput(conn: ConnId, msg: Msg<ExecutorMessage, 'out'>): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (exec) this.#logs.output(exec, msg);
  }

  /** A pull-mode executor asks for `n` more tasks. */
  pull(conn: ConnId, n: number): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (exec && !exec.draining) this.#registry.addCredit(exec, n);
  }

  /** A push-mode executor's adaptive window; ignored under a fixed `--prefetch` (which did not announce it). */
  window(conn: ConnId, extra: number): void {
    const exec = this.#registry.seen(conn, this.clock.now());
    if (exec && this.options.prefetch === 'auto') this.#registry.setExtra(exec, extra);
  }

  /** A push-mode executor answered `steal` with the attempts it gave back (steal.ts). */
  returned(conn: ConnId, tasks: ReadonlyArray<{ uid: number; attempt: number }>): void {
    const now = this.clock.now();
    const exec = this.#registry.seen(conn, now);
    if (exec) this.#stealer.returned(exec, tasks, now);
  }

  /** Steals asked and tasks given back since start. */
  get steals(): { asked: number; returned: number } {
    return { ...this.#stealer.stats };
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
    if (this.partitions.foreign(r.uid)) this.partitions.forward(exec.info.id, r);
    else if (this.#tasks.reported(exec, r) === 'refused') {
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
    if (exec && this.#logs.active) this.#logs.executorGone(exec, conn);
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
      for (const id of session.arrays?.keys() ?? []) this.#extras.cancelArrayPart(session, id);
    }
    this.#memo.expire(now, this.options.retentionMs);
    this.rates.sample(now, this.#tasks.dispatched);
  }

  /** Matches queued tasks to executors with credit. Call once per batch of inbound messages. */
  schedule(): void {
    const now = this.clock.now();
    this.#scheduler.schedule(now);
    this.#stealer.pass(now);
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

  restoreSession(id: string, createdAt: number, acked: number, leaseMs: number | null, key: string | null): void {
    this.#sessions.restore(id, createdAt, acked, leaseMs, key, this.clock.now());
  }

  /**
   * An executor that held leases before the restart. It gets a lease from now to come back, and
   * at least RESTORE_GRACE_MS: executors redial with a backoff of up to 10 s, so with a short
   * --lease-ms their running attempts would otherwise be counted lost before they could report.
   */
  restoreExecutor(info: ExecutorInfo, registeredAt: number): void {
    if (this.#registry.get(info.id)) return; // taking over a partition: it is connected here already
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
    if (row.spec?.array !== undefined) {
      // An array's template: its elements come back from their own rows and results.
      this.#tasks.restoreUid(row.uid);
      const array = this.#extras.arrays.restoreTemplate(row.uid, row.id, session, row.spec, row.submittedAt);
      if (array.held) this.#restoredHeld.push(array);
      return;
    }
    // A row without a spec is an array element's: its spec comes from the template.
    const element = row.spec === null ? this.#extras.arrays.restoreElement(session, row.id) : null;
    const spec = element?.spec ?? row.spec;
    if (spec === null) return;
    const exec = row.state === 'dispatched' && row.executor !== null ? this.#registry.get(row.executor) : undefined;
    const task = newTask(row.uid, row.id, session, spec, row.submittedAt);
    task.attempt = row.attempt;
    task.lost = row.lost;
    task.dispatchedAt = row.dispatchedAt;
    const held = !exec && spec.after !== undefined;
    if (element) {
      task.element = element.array;
      session.submitted--; // the array counted its elements
    }
    this.#tasks.restore(task, exec, held);
    if (held) this.#restoredHeld.push(task);
  }

  /** The task counters the store kept (metrics stay monotonic across a restart). */
  restoreCounters(c: StoredCounters): void {
    this.#tasks.dispatched = c.dispatched;
    this.rates.restore(c, this.clock.now(), c.dispatched);
  }

  /** After a restore; `sessions`: only those just restored (a partition taken over while serving). */
  finishRestore(sessionIds?: readonly string[]): void {
    const restored = sessionIds ? sessionIds.map((id) => this.#sessions.get(id)).filter((s): s is SessionRecord => s !== undefined) : [...this.#sessions.values()];
    this.#sessions.finishRestore(restored);
    this.#extras.arrays.finishRestore(restored);
    // Pending counts are rebuilt from the restored states: released, failed, or held again.
    for (const record of this.#restoredHeld) this.#extras.wire(record);
    this.#restoredHeld = [];
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
   * Submits tasks for a client without a result stream (HTTP) into `sessionId` (a new session
   * when undefined), all or nothing: if any task is invalid nothing is accepted and the problems
   * are returned. An existing session needs its `key` (or `admin`).
   */
  submitDetached(
    sessionId: string | undefined,
    raw: unknown[],
    key: string | undefined,
    admin: boolean,
  ): { session: string; key: string | null; ids: string[] } | { problems: Array<{ index: number; message: string }> } | { refused: WireError } {
    const problems: Array<{ index: number; message: string }> = [];
    const ids = new Set<string>();
    const known = sessionId === undefined ? undefined : this.#sessions.get(sessionId);
    const refusals = anyAfter(raw) ? planAfter(known ?? newSession(sessionId ?? '', 0, null, null, null), raw, raw.map(taskProblem)) : null;
    raw.forEach((t, index) => {
      const problem = taskProblem(t) ?? refusals?.get(index)?.message ?? null;
      const id = (t as { id?: unknown } | null)?.id;
      if (problem !== null) problems.push({ index, message: problem });
      else if (typeof id === 'string' && ids.has(id)) problems.push({ index, message: `id ${id} appears earlier in this request` });
      else if (typeof id === 'string') ids.add(id);
    });
    if (problems.length > 0) return { problems };
    const now = this.clock.now();
    const session = this.#sessions.ensureDetached(sessionId, now, key, admin);
    if ('refused' in session) return { refused: wireError(session.refused, session.message) };
    const accepted: string[] = [];
    const held: Array<TaskRecord | JobArray> = [];
    for (const t of raw as TaskSpec[]) {
      const record = this.#tasks.accept(session, t, now);
      if (record && t.after !== undefined) held.push(record);
      accepted.push(record?.id ?? t.id!);
    }
    for (const record of held) this.#extras.wire(record);
    return { session: session.id, key: session.key, ids: accepted };
  }

  /**
   * Cancels tasks by id in `sessionId` (with its key) or, for the administrator, in every
   * session; returns how many it stopped, or the refusal.
   */
  cancelIds(ids: string[], sessionId: string | undefined, key: string | undefined, admin: boolean): number | WireError {
    if (sessionId === undefined) {
      if (!admin) return wireError(ErrorCode.ADMIN_REQUIRED, 'cancelling without naming a session searches every session: it needs the administrator token (or name the session and give its key)');
      let count = 0;
      for (const session of this.#sessions.values()) count += this.#cancelIn(session, ids);
      return count;
    }
    const session = this.#sessions.get(sessionId);
    if (!session) return 0;
    if (!mayUse(session, key, admin)) {
      const f = forbidden(session.id, key);
      return wireError(f.refused, f.message);
    }
    return this.#cancelIn(session, ids);
  }

  /** Every session (undefined), or the one named if it exists: where a look (logs) searches. */
  #sessionsIn(sessionId: string | undefined): SessionRecord[] {
    if (sessionId === undefined) return [...this.#sessions.values()];
    const one = this.#sessions.get(sessionId);
    return one ? [one] : [];
  }

  #cancelIn(session: SessionRecord, ids: string[]): number {
    let count = 0;
    for (const id of ids) {
      const task = session.tasks.get(id);
      if (task) {
        if (this.#tasks.cancel(task)) count++;
      } else if (session.arrays !== null) count += this.#extras.cancelArrayPart(session, id) ?? 0;
    }
    return count;
  }

  /** A point-in-time view for /api/status and `falconet status`. */
  status(): StatusSnapshot {
    return snapshotOf(this.view, this.clock.now());
  }
}
