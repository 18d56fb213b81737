/**
 * Scale: many lightweight simulated executors on one dispatcher (PRODUCT.md §9: 19,000 connected,
 * ≥ 10,000 tasks/s meanwhile, ≤ 8 KB of dispatcher memory each).
 *
 * One dispatcher process (`--store memory`, `--heartbeat-ms 10000 --lease-ms 60000`), then
 * simulated executors in load processes of at most `--per-process` connections each
 * (bench/sim-executors.ts: one slot, push mode, `done` at once), then `--tasks` noop tasks from an
 * SDK client in its own process (bench/load.ts throughput). Measures the registration time (first
 * dial to all welcomed, and to all visible in /api/status), tasks/s, and the dispatcher's RSS
 * (/proc/PID/status VmRSS) before the executors, with them, and after the run.
 *
 *   npm run build && node dist/bench/scale.js [--executors 19000] [--per-process 9500]
 *        [--tasks 200000] [--store memory|sqlite] [--transport ws|uws] [--cpu-prof DIR] [--heap-snapshot DIR]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cell, resultsFile, spread } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CLI = here('../client/cli.js');
const LOAD = here('./load.js');
const SIM = here('./sim-executors.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set of a process in bytes, from /proc. */
function rss(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Calls `fn` for each line the child writes to stdout. */
function onLines(child: ChildProcess, fn: (line: string) => void): void {
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      fn(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}

function waitLine(child: ChildProcess, re: RegExp, timeoutMs = 600_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}`)), timeoutMs);
    onLines(child, (line) => {
      const m = line.match(re);
      if (m) {
        clearTimeout(t);
        resolve(m);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before ${re}`)));
  });
}

async function status(url: string): Promise<{ executors: Array<{ state: string }>; tasks: { queued: number; running: number } }> {
  return (await (await fetch(url.replace('ws', 'http') + '/api/status')).json()) as never;
}

function runLoad(args: string[]): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [LOAD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`load exited ${code}: ${out}`))));
  });
}

async function stop(procs: ChildProcess[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill(signal);
  await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))));
}

interface MeasureOptions {
  n: number;
  perProcess: number;
  tasks: number;
  store: string;
  transport: string;
  batch: number;
  profDir: string | null;
  snapDir: string | null;
}

type Figures = Record<string, number | string>;

