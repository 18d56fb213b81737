/**
 * A fixed-bucket histogram of plain numbers, for the dispatcher's hot paths: `observe` is a short
 * scan of a dozen bounds and two additions, no labels, no allocation, no map lookup. The
 * Prometheus side (metrics.ts) reads it when /metrics is scraped. No dependency, so the core
 * can own some without loading prom-client.
 */
export class Buckets {
  /** Per-bucket counts (not cumulative); the last one is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  /** `bounds`: upper bounds, ascending. */
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }
}

/** Bounds in seconds for task latencies that are usually short but may be long. */
export const SECONDS_SHORT = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Bounds in seconds for waits and runs from milliseconds to hours. */
export const SECONDS_LONG = [0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400];
