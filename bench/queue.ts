/**
 * Queue: a deep queue on a dispatcher with no executors (PRODUCT.md §9: 1,000,000 queued at
 * ≤ 1 KB of dispatcher memory each), then the time to drain it.
 *
 * For each store (memory, then the default durable sqlite store), one after the other: a fresh
 * dispatcher process; an SDK client in its own process (this file with `--role load`) submits
 * `--tasks` noop tasks with `submitMany(..., { until: 'accepted', maxInFlight: 100000 })`; the
 * dispatcher's RSS (/proc/PID/status VmRSS) before and after gives memory per queued task; then
 * two `falconet executor` processes with `--slots 1000` start and the queue is timed until
 * /api/status shows queued 0 and running 0.
 *
 *   npm run build && node dist/bench/queue.js [--tasks 1000000] [--stores memory,sqlite]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect, type TaskSpec } from '../client/index.js';
import { cell, resultsFile, spread } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CLI = here('../client/cli.js');
const SELF = fileURLToPath(import.meta.url);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set (and its peak) of a process in bytes, from /proc. */
function mem(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (re: RegExp) => Number(s.match(re)?.[1] ?? NaN) * 1024;
  return { rss: kb(/VmRSS:\s+(\d+) kB/), hwm: kb(/VmHWM:\s+(\d+) kB/) };
}

function waitLine(child: ChildProcess, re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d;
      const m = buf.match(re);
      if (m) {
        clearTimeout(t);
        resolve(m);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before ${re}: ${buf}`)));
  });
}

interface Status {
  executors: unknown[];
  tasks: { queued: number; running: number; submitted: number; finished: Record<string, number> };
}
async function status(url: string): Promise<Status> {
  return (await (await fetch(url.replace('ws', 'http') + '/api/status')).json()) as Status;
}

async function stop(procs: ChildProcess[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill(signal);
  await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))));
}

function* noops(n: number): Generator<TaskSpec> {
  for (let i = 0; i < n; i++) yield { builtin: 'noop' };
}

/** The load process: submit N noop tasks until accepted, print one JSON line, leave. */
async function load(url: string, n: number): Promise<void> {
  const client = await connect(url);
  const t0 = performance.now();
  const r = await client.submitMany(noops(n), { until: 'accepted', maxInFlight: 100_000 });
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(JSON.stringify({ submitted: r.submitted, accepted: r.accepted, rejected: r.rejected.length, seconds }) + '\n');
  await client.close();
}

function runLoad(url: string, n: number): Promise<{ submitted: number; accepted: number; rejected: number; seconds: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [SELF, '--role', 'load', '--url', url, '--tasks', String(n)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`load exited ${code}: ${out}`))));
  });
}

const STORES: Record<string, string[]> = {
  memory: ['--store', 'memory'],
  sqlite: ['--store', 'sqlite'], // the default durable store (sync full)
};

async function scenario(store: string, n: number) {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-queue-'));
  const env = { ...process.env, FALCONET_LOG: 'warn' };
  const d = spawn(process.execPath, [CLI, 'dispatcher', '--port', '0', '--host', '127.0.0.1', '--data-dir', dir, ...STORES[store]], { stdio: ['ignore', 'pipe', 'inherit'], env });
  const execs: ChildProcess[] = [];
  try {
    const [, url] = await waitLine(d, /listening on (\S+)/);
    await sleep(2000);
    const before = mem(d.pid!);
    const l = await runLoad(url, n);
    await sleep(3000);
    const held = mem(d.pid!);
    const s = await status(url);
    process.stderr.write(`${store}: ${l.accepted} accepted in ${l.seconds.toFixed(1)} s; ${s.tasks.queued} queued; RSS ${(before.rss / 2 ** 20).toFixed(0)} → ${(held.rss / 2 ** 20).toFixed(0)} MB\n`);

    const t0 = performance.now();
    for (let i = 0; i < 2; i++) {
      execs.push(spawn(process.execPath, [CLI, 'executor', '--dispatcher', url, '--slots', '1000'], { stdio: 'ignore', env }));
    }
    let last = s;
    for (;;) {
      await sleep(250);
      last = await status(url);
      if (last.tasks.queued === 0 && last.tasks.running === 0) break;
      if (performance.now() - t0 > 1_800_000) throw new Error(`drain did not finish: ${JSON.stringify(last.tasks)}`);
    }
    const drainSeconds = (performance.now() - t0) / 1000;
    const drained = mem(d.pid!);
    process.stderr.write(`${store}: drained in ${drainSeconds.toFixed(1)} s\n`);
    return {
      store,
      tasks: n,
      accepted: l.accepted,
      rejected: l.rejected,
      submitSeconds: +l.seconds.toFixed(2),
      queuedSeen: s.tasks.queued,
      rssBeforeMB: +(before.rss / 2 ** 20).toFixed(1),
      rssQueuedMB: +(held.rss / 2 ** 20).toFixed(1),
      rssPeakWhileQueuingMB: +(held.hwm / 2 ** 20).toFixed(1),
      rssAfterDrainMB: +(drained.rss / 2 ** 20).toFixed(1),
      bytesPerQueuedTask: Math.round((held.rss - before.rss) / n),
      drainSeconds: +drainSeconds.toFixed(2),
      drainTasksPerSecond: Math.round(n / drainSeconds),
      succeeded: last.tasks.finished.succeeded,
    };
  } finally {
    await stop(execs);
    await stop([d]);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { role: { type: 'string' }, url: { type: 'string' }, tasks: { type: 'string' }, stores: { type: 'string' }, runs: { type: 'string' } } });
  const n = Number(values.tasks ?? 1_000_000);
  if (values.role === 'load') return load(values.url!, n);
  const stores = (values.stores ?? 'memory,sqlite').split(',');
  const runs = Number(values.runs ?? 3);
  const began = Date.now();
  const perRun: Array<Awaited<ReturnType<typeof scenario>>> = [];
  for (let r = 0; r < runs; r++) for (const store of stores) perRun.push(await scenario(store, n));
  const rows = stores.map((store) => {
    const mine = perRun.filter((x) => x.store === store);
    const pick = (k: 'queuedSeen' | 'submitSeconds' | 'rssQueuedMB' | 'bytesPerQueuedTask' | 'drainSeconds' | 'drainTasksPerSecond', digits = 0) => spread(mine.map((x) => x[k]), digits);
    return { store, queuedSeen: pick('queuedSeen'), submitSeconds: pick('submitSeconds', 2), rssQueuedMB: pick('rssQueuedMB', 1), bytesPerQueuedTask: pick('bytesPerQueuedTask'), drainSeconds: pick('drainSeconds', 2), drainTasksPerSecond: pick('drainTasksPerSecond') };
  });
  const out = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, node: process.version },
    command: `node dist/bench/queue.js --runs ${runs} --tasks ${n} --stores ${stores.join(',')}`,
    wallSeconds: Math.round((Date.now() - began) / 1000),
    runs,
    figures: rows,
    perRun,
  };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`queue-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${n.toLocaleString('en')} tasks queued, then drained by 2 executors × 1,000 slots; median of ${runs} runs (min–max)\n`);
  console.log('| store | tasks queued | submit s | RSS queued MB | bytes per queued task (target ≤ 1024) | drain s | drain tasks/s |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.store} | ${r.queuedSeen.median} | ${cell(r.submitSeconds)} | ${cell(r.rssQueuedMB)} | ${cell(r.bytesPerQueuedTask)} ${r.bytesPerQueuedTask.median <= 1024 ? '(met)' : '(not met)'} | ${cell(r.drainSeconds)} | ${cell(r.drainTasksPerSecond)} |`);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
