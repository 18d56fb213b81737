/**
 * Result delivery on the executor: every attempt's result passes through {@link fitResult} (so
 * that it always fits the protocol's limits: a report the dispatcher refuses is a task that never
 * finishes) and is then kept in a {@link ResultOutbox} until the dispatcher acknowledges it
 * (`{t:'ack', done}`, sent once its `done` is committed). The agent sends what the outbox holds
 * again after every welcome and lists it in its hello's `running`, so that neither a lost
 * connection nor a frame dropped in flight loses a result: the dispatcher ignores (and acks)
 * duplicates, so sending one twice is safe.
 *
 * Nothing here touches a socket or a clock: the agent decides when to send.
 */
import { LIMITS, fitText, type AttemptResult } from '../protocol/index.js';

/** An attempt's identity: a result is kept, and acknowledged, per attempt, not per task. */
export interface AttemptRef {
  uid: number;
  attempt: number;
}

/**
 * The one place an executor's result is made to fit the schema of `done`: the error message is
 * cut to {@link LIMITS.errorChars} and stdout/stderr to {@link LIMITS.outputChars} each (setting
 * `truncated` when either was cut). `--output-limit` already bounds captured output in bytes;
 * this bounds it in the characters the schema counts, whatever produced the text.
 */
export function fitResult(result: AttemptResult): AttemptResult {
  const stdout = fitText(result.stdout, LIMITS.outputChars);
  const stderr = fitText(result.stderr, LIMITS.outputChars);
  const cut = stdout !== result.stdout || stderr !== result.stderr;
  const message = result.error ? fitText(result.error.message, LIMITS.errorChars) : undefined;
  if (!cut && message === result.error?.message) return result;
  return {
    ...result,
    stdout,
    stderr,
    truncated: result.truncated || cut,
    ...(result.error ? { error: { ...result.error, message: message! } } : {}),
  };
}

/**
 * An attempt's key in the outbox: one number while it fits exactly (uid below 2^42, attempt below
 * 1024: every attempt in practice), which spares building and hashing a string per add and per
 * ack; the string form otherwise. The two forms never collide (a number is not a string key).
 */
const keyOf = (r: AttemptRef): number | string => (r.uid < 2 ** 42 && r.attempt < 1024 ? r.uid * 1024 + r.attempt : `${r.uid}:${r.attempt}`);

/** The statuses a plain result may have, by their code in the outbox's status column. */
const STATUSES = ['succeeded', 'failed', 'timed_out', 'cancelled'] as const;
/** Status column codes: a slot whose result is kept as an object, and a free slot. */
const OBJECT = 254;
const FREE = 255;
/** The keys of an attempt's result the outbox knows; a test checks them against the protocol's. */
export const ATTEMPT_RESULT_KEYS = ['uid', 'attempt', 'status', 'exitCode', 'signal', 'stdout', 'stderr', 'truncated', 'startedAt', 'finishedAt', 'error', 'environment'] as const;

/**
 * Results kept until the dispatcher acknowledges them, in the order they were added. Pure
 * bookkeeping: the agent sends {@link ResultOutbox.add}'s return value at once (if a connection
 * is up) and {@link ResultOutbox.pending} again after every welcome.
 *
 * Why columns: on the durable store an ack comes after the dispatcher's commit, so the outbox of
 * a busy executor holds every result of the last ~100 ms (thousands). Held as objects they
 * survive the young generation's collections and are copied and promoted: the executors' GC
 * time was three times the in-memory store's, for the same tasks. A plain result (no output, no
 * signal, no error: every no-op and most short commands) is kept as numbers in typed arrays, a
 * ring in completion order; the others as the objects they are. Objects are rebuilt only for
 * pending(), i.e. after a reconnect.
 */
export class ResultOutbox {
  /** Slot (a position counter; the ring index is `counter & mask`) of each held attempt, by key. */
  readonly #at = new Map<number | string, number>();
  #uid = new Float64Array(64);
  #attempt = new Float64Array(64);
  /** exitCode, NaN for null. */
  #exit = new Float64Array(64);
  #started = new Float64Array(64);
  #finished = new Float64Array(64);
  /** An index into STATUSES, OBJECT or FREE. */
  #status = new Uint8Array(64).fill(FREE);
  #objects: Array<AttemptResult | undefined> = new Array<AttemptResult | undefined>(64);
  #mask = 63;
  /** The oldest slot that may be held, and the next to fill (counters, not ring indexes). */
  #head = 0;
  #tail = 0;

  /** How many results wait for their ack. */
  get size(): number {
    return this.#at.size;
  }

