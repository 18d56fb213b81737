/**
 * Job arrays: one submitted template for N tasks (`array: {from, to}`), stored compactly. The
 * array is one JobArray record (its spec once, a cursor, counters and, only when needed, a bitset);
 * an element gets a TaskRecord only when it enters a bounded window at the head of the queue
 * (ARRAY_WINDOW per array), and from then on it is an ordinary task: dispatched, retried on its
 * own, finished with its own result under the id `ID[index]`. So a queued array of 1,000,000
 * costs one spec and at most ARRAY_WINDOW records, not a million.
 *
 * On disk the template is one row of the tasks table (its spec holds `array`); an element has a
 * row only once dispatched (written without a spec: it is rebuilt from the template) and a result
 * row once finished. Recovery rebuilds the cursor from those rows (restoreTemplate, restoreElement,
 * finishRestore): elements with neither are queued again.
 *
 * Pure: no I/O, no clock; the lifecycle gives it uids, queues and finishes its elements.
 */
import { ErrorCode, type TaskInfo, type TaskSpec, type TaskStatus } from '../protocol/index.js';
import { newTask, unpackFinished, type JobArray, type SessionRecord, type TaskRecord } from './model.js';

/** Element records an array keeps queued ahead of dispatch: enough to keep every executor fed. */
export const ARRAY_WINDOW = 1024;

/** What the arrays need of the task lifecycle. */
export interface ArrayHost {
  newUid(session: SessionRecord): number;
  /** Queues a new element record (not journalled: an element is written once dispatched). */
  admit(task: TaskRecord): void;
  /** Finishes a record that never ran, with this status and error. */
  finishUnrun(task: TaskRecord, error: { code: ErrorCode; message: string }): void;
  /** Cancels an unfinished task (queued at once, running through its executor). */
  cancel(task: TaskRecord, why: string): boolean;
  /** Every element of the array has its result; `ok` when all succeeded. */
  arrayDone(array: JobArray): void;
}

/** The spec of element `index`: the template without `array`, `after` and `id`, `{index}` substituted (cacheKey too). */
export function elementSpec(template: TaskSpec, index: number): TaskSpec {
  const { array: _a, after: _b, id: _c, ...spec } = template;
  const ix = String(index);
  const sub = (s: string) => (s.includes('{index}') ? s.replaceAll('{index}', ix) : s);
  if (spec.cmd) spec.cmd = spec.cmd.map(sub);
  if (spec.cwd !== undefined) spec.cwd = sub(spec.cwd);
  if (spec.stdin !== undefined) spec.stdin = sub(spec.stdin);
  // Each element memoizes under its own key when the template's key names `{index}`.
  if (spec.cacheKey !== undefined) spec.cacheKey = sub(spec.cacheKey);
  if (spec.cmd) {
    const env: Record<string, string> = {};
    for (const k in spec.env) env[k] = sub(spec.env[k]);
    env.FALCONET_ARRAY_INDEX = ix;
    spec.env = env;
  }
  return spec;
}

/** `ID[index]` split into the array id and the index, or null when `id` is not of that form. */
export function parseElementId(id: string): { array: string; index: number } | null {
  if (!id.endsWith(']')) return null;
  const open = id.lastIndexOf('[');
  if (open <= 0) return null;
  const digits = id.slice(open + 1, -1);
  if (!/^\d{1,10}$/.test(digits)) return null;
  return { array: id.slice(0, open), index: Number(digits) };
}

const size = (a: JobArray) => a.to - a.from + 1;
const isCovered = (a: JobArray, i: number) => a.covered !== null && (a.covered[(i - a.from) >> 3] & (1 << ((i - a.from) & 7))) !== 0;
function cover(a: JobArray, i: number): void {
  a.covered ??= new Uint8Array((size(a) + 7) >> 3);
  a.covered[(i - a.from) >> 3] |= 1 << ((i - a.from) & 7);
}

export class JobArrays {
  /** Arrays with elements still to finish, by template uid. */
  readonly #open = new Map<number, JobArray>();
  /** Elements of open, released arrays that have no record yet: queued work the queue does not hold. */
  #unqueued = 0;

