/**
 * The dispatcher's pure core: queue, scheduler, executor registry, sessions and leases. It does
 * no network I/O and reads time only from the injected clock. Adapters feed it validated
 * messages; it answers through the Outbox and records every state change through the Journal,
 * in order. The adapter commits the journal before it sends what the outbox holds, so nothing is
 * acknowledged before it is durable (when the store is durable).
 */
import { randomUUID } from 'node:crypto';
import {
  ErrorCode,
  PROTOCOL_VERSION,
  taskProblem,
  type AttemptResult,
  type DataCounters,
  type DispatcherToClient,
  type DispatcherToExecutor,
  type ExecutorInfo,
  type Msg,
  type ClientMessage,
  type TaskResult,
  type TaskSpec,
  type TaskStatus,
} from '../protocol/index.js';
import { TaskQueue } from './queue.js';
import {
  labelsFit,
  newExecutor,
  newSession,
  newTask,
  nullJournal,
  systemClock,
  type Clock,
  type ConnId,
  type ExecutorRecord,
  type Journal,
  type SessionRecord,
  type TaskRecord,
} from './model.js';
import { Rates, snapshotOf, type StatusSnapshot } from './status.js';

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
  /** Ends a connection with an error code (lease expired, superseded by a newer one). */
  close(conn: ConnId, code: ErrorCode, message: string): void;
}

export interface CoreOptions {
  /** How often both sides send heartbeats; announced at welcome. */
  heartbeatMs: number;
  /** How long an executor may be silent before its attempts are re-queued. */
  leaseMs: number;
  /** Tasks sent to a push-mode executor beyond its free slots (0: never wait behind a long task). */
  prefetch: number;
  /** Attempts a task gets when it does not say. */
  defaultMaxAttempts: number;
  maxFrameBytes: number;
  /** How long a finished session (no unfinished tasks, no client) is kept before it is collected. */
  retentionMs: number;
  /**
   * Data-aware scheduling (Falkon's data diffusion): `first-available` sends a task to any free
   * executor, preferring one that holds its inputs; `max-cache-hit` also keeps a task waiting,
   * up to `cacheWaitMs`, for the executor that holds its inputs when that one is busy.
   */
  dataPolicy?: 'first-available' | 'max-cache-hit';
  cacheWaitMs?: number;
}

export class DispatcherCore {
  readonly queue = new TaskQueue();
  readonly sessions = new Map<string, SessionRecord>();
  readonly executors = new Map<string, ExecutorRecord>();
  /** Unfinished tasks by uid: the executor link speaks uids. */
  readonly tasks = new Map<number, TaskRecord>();
  readonly rates: Rates;
  readonly startedAt: number;
  #clients = new Map<ConnId, SessionRecord>();
  #executorConns = new Map<ConnId, ExecutorRecord>();
  /** Executors with credit, visited by the scheduler. */
  #hungry = new Set<ExecutorRecord>();
  /** Queued tasks by the locality keys of their inputs (entries pruned lazily). */
  #byLocality = new Map<string, Set<TaskRecord>>();
  /** Executors by the locality keys their caches hold: who a task may wait for (max-cache-hit). */
  #holders = new Map<string, Set<ExecutorRecord>>();
  #nextUid = 1;
  #dispatched = 0;

  constructor(
    readonly options: CoreOptions,
    private readonly out: Outbox,
    private readonly clock: Clock = systemClock,
    private readonly journal: Journal = nullJournal,
  ) {
    this.startedAt = clock.now();
    this.rates = new Rates(this.startedAt);
  }

  // ---- sessions ---------------------------------------------------------------------------------

  /** A client passed the handshake: resume its session or open a new one, and welcome it. */
  openSession(conn: ConnId, sessionId: string | undefined, cursor: number | undefined, leaseMs?: number): SessionRecord {
    let session = sessionId === undefined ? undefined : this.sessions.get(sessionId);
    const resumed = session !== undefined;
    if (!session) {
      session = newSession(sessionId ?? randomUUID(), this.clock.now(), leaseMs ?? null, null);
      this.sessions.set(session.id, session);
      this.journal.sessionChanged(session);
    } else if (session.conn !== null && session.conn !== conn) {
      this.#clients.delete(session.conn);
      this.out.close(session.conn, ErrorCode.AUTH_FAILED, 'session taken over by a newer connection');
    }
    session.conn = conn;
    session.goneAt = null;
    if (leaseMs !== undefined && session.leaseMs !== leaseMs) {
      session.leaseMs = leaseMs;
      this.journal.sessionChanged(session);
    }
    this.#clients.set(conn, session);
    if (cursor !== undefined) this.#ackSession(session, cursor);
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
    return session;
  }

