/**
 * falconet versus BullMQ on Redis, side by side in one run (issue 6, scenario "bullmq"). Each run
 * measures, back to back so the ratio compares like with like on this drifting machine:
 *   falconet: a fresh `falconet dispatcher` (default durable store, temp data dir), two executor
 *     processes, the load in its own process (`dist/bench/load.js`), exactly as bench/throughput.ts and bench/latency.ts;
 *   BullMQ: a fresh redis-server on 127.0.0.1 (no persistence), two worker processes, and a
 *     producer process (this file, `--role producer`) that adds the jobs and measures at the client.
 * Prints medians (min–max) and falconet/BullMQ ratios, writes bench/results/bullmq-<date>.json.
 *
 *   npm run build && node dist/bench/bullmq.js [--runs 3] [--tasks 100000] [--latency 10000] [--concurrency 300]
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, connect as tcpConnect } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median, percentile, resultsFile, waitLine, withCluster } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CLI = here('../client/cli.js');
const LOAD = here('./load.js');
const SELF = fileURLToPath(import.meta.url);
const QUEUE = 'bench';
/** Jobs per addBulk call: one MULTI of 1,000 Lua calls amortises the round trip, as submitMany batches. */
const BATCH = 1000;
/** Concurrency per BullMQ worker (the BullMQ counterpart of an executor's slots). A no-op processor
 *  does no I/O, so concurrency only sets how many fetch/moveToFinished round trips each worker keeps
 *  in flight to Redis. Swept here (2 workers, 20,000 jobs, 3 interleaved rounds): jobs/s rises from
 *  10 to 200-500 and falls beyond 1,000 (lock renewals, event traffic); 300 was best or within noise
 *  of best in each round, so BullMQ runs at its best setting and the ratio errs in its favour. */
const CONCURRENCY = 300; // --concurrency overrides
/** Sequential tasks run first and not counted, as load.ts does for falconet. */
const WARMUP = 1000;

// bullmq is a devDependency of the bench only; loading it lazily (by a non-literal specifier) keeps
// `tsc` and the falconet half working where it is not installed, and lets us skip BullMQ cleanly.
interface Job { waitUntilFinished(events: unknown): Promise<unknown> }
interface Queue {
  waitUntilReady(): Promise<unknown>; close(): Promise<void>;
  add(name: string, data: object): Promise<Job>;
  addBulk(jobs: { name: string; data: object }[]): Promise<Job[]>;
  getCompletedCount(): Promise<number>; getFailedCount(): Promise<number>;
}
interface BullMQ {
  Queue: new (name: string, opts: object) => Queue;
  QueueEvents: new (name: string, opts: object) => { waitUntilReady(): Promise<unknown>; close(): Promise<void> };
  Worker: new (name: string, fn: () => Promise<unknown>, opts: object) => { waitUntilReady(): Promise<unknown> };
}
const BULLMQ = 'bullmq';
const loadBullmq = () => import(BULLMQ) as Promise<BullMQ>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the BullMQ processes: `--role worker PORT` and `--role producer throughput|latency PORT N` ----

async function worker(port: number, concurrency: number): Promise<void> {
  const { Worker } = await loadBullmq();
  const w = new Worker(QUEUE, async () => null, { connection: { host: '127.0.0.1', port }, concurrency });
  await w.waitUntilReady();
  process.stdout.write('ready\n');
}

