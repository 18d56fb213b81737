/**
 * The submit side of a client: ids, batching (every submit of one event-loop turn goes out in
 * one message, at most `maxBatch` tasks), the submits not yet acknowledged (resent after a
 * reconnect; ids make that idempotent), the waiters of submit(), and submitMany's backpressure.
 *
 * A batch is also split by encoded size: when the link cannot fit a submit message into the
 * dispatcher's frame limit it hands it back, and it goes out again as two halves, down to single
 * tasks; a single task too large for any frame is refused with FRAME_TOO_LARGE. Splitting on
 * demand costs nothing for the common batch and measures with the real encoder.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, FalconetError, type DispatcherToClient, type Msg, type TaskResult, type TaskSpec } from '../protocol/index.js';

/** One task the dispatcher (or the SDK, for FRAME_TOO_LARGE) refused, with why. */
export interface Rejection {
  id: string;
  code: string;
  message: string;
}

interface Waiter {
  promise: Promise<TaskResult>;
  resolve(r: TaskResult): void;
  reject(e: Error): void;
}

/** What the pipeline needs from its client. */
export interface SubmitHost {
  /** Queues a message on the link; false when not connected (the message is dropped). */
  send(msg: unknown): boolean;
  maxBatch: number;
  /** Takes a received result not yet handed out, by task id. */
  takeBuffered(id: string): TaskResult | undefined;
  sessionId(): string;
}

export class SubmitPipeline {
  readonly #prefix = randomBytes(4).toString('hex');
  #counter = 0;
  #batch: TaskSpec[] = [];
  #batchQueued = false;
  #ref = 0;
  /** Sent submits not yet acknowledged, by ref: resent after a reconnect. */
  readonly #unacked = new Map<number, TaskSpec[]>();
  /** Tasks in #unacked, kept as it changes: submitMany asks for it once per task. */
  #unackedCount = 0;
  readonly #waiters = new Map<string, Waiter>();
  /** Specs of tasks awaiting results: resubmitted if the dispatcher forgot the session. */
  readonly #awaiting = new Map<string, TaskSpec>();
  /** Job arrays awaiting results: elements still to come, by array id (each element's result is `ID[i]`). */
  readonly #arrayLeft = new Map<string, number>();
  /** Listeners for progress of in-flight accounting (submitMany backpressure). */
  #settled: Array<{ resolve(): void; reject(e: Error): void }> = [];
  #acceptedCount = 0;
  #rejected: Rejection[] = [];
  /** Specs submitted to be left behind: forgotten once accepted. */
  readonly #detached = new WeakSet<TaskSpec>();
  #failed: FalconetError | null = null;

  constructor(private readonly host: SubmitHost) {}

  /** Tasks not yet accepted by the dispatcher (batched here or sent and unacknowledged). */
  get unaccepted(): number {
    return this.#batch.length + this.#unackedCount;
  }

  /** Waiters for the acceptance of one task (Client.start), by id. */
  readonly #acceptWaiters = new Map<string, () => void>();

  /** A fresh task id of this client (unique: a random prefix per client and a counter). */
  newId(): string {
    return `${this.#prefix}-${++this.#counter}`;
  }