  /** Accepts a batch of tasks; invalid ones are rejected one by one, the rest go in. */
  submit(conn: ConnId, msg: Msg<ClientMessage, 'submit'>): void {
    const session = this.#clients.get(conn);
    if (!session) return;
    const now = this.clock.now();
    const rejected: Array<{ index: number; id?: string; code: string; message: string }> = [];
    const known: Array<{ index: number; id: string; finished: boolean }> = [];
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
      const uid = this.#nextUid++;
      const id = spec.id ?? `t${uid}`;
      accepted++;
      if (session.tasks.has(id) || session.finishedIds.has(id)) {
        // Idempotent resubmit: one task; the client learns which, so no waiter hangs on it.
        known.push({ index: i, id, finished: !session.tasks.has(id) });
        continue;
      }
      const task = newTask(uid, id, session, spec, now);
      session.tasks.set(id, task);
      session.submitted++;
      this.tasks.set(uid, task);
      this.#enqueue(task);
      this.journal.taskAccepted(task);
      this.rates.submitted++;
    }
    this.out.toClient(conn, { t: 'accepted', ref: msg.ref, accepted, remaining: session.tasks.size, rejected, ...(known.length ? { known } : {}) });
  }

  /** The client consumed every result up to `cursor`. */
  ack(conn: ConnId, cursor: number): void {
    const session = this.#clients.get(conn);
    if (session) this.#ackSession(session, cursor);
  }

  #ackSession(session: SessionRecord, cursor: number): void {
    if (cursor <= session.acked) return;
    session.acked = Math.min(cursor, session.lastSeq);
    let drop = 0;
    while (drop < session.unacked.length && session.unacked[drop].seq <= session.acked) drop++;
    if (drop > 0) session.unacked.splice(0, drop);
    this.journal.sessionChanged(session);
  }

  /** Cancels tasks by id in the caller's session, a named one, or every session (`*`). */
  cancel(conn: ConnId, msg: Msg<ClientMessage, 'cancel'>): void {
    const own = this.#clients.get(conn);
    if (!own) return;
    const scope =
      msg.session === '*'
        ? [...this.sessions.values()]
        : [this.sessions.get(msg.session ?? own.id)].filter((s): s is SessionRecord => s !== undefined);
    let count = 0;
    for (const session of scope) {
      const ids = msg.all ? [...session.tasks.keys()] : msg.ids;
      for (const id of ids) {
        const task = session.tasks.get(id);
        if (task && this.#cancelTask(task)) count++;
      }
    }
    this.out.toClient(conn, { t: 'reply', ref: msg.ref, ok: true, count });
  }

  #cancelTask(task: TaskRecord, why = 'cancelled'): boolean {
    if (task.state === 'queued') {
      task.state = 'finished'; // leaves the queue lazily
      this.queue.discard(task);
      this.#finish(task, null, 'cancelled', { code: ErrorCode.TASK_CANCELLED, message: `${why} before it ran` });
      return true;
    }
    if (task.state === 'dispatched' && !task.cancelRequested) {
      task.cancelRequested = true;
      const conn = task.executor?.conn;
      if (conn != null) this.out.toExecutor(conn, { t: 'cancel', uid: task.uid, attempt: task.attempt });
      return true;
    }
    return false;
  }

  clientGone(conn: ConnId): void {
    const session = this.#clients.get(conn);
    if (!session) return;
    this.#clients.delete(conn);
    if (session.conn === conn) {
      session.conn = null;
      session.goneAt = this.clock.now();
    }
  }

  // ---- executors --------------------------------------------------------------------------------

  /** An executor passed the handshake: register it, or resume it and reconcile what it runs. */
  registerExecutor(conn: ConnId, received: ExecutorInfo): void {
    const now = this.clock.now();
    // A copy: strings decoded from a frame can be slices of one string of the whole frame, and
    // the record lives as long as the executor (19,000 retained hello frames add up).
    const info = structuredClone(received);
    let exec = this.executors.get(info.id);
    const reported = new Set(info.running.map((r) => `${r.uid}:${r.attempt}`));
    if (exec) {
      if (exec.conn !== null && exec.conn !== conn) {
        this.#executorConns.delete(exec.conn);
        this.out.close(exec.conn, ErrorCode.AUTH_FAILED, 'executor id registered by a newer connection');
      }
      // Attempts we think it holds but it does not. A new incarnation means the executor
      // process died with them (a crash, counted); the same one means the assignment or its
      // result was lost in transit, or we restarted before committing it (not the task's fault).
      const restarted = exec.info.incarnation !== info.incarnation;
      for (const task of [...exec.running.values()]) {
        if (reported.has(`${task.uid}:${task.attempt}`)) continue;
        if (restarted) this.#lose(task, exec);
        else this.#requeue(task, exec);
      }
      exec.info = info;
      exec.conn = conn;
      exec.lastSeen = now;
      exec.draining = false;
      exec.leaving = false;
    } else {
      exec = newExecutor(info, conn, now, now);
      this.executors.set(info.id, exec);
    }
    this.journal.executorRegistered(exec);
    this.#executorConns.set(conn, exec);
    this.out.toExecutor(conn, {
      t: 'welcome',
      v: PROTOCOL_VERSION,
      role: 'executor',
      heartbeatMs: this.options.heartbeatMs,
      leaseMs: this.options.leaseMs,
      maxFrameBytes: this.options.maxFrameBytes,
      caps: ['batch', 'push', 'pull', 'cancel', 'drain'],
    });
    // Attempts it runs that are no longer its own (re-queued after its lease, or finished).
    for (const r of info.running) {
      if (exec.running.get(r.uid)?.attempt !== r.attempt) this.out.toExecutor(conn, { t: 'cancel', uid: r.uid, attempt: r.attempt });
    }
    exec.credit = info.mode === 'push' ? Math.max(0, info.slots + this.options.prefetch - exec.running.size) : 0;
    if (exec.credit > 0) this.#hungry.add(exec);
  }

  /** A pull-mode executor asks for `n` more tasks. */
  pull(conn: ConnId, n: number): void {
    const exec = this.#seen(conn);
    if (!exec || exec.draining) return;
    exec.credit += n;
    if (exec.credit > 0) this.#hungry.add(exec);
  }

  /** Any sign of life from an executor renews its lease; heartbeats also carry its data counters and holdings. */
  executorSeen(conn: ConnId, data?: DataCounters, holds?: string[]): void {
    const exec = this.#seen(conn);
    if (!exec) return;
    if (data) exec.data = data;
    if (holds) this.#setHolds(exec, new Set(holds));
  }

  /** Replaces what an executor's cache holds (null: it is gone), keeping #holders in step. */
  #setHolds(exec: ExecutorRecord, holds: Set<string> | null): void {
    for (const key of exec.holds ?? []) {
      const set = this.#holders.get(key);
      set?.delete(exec);
      if (set?.size === 0) this.#holders.delete(key);
    }
    exec.holds = holds;
    for (const key of holds ?? []) {
      let set = this.#holders.get(key);
      if (!set) this.#holders.set(key, (set = new Set()));
      set.add(exec);
    }
  }

  #seen(conn: ConnId): ExecutorRecord | undefined {
    const exec = this.#executorConns.get(conn);
    if (exec) exec.lastSeen = this.clock.now();
    return exec;
  }

  /** An attempt finished on an executor. The first result of a task wins; later ones are dropped. */
  attemptDone(conn: ConnId, r: AttemptResult): void {
    const exec = this.#seen(conn);
    if (!exec) return;
    const task = this.tasks.get(r.uid);
    const mine = exec.running.get(r.uid);
    if (mine !== undefined && mine.attempt === r.attempt) {
      this.#unhold(exec, r.uid);
      exec.completed++;
      this.#returnCredit(exec);
    } else if (task === undefined || task.state === 'finished') {
      return; // a late duplicate: the task already has its result
    } else if (task.state === 'queued') {
      // Its lease had expired and it was re-queued, but it did finish: use the result.
      task.state = 'finished';
      this.queue.discard(task);
    } else if (task.executor) {
      // It runs again (elsewhere, or here as a newer attempt); that run is no longer needed.
      const other = task.executor;
      this.#unhold(other, task.uid);
      this.#returnCredit(other);
      if (other.conn !== null) this.out.toExecutor(other.conn, { t: 'cancel', uid: task.uid, attempt: task.attempt });
    }
    if (!task) return;
    task.executor = exec;
    const max = task.spec.maxAttempts ?? this.options.defaultMaxAttempts;
    if (r.status === 'failed' && r.exitCode !== null && !task.cancelRequested && task.attempt < max && task.spec.retryOnExit?.includes(r.exitCode)) {
      // The task asked to be retried on this exit code.
      if (task.state === 'dispatched') this.#requeue(task, exec);
      else {
        task.state = 'queued'; // it was taken out of the queue above as a late result
        this.#enqueue(task);
        this.journal.taskRequeued(task);
      }
      return;
    }
    const status: TaskStatus = task.cancelRequested && r.status !== 'succeeded' ? 'cancelled' : r.status;
    this.#finish(task, r, status, r.error);
  }

  /** Takes an attempt off an executor; an executor left with none starts its idle clock. */
  #unhold(exec: ExecutorRecord, uid: number): void {
    exec.running.delete(uid);
    if (exec.running.size === 0) exec.idleSince ??= this.clock.now();
  }

  #returnCredit(exec: ExecutorRecord): void {
    if (exec.info.mode === 'push' && !exec.draining && exec.conn !== null) {
      exec.credit++;
      this.#hungry.add(exec);
    }
  }

  /** The executor announced it is leaving (drained, or idle past its limit). */
  executorBye(conn: ConnId): void {
    const exec = this.#seen(conn);
    if (exec) {
      exec.leaving = true;
      exec.credit = 0;
      this.#hungry.delete(exec);
    }
  }

  executorGone(conn: ConnId): void {
    const exec = this.#executorConns.get(conn);
    if (!exec) return;
    this.#executorConns.delete(conn);
    if (exec.conn !== conn) return;
    exec.conn = null;
    exec.credit = 0;
    this.#hungry.delete(exec);
    // A planned departure frees its record now; a loss waits out the lease for a reconnect.
    if (exec.leaving) this.#remove(exec, false);
  }

  /** Stops sending work to an executor and tells it to finish what it runs and exit. */
  drain(executorId: string): boolean {
    const exec = this.executors.get(executorId);
    if (!exec) return false;
    exec.draining = true;
    exec.credit = 0;
    this.#hungry.delete(exec);
    if (exec.conn !== null) this.out.toExecutor(exec.conn, { t: 'drain' });
    return true;
  }

  // ---- time and scheduling ----------------------------------------------------------------------

  /** Expires leases. Call every fraction of `leaseMs`. */
  tick(): void {
    const now = this.clock.now();
    for (const exec of this.executors.values()) {
      if (now - exec.lastSeen > this.options.leaseMs) {
        if (exec.conn !== null) this.out.close(exec.conn, ErrorCode.TASK_EXECUTOR_LOST, 'lease expired: no heartbeat');
        this.#remove(exec, !exec.leaving);
      }
    }
    for (const session of this.sessions.values()) {
      if (session.goneAt === null) continue;
      const away = now - session.goneAt;
      if (session.tasks.size > 0 && session.leaseMs !== null && away > session.leaseMs) {
        // Its client is gone past its lease (a killed workflow engine): free the executors.
        for (const task of [...session.tasks.values()]) this.#cancelTask(task, 'its client lease expired');
      } else if (session.tasks.size === 0 && away > this.options.retentionMs) {
        this.sessions.delete(session.id);
        this.journal.sessionCollected(session);
      }
    }
    this.rates.sample(now, this.#dispatched);
  }

  #remove(exec: ExecutorRecord, lost: boolean): void {
    this.executors.delete(exec.info.id);
    this.journal.executorRemoved(exec);
    this.#hungry.delete(exec);
    this.#setHolds(exec, null);
    if (exec.conn !== null) this.#executorConns.delete(exec.conn);
    for (const task of [...exec.running.values()]) {
      if (lost) this.#lose(task, exec);
      else this.#requeue(task, exec);
    }
  }

  /** An attempt died with its executor: count it against the task, then retry or give up. */
  #lose(task: TaskRecord, exec: ExecutorRecord): void {
    task.lost++;
    const max = task.spec.maxAttempts ?? this.options.defaultMaxAttempts;
    if (task.cancelRequested) {
      this.#unhold(exec, task.uid);
      this.#finish(task, null, 'cancelled', { code: ErrorCode.TASK_CANCELLED, message: 'cancelled; its executor was lost' });
    } else if (task.attempt >= max) {
      this.#unhold(exec, task.uid);
      this.#finish(task, null, 'lost', {
        code: ErrorCode.TASK_EXECUTOR_LOST,
        message: `its executor was lost on ${task.lost} of ${task.attempt} attempts (maxAttempts ${max}); not retried again`,
      });
    } else {
      this.#requeue(task, exec);
    }
  }

  #requeue(task: TaskRecord, exec: ExecutorRecord): void {
    this.#unhold(exec, task.uid);
    task.state = 'queued';
    task.executor = null;
    this.#enqueue(task);
    this.journal.taskRequeued(task);
  }

  /** Queues a task, indexing it by the data it needs. */
  #enqueue(task: TaskRecord): void {
    this.queue.push(task);
    for (const key of task.locality ?? []) {
      let set = this.#byLocality.get(key);
      if (!set) this.#byLocality.set(key, (set = new Set()));
      set.add(task);
    }
  }

  /** Gives `exec` queued tasks whose inputs it already holds (the cache-hit pass). */
  #dispatchLocal(exec: ExecutorRecord, fits: (labelKey: string) => boolean, now: number): void {
    const holds = exec.holds!;
    // Walk the smaller side: an executor may hold far more than is queued, or the reverse.
    const keys = holds.size <= this.#byLocality.size ? [...holds] : [...this.#byLocality.keys()].filter((k) => holds.has(k));
    for (const key of keys) {
      const waiting = this.#byLocality.get(key);
      if (!waiting) continue;
      for (const task of waiting) {
        if (exec.credit <= 0) return;
        waiting.delete(task);
        if (task.state !== 'queued' || !fits(task.labelKey)) continue;
        this.queue.discard(task);
        this.#dispatch(task, exec, now);
      }
      if (waiting.size === 0) this.#byLocality.delete(key);
    }
  }

  /** A task that should wait for the busy executor holding its inputs (max-cache-hit). */
  #waitsForHolder(task: TaskRecord, exec: ExecutorRecord, now: number): boolean {
    if (this.options.dataPolicy !== 'max-cache-hit' || task.locality === null) return false;
    if (now - task.submittedAt > (this.options.cacheWaitMs ?? 2000)) return false;
    // Only executors holding its first input can hold them all.
    for (const other of this.#holders.get(task.locality[0]) ?? []) {
      if (other === exec || other.conn === null || other.draining) continue;
      if (task.locality.every((k) => other.holds!.has(k))) return true;
    }
    return false;
  }

  #dispatch(task: TaskRecord, exec: ExecutorRecord, now: number): void {
    task.state = 'dispatched';
    task.attempt++;
    task.executor = exec;
    task.dispatchedAt = now;
    exec.running.set(task.uid, task);
    exec.credit--;
    exec.idleSince = null;
    this.#dispatched++;
    this.journal.taskDispatched(task);
    this.out.toExecutor(exec.conn!, { t: 'task', uid: task.uid, attempt: task.attempt, spec: task.spec });
  }

  /** Matches queued tasks to executors with credit. Call once per batch of inbound messages. */
  schedule(): void {
    if (this.queue.size === 0 || this.#hungry.size === 0) return;
    const now = this.clock.now();
    const fitsFor = (exec: ExecutorRecord) => (key: string): boolean => {
      if (key === '') return true;
      let ok = exec.fits?.get(key);
      if (ok === undefined) {
        ok = labelsFit(this.#labelsOfKey(key), exec.info.labels);
        (exec.fits ??= new Map()).set(key, ok);
      }
      return ok;
    };
    // Cache hits first, for every free executor, before anyone takes tasks in queue order.
    if (this.#byLocality.size > 0) {
      for (const exec of this.#hungry) {
        if (exec.holds && exec.credit > 0 && exec.conn !== null && !exec.draining) this.#dispatchLocal(exec, fitsFor(exec), now);
      }
    }
    for (const exec of this.#hungry) {
      if (exec.credit <= 0 || exec.conn === null || exec.draining) {
        this.#hungry.delete(exec);
        continue;
      }
      const skip = this.options.dataPolicy === 'max-cache-hit' && this.#byLocality.size > 0 ? (t: TaskRecord) => this.#waitsForHolder(t, exec, now) : undefined;
      for (const task of this.queue.take(exec.credit, fitsFor(exec), skip)) this.#dispatch(task, exec, now);
      if (exec.credit <= 0) this.#hungry.delete(exec);
      if (this.queue.size === 0) break;
    }
  }

  #labelsOfKey(key: string): Record<string, string> {
    const labels: Record<string, string> = {};
    for (const pair of key.split('\n')) {
      const eq = pair.indexOf('=');
      labels[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    return labels;
  }

  /** The single place a task becomes terminal and its result enters the session's stream. */
  #finish(task: TaskRecord, r: AttemptResult | null, status: TaskStatus, error?: { code: string; message: string }): void {
    const now = this.clock.now();
    task.state = 'finished';
    this.tasks.delete(task.uid);
    const session = task.session;
    session.tasks.delete(task.id);
    session.finishedIds.add(task.id);
    session.finished++;
    const result: TaskResult = {
      id: task.id,
      status,
      exitCode: r?.exitCode ?? null,
      signal: r?.signal ?? null,
      stdout: r?.stdout ?? '',
      stderr: r?.stderr ?? '',
      truncated: r?.truncated ?? false,
      attempts: task.attempt,
      executor: task.executor?.info.id ?? null,
      timings: {
        submitted: task.submittedAt,
        dispatched: task.dispatchedAt,
        started: r?.startedAt ?? null,
        finished: r?.finishedAt ?? now,
      },
      ...(error ? { error: { code: error.code, message: error.message } } : {}),
      ...(r?.environment ? { environment: r.environment } : {}),
    };
    const seq = ++session.lastSeq;
    session.unacked.push({ seq, result });
    this.journal.taskFinished(task, seq, result);
    this.rates.count(status);
    if (session.conn !== null) this.out.toClient(session.conn, { t: 'result', seq, remaining: session.tasks.size, result });
  }

  // ---- recovery: the store hands back what it kept, before the dispatcher serves ---------------

  /** A session from the store; its client counts as away from now, until it reattaches. */
  restoreSession(id: string, createdAt: number, acked: number, leaseMs: number | null): void {
    const session = newSession(id, createdAt, leaseMs, this.clock.now());
    session.lastSeq = session.acked = acked;
    this.sessions.set(id, session);
  }

  /** An executor that held leases: it gets a full lease period from now to come back. */
  restoreExecutor(info: ExecutorInfo, registeredAt: number): void {
    this.executors.set(info.id, newExecutor(info, null, registeredAt, this.clock.now()));
  }

  /** One task from the store. Call in uid order so that FIFO order survives a restart. */
  restoreTask(row: RestoredTask): void {
    const session = this.sessions.get(row.session);
    if (!session) return;
    this.#nextUid = Math.max(this.#nextUid, row.uid + 1);
    if (row.state === 'finished') {
      session.finishedIds.add(row.id);
      session.finished++;
      session.submitted++;
      session.lastSeq = Math.max(session.lastSeq, row.seq!);
      if (row.seq! > session.acked) session.unacked.push({ seq: row.seq!, result: row.result! });
      return;
    }
    const exec = row.state === 'dispatched' && row.executor !== null ? this.executors.get(row.executor) : undefined;
    const task = newTask(row.uid, row.id, session, row.spec!, row.submittedAt);
    task.attempt = row.attempt;
    task.lost = row.lost;
    task.dispatchedAt = row.dispatchedAt;
    if (exec) {
      task.state = 'dispatched';
      task.executor = exec;
    }
    session.tasks.set(task.id, task);
    session.submitted++;
    this.tasks.set(task.uid, task);
    if (exec) exec.running.set(task.uid, task);
    else this.#enqueue(task);
  }

  /** Puts each session's unacknowledged results back in sequence order. */
  finishRestore(): void {
    for (const s of this.sessions.values()) s.unacked.sort((a, b) => a.seq - b.seq);
  }

  /** A point-in-time view for /api/status and `falconet status`. */
  status(): StatusSnapshot {
    return snapshotOf(this, this.clock.now());
  }
}
