/**
 * The task lifecycle: accepted → queued → dispatched (an attempt on an executor) → finished, with
 * every way back to the queue going through the one attempt rule (attempts.ts). This is the one
 * place a task becomes terminal and its result enters its session's stream.
 */
import { ErrorCode, GENERATED_ID_PREFIX, type AttemptResult, type TaskResult, type TaskSpec, type TaskStatus } from '../protocol/index.js';
import { judgeAttempt, type AttemptEnd, type AttemptLimits } from './attempts.js';
import { newTask, unfinishedOf, type Clock, type ExecutorRecord, type JobArray, type Journal, type SessionRecord, type TaskRecord } from './model.js';
import type { ExecutorRegistry } from './registry.js';
import type { Scheduler } from './scheduler.js';
import type { SessionTable } from './sessions.js';
import type { Rates } from './status.js';
import type { Outbox } from './core.js';
import type { Memo } from './memo.js';

/**
 * Job arrays and dependencies (arrays.ts, dependencies.ts, wired by task-extras.ts): what the
 * lifecycle calls them for. Plain tasks pay one field test per dispatch and one call per finish.
 */
export interface LifecycleExtras {
  /** A task with `array` arrived: it becomes a JobArray (held while `after` is pending). */
  acceptArray(uid: number, id: string, session: SessionRecord, spec: TaskSpec, now: number): JobArray;
  /** An array element left the queue for an attempt. */
  elementDispatched(task: TaskRecord): void;
  /** Any task finished (after its result is in its session). */
  finished(task: TaskRecord, status: TaskStatus, error: { code: ErrorCode; message: string } | undefined): void;
  /** A queued task is being cancelled: true when it was held for dependencies (so not in the queue). */
  unhold(task: TaskRecord): boolean;
  /** Tasks and arrays held for their dependencies (in `size`, not in the queue). */
  held(): number;
  /** Array elements waiting without a record (queued work not in the queue). */
  unqueued(): number;
}

/** Who wants to know when attempts end (log-streams.ts). */
export interface AttemptObserver {
  requeued(task: TaskRecord, why: string): void;
  finished(task: TaskRecord, status: TaskStatus): void;
}

export class TaskLifecycle {
  /** Set once by the core (arrays and dependencies). */
  extras: LifecycleExtras | null = null;
  /** Unfinished tasks by uid: the executor link speaks uids. */
  readonly #tasks = new Map<number, TaskRecord>();
  #nextUid = 1;
  /**
   * With several dispatchers (cluster.ts), a uid carries its session's partition in its low bits
   * (uid = counter × stride + partition): whoever receives an attempt's result knows which
   * dispatcher owns it without a lookup. Alone, the stride is 1 and uids are 1, 2, 3…
   */
  #uidStride = 1;
  #partitionOf: ((session: SessionRecord) => number) | null = null;
  /** Attempts started since this dispatcher started (for the dispatch rate). */
  dispatched = 0;
  /**
   * Attempts given back unstarted (work stealing) whose next dispatch is not counted again, so that
   * `dispatched` stays monotonic (a metrics counter) and counts each attempt once in aggregate.
   */
  #givenBack = 0;
  /** Told when an attempt is re-queued and when a task finishes (the live output readers). */
  observer: AttemptObserver | null = null;

  constructor(
    private readonly limits: AttemptLimits,
    private readonly sessions: SessionTable,
    private readonly registry: ExecutorRegistry,
    private readonly scheduler: Scheduler,
    private readonly out: Outbox,
    private readonly journal: Journal,
    private readonly clock: Clock,
    private readonly rates: Rates,
    /** Memoized results: only tasks with a `cacheKey` go through it. */
    private readonly memo: Memo | null = null,
  ) {}

  /** No uid accepted from here on is below this one (uids only grow). */
  get nextUid(): number {
    return this.#nextUid * this.#uidStride;
  }

  /**
   * Cluster mode: uids from `firstCounter` on (a range this dispatcher's incarnation holds
   * alone), each tagged with its session's partition. Restored uids then no longer move the counter:
   * they come from other ranges.
   */
  partitionUids(firstCounter: number, stride: number, partitionOf: (session: SessionRecord) => number): void {
    this.#nextUid = firstCounter;
    this.#uidStride = stride;
    this.#partitionOf = partitionOf;
  }

