/**
 * What a finished task pays for the latency histograms: 1,000,000 observe() calls of the
 * plain-number Buckets the core uses (histogram.ts), beside prom-client's own Histogram for
 * comparison, and the three observations Rates.timed() makes per finished task.
 * `npm run build && node dist/bench/observe.js`
 */
import { Histogram, Registry } from 'prom-client';
import { Buckets, SECONDS_LONG } from '../dispatcher/histogram.js';
import { Rates } from '../dispatcher/status.js';

const N = 1_000_000;
const values = Float64Array.from({ length: 4096 }, () => Math.exp(Math.random() * 12 - 8)); // ~0.3 ms .. ~50 s

function time(label: string, fn: () => void): number {
  fn(); // warm up
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    runs.push(Number(process.hrtime.bigint() - t0) / N);
  }
  runs.sort((a, b) => a - b);
  const median = runs[2];
  console.log(`${label.padEnd(48)} ${median.toFixed(1)} ns per call (median of 5 runs of ${N.toLocaleString('en')}; min ${runs[0].toFixed(1)})`);
  return median;
}

const b = new Buckets(SECONDS_LONG);
time('Buckets.observe (falconet, 14 buckets)', () => {
  for (let i = 0; i < N; i++) b.observe(values[i & 4095]);
});
const h = new Histogram({ name: 'x_seconds', help: 'x', buckets: SECONDS_LONG, registers: [new Registry()] });
time('prom-client Histogram.observe (same buckets)', () => {
  for (let i = 0; i < N; i++) h.observe(values[i & 4095]);
});
const rates = new Rates(0);
const timings = Array.from({ length: 4096 }, (_, i) => ({ submitted: 0, dispatched: values[i] * 1000, started: values[i] * 1000 + 1, finished: values[i] * 2000 + 1 }));
time('Rates.timed (3 observations per finished task)', () => {
  for (let i = 0; i < N; i++) rates.timed(timings[i & 4095]);
});
if (b.count === 0 || rates.queueWait.count === 0) throw new Error('nothing observed');