  /** Resolves once the dispatcher has accepted task `id` (at once if it already did). */
  accepted(id: string): Promise<void> {
    const waiting = this.#batch.some((t) => t.id === id) || [...this.#unacked.values()].some((ts) => ts.some((t) => t.id === id));
    if (!waiting) return Promise.resolve();
    return new Promise((resolve) => this.#acceptWaiters.set(id, resolve));
  }

  /** Refs number submits and requests alike: one counter, so an error's ref names one thing. */
  nextRef(): number {
    return ++this.#ref;
  }

  hasWaiter(id: string): boolean {
    return this.#waiters.has(id);
  }

  submit(task: TaskSpec): Promise<TaskResult> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (task.array !== undefined) {
      return Promise.reject(new FalconetError(ErrorCode.USAGE, 'a job array has one result per element: submit it with submitMany() and read results()'));
    }
    if (task.id !== undefined) {
      // Already pending here: share its result rather than send it again.
      const pending = this.#waiters.get(task.id);
      if (pending) return pending.promise;
      if (this.#awaiting.has(task.id)) return this.#waiter(task.id).promise;
    }
    return this.#waiter(this.#enqueue(task).id!).promise;
  }

  async submitMany(
    tasks: Iterable<TaskSpec> | AsyncIterable<TaskSpec>,
    max: number,
    until: 'finished' | 'accepted',
  ): Promise<{ submitted: number; accepted: number; rejected: Rejection[] }> {
    const inFlight = () => (until === 'finished' ? this.#awaiting.size : this.unaccepted);
    const startAccepted = this.#acceptedCount;
    const startRejected = this.#rejected.length;
    let submitted = 0;
    const add = (task: TaskSpec): void => {
      const spec = this.#enqueue(task);
      if (until === 'accepted') this.#detached.add(spec);
      submitted++;
    };
    const one = async (task: TaskSpec): Promise<void> => {
      while (inFlight() >= max) await this.#nextSettle();
      add(task);
      // A full batch was just handed to the link: let it go out before building the next one, so
      // the dispatcher starts on the first tasks while later ones are still being read and packed
      // (a synchronous source would otherwise be packed whole before anything leaves).
      if (this.#batch.length === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    };
    if (Symbol.iterator in tasks) {
      // A synchronous source is read synchronously: awaiting only to wait for room or to let a
      // batch go saves a promise per task (a third of the SDK's cost per task, profiled).
      for (const task of tasks) {
        if (inFlight() < max && this.#batch.length + 1 < this.host.maxBatch) add(task);
        else await one(task);
      }
    } else {
      for await (const task of tasks) await one(task);
    }
    while (inFlight() > 0) await this.#nextSettle();
    return { submitted, accepted: this.#acceptedCount - startAccepted, rejected: this.#rejected.slice(startRejected) };
  }

  /** Sends what is batched now. */
  flush(): void {
    this.#batchQueued = false;
    if (this.#batch.length === 0) return;
    const tasks = this.#batch;
    this.#batch = [];
    this.#send(tasks);
  }

  /** After a welcome: resend what was not acknowledged; `forgotten`: everything still awaited. */
  resend(forgotten: boolean): void {
    if (forgotten) {
      this.#unacked.clear();
      this.#unackedCount = 0;
      const inBatch = new Set(this.#batch.map((s) => s.id));
      for (const spec of this.#awaiting.values()) if (!inBatch.has(spec.id)) this.#batch.push(spec);
    }
    for (const [ref, tasks] of this.#unacked) this.host.send({ t: 'submit', ref, tasks });
    this.flush();
  }

  onAccepted(m: Msg<DispatcherToClient, 'accepted'>): void {
    const tasks = this.#unacked.get(m.ref);
    if (!tasks) return;
    this.#unacked.delete(m.ref);
    this.#unackedCount -= tasks.length;
    this.#acceptedCount += m.accepted;
    for (const spec of tasks) if (this.#detached.has(spec)) this.#awaiting.delete(spec.id!);
    for (const r of m.rejected) this.#refuse(tasks[r.index]?.id ?? r.id ?? '', new FalconetError(r.code as ErrorCode, r.message));
    for (const k of m.known ?? []) if (k.finished) this.#finishedBefore(k.id);
    if (this.#acceptWaiters.size > 0) {
      for (const spec of tasks) {
        const accepted = this.#acceptWaiters.get(spec.id!);
        this.#acceptWaiters.delete(spec.id!);
        accepted?.();
      }
    }
    this.#settle();
  }

  /** A result arrived (for the first time). */
  onResult(result: TaskResult): void {
    if (!this.#awaiting.delete(result.id) && this.#arrayLeft.size > 0) this.#elementResult(result.id);
    const w = this.#waiters.get(result.id);
    if (w) {
      this.#waiters.delete(result.id);
      w.resolve(result);
    }
    this.#settle();
  }

  /** The link could not fit submit `ref` into a frame: split it, or refuse its one task. */
  onUnsendable(ref: number, err: FalconetError): void {
    const tasks = this.#unacked.get(ref);
    if (!tasks) return;
    this.#unacked.delete(ref);
    this.#unackedCount -= tasks.length;
    if (tasks.length === 1) {
      const id = tasks[0].id!;
      this.#refuse(id, new FalconetError(ErrorCode.FRAME_TOO_LARGE, `task ${id} is too large to send: ${err.message}`));
      this.#settle();
      return;
    }
    const half = tasks.length >> 1;
    this.#send(tasks.slice(0, half));
    this.#send(tasks.slice(half));
  }

  /** The client ended: every waiter, and submitMany, rejects with `err`; nothing more is sent. */
  failAll(err: FalconetError): void {
    this.#failed = err;
    this.#batch = [];
    for (const w of this.#waiters.values()) w.reject(err);
    this.#waiters.clear();
    for (const s of this.#settled.splice(0)) s.reject(err);
  }

  #waiter(id: string): Waiter {
    let w = this.#waiters.get(id);
    if (!w) {
      let resolve!: (r: TaskResult) => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<TaskResult>((res, rej) => ((resolve = res), (reject = rej)));
      w = { promise, resolve, reject };
      this.#waiters.set(id, w);
    }
    return w;
  }

  #enqueue(task: TaskSpec): TaskSpec {
    if (this.#failed) throw this.#failed;
    const spec = task.id === undefined ? { ...task, id: this.newId() } : task;
    this.#awaiting.set(spec.id!, spec);
    if (spec.array !== undefined) this.#arrayLeft.set(spec.id!, spec.array.to - spec.array.from + 1);
    this.#batch.push(spec);
    if (this.#batch.length >= this.host.maxBatch) this.flush();
    else if (!this.#batchQueued) {
      this.#batchQueued = true;
      setImmediate(() => this.flush());
    }
    return spec;
  }

  #send(tasks: TaskSpec[]): void {
    const ref = this.nextRef();
    this.#unacked.set(ref, tasks);
    this.#unackedCount += tasks.length;
    // Not connected: kept in #unacked and sent on the next welcome.
    this.host.send({ t: 'submit', ref, tasks });
  }

  #refuse(id: string, err: FalconetError): void {
    this.#awaiting.delete(id);
    this.#arrayLeft.delete(id);
    this.#rejected.push({ id, code: err.code, message: err.message });
    const w = this.#waiters.get(id);
    if (w) {
      this.#waiters.delete(id);
      w.reject(err);
    }
  }

  /**
   * The dispatcher already had this id and it has finished: its result will not come (again).
   * If it is here unread, it is the answer; else it went to the application before.
   */
  #finishedBefore(id: string): void {
    this.#awaiting.delete(id);
    this.#arrayLeft.delete(id);
    const w = this.#waiters.get(id);
    if (!w) return;
    this.#waiters.delete(id);
    const result = this.host.takeBuffered(id);
    if (result) w.resolve(result);
    else {
      w.reject(
        new FalconetError(
          ErrorCode.TASK_DUPLICATE,
          `task ${id} already finished in session ${this.host.sessionId()} and its result was handed out before; submit it under a new id to run it again`,
        ),
      );
    }
  }

  /** An array element's result: the array is no longer awaited once every element's came. */
  #elementResult(id: string): void {
    const open = id.endsWith(']') ? id.lastIndexOf('[') : -1;
    if (open <= 0) return;
    const array = id.slice(0, open);
    const left = this.#arrayLeft.get(array);
    if (left === undefined) return;
    if (left > 1) return void this.#arrayLeft.set(array, left - 1);
    this.#arrayLeft.delete(array);
    this.#awaiting.delete(array);
  }

  #nextSettle(): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => this.#settled.push({ resolve, reject }));
  }

  #settle(): void {
    const waiting = this.#settled;
    this.#settled = [];
    for (const s of waiting) s.resolve();
  }
}