  #uid(session: SessionRecord): number {
    const n = this.#nextUid++;
    return this.#partitionOf === null ? n : n * this.#uidStride + this.#partitionOf(session);
  }

  /** Unfinished tasks. */
  get size(): number {
    return this.#tasks.size;
  }

  get(uid: number): TaskRecord | undefined {
    return this.#tasks.get(uid);
  }

  /**
   * Accepts a valid task into a session. Returns null when the session already has its id
   * (an idempotent resubmit: still one task).
   */
  accept(session: SessionRecord, spec: TaskSpec, now: number): TaskRecord | JobArray | null {
    const uid = this.#uid(session);
    const id = spec.id ?? `${GENERATED_ID_PREFIX}${uid}`;
    if (session.tasks.has(id) || session.finishedIds.has(id) || session.arrays?.has(id)) return null;
    const task = newTask(uid, id, session, spec, now);
    if (spec.array !== undefined) {
      // The template's row is the array's one row; its elements are counted as they are submitted.
      this.journal.taskAccepted(task);
      const array = this.extras!.acceptArray(uid, id, session, spec, now);
      this.rates.submitted += array.to - array.from + 1;
      return array;
    }
    session.tasks.set(id, task);
    session.submitted++;
    this.#tasks.set(uid, task);
    this.journal.taskAccepted(task);
    this.rates.submitted++;
    // A task with `after` waits out of the queue until the core wires its dependencies.
    if (spec.after !== undefined) return task;
    if (spec.cacheKey !== undefined && this.memo) this.memo.admit(task);
    else this.scheduler.enqueue(task);
    return task;
  }

  /** A fresh uid (for array elements, which get theirs when they are given a record). */
  newUid(session: SessionRecord): number {
    return this.#uid(session);
  }

  /**
   * Queues a task made outside accept (an array element, a released dependant); nothing is
   * journalled. One with a `cacheKey` goes through the memo as at accept: a released dependant
   * whose key has a result does not run.
   */
  admit(task: TaskRecord): void {
    if (!this.#tasks.has(task.uid)) {
      task.session.tasks.set(task.id, task);
      this.#tasks.set(task.uid, task);
    }
    if (task.spec.cacheKey !== undefined && this.memo) this.memo.admit(task);
    else this.scheduler.enqueue(task);
  }

  /** Starts an attempt of a queued task on an executor with credit (the scheduler's callback). */
  dispatch(task: TaskRecord, exec: ExecutorRecord, now: number): void {
    task.state = 'dispatched';
    task.attempt++;
    task.executor = exec;
    task.dispatchedAt = now;
    this.registry.hold(exec, task);
    if (task.element !== null) this.extras!.elementDispatched(task);
    if (this.#givenBack > 0) this.#givenBack--;
    else this.dispatched++;
    this.journal.taskDispatched(task);
    const gpus = task.gpus;
    this.out.toExecutor(exec.conn!, gpus === null ? { t: 'task', uid: task.uid, attempt: task.attempt, spec: task.spec } : { t: 'task', uid: task.uid, attempt: task.attempt, spec: task.spec, gpus });
  }

  /**
   * An executor reported an attempt. The first result of a task wins; later ones are dropped (a
   * late result of a task that was re-queued in the meantime is used, and the newer run cancelled).
   * An executor speaks only for attempts it was given: the one it holds, or the last one taken
   * back from it. Anything else is `refused` and changes nothing.
   */
  reported(exec: ExecutorRecord, r: AttemptResult): 'used' | 'duplicate' | 'refused' {
    const now = this.clock.now();
    const task = this.#tasks.get(r.uid);
    const mine = exec.running.get(r.uid);
    if (mine !== undefined && mine.attempt === r.attempt) {
      this.registry.unhold(exec, r.uid, now);
      exec.completed++;
      this.registry.returnCredit(exec);
    } else if (task === undefined || task.state === 'finished') {
      return 'duplicate'; // a late duplicate (resent after a lost ack): the task has its result
    } else if (task.handedBack?.exec !== exec || task.handedBack.attempt !== r.attempt) {
      return 'refused';
    } else if (task.state === 'queued') {
      // Its attempt was taken back (lease, reconnect) and it waits to run again; but it did finish.
      task.state = 'dispatched';
      this.scheduler.discard(task);
    } else if (task.executor) {
      // It runs again (elsewhere, or here as a newer attempt); that run is no longer needed.
      const other = task.executor;
      this.registry.unhold(other, task.uid, now);
      this.registry.returnCredit(other);
      if (other.conn !== null) this.out.toExecutor(other.conn, { t: 'cancel', uid: task.uid, attempt: task.attempt });
    }
    if (!task) return 'duplicate';
    task.executor = exec;
    task.handedBack = null;
    this.#ended(task, { kind: 'result', result: r });
    return 'used';
  }

  /** An attempt left its executor without a result: it crashed, or handed it back. */
  takenBack(task: TaskRecord, exec: ExecutorRecord, kind: 'crash' | 'requeue'): void {
    this.registry.unhold(exec, task.uid, this.clock.now());
    task.handedBack = { exec, attempt: task.attempt };
    this.#ended(task, { kind });
  }

  /**
   * Work stealing (steal.ts): `exec` gave back an attempt that never started. It is no retry and
   * no hand-back: the attempt number is undone (the next assignment reuses it, and only the
   * executor holding an attempt may report it, so the giver cannot speak for it) and no counter
   * moves. Returns true when the task is to be queued again (false: it was cancelled meanwhile
   * and ends here).
   */
  givenBack(task: TaskRecord, exec: ExecutorRecord): boolean {
    this.registry.unhold(exec, task.uid, this.clock.now());
    this.registry.returnCredit(exec);
    this.#givenBack++;
    task.attempt--;
    task.executor = null;
    // An array element back before its first start waits for its first dispatch again: its
    // array's window counts it (arrays.ts counts a dispatch at attempt 1, a finish at attempt 0).
    if (task.element !== null && task.attempt === 0) task.element.window++;
    if (task.cancelRequested) {
      this.finish(task, null, 'cancelled', { code: ErrorCode.TASK_CANCELLED, message: 'cancelled before it started' });
      return false;
    }
    task.state = 'queued';
    this.journal.taskRequeued(task);
    this.observer?.requeued(task, 'given back before it started (work stealing)');
    return true;
  }

  #ended(task: TaskRecord, end: AttemptEnd): void {
    const verdict = judgeAttempt(task, end, this.limits);
    if (verdict.retry) {
      task.state = 'queued';
      task.executor = null;
      this.scheduler.enqueue(task);
      this.journal.taskRequeued(task);
      this.rates.retried++;
      this.observer?.requeued(task, end.kind === 'result' ? `${end.result.status}, retried` : end.kind === 'crash' ? 'its executor was lost' : 'handed back by its executor');
      return;
    }
    this.finish(task, end.kind === 'result' ? end.result : null, verdict.status, verdict.error);
  }

  /** Cancels a task: at once when queued, through its executor when running. */
  cancel(task: TaskRecord, why = 'cancelled'): boolean {
    if (task.state === 'queued') {
      task.state = 'finished'; // leaves the queue lazily
      // A task held for its dependencies, or waiting for an identical run (memo.ts), was never in the queue.
      if (!this.extras?.unhold(task) && (task.spec.cacheKey === undefined || !this.memo?.forget(task))) this.scheduler.discard(task);
      this.finish(task, null, 'cancelled', { code: ErrorCode.TASK_CANCELLED, message: `${why} before it ran` });
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

  /** The single place a task becomes terminal and its result enters the session's stream. */
  finish(task: TaskRecord, r: AttemptResult | null, status: TaskStatus, error?: { code: ErrorCode; message: string }): void {
    const now = this.clock.now();
    task.state = 'finished';
    this.#tasks.delete(task.uid);
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
    this.rates.timed(result.timings);
    this.#deliver(task, result);
  }

  /** Finishes a task that did not run with a memoized result (memo.ts): timings are not its own. */
  finishCached(task: TaskRecord, result: TaskResult): void {
    task.state = 'finished';
    this.#tasks.delete(task.uid);
    this.#deliver(task, result);
  }

  /** Appends a finished task's result to its session's stream, journals it and sends it. */
  #deliver(task: TaskRecord, result: TaskResult): void {
    const session = task.session;
    const seq = this.sessions.append(session, task.id, result);
    this.journal.taskFinished(task, seq, result);
    this.rates.count(result.status);
    if (session.conn !== null) this.out.toClient(session.conn, { t: 'result', seq, remaining: unfinishedOf(session), result });
    if (task.spec.cacheKey !== undefined) this.memo?.finished(task, result);
    this.extras?.finished(task, result.status, result.error as { code: ErrorCode; message: string } | undefined);
    this.observer?.finished(task, result.status);
  }

  /** An unfinished task from the store. Call in uid order so that FIFO order survives a restart. */
  restore(task: TaskRecord, exec: ExecutorRecord | undefined, held = false): void {
    this.restoreUid(task.uid);
    task.session.tasks.set(task.id, task);
    task.session.submitted++;
    this.#tasks.set(task.uid, task);
    if (exec) {
      task.state = 'dispatched';
      task.executor = exec;
      exec.running.set(task.uid, task);
      if (task.spec.cacheKey !== undefined) this.memo?.adoptRunning(task);
    } else if (held) return; // wired again by the core once everything is restored
    else if (task.spec.cacheKey !== undefined && this.memo) this.memo.admit(task);
    else this.scheduler.enqueue(task);
  }

  /** Keeps generated uids above every uid the store used. */
  restoreUid(uid: number): void {
    if (this.#partitionOf === null) this.#nextUid = Math.max(this.#nextUid, uid + 1);
  }
}
