/**
 * The executor's adaptive window (Falkon's lesson): how many tasks to keep waiting locally beyond
 * its slots, sized from what it observes, so that on `falconet up`'s defaults (2 executors × 1
 * slot) a short task does not wait a round trip to the dispatcher for each slot turn, while a
 * long task never holds short ones back that another executor could start now.
 *
 * The rule is a bandwidth-delay product with a guard. With `d` the typical run time of a task and
 * `R` the round trip to the dispatcher, `slots` slots finish about `slots × R / d` tasks while a
 * freed slot's request travels: that many waiting locally keep the slots busy. So
 *
 *     extra = 0                                  when d > longRoundTrips × R
 *     extra = min(maxExtra, ⌈gain × slots × max(R, batchMs) / d⌉)  otherwise
 *
 * (`batchMs`, 0 unless set: a floor that leaves room for results to travel in batches.)
 *
 * A task waiting locally then waits about `extra × d / slots ≈ gain × R` for a slot: no longer
 * than the round trip it saves (times the gain). For tasks of ten round trips or more (the
 * default guard) the round trip costs under a tenth of a task, and prefetching could only make a
 * task wait behind a long one (all slots of one executor busy with long tasks while another's are
 * free, the end of a wave of equal tasks): there the window is exactly the slots.
 *
 * With a dispatcher that steals (its welcome lists `steal`: dispatcher/steal.ts), the guard goes
 * for large executors: tasks that wait here while another executor's slots are free are taken
 * back, so long tasks keep a local queue too, of `longShare × slots` (default one task per slot,
 * what the wave turnaround needs: every freed slot starts its next task at once, while the
 * dispatcher, which turns results into assignments slower than a burst of results arrives,
 * refills the queue), once the slots finish `longMinRate` tasks per ms or more (slots / d; default
 * 1, i.e. 1,000 tasks/s from this executor). Below that a round trip per slot turn costs nothing
 * measurable, and tasks are better waiting at the dispatcher (status shows what runs; a task
 * submitted later with a higher priority is not behind them):
 *
 *     extra = min(maxLongExtra, max(⌈gain × slots × R / d⌉, ⌈longShare × slots⌉))   when d > longRoundTrips × R and slots / d ≥ longMinRate
 *
 *
 * `d` moves up fast (a long task shrinks the window at once) and down slowly (many short tasks
 * must confirm that tasks are short again); `R` is an average of samples the agent measures as the
 * time from sending a result to its acknowledgement (a bound on the round trip a freed slot's
 * credit takes, since the dispatcher assigns before it commits and acknowledges after).
 *
 * Pure: numbers in, numbers out; no clock, no I/O. The agent feeds it and sends what it says.
 */

/** Tunables of {@link AdaptiveWindow}; the defaults are what executors use. */
export interface WindowOptions {
  /** The executor's slots. */
  slots: number;
  /** Most tasks kept beyond the slots (default 1,000: what a 1,000-slot executor holds in flight). */
  maxExtra?: number;
  /** Headroom over the bandwidth-delay product, for jitter in the round trip (default 2). */
  gain?: number;
  /** Tasks longer than this many round trips get no window (default 10). */
  longRoundTrips?: number;
  /** The round trip assumed before the first sample, in ms (default 1). */
  initialRoundTripMs?: number;
  /** The dispatcher takes back tasks that have not started (work stealing): long tasks keep a window too. Default false. */
  stealing?: boolean;
  /** With stealing: tasks per slot kept for long tasks (default 1). */
  longShare?: number;
  /** With stealing: most tasks kept for long tasks (default 100,000, the protocol's limit for `window`). */
  maxLongExtra?: number;
  /** With stealing: long tasks keep a window only when the slots finish this many tasks per ms or more (default 1). */
  longMinRate?: number;
  /**
   * Keep at least this much work (ms of slot time, times the gain) waiting for short tasks, even
   * when the round trip is shorter (default 0): so that results can travel in batches (the spawn
   * helper holds results while tasks wait in it) without the slots running dry meanwhile. Does
   * not move the long-task guard, which uses the round trip alone.
   */
  batchMs?: number;
}

/** Round trip samples are kept within these bounds (ms): a clock jump or a stall is one sample, not the estimate. */
const RTT_MIN_MS = 0.05;
const RTT_MAX_MS = 100;
/** Below this a run time is "instant" (the clock's resolution is 1 ms; a no-op reads 0). */
const DURATION_FLOOR_MS = 0.01;
/** Smoothing: run times rise fast and fall slowly; round trips are a plain moving average. */
const UP = 0.5;
const DOWN = 1 / 16;
const RTT_WEIGHT = 1 / 8;
/** A long-task window opens at most this long after it was decided (openDelayMs). */
const MAX_OPEN_DELAY_MS = 60_000;

