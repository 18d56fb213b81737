/**
 * Resources: the scheduler's no-op tasks/s with and without resource requests, in the same run
 * (issue 12: plain tasks must not slow down by more than 10 %). The dispatcher core in this
 * process, no sockets and no codec, so what is timed is the core's work per task (accept, queue,
 * schedule, dispatch, result): `--executors` push executors of `--slots` slots that advertise
 * `cpus` = slots, and `--tasks` noop tasks submitted in batches of 10,000; each round the
 * executors report every attempt they were given and the core schedules again. Variants
 * alternate within each run (plain, then with `resources: {cpus: 1}`, then with a mix of
 * requests that packing must fit); medians of `--runs`.
 *
 *   npm run build && node dist/bench/resources.js [--tasks 200000] [--runs 3] [--variants plain,cpus,mixed]
 *
 * `--variants plain` uses only what the core had before resource requests, so this file also
 * measures an older build (copy it into that build's dist/bench) for a before/after figure.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { DispatcherToExecutor, ExecutorInfo, TaskSpec } from '../protocol/index.js';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';
import { cell, resultsFile, spread } from './harness.js';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '200000' },
    runs: { type: 'string', default: '3' },
    executors: { type: 'string', default: '8' },
    slots: { type: 'string', default: '64' },
    variants: { type: 'string', default: 'plain,cpus,mixed' },
    out: { type: 'string' },
  },
});
const TASKS = Number(values.tasks);
const RUNS = Number(values.runs);
const EXECUTORS = Number(values.executors);
const SLOTS = Number(values.slots);
const VARIANTS = values.variants!.split(',');

type Assign = Extract<DispatcherToExecutor, { t: 'task' }>;

/** Tasks of a variant: none with requests, all `cpus: 1`, or a mix of shapes (a quarter plain). */
function specs(variant: string, n: number): TaskSpec[] {
  const shapes: Array<Record<string, number> | undefined> = [undefined, { cpus: 1 }, { cpus: 2, memoryMb: 100 }, { cpus: 0.5 }];
  return Array.from({ length: n }, (_, i): TaskSpec => {
    const resources = variant === 'plain' ? undefined : variant === 'cpus' ? { cpus: 1 } : shapes[i % shapes.length];
    return resources ? { builtin: 'noop', resources } : { builtin: 'noop' };
  });
}

/** Tasks/s of one variant, from the first submit to the last result. */
function once(variant: string): number {
  const inbox = new Map<number, Assign[]>();
  const out: Outbox = {
    toClient() {},
    toExecutor(conn, msg) {
      if (msg.t === 'task') inbox.get(conn)!.push(msg);
    },
    resultReceived() {},
    close() {},
  };
  const core = new DispatcherCore({ heartbeatMs: 1000, leaseMs: 60_000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 24, retentionMs: 60_000 }, out);
  const client = 1;
  core.openSession(client, {}, true);
  for (let e = 0; e < EXECUTORS; e++) {
    const conn = 100 + e;
    inbox.set(conn, []);
    const info: ExecutorInfo = { id: `e${e}`, hostname: 'h', addresses: [], slots: SLOTS, memory: 0, labels: {}, version: 'bench', incarnation: 'i', mode: 'push', running: [] };
    if (variant !== 'plain') Object.assign(info, { resources: { cpus: SLOTS, memoryMb: 1e6 } });
    core.registerExecutor(conn, info);
  }
  const all = specs(variant, TASKS);
  const t0 = performance.now();
  let done = 0;
  let next = 0;
  while (done < TASKS) {
    // Keep about two batches queued: a deep queue, as from a client that submits ahead.
    if (next < TASKS && core.view.queued < 20_000) {
      core.submit(client, { t: 'submit', ref: next, tasks: all.slice(next, next + 10_000) });
      next += 10_000;
    }
    core.schedule();
    for (const [conn, list] of inbox) {
      for (const a of list) {
        core.attemptDone(conn, { uid: a.uid, attempt: a.attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, startedAt: 0, finishedAt: 0 });
        done++;
      }
      list.length = 0;
    }
  }
  const s = (performance.now() - t0) / 1000;
  return Math.round(TASKS / s);
}

function main(): void {
  const rates: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v, []]));
  // One warm-up pass of each, so that the first variant does not pay for the JIT alone.
  for (const v of VARIANTS) once(v);
  for (let r = 0; r < RUNS; r++) {
    for (const v of VARIANTS) {
      const rate = once(v);
      rates[v].push(rate);
      process.stderr.write(`run ${r + 1} ${v}: ${rate.toLocaleString('en')} tasks/s\n`);
    }
  }
  const summary = Object.fromEntries(VARIANTS.map((v) => [v, spread(rates[v])]));
  for (const v of VARIANTS) process.stdout.write(`${v.padEnd(6)} ${cell(summary[v])} tasks/s (median, min–max of ${RUNS})\n`);
  if (summary.plain && summary.cpus) process.stdout.write(`cpus/plain ${(summary.cpus.median / summary.plain.median).toFixed(2)}\n`);
  mkdirSync(resultsFile(), { recursive: true });
  const file = values.out ?? resultsFile(`resources-${new Date().toISOString().slice(0, 10)}.json`);
  writeFileSync(file, JSON.stringify({ tasks: TASKS, executors: EXECUTORS, slots: SLOTS, runs: rates, summary }, null, 2) + '\n');
  process.stderr.write(`wrote ${file}\n`);
}

main();
