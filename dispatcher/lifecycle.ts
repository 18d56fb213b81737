/**
 * The task lifecycle: accepted → queued → dispatched (an attempt on an executor) → finished, with
 * every way back to the queue going through the one attempt rule (attempts.ts). This is the one
 * place a task becomes terminal and its result enters its session's stream.
 */
import { ErrorCode, GENERATED_ID_PREFIX, type AttemptResult, type TaskResult, type TaskSpec, type TaskStatus } from '../protocol/index.js';
import { judgeAttempt, type AttemptEnd, type AttemptLimits } from './attempts.js';
import { newTask, type Clock, type ExecutorRecord, type Journal, type SessionRecord, type TaskRecord } from './model.js';
import type { ExecutorRegistry } from './registry.js';
import type { Scheduler } from './scheduler.js';
import type { SessionTable } from './sessions.js';
import type { Rates } from './status.js';
import type { Outbox } from './core.js';
import type { Memo } from './memo.js';

export class TaskLifecycle {
  /** Unfinished tasks by uid: the executor link speaks uids. */
  readonly #tasks = new Map<number, TaskRecord>();
  #nextUid = 1;
  /** Attempts started since this dispatcher started (for the dispatch rate). */
  dispatched = 0;

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

  /** The uid the next accepted task gets (uids only grow). */
  get nextUid(): number {
    return this.#nextUid;
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
  accept(session: SessionRecord, spec: TaskSpec, now: number): TaskRecord | null {
    const uid = this.#nextUid++;
    const id = spec.id ?? `${GENERATED_ID_PREFIX}${uid}`;
    if (session.tasks.has(id) || session.finishedIds.has(id)) return null;
    const task = newTask(uid, id, session, spec, now);
    session.tasks.set(id, task);
    session.submitted++;
    this.#tasks.set(uid, task);
    this.journal.taskAccepted(task);
    this.rates.submitted++;
    if (spec.cacheKey !== undefined && this.memo) this.memo.admit(task);
    else this.scheduler.enqueue(task);
    return task;
  }

  /** Starts an attempt of a queued task on an executor with credit (the scheduler's callback). */
  dispatch(task: TaskRecord, exec: ExecutorRecord, now: number): void {
    task.state = 'dispatched';
    task.attempt++;
    task.executor = exec;
    task.dispatchedAt = now;
    this.registry.hold(exec, task);
    this.dispatched++;
    this.journal.taskDispatched(task);
    this.out.toExecutor(exec.conn!, { t: 'task', uid: task.uid, attempt: task.attempt, spec: task.spec });
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

  #ended(task: TaskRecord, end: AttemptEnd): void {
    const verdict = judgeAttempt(task, end, this.limits);
    if (verdict.retry) {
      task.state = 'queued';
      task.executor = null;
      this.scheduler.enqueue(task);
      this.journal.taskRequeued(task);
      this.rates.retried++;
      return;
    }
    this.finish(task, end.kind === 'result' ? end.result : null, verdict.status, verdict.error);
  }

  /** Cancels a task: at once when queued, through its executor when running. */
  cancel(task: TaskRecord, why = 'cancelled'): boolean {
    if (task.state === 'queued') {
      task.state = 'finished'; // leaves the queue lazily
      // A task waiting for an identical run (memo.ts) was never in the queue.
      if (task.spec.cacheKey === undefined || !this.memo?.forget(task)) this.scheduler.discard(task);
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
    if (session.conn !== null) this.out.toClient(session.conn, { t: 'result', seq, remaining: session.tasks.size, result });
    if (task.spec.cacheKey !== undefined) this.memo?.finished(task, result);
  }

  /** An unfinished task from the store. Call in uid order so that FIFO order survives a restart. */
  restore(task: TaskRecord, exec: ExecutorRecord | undefined): void {
    this.#nextUid = Math.max(this.#nextUid, task.uid + 1);
    task.session.tasks.set(task.id, task);
    task.session.submitted++;
    this.#tasks.set(task.uid, task);
    if (exec) {
      task.state = 'dispatched';
      task.executor = exec;
      exec.running.set(task.uid, task);
      if (task.spec.cacheKey !== undefined) this.memo?.adoptRunning(task);
    } else if (task.spec.cacheKey !== undefined && this.memo) this.memo.admit(task);
    else this.scheduler.enqueue(task);
  }

  /** Keeps generated uids above every uid the store used. */
  restoreUid(uid: number): void {
    this.#nextUid = Math.max(this.#nextUid, uid + 1);
  }
}
