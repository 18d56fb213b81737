/**
 * Durable store versus memory store, side by side in one run: for each repetition, the same
 * workloads against a dispatcher with `--store memory`, `--store sqlite --sync normal` and the
 * default `--store sqlite` (sync full), each a fresh dispatcher process with two executor
 * processes, the load in a third process. Prints medians (min–max) and the ratios to memory,
 * and writes bench/results/stores-<date>.json.
 *
 *   npm run build && node dist/bench/stores.js [--runs 3] [--tasks 200000] [--latency 10000]
 *        [--transport ws|uws] [--stores memory,sqlite-normal,sqlite-full]
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { waitLine, resultsFile } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CLI = here('../client/cli.js');
const LOAD = here('./load.js');

const VARIANTS: Record<string, string[]> = {
  memory: ['--store', 'memory'],
  'sqlite-normal': ['--store', 'sqlite', '--sync', 'normal'],
  'sqlite-full': ['--store', 'sqlite', '--sync', 'full'],
};


async function withDispatcher<T>(args: string[], slots: number, fn: (url: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-'));
  const procs: ChildProcess[] = [];
  try {
    const d = spawn(process.execPath, [CLI, 'dispatcher', '--port', '0', '--data-dir', dir, ...args], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, FALCONET_LOG: 'warn' } });
    procs.push(d);
    const [, url] = await waitLine(d, /listening on (\S+)/);
    for (let i = 0; i < 2; i++) {
      procs.push(spawn(process.execPath, [CLI, 'executor', '--dispatcher', url, '--slots', String(slots)], { stdio: 'ignore', env: { ...process.env, FALCONET_LOG: 'warn' } }));
    }
    const deadline = Date.now() + 10_000;
    for (;;) {
      const s = (await (await fetch(url.replace('ws', 'http') + '/api/status')).json()) as { executors: unknown[] };
      if (s.executors.length === 2) break;
      if (Date.now() > deadline) throw new Error('executors did not register');
      await new Promise((r) => setTimeout(r, 50));
    }
    return await fn(url);
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

function load(kind: string, url: string, n: number): Record<string, number> {
  return JSON.parse(execFileSync(process.execPath, [LOAD, kind, url, String(n)], { encoding: 'utf8' }));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, tasks: { type: 'string' }, latency: { type: 'string' }, transport: { type: 'string' }, stores: { type: 'string' } } });
  const runs = Number(values.runs ?? 3);
  const tasks = Number(values.tasks ?? 200_000);
  const latencyN = Number(values.latency ?? 10_000);
  const transport = values.transport ?? 'ws';
  const names = values.stores ? values.stores.split(',') : Object.keys(VARIANTS);
  for (const n of names) if (!VARIANTS[n]) throw new Error(`unknown store variant ${n}; known: ${Object.keys(VARIANTS).join(', ')}`);
  // The first variant is the one ratios are taken to.
  const base = names[0];
  const samples: Record<string, { tput: number[]; p50: number[]; p99: number[] }> = {};
  for (let r = 0; r < runs; r++) {
    for (const name of names) {
      const args = [...VARIANTS[name], '--transport', transport];
      const s = (samples[name] ??= { tput: [], p50: [], p99: [] });
      await withDispatcher(args, 1000, async (url) => s.tput.push(load('throughput', url, tasks).tasksPerSecond));
      await withDispatcher(args, 4, async (url) => {
        const l = load('latency', url, latencyN);
        s.p50.push(l.p50us);
        s.p99.push(l.p99us);
      });
      process.stderr.write(`run ${r + 1}/${runs} ${name}: ${Math.round(s.tput.at(-1)!)} tasks/s, p50 ${s.p50.at(-1)} µs\n`);
    }
  }
  // Ratios are taken within each run (the variants of one run ran back to back), then the
  // median over runs: this machine's speed drifts between runs more than within one.
  const ratios = (s: { tput: number[] }) => s.tput.map((x, i) => x / samples[base].tput[i]);
  const rows = Object.entries(samples).map(([name, s]) => ({
    store: name,
    transport,
    tasksPerSecond: { median: Math.round(median(s.tput)), min: Math.round(Math.min(...s.tput)), max: Math.round(Math.max(...s.tput)) },
    ratioToMemory: +median(ratios(s)).toFixed(2),
    ratioRange: [+Math.min(...ratios(s)).toFixed(2), +Math.max(...ratios(s)).toFixed(2)],
    p50us: { median: median(s.p50), min: Math.min(...s.p50), max: Math.max(...s.p50) },
    p99us: median(s.p99),
  }));
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command: `node dist/bench/stores.js --runs ${runs} --tasks ${tasks} --latency ${latencyN} --transport ${transport}${values.stores ? ' --stores ' + values.stores : ''}`, rows };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`stores-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`| store | noop tasks/s, median (min–max) | ratio to ${base}, median of runs (min–max) | round trip p50 µs (min–max) | p99 µs |`);
  console.log('|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.store} | ${r.tasksPerSecond.median} (${r.tasksPerSecond.min}–${r.tasksPerSecond.max}) | ${r.ratioToMemory} (${r.ratioRange[0]}–${r.ratioRange[1]}) | ${r.p50us.median} (${r.p50us.min}–${r.p50us.max}) | ${r.p99us} |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
