/**
 * Wires job arrays (arrays.ts) and dependencies (dependencies.ts) into the task lifecycle: the
 * one object the lifecycle calls for them, and what the core asks of them at submit, cancel,
 * query and restore. Plain tasks never reach past `finished`'s first checks.
 */
import { ErrorCode, type TaskSpec, type TaskStatus } from '../protocol/index.js';
import { JobArrays, parseElementId } from './arrays.js';
import { Dependencies } from './dependencies.js';
import type { LifecycleExtras, TaskLifecycle } from './lifecycle.js';
import type { JobArray, SessionRecord, TaskRecord } from './model.js';

export class TaskExtras implements LifecycleExtras {
  readonly arrays: JobArrays;
  readonly deps: Dependencies;

  constructor(private readonly tasks: TaskLifecycle) {
    this.arrays = new JobArrays({
      newUid: (session) => tasks.newUid(session),
      admit: (t) => tasks.admit(t),
      finishUnrun: (t, error) => tasks.finish(t, null, 'cancelled', error),
      cancel: (t, why) => tasks.cancel(t, why),
      arrayDone: (a) => this.#arrayDone(a),
    });
    this.deps = new Dependencies({ release: (uid) => this.#release(uid), fail: (uid, cause, how) => this.#fail(uid, cause, how) });
  }

  acceptArray(uid: number, id: string, session: SessionRecord, spec: TaskSpec, now: number): JobArray {
    return this.arrays.accept(uid, id, session, spec, now, spec.after !== undefined);
  }

  elementDispatched(task: TaskRecord): void {
    this.arrays.dispatched(task);
  }

  finished(task: TaskRecord, status: TaskStatus, error: { code: ErrorCode; message: string } | undefined): void {
    if (task.element !== null) this.arrays.finished(task, status);
    if (this.deps.waitedFor(task.uid)) this.deps.ended(task.uid, status === 'succeeded', task.id, `ended ${status}${error ? ` (${error.code})` : ''}`);
  }

  unhold(task: TaskRecord): boolean {
    return this.deps.unhold(task.uid);
  }

  held(): number {
    return this.deps.held;
  }

  unqueued(): number {
    return this.arrays.unqueued;
  }

  /** After a submit's tasks are all accepted: hold each one (task or array) that names dependencies. */
  wire(record: TaskRecord | JobArray): void {
    this.deps.wire(record.uid, record.session, record.spec.after!);
  }

  /**
   * Cancels `id` of `session` when it is an array (every element) or an element not yet queued;
   * returns how many elements it stopped, or null when `id` is neither.
   */
  cancelArrayPart(session: SessionRecord, id: string): number | null {
    const array = session.arrays?.get(id);
    if (array) {
      this.deps.unhold(array.uid);
      return this.arrays.cancel(array, 'cancelled');
    }
    const e = parseElementId(id);
    const of = e ? session.arrays?.get(e.array) : undefined;
    if (!e || !of) return null;
    return this.arrays.cancelUnqueued(of, e.index, 'cancelled') ? 1 : 0;
  }

  #arrayDone(a: JobArray): void {
    if (!this.deps.waitedFor(a.uid)) return;
    const how = a.failed === 0 ? 'succeeded' : `did not succeed: ${a.failed} of its elements did not (first ${a.firstFailure})`;
    this.deps.ended(a.uid, a.failed === 0, a.id, how);
  }

  #release(uid: number): void {
    const task = this.tasks.get(uid);
    if (task) return this.tasks.admit(task);
    const array = this.arrays.get(uid);
    if (array) this.arrays.release(array);
  }

  #fail(uid: number, cause: string, how: string): void {
    const error = { code: ErrorCode.DEPENDENCY_FAILED, message: `not run: its dependency ${cause} ${how}` };
    const task = this.tasks.get(uid);
    if (task) return this.tasks.finish(task, null, 'cancelled', error);
    const array = this.arrays.get(uid);
    if (array) this.arrays.cancel(array, 'dependency failed', error);
  }
}
