/**
 * Sums up a commit trace (dispatcher/commit-trace.ts): per step of the durable commit, the
 * median, mean, p90 and p99 in µs, and the batch's size. For example:
 *
 *   FALCONET_COMMIT_TRACE=/tmp/trace.jsonl node dist/bench/latency.js --runs 1 --tasks 5000 \
 *     --variants fsync-floor,sqlite-full && node dist/bench/commit-trace.js /tmp/trace.jsonl
 */
import { readFileSync } from 'node:fs';
import { percentile } from './harness.js';

const STEPS = ['pack (dispatcher)', 'hand-off → writer wakes', 'unpack (writer)', 'statements', 'COMMIT (fsync included)', 'answer → dispatcher wakes', 'total'];

function main(): void {
  const file = process.argv[2];
  if (!file) throw new Error('usage: node dist/bench/commit-trace.js FILE');
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as number[]);
  const steps: number[][] = STEPS.map(() => []);
  for (const [start, packed, , , , woke, unpacked, statements, committed, answered] of lines) {
    const us = [packed - start, woke - packed, unpacked - woke, statements - unpacked, committed - statements, answered - committed, answered - start];
    us.forEach((v, i) => steps[i].push(v * 1000));
  }
  const median = (i: number) => [...lines.map((l) => l[i])].sort((a, b) => a - b)[lines.length >> 1];
  console.log(`${lines.length} commits; median rows ${median(2)}, results ${median(3)}, bytes ${median(4)}\n`);
  console.log('| step | p50 µs | mean µs | p90 µs | p99 µs |\n|---|---|---|---|---|');
  STEPS.forEach((name, i) => {
    const sorted = steps[i].sort((a, b) => a - b);
    const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
    const r = (v: number) => v.toFixed(1);
    console.log(`| ${name} | ${r(percentile(sorted, 50))} | ${r(mean)} | ${r(percentile(sorted, 90))} | ${r(percentile(sorted, 99))} |`);
  });
}

main();
