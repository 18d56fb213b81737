/**
 * The client SDK. A client works in a session: every task it submits gets an id (its own, or
 * one the SDK makes), every result arrives once, in order, and the session outlives the
 * connection: the SDK reconnects on its own, resends submits the dispatcher had not yet
 * acknowledged (idempotent by id), and resumes the result stream at its cursor.
 *
 * Submits are batched: every call in one event-loop turn goes out in one frame.
 */
import { randomBytes } from 'node:crypto';
import {
  ErrorCode,
  FalconetError,
  PROTOCOL_VERSION,
  RECORDS_CAP,
  compileInbound,
  DispatcherToClientSchemas,
  type DispatcherToClient,
  type Msg,
  type TaskResult,
  type TaskSpec,
} from '../protocol/index.js';
import { Link } from '../protocol/link.js';

export type { TaskResult, TaskSpec } from '../protocol/index.js';

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The client credential (or FALCONET_TOKEN). */
  token?: string;
  /** Resume this session instead of starting a new one. */
  session?: string;
  /** With `session`: the last result sequence number already consumed (default: the session's stored cursor). */
  cursor?: number;
  /**
   * Client lease: if no client of this session is connected for this long, the dispatcher
   * cancels the session's unfinished tasks (frees executors when a workflow engine dies).
   * Default: none; tasks keep running for a later reattach.
   */
  leaseMs?: number;
  /** With `session`: fail with NOT_FOUND instead of opening a session the dispatcher does not know. */
  attachOnly?: boolean;
  /** How long {@link connect} waits for the first welcome. Default 10 s. */
  connectTimeoutMs?: number;
  /** Tasks per submit frame. Default 2,000. */
  maxBatch?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** Options of {@link Client.submitMany}. */
export interface SubmitManyOptions {
  /** Tasks in flight at once; the iterable is not read further until some come back. Default 10,000. */
  maxInFlight?: number;
  /**
   * What "back" means: `finished` (the result arrived; default) or `accepted` (the dispatcher
   * has the task; use it to submit and leave).
   */
  until?: 'finished' | 'accepted';
}

/** One task the dispatcher refused, with why. */
export interface Rejection {
  id: string;
  code: string;
  message: string;
}

interface Waiter {
  resolve(r: TaskResult): void;
  reject(e: Error): void;
}

/** Connects to a dispatcher and resolves once the session is open. */
export async function connect(url: string, options: ConnectOptions = {}): Promise<Client> {
  const client = new Client(url, options);
  await client.ready;
  return client;
}

/** A session with a dispatcher. Create it with {@link connect}. */
export class Client {
  /** Resolves at the first welcome; rejects if the dispatcher refuses us or cannot be reached. */
  readonly ready: Promise<void>;
  #sessionId: string | undefined;
  /** Sequence number of the last result handed to the application. */
  #cursor: number;
  #lastSeq: number;
  readonly #link: Link<DispatcherToClient>;
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
  readonly #replies = new Map<number, Waiter & { resolveReply(m: Msg<DispatcherToClient, 'reply'>): void }>();
  readonly #buffer: Array<{ seq: number; result: TaskResult }> = [];
  #readers: Array<(r: IteratorResult<TaskResult>) => void> = [];
  #ackTimer: NodeJS.Timeout | null = null;
  #ackedSent = 0;
  /** Listeners for progress of in-flight accounting (submitMany backpressure). */
  #settled: Array<() => void> = [];
  #acceptedCount = 0;
  #rejected: Rejection[] = [];
  /** Specs submitted to be left behind: forgotten once accepted. */
  readonly #detached = new WeakSet<TaskSpec>();
  #fatal: FalconetError | null = null;
  #closed = false;
  /** Results the dispatcher will still send, as of the last message from it. */
  #remaining = 0;
  #resumed = false;

  constructor(url: string, private readonly o: ConnectOptions = {}) {
    this.#sessionId = o.session;
    this.#cursor = this.#lastSeq = this.#ackedSent = o.cursor ?? 0;
    let resolveReady!: () => void;
    let rejectReady!: (e: Error) => void;
    this.ready = new Promise((res, rej) => ((resolveReady = res), (rejectReady = rej)));
    const timer = setTimeout(() => {
      rejectReady(new FalconetError(ErrorCode.UNREACHABLE, `no dispatcher answered at ${url} within ${o.connectTimeoutMs ?? 10_000} ms`));
      void this.#link.close();
    }, o.connectTimeoutMs ?? 10_000);
    const token = o.token ?? process.env.FALCONET_TOKEN;
    this.#link = new Link<DispatcherToClient>({
      url,
      validate: compileInbound<DispatcherToClient>(DispatcherToClientSchemas),
      hello: () => ({
        t: 'hello',
        v: PROTOCOL_VERSION,
        role: 'client',
        ...(token ? { token } : {}),
        caps: ['batch', RECORDS_CAP],
        ...(this.#sessionId ? { session: this.#sessionId } : {}),
        ...(this.#sessionId && this.#cursor > 0 ? { cursor: this.#cursor } : {}),
        ...(o.leaseMs !== undefined ? { leaseMs: o.leaseMs } : {}),
        ...(o.attachOnly ? { attachOnly: true } : {}),
      }),
      onUp: (w) => {
        clearTimeout(timer);
        this.#onUp(w as Msg<DispatcherToClient, 'welcome'>);
        resolveReady();
      },
      onMessage: (m) => this.#onMessage(m),
      onFatal: (err) => {
        clearTimeout(timer);
        this.#fatal = err;
        rejectReady(err);
        this.#failAll(err);
      },
      initialBackoffMs: o.initialBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
    });
    this.#link.start();
  }