export class AdaptiveWindow {
  readonly slots: number;
  readonly maxExtra: number;
  readonly gain: number;
  readonly longRoundTrips: number;
  readonly longShare: number;
  readonly maxLongExtra: number;
  readonly longMinRate: number;
  #stealing: boolean;
  readonly batchMs: number;
  /** Typical run time of a task, ms; null until the first task ends (no window before it). */
  #duration: number | null = null;
  #rtt: number;
  #extra = 0;

  constructor(o: WindowOptions) {
    this.slots = Math.max(1, Math.floor(o.slots));
    this.maxExtra = Math.max(0, Math.floor(o.maxExtra ?? 1000));
    this.gain = o.gain ?? 2;
    this.longRoundTrips = o.longRoundTrips ?? 10;
    this.#rtt = o.initialRoundTripMs ?? 1;
    this.#stealing = o.stealing ?? false;
    this.batchMs = Math.max(0, o.batchMs ?? 0);
    this.longShare = Math.max(0, o.longShare ?? 1);
    this.maxLongExtra = Math.max(0, Math.floor(o.maxLongExtra ?? 100_000));
    this.longMinRate = Math.max(0, o.longMinRate ?? 1);
    this.#update();
  }

  /** Whether the dispatcher of this connection steals (each welcome says). Returns the new {@link extra}. */
  setStealing(on: boolean): number {
    this.#stealing = on;
    return this.#update();
  }

  /** Tasks to keep beyond the slots, as of what was observed so far. */
  get extra(): number {
    return this.#extra;
  }

  /** The estimates behind {@link extra}, for logs and tests. */
  get estimates(): { durationMs: number | null; roundTripMs: number } {
    return { durationMs: this.#duration, roundTripMs: this.#rtt };
  }

  /**
   * How long to wait before announcing {@link extra} after `announced`: half a task when the
   * window grows to hold long tasks (stealing), else 0. A long-task window that opens when the
   * first tasks end would make the dispatcher send a wave of extra tasks in the very burst in which
   * it turns that wave's results into the next assignments; half a task later the slots are busy
   * and the machine quiet, and the refill costs no start its turn.
   */
  openDelayMs(announced: number): number {
    const d = this.#duration;
    if (d === null || this.#extra <= announced || d <= this.longRoundTrips * this.#rtt) return 0;
    return Math.min(d / 2, MAX_OPEN_DELAY_MS);
  }

  /** A task ran for `ms` (its start to its end on a slot). Returns the new {@link extra}. */
  taskRan(ms: number): number {
    const d = Math.max(DURATION_FLOOR_MS, ms);
    const prev = this.#duration;
    this.#duration = prev === null ? d : prev + (d > prev ? UP : DOWN) * (d - prev);
    return this.#update();
  }

  /** A measured round trip to the dispatcher, in ms. Returns the new {@link extra}. */
  roundTrip(ms: number): number {
    const r = Math.min(RTT_MAX_MS, Math.max(RTT_MIN_MS, ms));
    this.#rtt += RTT_WEIGHT * (r - this.#rtt);
    return this.#update();
  }

  #update(): number {
    const d = this.#duration;
    // Before the first task ends nothing is known of its length: exactly the slots (what status
    // shows as running is running), as without stealing.
    if (d === null) this.#extra = 0;
    else if (d <= this.longRoundTrips * this.#rtt) this.#extra = Math.min(this.maxExtra, Math.ceil((this.gain * this.slots * Math.max(this.#rtt, this.batchMs)) / d));
    else if (!this.#stealing || this.slots < this.longMinRate * d) this.#extra = 0;
    else this.#extra = Math.min(this.maxLongExtra, Math.max(Math.ceil((this.gain * this.slots * this.#rtt) / d), Math.ceil(this.longShare * this.slots)));
    return this.#extra;
  }
}

/**
 * Whether a window worth announcing differs enough from the one last announced: any change to or
 * from 0, else a change of a quarter or more. Keeps `window` messages rare once tasks are steady.
 */
export function worthAnnouncing(announced: number, extra: number): boolean {
  if (announced === extra) return false;
  if (announced === 0 || extra === 0) return true;
  return Math.abs(extra - announced) * 4 >= announced;
}