  /**
   * Keeps `result` (fitted to the protocol's limits) until it is acknowledged and returns what to
   * send. A second result for the same attempt replaces the first: an attempt has one outcome,
   * and the latest is what the agent knows of it.
   */
  add(result: AttemptResult): AttemptResult {
    const fitted = fitResult(result);
    const key = keyOf(fitted);
    const old = this.#at.get(key);
    if (old !== undefined) {
      // Re-added at the end: the order stays the order of completion (the map's order too, which
      // #grow relies on: keys in insertion order are keys in slot order).
      this.#at.delete(key);
      this.#free(old);
    }
    if (this.#tail - this.#head > this.#mask) this.#grow();
    const n = this.#tail++;
    const i = n & this.#mask;
    const status = STATUSES.indexOf(fitted.status);
    const plain =
      status >= 0 && fitted.signal === null && fitted.stdout === '' && fitted.stderr === '' && !fitted.truncated &&
      fitted.error === undefined && fitted.environment === undefined;
    if (plain) {
      this.#uid[i] = fitted.uid;
      this.#attempt[i] = fitted.attempt;
      this.#exit[i] = fitted.exitCode ?? NaN;
      this.#started[i] = fitted.startedAt;
      this.#finished[i] = fitted.finishedAt;
      this.#status[i] = status;
    } else {
      this.#objects[i] = fitted;
      this.#status[i] = OBJECT;
    }
    this.#at.set(key, n);
    return fitted;
  }

  /**
   * Forgets the acknowledged attempts; refs for attempts not held (acked twice, or from another
   * incarnation of this executor) are ignored. Returns how many were forgotten.
   */
  ack(done: readonly AttemptRef[]): number {
    let n = 0;
    for (const ref of done) {
      const key = keyOf(ref);
      const slot = this.#at.get(key);
      if (slot === undefined) continue;
      this.#at.delete(key);
      this.#free(slot);
      n++;
    }
    // The oldest held result bounds the ring: move past what was freed before it.
    while (this.#head < this.#tail && this.#status[this.#head & this.#mask] === FREE) this.#head++;
    return n;
  }

  /** Whether the result of this attempt is still waiting for its ack. */
  holds(ref: AttemptRef): boolean {
    return this.#at.has(keyOf(ref));
  }

  /** Every unacknowledged result, oldest first: what to send again after a welcome. */
  pending(): AttemptResult[] {
    const out: AttemptResult[] = [];
    for (let n = this.#head; n < this.#tail; n++) if (this.#status[n & this.#mask] !== FREE) out.push(this.#read(n & this.#mask));
    return out;
  }

  /** The attempts whose results are unacknowledged, for the hello's `running` list. */
  refs(): AttemptRef[] {
    return this.pending().map((r) => ({ uid: r.uid, attempt: r.attempt }));
  }

  #read(i: number): AttemptResult {
    const status = this.#status[i];
    if (status === OBJECT) return this.#objects[i]!;
    const exit = this.#exit[i];
    return {
      uid: this.#uid[i], attempt: this.#attempt[i], status: STATUSES[status], exitCode: Number.isNaN(exit) ? null : exit, signal: null,
      stdout: '', stderr: '', truncated: false, startedAt: this.#started[i], finishedAt: this.#finished[i],
    };
  }

  #free(n: number): void {
    const i = n & this.#mask;
    this.#status[i] = FREE;
    this.#objects[i] = undefined;
  }

  /**
   * The ring is full from the oldest held result to the newest: the held ones move, in order, to
   * the front of a ring twice the size when at least half the span is held, else of the same
   * size (an old result never acked must not make the ring grow for ever behind it).
   */
  #grow(): void {
    const span = this.#tail - this.#head;
    const size = this.#at.size * 2 > span ? (this.#mask + 1) * 2 : this.#mask + 1;
    const next = { uid: new Float64Array(size), attempt: new Float64Array(size), exit: new Float64Array(size), started: new Float64Array(size), finished: new Float64Array(size), status: new Uint8Array(size).fill(FREE), objects: new Array<AttemptResult | undefined>(size) };
    let k = 0;
    for (let n = this.#head; n < this.#tail; n++) {
      const i = n & this.#mask;
      if (this.#status[i] === FREE) continue;
      next.uid[k] = this.#uid[i];
      next.attempt[k] = this.#attempt[i];
      next.exit[k] = this.#exit[i];
      next.started[k] = this.#started[i];
      next.finished[k] = this.#finished[i];
      next.status[k] = this.#status[i];
      next.objects[k] = this.#objects[i];
      k++;
    }
    [this.#uid, this.#attempt, this.#exit, this.#started, this.#finished, this.#status, this.#objects] = [next.uid, next.attempt, next.exit, next.started, next.finished, next.status, next.objects];
    this.#mask = size - 1;
    // Slots are renumbered from 0 in the same order: the keys' slots follow.
    k = 0;
    for (const [key] of this.#at) this.#at.set(key, k++);
    this.#head = 0;
    this.#tail = k;
  }
}
