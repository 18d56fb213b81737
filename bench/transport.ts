/**
 * ws versus µWebSockets.js (`--transport ws|uws`), side by side in one run. Each repetition runs
 * bench/throughput.ts and bench/latency.ts once (memory store and the default durable store,
 * `--sync full`) and bench/scale.ts once (19,000 simulated executors: registration, tasks/s, memory
 * per executor) on each transport; the order of the two transports alternates between runs.
 * Prints medians (min–max) and the uws/ws ratio (taken within each run, then the median), and
 * writes bench/results/transport-<date>.json.
 *
 *   npm run build && node dist/bench/transport.js [--runs 3] [--tasks 200000] [--latency 10000]
 *        [--executors 19000] [--per-process 9500] [--scale-tasks 200000]
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median, resultsFile } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const TRANSPORTS = ['ws', 'uws'] as const;
type Transport = (typeof TRANSPORTS)[number];

/** Runs one bench script with its result file going to a scratch dir; returns that file's JSON. */
function runScript(script: string, args: string[]): Record<string, unknown> {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-transport-'));
  try {
    process.stderr.write(`-- node dist/bench/${script} ${args.join(' ')}\n`);
    const r = spawnSync(process.execPath, [here(`./${script}`), ...args], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, FALCONET_BENCH_RESULTS: dir } });
    if (r.status !== 0) throw new Error(`${script} ${args.join(' ')} exited ${r.status ?? r.signal}`);
    const [file] = readdirSync(dir).filter((f) => f.endsWith('.json'));
    return JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, unknown>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}


interface ThroughputRow {
  store: string;
  tasksPerSecond: { median: number };
}

interface LatencyRow {
  variant: string;
  p50us: { median: number };
  p99us: { median: number };
}

/** The figures compared, in table order: label, unit, and whether more is better. */
const METRICS: Array<[string, string, boolean]> = [
  ['memory store: noop tasks/s', 'tasks/s', true],
  ['memory store: round trip p50', 'µs', false],
  ['memory store: round trip p99', 'µs', false],
  ['durable store (sync full): noop tasks/s', 'tasks/s', true],
  ['durable store (sync full): round trip p50', 'µs', false],
  ['durable store (sync full): round trip p99', 'µs', false],
  ['scale: registration, first dial to all welcomed', 's', false],
  ['scale: noop tasks/s with all executors connected', 'tasks/s', true],
  ['scale: dispatcher memory per executor (ΔRSS / N)', 'KB', false],
  ['scale: executors still connected after the run', '', true],
];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      tasks: { type: 'string' },
      latency: { type: 'string' },
      executors: { type: 'string' },
      'per-process': { type: 'string' },
      'scale-tasks': { type: 'string' },
    },
  });
  const runs = Number(values.runs ?? 3);
  const tasks = values.tasks ?? '200000';
  const latency = values.latency ?? '10000';
  const executors = values.executors ?? '19000';
  const perProcess = values['per-process'] ?? '9500';
  const scaleTasks = values['scale-tasks'] ?? '200000';
  // samples[transport][metric index][run]
  const samples: Record<Transport, number[][]> = { ws: METRICS.map(() => []), uws: METRICS.map(() => []) };
  const began = Date.now();
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? TRANSPORTS : [...TRANSPORTS].reverse();
    for (const t of order) {
      const tput = runScript('throughput.js', ['--runs', '1', '--tasks', tasks, '--variants', 'memory,sqlite-full', '--transport', t]).rows as ThroughputRow[];
      const lat = runScript('latency.js', ['--runs', '1', '--tasks', latency, '--transport', t]).rows as LatencyRow[];
      const [mem, full] = ['memory', 'sqlite-full'].map((n) => ({ tput: tput.find((x) => x.store === n)!, lat: lat.find((x) => x.variant === n)! }));
      const scale = runScript('scale.js', ['--runs', '1', '--executors', executors, '--per-process', perProcess, '--tasks', scaleTasks, '--transport', t]);
      const f = (scale.perRun as Array<Record<string, number>>)[0];
      const got = [
        mem.tput.tasksPerSecond.median, mem.lat.p50us.median, mem.lat.p99us.median,
        full.tput.tasksPerSecond.median, full.lat.p50us.median, full.lat.p99us.median,
        f.registrationSeconds, f.tasksPerSecond, +(f.bytesPerExecutor / 1024).toFixed(2), f.connectedAfterRun,
      ];
      got.forEach((v, i) => samples[t][i].push(v));
      process.stderr.write(`run ${r + 1}/${runs} ${t}: ${METRICS.map(([m], i) => `${m.split(': ')[1] ?? m} ${got[i]}`).join(', ')}\n`);
    }
  }
  const rows = METRICS.map(([metric, unit, higherIsBetter], i) => {
    const ws = samples.ws[i];
    const uws = samples.uws[i];
    const ratios = uws.map((x, k) => (ws[k] === 0 ? NaN : x / ws[k]));
    return {
      metric,
      unit,
      higherIsBetter,
      ws: { median: median(ws), min: Math.min(...ws), max: Math.max(...ws), runs: ws },
      uws: { median: median(uws), min: Math.min(...uws), max: Math.max(...uws), runs: uws },
      uwsToWs: { median: +median(ratios).toFixed(2), min: +Math.min(...ratios).toFixed(2), max: +Math.max(...ratios).toFixed(2) },
    };
  });
  const command = `node dist/bench/transport.js --runs ${runs} --tasks ${tasks} --latency ${latency} --executors ${executors} --per-process ${perProcess} --scale-tasks ${scaleTasks}`;
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command, wallSeconds: Math.round((Date.now() - began) / 1000), rows };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`transport-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`| metric | ws, median (min–max) | uws, median (min–max) | uws / ws, median of per-run ratios (min–max) |`);
  console.log('|---|---|---|---|');
  for (const r of rows) {
    const fmt = (s: { median: number; min: number; max: number }) => `${s.median} (${s.min}–${s.max})${r.unit ? ' ' + r.unit : ''}`;
    console.log(`| ${r.metric} | ${fmt(r.ws)} | ${fmt(r.uws)} | ${r.uwsToWs.median} (${r.uwsToWs.min}–${r.uwsToWs.max}) |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
