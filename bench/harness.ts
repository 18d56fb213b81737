/** What every bench scenario shares: where results go, and how to watch its child processes. */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * bench/results/ in the repository, or `$FALCONET_BENCH_RESULTS` (the CI smoke run writes to a
 * temp dir so that it never overwrites measured figures).
 */
export function resultsFile(name = ''): string {
  const dir = process.env.FALCONET_BENCH_RESULTS ?? fileURLToPath(new URL('../../bench/results', import.meta.url));
  return name ? join(dir, name) : dir;
}

/** Resolves with the first match of `re` on the child's stdout (the pipe keeps draining). */
export function waitLine(child: ChildProcess, re: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d;
      const m = buf.match(re);
      if (m) resolve(m);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before ${re}: ${buf}`)));
  });
}

/** Resolves once the child has exited (at once if it already has). */
export const exited = (p: ChildProcess): Promise<unknown> => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Median with its min and max, rounded to `digits`. */
export function spread(xs: number[], digits = 0): { median: number; min: number; max: number } {
  const r = (x: number) => +x.toFixed(digits);
  return { median: r(median(xs)), min: r(Math.min(...xs)), max: r(Math.max(...xs)) };
}

export const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** `median (min–max)` for a Markdown cell. */
export const cell = (s: { median: number; min: number; max: number }): string => `${s.median} (${s.min}–${s.max})`;

/** Dispatcher flags of the store variants the benches compare. */
export const STORE_VARIANTS: Record<string, string[]> = {
  memory: ['--store', 'memory'],
  'sqlite-full': ['--store', 'sqlite', '--sync', 'full'],
  'sqlite-normal': ['--store', 'sqlite', '--sync', 'normal'],
};

const CLI = fileURLToPath(new URL('../client/cli.js', import.meta.url));

/**
 * `$FALCONET_BENCH_CPU_PROF=DIR`: every process of {@link withCluster} runs under `node --cpu-prof`
 * (profiles in DIR/dispatcher, DIR/executor-N) and is stopped with SIGTERM so that it writes its
 * profile; `node dist/bench/profile.js DIR` sums them up. `$FALCONET_BENCH_FLAGS_DISPATCHER`,
 * `_EXECUTOR`, `_CLIENT`: Node flags for the processes of that role only (e.g. GC settings,
 * `--max-semi-space-size=64`), to measure one process's setting with the others unchanged.
 */
export function cpuProfFlags(role: string): string[] {
  const dir = process.env.FALCONET_BENCH_CPU_PROF;
  const extra = process.env[`FALCONET_BENCH_FLAGS_${role.replace(/-.*/, '').toUpperCase()}`];
  return [...(dir ? ['--cpu-prof', '--cpu-prof-dir', join(dir, role)] : []), ...(extra ? extra.split(' ').filter(Boolean) : [])];
}

/** The processes of a {@link withCluster} cluster. */
export interface ClusterPids {
  dispatcher: number;
  executors: number[];
}

/**
 * CPU time of every thread of `pid` (ms on a core, from /proc/PID/task/TID/schedstat, in ns): a
 * thread waiting for a core, or blocked in fsync, is not charged. Threads that ended are lost.
 */
export function threadsMs(pid: number): number {
  let ns = 0;
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0; // gone
  }
  for (const t of tasks) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns / 1e6;
}

/**
 * A fresh dispatcher process (its own temp data dir) with `executors` executor processes of
 * `slots` each, registered; `fn` gets its URL; every process is killed afterwards.
 */
export async function withCluster<T>(o: { dispatcherArgs: string[]; executors: number; slots: number }, fn: (url: string, pids: ClusterPids) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-'));
  const procs: ChildProcess[] = [];
  const env = { ...process.env, FALCONET_LOG: 'warn' };
  try {
    const d = spawn(process.execPath, [...cpuProfFlags('dispatcher'), CLI, 'dispatcher', '--port', '0', '--host', '127.0.0.1', '--data-dir', dir, ...o.dispatcherArgs], { stdio: ['ignore', 'pipe', 'ignore'], env });
    procs.push(d);
    const [, url] = await waitLine(d, /listening on (\S+)/);
    for (let i = 0; i < o.executors; i++) {
      procs.push(spawn(process.execPath, [...cpuProfFlags(`executor-${i}`), CLI, 'executor', '--dispatcher', url, '--slots', String(o.slots)], { stdio: 'ignore', env }));
    }
    for (const deadline = Date.now() + 15_000; ; ) {
      const s = (await (await fetch(url.replace('ws', 'http') + '/api/status')).json()) as { executors: unknown[] };
      if (s.executors.length === o.executors) break;
      if (Date.now() > deadline) throw new Error('executors did not register');
      await new Promise((r) => setTimeout(r, 50));
    }
    return await fn(url, { dispatcher: d.pid!, executors: procs.slice(1).map((p) => p.pid!) });
  } finally {
    if (process.env.FALCONET_BENCH_CPU_PROF) {
      // Executors first (their bye would otherwise meet a dispatcher gone), each a clean exit that writes its profile.
      for (const p of [...procs.slice(1), procs[0]]) {
        p.kill('SIGTERM');
        await Promise.race([exited(p), new Promise((r) => setTimeout(r, 10_000))]);
      }
    }
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map(exited));
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * `falconet submit --file FILE` against `url` as a person runs it (its own process, results as
 * JSON lines into a file), timed from spawn to exit: startup, reading, checking and writing
 * included. Throws unless it exits 0 with one result line per task.
 */
export async function cliSubmit(url: string, file: string, tasks: number): Promise<{ seconds: number; tasksPerSecond: number }> {
  const out = `${file}.results`;
  const start = process.hrtime.bigint();
  const child = spawn('/bin/sh', ['-c', `exec "$0" "$1" submit --file "$2" > "$3"`, process.execPath, CLI, file, out], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, FALCONET_URL: url, FALCONET_LOG: 'warn' },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const lines = countLines(out);
  rmSync(out, { force: true });
  if (code !== 0 || lines !== tasks) throw new Error(`falconet submit exited ${code} with ${lines} of ${tasks} results: ${stderr.slice(-500)}`);
  return { seconds, tasksPerSecond: tasks / seconds };
}

/** Newlines in a file, read in chunks (a million results do not fit one string). */
function countLines(file: string): number {
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  let n = 0;
  try {
    for (let got; (got = readSync(fd, buf, 0, buf.length, null)) > 0; ) for (let i = 0; i < got; i++) if (buf[i] === 10) n++;
  } finally {
    closeSync(fd);
  }
  return n;
}

/** A file of `n` copies of one task as JSON lines, in a fresh temp dir (removed with `dir`). */
export function taskFile(n: number, task: unknown): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-tasks-'));
  const file = join(dir, 'tasks.jsonl');
  writeFileSync(file, (JSON.stringify(task) + '\n').repeat(n));
  return { dir, file };
}