  constructor(private readonly host: ArrayHost) {}

  /** Array elements waiting for the queue (not yet given a record), over every released array. */
  get unqueued(): number {
    return this.#unqueued;
  }

  /** Arrays with elements still to finish. */
  get open(): number {
    return this.#open.size;
  }

  get(uid: number): JobArray | undefined {
    return this.#open.get(uid);
  }

  /** A new array; `held` while its dependencies are pending (nothing is queued until release). */
  accept(uid: number, id: string, session: SessionRecord, spec: TaskSpec, now: number, held: boolean): JobArray {
    const a = this.#record(uid, id, session, spec, now, held);
    session.submitted += size(a);
    if (!held) this.#fill(a);
    return a;
  }

  #record(uid: number, id: string, session: SessionRecord, spec: TaskSpec, submittedAt: number, held: boolean): JobArray {
    const { from, to } = spec.array!;
    const a: JobArray = { uid, id, session, spec, from, to, submittedAt, next: from, covered: null, window: 0, unfinished: to - from + 1, failed: 0, firstFailure: null, held };
    (session.arrays ??= new Map()).set(id, a);
    session.unqueuedElements += a.unfinished;
    if (!held) this.#unqueued += a.unfinished;
    this.#open.set(uid, a);
    return a;
  }

  /** Its dependencies succeeded: queue its first elements. */
  release(a: JobArray): void {
    if (!a.held) return;
    a.held = false;
    this.#unqueued += this.#unrecorded(a);
    this.#fill(a);
  }

  /** An element left the queue for its first attempt: top the window up. */
  dispatched(task: TaskRecord): void {
    if (task.attempt !== 1) return;
    const a = task.element!;
    a.window--;
    this.#fill(a);
  }

  /** An element has its result. */
  finished(task: TaskRecord, status: TaskStatus): void {
    const a = task.element!;
    if (task.attempt === 0) a.window--;
    if (status !== 'succeeded') {
      a.failed++;
      a.firstFailure ??= task.id;
    }
    if (--a.unfinished === 0) {
      this.#open.delete(a.uid);
      this.host.arrayDone(a);
    } else if (!a.held) this.#fill(a);
  }

  /**
   * Cancels every element still unfinished: queued ones and those not yet queued end at once
   * (each with its own result), running ones through their executors. Returns how many it stopped.
   */
  cancel(a: JobArray, why: string, error?: { code: ErrorCode; message: string }): number {
    if (a.unfinished === 0) return 0;
    let count = 0;
    const records = [...a.session.tasks.values()].filter((t) => t.element === a);
    const err = error ?? { code: ErrorCode.TASK_CANCELLED, message: `${why} before it ran` };
    // The cursor goes past the end first, so that no result below queues more elements.
    const first = a.next;
    a.next = a.to + 1;
    for (let i = first; i <= a.to; i++) {
      if (isCovered(a, i)) continue;
      this.host.finishUnrun(this.#materialize(a, i), err);
      count++;
    }
    for (const task of records) if (this.host.cancel(task, why)) count++;
    return count;
  }

  /** Cancels element `index` that has no record yet; false when it has one or a result (the caller looks there). */
  cancelUnqueued(a: JobArray, index: number, why: string): boolean {
    if (index < a.next || index > a.to || isCovered(a, index) || !this.#open.has(a.uid)) return false;
    cover(a, index);
    this.host.finishUnrun(this.#materialize(a, index), { code: ErrorCode.TASK_CANCELLED, message: `${why} before it ran` });
    return true;
  }

  #materialize(a: JobArray, i: number): TaskRecord {
    const task = newTask(this.host.newUid(a.session), `${a.id}[${i}]`, a.session, elementSpec(a.spec, i), a.submittedAt);
    task.element = a;
    a.window++; // until its first dispatch, or its result
    a.session.unqueuedElements--;
    if (!a.held) this.#unqueued--;
    return task;
  }

  /** Gives records to the next elements until the window is full or none is left. */
  #fill(a: JobArray): void {
    while (a.window < ARRAY_WINDOW && a.next <= a.to) {
      const i = a.next++;
      if (isCovered(a, i)) continue;
      this.host.admit(this.#materialize(a, i));
    }
  }

  /** Elements of `a` without a record or a result. */
  #unrecorded(a: JobArray): number {
    let n = 0;
    for (let i = a.next; i <= a.to; i++) if (!isCovered(a, i)) n++;
    return n;
  }

  // ---- recovery --------------------------------------------------------------------------------

  /** The template row of an array, before its elements (uid order); `held` when it names dependencies. */
  restoreTemplate(uid: number, id: string, session: SessionRecord, spec: TaskSpec, submittedAt: number): JobArray {
    const held = (spec.after?.length ?? 0) > 0;
    const a = this.#record(uid, id, session, spec, submittedAt, held);
    session.submitted += size(a);
    return a;
  }

  /** The array and spec of a stored, unfinished element row (rows of elements carry no spec). */
  restoreElement(session: SessionRecord, id: string): { array: JobArray; spec: TaskSpec } | null {
    const e = parseElementId(id);
    const a = e ? session.arrays?.get(e.array) : undefined;
    if (!e || !a || e.index < a.from || e.index > a.to) return null;
    cover(a, e.index);
    session.unqueuedElements--;
    if (!a.held) this.#unqueued--;
    return { array: a, spec: elementSpec(a.spec, e.index) };
  }

  /**
   * After every row is back: elements with a stored result count as finished; arrays with all
   * their results are done; the others queue their first elements (unless held).
   */
  finishRestore(sessions: Iterable<SessionRecord>): void {
    for (const s of sessions) {
      if (s.arrays === null) continue;
      for (const [id, packed] of s.finishedIds) {
        const e = parseElementId(id);
        const a = e ? s.arrays.get(e.array) : undefined;
        if (!e || !a || e.index < a.from || e.index > a.to || isCovered(a, e.index)) continue;
        cover(a, e.index);
        s.unqueuedElements--;
        if (!a.held) this.#unqueued--;
        a.unfinished--;
        s.submitted--; // restoreFinished counted it already
        const { status } = unpackFinished(packed);
        if (status !== 'succeeded') {
          a.failed++;
          a.firstFailure ??= id;
        }
      }
      for (const a of s.arrays.values()) {
        // Elements restored as unfinished records were counted in `unfinished` and stay so.
        if (a.unfinished === 0) this.#open.delete(a.uid);
        else if (!a.held) this.#fill(a);
      }
    }
  }
}

