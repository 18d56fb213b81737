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
 * Where an attempt is looked for in the outbox's index: a multiplicative hash of its uid (all 53
 * bits) and attempt, computed on numbers (no string, no heap number), taken from its top bits.
 */
function hashOf(uid: number, attempt: number): number {
  const low = uid >>> 0;
  const high = (uid / 4294967296) >>> 0;
  return Math.imul(low ^ Math.imul(high ^ attempt, 0x85ebca6b), 0x9e3779b1) >>> 0;
}

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
 * Why columns, and no Map: on the durable store an ack comes after the dispatcher's commit, so the
 * outbox of a busy executor holds every result of the last commits (6,000 to 16,000 in the
 * throughput bench, against 2,000 on the memory store). Whatever the outbox keeps on the JS heap
 * per result then lives through young-generation collections and is promoted: held as objects,
 * the results made the executors' GC three times the memory store's; held as numbers but found
 * through a Map, the Map's tables (rehashed each time the outbox grows past a power of two and
 * shrinks back, hundreds of KB at these sizes) did the same, and the executors spent twice the
 * memory store's CPU per task. So a plain result (no output, no signal, no error: every no-op and
 * most short commands) is kept as numbers in typed arrays, a ring in completion order, and found
 * through an open-addressing index in a typed array sized with the ring: nothing on the JS heap
 * grows with the results held, and nothing is allocated per result. The others are kept as the
 * objects they are. Objects are rebuilt only for pending(), i.e. after a reconnect.
 */
export class ResultOutbox {
  #uid = new Float64Array(64);
  #attempt = new Float64Array(64);
  /** exitCode, NaN for null. */
  #exit = new Float64Array(64);
  #started = new Float64Array(64);
  #finished = new Float64Array(64);
  /** An index into STATUSES, OBJECT or FREE. */
  #status = new Uint8Array(64).fill(FREE);
  /** The results that are not plain, by ring index (few: they carry output or an error). */
  #objects = new Map<number, AttemptResult>();
  #mask = 63;
  /** The oldest slot that may be held, and the next to fill (counters, not ring indexes). */
  #head = 0;
  #tail = 0;
  #held = 0;
  /**
   * Ring index + 1 of each held attempt, 0 for none; linear probing from hashOf's top bits, twice
   * the ring's size (at most half full), deletions by backward shift (no tombstones).
   */
  #index = new Int32Array(128);
  #shift = 32 - 7;

  /** How many results wait for their ack. */
  get size(): number {
    return this.#held;
  }

