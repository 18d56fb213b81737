/**
 * Where the CPU of a `/bin/true` command task goes on `falconet up`'s defaults (issue 13 item 1):
 * a fresh dispatcher (default durable store) and 2 executor processes × 1 slot, M
 * `{"cmd":["/bin/true"]}` through `falconet submit --file`, next to the C posix_spawn loop with 2
 * in flight in the same run (bench/spawn-helper/spawn-loop.c). For each run: both rates, their
 * ratio, and the CPU per task of every process: the dispatcher (all its threads: the store
 * writer too), the executors, their spawn helpers, the commands themselves (the helpers' reaped
 * children), and the CLI. The bound that follows: with every core busy, a rate of at most
 * cores / (CPU per task, all processes), against the loop's cores / (its CPU per task).
 *
 *   npm run build && node dist/bench/true-cpu.js [--runs 3] [--commands 5000]
 *
 * CPU is read from /proc: schedstat (ns on a core, every thread) for our processes, the reaped
 * children's utime + stime for the commands, the CLI's as our own reaped child.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exited, spread, taskFile, threadsMs, waitLine } from './harness.js';

const CLI = fileURLToPath(new URL('../client/cli.js', import.meta.url));
const LOOP_SRC = fileURLToPath(new URL('../../bench/spawn-helper/spawn-loop.c', import.meta.url));
const TICK_MS = 1000 / 100; // USER_HZ

/** utime + stime of the reaped children of `pid`, ms. */
function reapedMs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) * TICK_MS;
}

/** The child processes of `pid` (the executor's spawn helper). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

type Split = { dispatcher: number; executors: number; helpers: number; commands: number; cli: number };

async function falconet(m: number, file: string): Promise<{ tasksPerSecond: number; cpu: Split }> {
  const data = mkdtempSync(join(tmpdir(), 'falconet-bench-true-'));
  const env = { ...process.env, FALCONET_LOG: 'warn' };
  const d = spawn(process.execPath, [CLI, 'dispatcher', '--port', '0', '--host', '127.0.0.1', '--data-dir', data], { stdio: ['ignore', 'pipe', 'ignore'], env });
  const executors = [0, 1].map(() => ({ pid: 0 }));
  const procs: ChildProcess[] = [d];
  try {
    const [, url] = await waitLine(d, /listening on (\S+)/);
    for (const e of executors) {
      const p = spawn(process.execPath, [CLI, 'executor', '--dispatcher', url, '--slots', '1'], { stdio: 'ignore', env });
      procs.push(p);
      e.pid = p.pid!;
    }
    for (const deadline = Date.now() + 15_000; ; ) {
      const s = (await (await fetch(url.replace('ws', 'http') + '/api/status')).json()) as { executors: unknown[] };
      if (s.executors.length === 2) break;
      if (Date.now() > deadline) throw new Error('executors did not register');
      await new Promise((r) => setTimeout(r, 50));
    }
    // A helper starts with its executor's first command: run one each first, outside the count.
    const warm = taskFile(4, { cmd: ['/bin/true'] });
    await runCli(url, warm.file);
    rmSync(warm.dir, { recursive: true, force: true });
    const helpers = executors.flatMap((e) => childrenOf(e.pid));
    const snap = () => ({
      dispatcher: threadsMs(d.pid!),
      executors: executors.reduce((a, e) => a + threadsMs(e.pid), 0),
      helpers: helpers.reduce((a, h) => a + threadsMs(h), 0),
      commands: helpers.reduce((a, h) => a + reapedMs(h), 0),
      cli: reapedMs(process.pid),
    });
    const before = snap();
    const t0 = process.hrtime.bigint();
    await runCli(url, file);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const after = snap();
    const cpu = Object.fromEntries(Object.keys(before).map((k) => [k, +((after[k as keyof Split] - before[k as keyof Split]) / m).toFixed(3)])) as Split;
    return { tasksPerSecond: m / seconds, cpu };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map(exited));
    rmSync(data, { recursive: true, force: true });
  }
}

/** `falconet submit --file` as a person runs it; results to /dev/null; throws unless it exits 0. */
async function runCli(url: string, file: string): Promise<void> {
  const c = spawn(process.execPath, [CLI, 'submit', '--file', file], { stdio: ['ignore', 'ignore', 'ignore'], env: { ...process.env, FALCONET_URL: url, FALCONET_LOG: 'warn' } });
  const code = await new Promise<number | null>((r) => c.once('exit', r));
  if (code !== 0) throw new Error(`falconet submit exited ${code}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, commands: { type: 'string' } } });
  const runs = Number(values.runs ?? 3);
  const m = Number(values.commands ?? 5000);
  const tasks = taskFile(m, { cmd: ['/bin/true'] });
  const bin = join(tasks.dir, 'spawn-loop');
  execFileSync('cc', ['-O2', '-o', bin, LOOP_SRC], { stdio: 'inherit' });
  const rows: Array<{ loop: number; loopCpu: number; falconet: number; ratio: number; cpu: Split; total: number }> = [];
  try {
    for (let r = 0; r < runs; r++) {
      const loop = JSON.parse(execFileSync(bin, [String(m), '2'], { encoding: 'utf8' })) as { tasksPerSecond: number; cpuMs: number };
      const f = await falconet(m, tasks.file);
      const total = +Object.values(f.cpu).reduce((a, b) => a + b, 0).toFixed(3);
      rows.push({ loop: loop.tasksPerSecond, loopCpu: +(loop.cpuMs / m).toFixed(3), falconet: f.tasksPerSecond, ratio: f.tasksPerSecond / loop.tasksPerSecond, cpu: f.cpu, total });
      process.stderr.write(`run ${r + 1}/${runs}: ${JSON.stringify(rows.at(-1))}\n`);
    }
  } finally {
    rmSync(tasks.dir, { recursive: true, force: true });
  }
  const med = (pick: (x: (typeof rows)[number]) => number, digits = 3) => spread(rows.map(pick), digits);
  const n = cpus().length;
  const cell = (s: { median: number; min: number; max: number }) => `${s.median} (${s.min}–${s.max})`;
  console.log(`/bin/true × ${m} on up's defaults (2 executors × 1 slot), ${runs} runs, ${n} cores; medians (min–max)\n`);
  console.log(`| C loop tasks/s | falconet tasks/s | ratio | CPU ms/task: dispatcher | executors | helpers | commands | CLI | all | C loop, all |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  console.log(
    `| ${cell(med((x) => x.loop, 0))} | ${cell(med((x) => x.falconet, 0))} | ${cell(med((x) => x.ratio, 2))} | ${cell(med((x) => x.cpu.dispatcher))} | ${cell(med((x) => x.cpu.executors))} | ` +
      `${cell(med((x) => x.cpu.helpers))} | ${cell(med((x) => x.cpu.commands))} | ${cell(med((x) => x.cpu.cli))} | ${cell(med((x) => x.total))} | ${cell(med((x) => x.loopCpu))} |`,
  );
  const bound = med((x) => x.loopCpu / x.total, 2);
  console.log(`\nWith every core busy: falconet / C loop ≤ (C loop CPU per task) / (falconet's, all processes) = ${cell(bound)} (target 0.8).`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
