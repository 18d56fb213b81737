/**
 * What an engine holds on to: task handles (an id now, a result later, a cancel) and the one
 * helper that lets an AbortSignal stop a wait.
 */
import type { TaskInfo, TaskResult } from '../protocol/index.js';

/** A submitted task: its id, its result when it comes, and a way to cancel it. */
export interface TaskHandle {
  readonly id: string;
  /** Resolves with the task's result (whatever its status); `signal` stops waiting, not the task. */
  result(options?: { signal?: AbortSignal }): Promise<TaskResult>;
  /** Cancels the task (a queued one at once, a running one through its executor); true if it was still running or queued. */
  cancel(): Promise<boolean>;
  /** Where the task is now (the same as {@link Client.task}). */
  describe(): Promise<TaskInfo>;
}

/** Rejects with `signal`'s reason once it aborts; the returned function stops listening. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, onAbort?: () => void): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    onAbort?.();
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => {
      onAbort?.();
      reject(signal.reason);
    };
    signal.addEventListener('abort', abort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', abort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', abort);
        reject(e);
      },
    );
  });
}

