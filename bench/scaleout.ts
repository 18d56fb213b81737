/**
 * scaleout (issue 15): one dispatcher on PostgreSQL vs one on SQLite (`--sync full`), no-op
 * tasks/s as bench/throughput.ts measures them (one SDK client, `submitMany` with 50,000 in
 * flight, first submit to last result), both in every run, medians of the runs; plus the CPU each
 * side spends per task: the dispatcher process, and PostgreSQL's whole process tree (postmaster,
 * the backends serving the dispatcher, WAL writer, checkpointer), from /proc/<pid>/stat.
 *
 * PostgreSQL runs from test/postgres.ts (Debian's package, a temp data dir) with fsync ON, so that
 * both stores make a commit durable before acknowledging it. When it cannot start (not installed,
 * not installable) the PostgreSQL part is skipped with the reason, printed and in the result file.
 *
 *   npm run build && node dist/bench/scaleout.js [--runs 3] [--tasks 200000]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startPostgres, type PgServer } from '../test/postgres.js';
import { STORE_VARIANTS, cell, resultsFile, spread, withCluster } from './harness.js';

const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));
/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ: 100 on Linux). */
const HZ = 100;

/** CPU seconds (user + system) a process has used, or 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // after the command name, which may hold spaces
    return (Number(f[11]) + Number(f[12])) / HZ;
  } catch {
    return 0;
  }
}

/** The pids whose parent is `ppid` and whose command line contains `match`. */
function childrenOf(ppid: number, match = ''): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === ppid && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(match)) out.push(Number(entry));
    } catch {} // gone meanwhile
  }
  return out;
}

/** CPU of the dispatcher (this process's child running `dispatcher`) and of the postgres tree. */
function cpuNow(pg: PgServer | null): { dispatcher: number; postgres: number } {
  const dispatcher = childrenOf(process.pid, 'dispatcher').reduce((s, p) => s + cpuSeconds(p), 0);
  // Backends that exited during the run are lost to this sum; the dispatcher's connections live as long as it does.
  const postgres = pg ? [pg.pid, ...childrenOf(pg.pid)].reduce((s, p) => s + cpuSeconds(p), 0) : 0;
  return { dispatcher, postgres };
}

interface Sample {
  tasksPerSecond: number;
  dispatcherCpuUsPerTask: number;
  postgresCpuUsPerTask: number;
}

async function measure(args: string[], tasks: number, pg: PgServer | null): Promise<Sample> {
  return withCluster({ dispatcherArgs: args, executors: 2, slots: 1000 }, async (url) => {
    const before = cpuNow(pg);
    const figures = JSON.parse(execFileSync(process.execPath, [LOAD, 'throughput', url, String(tasks)], { encoding: 'utf8' })) as { tasksPerSecond: number };
    const after = cpuNow(pg);
    const us = (s: number) => (s * 1e6) / tasks;
    return { tasksPerSecond: figures.tasksPerSecond, dispatcherCpuUsPerTask: us(after.dispatcher - before.dispatcher), postgresCpuUsPerTask: us(after.postgres - before.postgres) };
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, tasks: { type: 'string' } } });
  const runs = Number(values.runs ?? 3);
  const tasks = Number(values.tasks ?? 200_000);
  const started = await startPostgres({ fsync: true });
  const pg = 'skip' in started ? null : started;
  const skipped = 'skip' in started ? started.skip : null;
  if (skipped) process.stderr.write(`scaleout: the PostgreSQL part is skipped: ${skipped}\n`);
  const variants = pg ? ['sqlite-full', 'postgres'] : ['sqlite-full'];
  const samples: Record<string, Sample[]> = Object.fromEntries(variants.map((v) => [v, []]));
  try {
    for (let r = 0; r < runs; r++) {
      for (const v of variants) {
        // A fresh database per run, as the SQLite side gets a fresh data dir.
        const args = v === 'postgres' ? ['--store', await pg!.newDatabase(`bench${r}`)] : STORE_VARIANTS[v];
        const s = await measure(args, tasks, v === 'postgres' ? pg : null);
        samples[v].push(s);
        process.stderr.write(`run ${r + 1}/${runs} ${v}: ${Math.round(s.tasksPerSecond)} tasks/s, dispatcher ${s.dispatcherCpuUsPerTask.toFixed(1)} µs/task${v === 'postgres' ? `, postgres ${s.postgresCpuUsPerTask.toFixed(1)} µs/task` : ''}\n`);
      }
    }
  } finally {
    await pg?.stop();
  }
  const rows = variants.map((v) => ({
    store: v,
    tasksPerSecond: spread(samples[v].map((s) => s.tasksPerSecond)),
    dispatcherCpuUsPerTask: spread(samples[v].map((s) => s.dispatcherCpuUsPerTask), 1),
    ...(v === 'postgres' ? { postgresCpuUsPerTask: spread(samples[v].map((s) => s.postgresCpuUsPerTask), 1) } : {}),
    ratioToSqlite: spread(samples[v].map((s, i) => s.tasksPerSecond / samples['sqlite-full'][i].tasksPerSecond), 2),
  }));
  const date = new Date().toISOString();
  const out = {
    date,
    machine: { cores: cpus().length, node: process.version },
    command: `node dist/bench/scaleout.js --runs ${runs} --tasks ${tasks}`,
    tasks,
    postgres: skipped ? { skipped } : { fsync: true, server: 'Debian postgresql package, test/postgres.ts' },
    rows,
  };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`scaleout-${date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${tasks.toLocaleString('en')} noop tasks, one SDK client, one dispatcher, 2 executors × 1,000 slots; median of ${runs} runs (min–max)\n`);
  console.log('| store | tasks/s | ratio to sqlite | dispatcher CPU µs/task | postgres CPU µs/task |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.store} | ${cell(r.tasksPerSecond)} | ${cell(r.ratioToSqlite)} | ${cell(r.dispatcherCpuUsPerTask)} | ${'postgresCpuUsPerTask' in r && r.postgresCpuUsPerTask ? cell(r.postgresCpuUsPerTask) : '–'} |`);
  if (skipped) console.log(`\nPostgreSQL skipped: ${skipped}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