/** One measurement on a fresh dispatcher: registration, the no-op run, memory. */
async function measure(o: MeasureOptions): Promise<Figures> {
  const { n, perProcess, tasks, store, transport, batch, profDir, snapDir } = o;
  const began = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'falconet-scale-'));
  const dispatcherArgs = ['dispatcher', '--port', '0', '--host', '127.0.0.1', '--data-dir', dir, '--store', store, '--transport', transport, '--heartbeat-ms', '10000', '--lease-ms', '60000',
    // Every simulated executor dials from loopback, hundreds at once: no pending-hello caps here.
    '--max-pending-hellos', '1000000', '--max-pending-hellos-per-address', '1000000'];
  const nodeFlags = [...(profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []), ...(snapDir ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapDir}`] : [])];
  const env = { ...process.env, FALCONET_LOG: 'warn' };
  const d = spawn(process.execPath, [...nodeFlags, CLI, ...dispatcherArgs], { stdio: ['ignore', 'pipe', 'inherit'], env });
  const sims: ChildProcess[] = [];
  try {
    const [, url] = await waitLine(d, /listening on (\S+)/, 30_000);
    await sleep(2000);
    const rssBefore = rss(d.pid!);

    // ---- registration ------------------------------------------------------------------------
    const procs = Math.ceil(n / perProcess);
    const t0 = performance.now();
    const ready: Array<Promise<RegExpMatchArray>> = [];
    for (let i = 0; i < procs; i++) {
      const count = Math.min(perProcess, n - i * perProcess);
      const s = spawn(process.execPath, [SIM, '--url', url, '--count', String(count), '--prefix', `sim${i}-`, '--batch', String(batch), '--heartbeat-ms', '10000'], { stdio: ['ignore', 'pipe', 'inherit'], env });
      sims.push(s);
      ready.push(waitLine(s, /^ready (\d+) (\d+)/));
    }
    const readies = await Promise.all(ready);
    const welcomeMs = performance.now() - t0;
    const welcomed = readies.reduce((a, m) => a + Number(m[1]), 0);
    let visible = 0;
    for (;;) {
      visible = (await status(url)).executors.filter((e) => e.state !== 'disconnected').length;
      if (visible >= n || performance.now() - t0 > welcomeMs + 60_000) break;
      await sleep(200);
    }
    const visibleMs = performance.now() - t0;
    process.stderr.write(`registered ${welcomed} welcomed in ${(welcomeMs / 1000).toFixed(1)} s, ${visible} visible in ${(visibleMs / 1000).toFixed(1)} s\n`);
    await sleep(3000);
    const rssWith = rss(d.pid!);
    if (snapDir) {
      // A heap snapshot of the dispatcher holding every executor (and no task yet): what the
      // memory per executor is made of. Written synchronously; wait until its size settles.
      mkdirSync(snapDir, { recursive: true });
      const had = new Set(readdirSync(snapDir));
      process.kill(d.pid!, 'SIGUSR2');
      let size = -1;
      for (;;) {
        await sleep(1000);
        const f = readdirSync(snapDir).find((x) => x.endsWith('.heapsnapshot') && !had.has(x));
        if (!f) continue;
        const now = statSync(join(snapDir, f)).size;
        if (now === size) break;
        size = now;
      }
    }

    // ---- no-op run ---------------------------------------------------------------------------
    const r = await runLoad(['throughput', url, String(tasks)]);
    process.stderr.write(`${tasks} noop tasks: ${Math.round(r.tasksPerSecond)} tasks/s\n`);
    const after = await status(url);
    const stillConnected = after.executors.filter((e) => e.state !== 'disconnected').length;
    const rssAfter = rss(d.pid!);

    const figures = {
      executors: n,
      loadProcesses: procs,
      store,
      transport,
      welcomed,
      registrationSeconds: +(welcomeMs / 1000).toFixed(2),
      visibleInStatusSeconds: +(visibleMs / 1000).toFixed(2),
      visibleInStatus: visible,
      connectedAfterRun: stillConnected,
      tasks,
      tasksPerSecond: Math.round(r.tasksPerSecond),
      runSeconds: +r.seconds.toFixed(2),
      dispatcherRssBeforeMB: +(rssBefore / 2 ** 20).toFixed(1),
      dispatcherRssWithExecutorsMB: +(rssWith / 2 ** 20).toFixed(1),
      dispatcherRssAfterRunMB: +(rssAfter / 2 ** 20).toFixed(1),
      bytesPerExecutor: Math.round((rssWith - rssBefore) / n),
      bytesPerExecutorAfterRun: Math.round((rssAfter - rssBefore) / n),
      wallSeconds: 0,
    };
    await stop(sims);
    sims.length = 0;
    await stop([d], 'SIGTERM'); // a clean exit, so --cpu-prof writes its profile
    figures.wallSeconds = Math.round((Date.now() - began) / 1000);
    return figures;
  } finally {
    await stop(sims);
    await stop([d]);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      executors: { type: 'string' },
      'per-process': { type: 'string' },
      tasks: { type: 'string' },
      store: { type: 'string' },
      transport: { type: 'string' },
      batch: { type: 'string' },
      'cpu-prof': { type: 'string' },
      'heap-snapshot': { type: 'string' },
    },
  });
  const runs = Number(values.runs ?? 3);
  const o: MeasureOptions = {
    n: Number(values.executors ?? 19_000),
    perProcess: Number(values['per-process'] ?? 9_500),
    tasks: Number(values.tasks ?? 200_000),
    store: values.store ?? 'memory',
    transport: values.transport ?? 'ws',
    batch: Number(values.batch ?? 250),
    profDir: values['cpu-prof'] ? resolve(values['cpu-prof']) : null,
    snapDir: values['heap-snapshot'] ? resolve(values['heap-snapshot']) : null,
  };
  const command = `node dist/bench/scale.js --runs ${runs} --executors ${o.n} --per-process ${o.perProcess} --tasks ${o.tasks} --store ${o.store} --transport ${o.transport}${o.profDir ? ' --cpu-prof ' + values['cpu-prof'] : ''}${o.snapDir ? ' --heap-snapshot ' + values['heap-snapshot'] : ''}`;
  const all: Figures[] = [];
  for (let r = 0; r < runs; r++) {
    all.push(await measure(o));
    process.stderr.write(`run ${r + 1}/${runs}: ${JSON.stringify(all.at(-1))}\n`);
  }
  const num = (k: string) => all.map((f) => Number(f[k]));
  const s = (k: string, digits = 0) => spread(num(k), digits);
  const f = {
    executors: o.n,
    store: o.store,
    transport: o.transport,
    tasks: o.tasks,
    welcomed: s('welcomed'),
    visibleInStatus: s('visibleInStatus'),
    connectedAfterRun: s('connectedAfterRun'),
    registrationSeconds: s('registrationSeconds', 2),
    visibleInStatusSeconds: s('visibleInStatusSeconds', 2),
    tasksPerSecond: s('tasksPerSecond'),
    kbPerExecutor: spread(num('bytesPerExecutor').map((b) => b / 1024), 1),
    kbPerExecutorAfterRun: spread(num('bytesPerExecutorAfterRun').map((b) => b / 1024), 1),
  };
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command, runs, figures: f, perRun: all };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`scale-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${o.n.toLocaleString('en')} simulated executors, ${o.store} store, ${o.transport}; median of ${runs} runs (min–max)\n`);
  console.log(`| metric | measured | target (PRODUCT.md §9) | |`);
  console.log(`|---|---|---|---|`);
  console.log(`| executors connected (in /api/status; after the run) | ${cell(f.visibleInStatus)}; ${cell(f.connectedAfterRun)} | 19,000 | ${Math.min(...num('visibleInStatus'), ...num('connectedAfterRun')) >= 19_000 ? 'met' : 'not met'} |`);
  console.log(`| registration, first dial to all welcomed / all in status, s | ${cell(f.registrationSeconds)} / ${cell(f.visibleInStatusSeconds)} | — | |`);
  console.log(`| noop tasks/s with them connected (${o.tasks} tasks) | ${cell(f.tasksPerSecond)} | ≥ 10,000 | ${f.tasksPerSecond.median >= 10_000 ? 'met' : 'not met'} |`);
  console.log(`| dispatcher memory per executor (ΔRSS / N), KB | ${cell(f.kbPerExecutor)} (after the run ${f.kbPerExecutorAfterRun.median}) | ≤ 8 KB | ${f.kbPerExecutor.median <= 8 ? 'met' : 'not met'} |`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