  /** True when the dispatcher knew the session this client asked to resume. */
  get resumed(): boolean {
    return this.#resumed;
  }

  /** The session id and cursor: what a later process needs to resume this stream. */
  get session(): { id: string; cursor: number } {
    return { id: this.#sessionId ?? '', cursor: this.#cursor };
  }

  /**
   * Results of the session this client has not yet handed out: buffered here, or still to come
   * for tasks submitted so far. 0 means the session is done (until more tasks are submitted).
   */
  get outstanding(): number {
    return this.#remaining + this.#buffer.length + this.#batch.length + this.#unackedTasks();
  }

  /** Submits one task; resolves with its result (whatever its status). */
  submit(task: TaskSpec): Promise<TaskResult> {
    const spec = this.#enqueue(task);
    return new Promise((resolve, reject) => this.#waiters.set(spec.id!, { resolve, reject }));
  }

  /**
   * Submits tasks from an iterable with backpressure: at most `maxInFlight` are in flight.
   * Results arrive on {@link results}. Resolves when every task is accepted (and, with
   * `until: 'finished'`, finished).
   */
  async submitMany(
    tasks: Iterable<TaskSpec> | AsyncIterable<TaskSpec>,
    options: SubmitManyOptions = {},
  ): Promise<{ submitted: number; accepted: number; rejected: Rejection[] }> {
    const max = options.maxInFlight ?? 10_000;
    const until = options.until ?? 'finished';
    const inFlight = () => (until === 'finished' ? this.#awaiting.size : this.#unackedTasks());
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
        if (inFlight() < max && this.#batch.length + 1 < (this.o.maxBatch ?? 2000)) add(task);
        else await one(task);
      }
    } else {
      for await (const task of tasks) await one(task);
    }
    while (inFlight() > 0) await this.#nextSettle();
    return { submitted, accepted: this.#acceptedCount - startAccepted, rejected: this.#rejected.slice(startRejected) };
  }

  /** Every result of the session not yet consumed, in order, as it arrives. Ends on close(). */
  results(): AsyncIterableIterator<TaskResult> {
    const self = this;
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      next(): Promise<IteratorResult<TaskResult>> {
        const item = self.#buffer.shift();
        if (item) {
          self.#consumed(item.seq);
          return Promise.resolve({ value: item.result, done: false });
        }
        if (self.#closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => self.#readers.push(resolve));
      },
      return(): Promise<IteratorResult<TaskResult>> {
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Cancels tasks of this session by id (or, with `session`, of another one; `*` for all). */
  async cancel(ids: string[], opts: { session?: string; all?: boolean } = {}): Promise<number> {
    const reply = await this.#request({ t: 'cancel', ids, ...opts });
    return reply.count ?? 0;
  }

  /** Asks an executor to finish what it runs and exit. */
  async drain(executorId: string): Promise<void> {
    const reply = await this.#request({ t: 'drain', executor: executorId });
    if (!reply.ok) throw FalconetError.fromWire(reply.error ?? { code: ErrorCode.NOT_FOUND, message: executorId });
  }

  /** Closes the provisioner's circuit breaker (after fixing what made boots fail). */
  async resetProvisioner(): Promise<void> {
    const reply = await this.#request({ t: 'provisioner', action: 'reset' });
    if (!reply.ok) throw FalconetError.fromWire(reply.error ?? { code: ErrorCode.NOT_FOUND, message: 'no provisioner' });
  }

  /** Sends pending submits and acknowledgements, then closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flushBatch();
    this.#sendAck();
    this.#closed = true;
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    await this.#link.close();
    for (const r of this.#readers.splice(0)) r({ value: undefined, done: true });
  }

  // ---- internals --------------------------------------------------------------------------------

  #enqueue(task: TaskSpec): TaskSpec {
    if (this.#fatal) throw this.#fatal;
    const spec = task.id === undefined ? { ...task, id: `${this.#prefix}-${++this.#counter}` } : task;
    this.#awaiting.set(spec.id!, spec);
    this.#batch.push(spec);
    if (this.#batch.length >= (this.o.maxBatch ?? 2000)) this.#flushBatch();
    else if (!this.#batchQueued) {
      this.#batchQueued = true;
      setImmediate(() => this.#flushBatch());
    }
    return spec;
  }

  #flushBatch(): void {
    this.#batchQueued = false;
    if (this.#batch.length === 0) return;
    const tasks = this.#batch;
    this.#batch = [];
    const ref = ++this.#ref;
    this.#unacked.set(ref, tasks);
    this.#unackedCount += tasks.length;
    this.#link.send({ t: 'submit', ref, tasks });
  }

  #unackedTasks(): number {
    return this.#batch.length + this.#unackedCount;
  }

  #onUp(w: Msg<DispatcherToClient, 'welcome'>): void {
    const forgotten = this.#sessionId !== undefined && !w.resumed;
    this.#sessionId = w.session;
    this.#resumed = w.resumed;
    this.#remaining = w.unfinished + w.unacked;
    if (w.cursor > this.#cursor) this.#cursor = this.#lastSeq = this.#ackedSent = w.cursor;
    if (forgotten) {
      // The dispatcher lost our session (an in-memory dispatcher restarted): submit again
      // everything we still wait for. Ids make this idempotent.
      this.#unacked.clear();
      this.#unackedCount = 0;
      this.#cursor = this.#lastSeq = this.#ackedSent = 0;
      const inBatch = new Set(this.#batch.map((s) => s.id));
      for (const spec of this.#awaiting.values()) if (!inBatch.has(spec.id)) this.#batch.push(spec);
    }
    for (const [ref, tasks] of this.#unacked) this.#link.send({ t: 'submit', ref, tasks });
    this.#flushBatch();
  }

  #onMessage(m: DispatcherToClient): void {
    switch (m.t) {
      case 'accepted':
        return this.#onAccepted(m);
      case 'result':
        this.#remaining = m.remaining;
        return this.#onResult(m.seq, m.result);
      case 'reply': {
        const w = this.#replies.get(m.ref);
        this.#replies.delete(m.ref);
        return w?.resolveReply(m);
      }
      case 'error': {
        const err = FalconetError.fromWire(m);
        const w = m.ref !== undefined ? this.#replies.get(m.ref) : undefined;
        if (w) {
          this.#replies.delete(m.ref!);
          w.reject(err);
        }
        return;
      }
    }
  }

  #onAccepted(m: Msg<DispatcherToClient, 'accepted'>): void {
    const tasks = this.#unacked.get(m.ref);
    if (!tasks) return;
    this.#unacked.delete(m.ref);
    this.#unackedCount -= tasks.length;
    this.#remaining = m.remaining;
    this.#acceptedCount += m.accepted;
    for (const spec of tasks) if (this.#detached.has(spec)) this.#awaiting.delete(spec.id!);
    for (const r of m.rejected) {
      const spec = tasks[r.index];
      const id = spec?.id ?? r.id ?? '';
      this.#awaiting.delete(id);
      this.#rejected.push({ id, code: r.code, message: r.message });
      const w = this.#waiters.get(id);
      if (w) {
        this.#waiters.delete(id);
        w.reject(new FalconetError(r.code as ErrorCode, r.message));
      }
    }
    this.#settle();
  }

  #onResult(seq: number, result: TaskResult): void {
    if (seq <= this.#lastSeq) return; // already seen: delivery to the application is exactly-once
    this.#lastSeq = seq;
    this.#awaiting.delete(result.id);
    const w = this.#waiters.get(result.id);
    if (w) {
      this.#waiters.delete(result.id);
      if (this.#buffer.length === 0) this.#consumed(seq);
      w.resolve(result);
    } else {
      const reader = this.#readers.shift();
      if (reader) {
        this.#consumed(seq);
        reader({ value: result, done: false });
      } else {
        this.#buffer.push({ seq, result });
      }
    }
    this.#settle();
  }

  /** The application has everything up to `seq`; acknowledge it soon (batched). */
  #consumed(seq: number): void {
    if (seq > this.#cursor) this.#cursor = seq;
    if (this.#cursor - this.#ackedSent >= 1000) this.#sendAck();
    else if (!this.#ackTimer) this.#ackTimer = setTimeout(() => this.#sendAck(), 50);
  }

  #sendAck(): void {
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    if (this.#cursor > this.#ackedSent && this.#link.send({ t: 'ack', cursor: this.#cursor })) this.#ackedSent = this.#cursor;
  }

  #nextSettle(): Promise<void> {
    if (this.#fatal) return Promise.reject(this.#fatal);
    return new Promise((resolve) => this.#settled.push(resolve));
  }

  #settle(): void {
    const waiting = this.#settled;
    this.#settled = [];
    for (const f of waiting) f();
  }

  #request(msg: Record<string, unknown>): Promise<Msg<DispatcherToClient, 'reply'>> {
    const ref = ++this.#ref;
    return new Promise((resolveReply, reject) => {
      this.#replies.set(ref, { resolveReply, reject, resolve() {} });
      if (!this.#link.send({ ...msg, ref })) {
        this.#replies.delete(ref);
        reject(new FalconetError(ErrorCode.UNREACHABLE, 'not connected to the dispatcher'));
      }
    });
  }

  #failAll(err: FalconetError): void {
    for (const w of this.#waiters.values()) w.reject(err);
    this.#waiters.clear();
    for (const w of this.#replies.values()) w.reject(err);
    this.#replies.clear();
    this.#settle();
  }
}