async function producer(kind: string, port: number, n: number): Promise<Record<string, number | string>> {
  const { Queue, QueueEvents } = await loadBullmq();
  const connection = { host: '127.0.0.1', port };
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  if (kind === 'throughput') {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i += BATCH) {
      await queue.addBulk(Array.from({ length: Math.min(BATCH, n - i) }, () => ({ name: 'noop', data: {} })));
    }
    // Completion is polled (ZCARD of the completed set, O(1)) every 5 ms rather than counted from
    // QueueEvents: the events stream is trimmed to ~10,000 entries, and a reader lagging behind
    // 100,000 jobs × 3-4 events each loses 'completed' events and never sees the last one.
    // The poll adds at most 5 ms to a run of several seconds.
    let done = 0;
    while ((done = await queue.getCompletedCount()) < n) {
      if ((await queue.getFailedCount()) > 0) throw new Error('BullMQ jobs failed');
      await sleep(done > n * 0.9 ? 2 : 20);
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    await queue.close();
    return { kind, tasks: n, seconds, tasksPerSecond: n / seconds };
  }
  const events = new QueueEvents(QUEUE, { connection });
  await events.waitUntilReady();
  const times: number[] = [];
  for (let i = 0; i < n + WARMUP; i++) {
    const t0 = process.hrtime.bigint();
    const job = await queue.add('noop', {});
    await job.waitUntilFinished(events);
    if (i >= WARMUP) times.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  times.sort((a, b) => a - b);
  const us = (p: number) => Math.round(percentile(times, p));
  await Promise.all([queue.close(), events.close()]);
  return { kind, tasks: n, p50us: us(50), p90us: us(90), p99us: us(99), maxus: Math.round(times[times.length - 1]) };
}

// ---- the orchestrator ----


/** Runs one load process to its end and parses its one JSON line; async, so the pipes of the
 *  dispatcher, executors and workers keep draining meanwhile. */
function runJson(args: string[]): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${args.join(' ')} exited ${code}`))));
  });
}

/** Kills by pid what a scenario started and waits until each is gone, so the next starts on idle cores. */
async function stop(procs: ChildProcess[]): Promise<void> {
  for (const p of procs) if (p.pid) p.kill('SIGKILL');
  await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))));
}

/** The default (durable) store, the one users get: no --store flag. */
const withFalconet = <T>(slots: number, fn: (url: string) => Promise<T>): Promise<T> => withCluster({ dispatcherArgs: [], executors: 2, slots }, fn);

/** Finds redis-server, installing Debian's package when missing and we are root; null to skip. */
function redisServer(): string | null {
  const version = () => execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).match(/v=(\S+)/)?.[1] ?? '?';
  try {
    return version();
  } catch {
    if (process.getuid?.() !== 0) {
      process.stderr.write('redis-server is missing and we are not root: skipping BullMQ (apt-get install redis-server)\n');
      return null;
    }
  }
  process.stderr.write('redis-server is missing: apt-get update && apt-get install -y redis-server\n');
  try {
    execFileSync('sh', ['-c', 'apt-get update -q && apt-get install -y -q redis-server'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    return version();
  } catch (err) {
    process.stderr.write(`installing redis-server failed, skipping BullMQ: ${err}\n`);
    return null;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, '127.0.0.1', () => s.write('PING\r\n'));
    s.once('data', (d) => (s.destroy(), resolve(String(d).startsWith('+PONG'))));
    s.once('error', () => (s.destroy(), resolve(false)));
  });
}

async function withBullmq<T>(concurrency: number, fn: (port: number) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-redis-'));
  const procs: ChildProcess[] = [];
  try {
    const port = await freePort();
    // Redis as BullMQ benchmarks usually run it: in memory only (no RDB, no AOF), loopback only;
    // its log goes to a file so an undrained pipe can never stall it.
    procs.push(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', join(dir, 'redis.log')], { stdio: 'ignore' }));
    for (const deadline = Date.now() + 10_000; !(await ping(port)); await sleep(50)) {
      if (Date.now() > deadline) throw new Error('redis-server did not start');
    }
    const workers = [0, 1].map(() => spawn(process.execPath, [SELF, '--role', 'worker', String(port), String(concurrency)], { stdio: ['ignore', 'pipe', 'inherit'] }));
    procs.push(...workers);
    await Promise.all(workers.map((w) => waitLine(w, /ready/)));
    return await fn(port);
  } finally {
    await stop(procs);
    rmSync(dir, { recursive: true, force: true });
  }
}

type Samples = { tput: number[]; p50: number[]; p90: number[]; p99: number[] };
const newSamples = (): Samples => ({ tput: [], p50: [], p90: [], p99: [] });

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: 'string' }, tasks: { type: 'string' }, latency: { type: 'string' }, concurrency: { type: 'string' }, role: { type: 'string' } } });
  if (values.role === 'worker') return worker(Number(positionals[0]), Number(positionals[1])); // stays up until killed
  if (values.role === 'producer') {
    const [kind, port, n] = positionals;
    process.stdout.write(JSON.stringify(await producer(kind, Number(port), Number(n))) + '\n');
    process.exit(0);
  }
  const runs = Number(values.runs ?? 3);
  const tasks = Number(values.tasks ?? 100_000);
  const latencyN = Number(values.latency ?? 10_000);
  const concurrency = Number(values.concurrency ?? CONCURRENCY);
  let bullmqVersion: string | null = null;
  try {
    bullmqVersion = JSON.parse(readFileSync(createRequire(import.meta.url).resolve('bullmq/package.json'), 'utf8')).version;
  } catch {
    process.stderr.write('bullmq is not installed (npm install --no-save bullmq@5): skipping BullMQ\n');
  }
  const redisVersion = bullmqVersion ? redisServer() : null;
  const withBull = bullmqVersion !== null && redisVersion !== null;
  const f = newSamples();
  const b = newSamples();
  const keep = (s: Samples, l: Record<string, number>) => (s.p50.push(l.p50us), s.p90.push(l.p90us), s.p99.push(l.p99us));
  for (let r = 0; r < runs; r++) {
    // Interleaved per workload, so each falconet/BullMQ pair is measured within the same minute.
    // Throughput uses 1,000 slots per executor and latency 4, as throughput.ts and latency.ts do.
    f.tput.push((await withFalconet(1000, (url) => runJson([LOAD, 'throughput', url, String(tasks)]))).tasksPerSecond);
    if (withBull) b.tput.push((await withBullmq(concurrency, (port) => runJson([SELF, '--role', 'producer', 'throughput', String(port), String(tasks)]))).tasksPerSecond);
    keep(f, await withFalconet(4, (url) => runJson([LOAD, 'latency', url, String(latencyN)])));
    if (withBull) keep(b, await withBullmq(concurrency, (port) => runJson([SELF, '--role', 'producer', 'latency', String(port), String(latencyN)])));
    process.stderr.write(`run ${r + 1}/${runs}: falconet ${Math.round(f.tput[r])} tasks/s, p50 ${f.p50[r]} µs` + (withBull ? `; BullMQ ${Math.round(b.tput[r])} jobs/s, p50 ${b.p50[r]} µs\n` : '\n'));
  }
  // Ratios within each run, then their median: the machine drifts more between runs than within one.
  // Throughput ratio > 1 and latency ratio < 1 both mean falconet is ahead.
  const stat = (xs: number[]) => (xs.length ? { median: Math.round(median(xs)), min: Math.round(Math.min(...xs)), max: Math.round(Math.max(...xs)) } : null);
  const ratio = (xs: number[], ys: number[]) => {
    const per = ys.length ? xs.map((x, i) => +(x / ys[i]).toFixed(3)) : [];
    return per.length ? { median: +median(per).toFixed(2), min: +Math.min(...per).toFixed(2), max: +Math.max(...per).toFixed(2), perRun: per } : null;
  };
  const metrics: [string, keyof Samples][] = [['noop tasks/s', 'tput'], ['round trip p50 µs', 'p50'], ['round trip p90 µs', 'p90'], ['round trip p99 µs', 'p99']];
  const rows = metrics.map(([metric, k]) => ({ metric, falconet: stat(f[k]), bullmq: stat(b[k]), ratio: ratio(f[k], b[k]), samples: { falconet: f[k], bullmq: b[k] } }));
  const out = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, node: process.version },
    command: `node dist/bench/bullmq.js --runs ${runs} --tasks ${tasks} --latency ${latencyN}` + (concurrency !== CONCURRENCY ? ` --concurrency ${concurrency}` : ''),
    versions: { bullmq: bullmqVersion, redis: redisVersion },
    setup: { falconet: 'default durable store, 2 executors (1,000 slots for throughput, 4 for latency)', bullmq: `redis in memory (no save, no AOF), 2 workers × concurrency ${concurrency}, addBulk batches of ${BATCH}, completion polled by the producer`, warmup: WARMUP },
    rows,
  };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`bullmq-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  const cell = (s: ReturnType<typeof stat>) => (s ? `${s.median} (${s.min}–${s.max})` : 'skipped');
  console.log(`| metric | falconet, median (min–max) | BullMQ ${bullmqVersion ?? ''} / Redis ${redisVersion ?? ''}, median (min–max) | falconet / BullMQ, median of runs (min–max) |`);
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.metric} | ${cell(r.falconet)} | ${cell(r.bullmq)} | ${r.ratio ? `${r.ratio.median} (${r.ratio.min}–${r.ratio.max})` : '—'} |`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
