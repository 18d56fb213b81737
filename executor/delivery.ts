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

/**
 * Results kept until the dispatcher acknowledges them, in the order they were added. Pure
 * bookkeeping: the agent sends {@link ResultOutbox.add}'s return value at once (if a connection
 * is up) and {@link ResultOutbox.pending} again after every welcome.
 */
export class ResultOutbox {
  readonly #held = new Map<number | string, AttemptResult>();

  /** How many results wait for their ack. */
  get size(): number {
    return this.#held.size;
  }

  /**
   * Keeps `result` (fitted to the protocol's limits) until it is acknowledged and returns what to
   * send. A second result for the same attempt replaces the first: an attempt has one outcome,
   * and the latest is what the agent knows of it.
   */
  add(result: AttemptResult): AttemptResult {
    const fitted = fitResult(result);
    const key = keyOf(fitted);
    this.#held.delete(key); // re-added at the end: the order stays the order of completion
    this.#held.set(key, fitted);
    return fitted;
  }

  /**
   * Forgets the acknowledged attempts; refs for attempts not held (acked twice, or from another
   * incarnation of this executor) are ignored. Returns how many were forgotten.
   */
  ack(done: readonly AttemptRef[]): number {
    let n = 0;
    for (const ref of done) if (this.#held.delete(keyOf(ref))) n++;
    return n;
  }

  /** Whether the result of this attempt is still waiting for its ack. */
  holds(ref: AttemptRef): boolean {
    return this.#held.has(keyOf(ref));
  }

  /** Every unacknowledged result, oldest first: what to send again after a welcome. */
  pending(): AttemptResult[] {
    return [...this.#held.values()];
  }

  /** The attempts whose results are unacknowledged, for the hello's `running` list. */
  refs(): AttemptRef[] {
    return [...this.#held.values()].map((r) => ({ uid: r.uid, attempt: r.attempt }));
  }
}
