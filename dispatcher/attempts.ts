/**
 * The one rule for attempts: when an attempt of a task ends, for whatever reason, is the task run
 * again or is it over, and with what status? Every path that takes an attempt away from an
 * executor (a result, a lost executor, a hand-back without fault) asks here, so no task can loop
 * forever and none ends for a reason another path would have retried.
 *
 * Three counters bound a task:
 * - attempts that count (`attempt - requeues`) against `maxAttempts`: crashes of its executor,
 *   results with a retryable error code (protocol/errors.ts), exit codes listed in `retryOnExit`;
 * - hand-backs without fault (its executor reconnected without it, drained, stopped) against
 *   `maxRequeues`: they are not the task's fault, but a task must not circle forever either;
 * - `lost`, the crash counter, reported in the final message.
 */
import { ErrorCode, isRetryable, type AttemptResult, type TaskStatus } from '../protocol/index.js';
import type { TaskRecord } from './model.js';

/** How an attempt left its executor. */
export type AttemptEnd =
  /** The executor died with it (a new incarnation came back without it, or its lease expired). */
  | { kind: 'crash' }
  /** Handed back without fault: the executor came back without it, drained, or said bye. */
  | { kind: 'requeue' }
  /** The executor reported an outcome. */
  | { kind: 'result'; result: AttemptResult };

export type Verdict =
  | { retry: true }
  | { retry: false; status: TaskStatus; error?: { code: ErrorCode; message: string } };

export interface AttemptLimits {
  /** Attempts a task gets when its spec does not say. */
  defaultMaxAttempts: number;
  /** Hand-backs without fault a task may take before it ends `lost` with TASK_REQUEUE_LIMIT. */
  maxRequeues: number;
}

/** Attempts that count against `maxAttempts` so far (the current one included). */
export function countedAttempts(task: TaskRecord): number {
  return task.attempt - task.requeues;
}

/** Decides what follows an attempt's end, updating the task's counters. */
export function judgeAttempt(task: TaskRecord, end: AttemptEnd, limits: AttemptLimits): Verdict {
  const max = task.spec.maxAttempts ?? limits.defaultMaxAttempts;
  const left = countedAttempts(task) < max;
  if (end.kind === 'crash') {
    task.lost++;
    if (task.cancelRequested) return { retry: false, status: 'cancelled', error: { code: ErrorCode.TASK_CANCELLED, message: 'cancelled; its executor was lost' } };
    if (left) return { retry: true };
    return {
      retry: false,
      status: 'lost',
      error: { code: ErrorCode.TASK_EXECUTOR_LOST, message: `its executor was lost on ${task.lost} of ${countedAttempts(task)} attempts (maxAttempts ${max}); not retried again` },
    };
  }
  if (end.kind === 'requeue') {
    task.requeues++;
    if (task.cancelRequested) return { retry: false, status: 'cancelled', error: { code: ErrorCode.TASK_CANCELLED, message: 'cancelled before it ran again' } };
    if (task.requeues <= limits.maxRequeues) return { retry: true };
    return {
      retry: false,
      status: 'lost',
      error: { code: ErrorCode.TASK_REQUEUE_LIMIT, message: `handed back by its executors ${task.requeues} times without a result (limit ${limits.maxRequeues}); not queued again` },
    };
  }
  const r = end.result;
  if (task.cancelRequested) return r.status === 'succeeded' ? { retry: false, status: 'succeeded' } : { retry: false, status: 'cancelled', ...(r.error ? { error: r.error } : {}) };
  if (r.status === 'failed' && left) {
    // The task asked to be retried on this exit code, or the failure was not its own.
    if (r.exitCode !== null && task.spec.retryOnExit?.includes(r.exitCode)) return { retry: true };
    if (r.error !== undefined && isRetryable(r.error.code)) return { retry: true };
  }
  return { retry: false, status: r.status, ...(r.error ? { error: r.error } : {}) };
}