/**
 * What a query says of `id` in `session` when it is a job array (its progress) or one of its
 * elements still waiting without a record (queued); null otherwise.
 */
export function arrayPartInfo(session: SessionRecord, id: string): TaskInfo | null {
  const a = session.arrays?.get(id);
  if (a) {
    const total = size(a);
    const done = total - a.unfinished;
    const state = a.unfinished > 0 ? (a.next > a.from || a.covered !== null ? 'running' : 'queued') : a.failed === 0 ? 'succeeded' : 'failed';
    const progress = `array of ${total} (${a.from}-${a.to}): ${done} finished, ${a.failed} not succeeded${a.held ? '; waiting for the tasks it names in after to succeed' : ''}`;
    return { id, session: session.id, state, attempt: 0, executor: null, submittedAt: a.submittedAt, dispatchedAt: null, waiting: progress };
  }
  const e = parseElementId(id);
  const of = e ? session.arrays?.get(e.array) : undefined;
  if (!e || !of || of.unfinished === 0 || e.index < of.next || e.index > of.to || isCovered(of, e.index)) return null;
  const why = of.held ? 'its array waits for the tasks it names in after to succeed' : 'an array element not yet at the head of the queue';
  return { id, session: session.id, state: 'queued', attempt: 0, executor: null, submittedAt: of.submittedAt, dispatchedAt: null, waiting: why };
}