  /**
   * Keeps `result` (fitted to the protocol's limits) until it is acknowledged and returns what to
   * send. A second result for the same attempt replaces the first: an attempt has one outcome,
   * and the latest is what the agent knows of it.
   */
  add(result: AttemptResult): AttemptResult {
    const fitted = fitResult(result);
    // Re-added at the end: the order stays the order of completion.
    this.#forget(fitted.uid, fitted.attempt);
    if (this.#tail - this.#head > this.#mask) this.#grow();
    const i = this.#tail++ & this.#mask;
    const status = STATUSES.indexOf(fitted.status);
    const plain =
      status >= 0 && fitted.signal === null && fitted.stdout === '' && fitted.stderr === '' && !fitted.truncated &&
      fitted.error === undefined && fitted.environment === undefined;
    // uid and attempt are kept for every slot: the index compares them.
    this.#uid[i] = fitted.uid;
    this.#attempt[i] = fitted.attempt;
    if (plain) {
      this.#exit[i] = fitted.exitCode ?? NaN;
      this.#started[i] = fitted.startedAt;
      this.#finished[i] = fitted.finishedAt;
      this.#status[i] = status;
    } else {
      this.#objects.set(i, fitted);
      this.#status[i] = OBJECT;
    }
    this.#insert(i);
    this.#held++;
    return fitted;
  }

  /**
   * Forgets the acknowledged attempts; refs for attempts not held (acked twice, or from another
   * incarnation of this executor) are ignored. Returns how many were forgotten.
   */
  ack(done: readonly AttemptRef[]): number {
    let n = 0;
    for (const ref of done) if (this.#forget(ref.uid, ref.attempt)) n++;
    // The oldest held result bounds the ring: move past what was freed before it.
    while (this.#head < this.#tail && this.#status[this.#head & this.#mask] === FREE) this.#head++;
    return n;
  }

  /** Whether the result of this attempt is still waiting for its ack. */
  holds(ref: AttemptRef): boolean {
    return this.#seek(ref.uid, ref.attempt) >= 0;
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
    if (status === OBJECT) return this.#objects.get(i)!;
    const exit = this.#exit[i];
    return {
      uid: this.#uid[i], attempt: this.#attempt[i], status: STATUSES[status], exitCode: Number.isNaN(exit) ? null : exit, signal: null,
      stdout: '', stderr: '', truncated: false, startedAt: this.#started[i], finishedAt: this.#finished[i],
    };
  }

  /** Frees the slot of this attempt, if one is held; true if one was. */
  #forget(uid: number, attempt: number): boolean {
    const at = this.#seek(uid, attempt);
    if (at < 0) return false;
    const i = this.#index[at] - 1;
    this.#unindex(at);
    if (this.#status[i] === OBJECT) this.#objects.delete(i);
    this.#status[i] = FREE;
    this.#held--;
    return true;
  }

  /** The index position that holds this attempt, or -1. */
  #seek(uid: number, attempt: number): number {
    const mask = this.#index.length - 1;
    for (let at = hashOf(uid, attempt) >>> this.#shift; ; at = (at + 1) & mask) {
      const v = this.#index[at];
      if (v === 0) return -1;
      if (this.#uid[v - 1] === uid && this.#attempt[v - 1] === attempt) return at;
    }
  }

  /** Indexes ring slot `i` (its attempt is not indexed yet). */
  #insert(i: number): void {
    const mask = this.#index.length - 1;
    let at = hashOf(this.#uid[i], this.#attempt[i]) >>> this.#shift;
    while (this.#index[at] !== 0) at = (at + 1) & mask;
    this.#index[at] = i + 1;
  }

  /** Empties index position `at`, moving back the entries after it that probed past it. */
  #unindex(at: number): void {
    const mask = this.#index.length - 1;
    let hole = at;
    for (let q = (at + 1) & mask; ; q = (q + 1) & mask) {
      const v = this.#index[q];
      if (v === 0) break;
      const home = hashOf(this.#uid[v - 1], this.#attempt[v - 1]) >>> this.#shift;
      // The entry at q may fill the hole if the hole lies on its probe path (from home to q).
      if (((q - home) & mask) >= ((q - hole) & mask)) {
        this.#index[hole] = v;
        hole = q;
      }
    }
    this.#index[hole] = 0;
  }

  /**
   * The ring is full from the oldest held result to the newest: the held ones move, in order, to
   * the front of a ring twice the size when at least half the span is held, else of the same
   * size (an old result never acked must not make the ring grow for ever behind it). The index is
   * rebuilt for the new slots.
   */
  #grow(): void {
    const span = this.#tail - this.#head;
    const size = this.#held * 2 > span ? (this.#mask + 1) * 2 : this.#mask + 1;
    const next = { uid: new Float64Array(size), attempt: new Float64Array(size), exit: new Float64Array(size), started: new Float64Array(size), finished: new Float64Array(size), status: new Uint8Array(size).fill(FREE), objects: new Map<number, AttemptResult>() };
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
      if (this.#status[i] === OBJECT) next.objects.set(k, this.#objects.get(i)!);
      k++;
    }
    [this.#uid, this.#attempt, this.#exit, this.#started, this.#finished, this.#status, this.#objects] = [next.uid, next.attempt, next.exit, next.started, next.finished, next.status, next.objects];
    this.#mask = size - 1;
    this.#head = 0;
    this.#tail = k;
    if (this.#index.length !== size * 2) {
      this.#index = new Int32Array(size * 2);
      this.#shift = 32 - Math.log2(size * 2);
    } else {
      this.#index.fill(0);
    }
    for (let i = 0; i < k; i++) this.#insert(i);
  }
}
