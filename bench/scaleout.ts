/**
 * scaleout (issue 15): one dispatcher on PostgreSQL vs one on SQLite (`--sync full`), no-op
 * tasks/s as bench/throughput.ts measures them (one SDK client, `submitMany` with 50,000 in
 * flight, first submit to last result), both in every run, medians of the runs; plus the CPU each
 * side spends per task: the dispatcher process, and PostgreSQL's whole process tree (postmaster,
 * the backends serving the dispatcher, WAL writer, checkpointer), from /proc/<pid>/stat.
 *
 * Then the cluster parts (bench/scaleout-cluster.ts) on the same server: `--dispatchers` dispatchers
 * on one database with `--executors` simulated executors spread evenly over them (tasks/s,
 * registration, memory per executor), and the time from a dispatcher's kill -9 to its client's
 * results flowing again, for each `--failover-lease-ms`; last, a paper estimate of N dispatchers
 * on N machines from the per-task CPU measured.
 *
 * PostgreSQL runs from test/postgres.ts (Debian's package, a temp data dir) with fsync ON, so that
 * both stores make a commit durable before acknowledging it. When it cannot start (not installed,
 * not installable, fails to start) every PostgreSQL part is skipped with the reason, printed and
 * in the result file.
 *
 *   npm run build && node dist/bench/scaleout.js [--runs 3] [--tasks 200000] [--dispatchers 3]
 *        [--executors 54000] [--per-process 9000] [--cluster-tasks 150000] [--cluster-rounds 3]
 *        [--failover-lease-ms 10000,2000] [--failover-runs 3]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startPostgres, type PgServer } from '../test/postgres.js';
import { STORE_VARIANTS, cell, resultsFile, spread, withCluster } from './harness.js';
import { childrenOf, cpuSeconds, measureCluster, measureFailover, pgCpu } from './scaleout-cluster.js';

const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));
/** CPU of the dispatcher (this process's child running `dispatcher`) and of the postgres tree. */
function cpuNow(pg: PgServer | null): { dispatcher: number; postgres: number } {
  const dispatcher = childrenOf(process.pid, 'dispatcher').reduce((s, p) => s + cpuSeconds(p), 0);
  // Backends that exited during the run are lost to this sum; the dispatcher's connections live as long as it does.
  const postgres = pg ? pgCpu(pg) : 0;
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

/** N dispatchers on N machines, one PostgreSQL: the arithmetic, from per-task CPU (µs). */
function estimate(dispatcherUs: number, postgresUs: number, clusterPostgresUs: number | null): Record<string, unknown> {
  const perDispatcher = Math.round(1e6 / dispatcherUs);
  const perPgCore = Math.round(1e6 / postgresUs);
  const rows = [1, 2, 3, 4, 8, 16].map((n) => ({ dispatchers: n, dispatcherBound: n * perDispatcher, pgOneCore: Math.min(n * perDispatcher, perPgCore), pgFourCores: Math.min(n * perDispatcher, 4 * perPgCore) }));
  return {
    dispatcherCpuUsPerTask: dispatcherUs,
    postgresCpuUsPerTask: postgresUs,
    clusterPostgresCpuUsPerTask: clusterPostgresUs,
    perDispatcherTasksPerSecond: perDispatcher,
    perPostgresCoreTasksPerSecond: perPgCore,
    dispatchersPerPostgresCore: +(dispatcherUs / postgresUs).toFixed(2),
    rows,
    note: 'one dispatcher is one Node thread (one core): N × 1e6/dispatcher µs; PostgreSQL: cores × 1e6/postgres µs if its per-task work spreads over cores (WAL flushes are shared by group commit); the lower bound wins',
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      tasks: { type: 'string' },
      dispatchers: { type: 'string' },
      executors: { type: 'string' },
      'per-process': { type: 'string' },
      'cluster-tasks': { type: 'string' },
      'cluster-rounds': { type: 'string' },
      'failover-lease-ms': { type: 'string' },
      'failover-runs': { type: 'string' },
      'cluster-lease-ms': { type: 'string' },
      parts: { type: 'string' },
    },
  });
  // Which parts run (all by default): to repeat one part alone while looking into it.
  const parts = new Set((values.parts ?? 'single,cluster,failover').split(','));
  const runs = Number(values.runs ?? 3);
  const tasks = Number(values.tasks ?? 200_000);
  const clusterOpts = {
    dispatchers: Number(values.dispatchers ?? 3),
    executors: Number(values.executors ?? 54_000),
    // ≤ 9,000 sockets per load process: RLIMIT_NOFILE is 20,000 here (PLATFORM.md), and 2 per dispatcher split 18,000 evenly.
    perProcess: Number(values['per-process'] ?? 9_000),
    tasks: Number(values['cluster-tasks'] ?? 150_000),
    rounds: Number(values['cluster-rounds'] ?? 3),
    leaseMs: Number(values['cluster-lease-ms'] ?? 10_000),
  };
  const failoverOpts = { leases: (values['failover-lease-ms'] ?? '10000,2000').split(',').map(Number), runs: Number(values['failover-runs'] ?? 3) };
  const started = await startPostgres({ fsync: true }).catch((err: Error) => ({ skip: `PostgreSQL did not start: ${err.message.slice(0, 500)}` }));
  const pg = 'skip' in started ? null : started;
  const skipped = 'skip' in started ? started.skip : null;
  if (skipped) process.stderr.write(`scaleout: the PostgreSQL parts (one dispatcher on PostgreSQL, the cluster, the failover) are skipped: ${skipped}\n`);
  const variants = !parts.has('single') ? [] : pg ? ['sqlite-full', 'postgres'] : ['sqlite-full'];
  const samples: Record<string, Sample[]> = Object.fromEntries(variants.map((v) => [v, []]));
  let cluster: Record<string, unknown> | null = null;
  let failover: Array<Record<string, unknown>> | null = null;
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
    if (pg && parts.has('cluster')) cluster = await measureCluster(pg, clusterOpts);
    if (pg && parts.has('failover')) failover = await measureFailover(pg, failoverOpts);
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
  const notRun = { skipped: 'not in --parts' };
  const pgRow = rows.find((r) => r.store === 'postgres');
  const paper = pgRow && 'postgresCpuUsPerTask' in pgRow && pgRow.postgresCpuUsPerTask
    ? estimate(pgRow.dispatcherCpuUsPerTask.median, pgRow.postgresCpuUsPerTask.median, (cluster?.postgresCpuUsPerTask as { median: number } | null | undefined)?.median ?? null)
    : null;
  const date = new Date().toISOString();
  const out = {
    date,
    machine: { cores: cpus().length, node: process.version, load: uptime() },
    command: `node dist/bench/scaleout.js --runs ${runs} --tasks ${tasks} --dispatchers ${clusterOpts.dispatchers} --executors ${clusterOpts.executors} --per-process ${clusterOpts.perProcess} --cluster-tasks ${clusterOpts.tasks} --cluster-rounds ${clusterOpts.rounds} --cluster-lease-ms ${clusterOpts.leaseMs} --failover-lease-ms ${failoverOpts.leases.join(',')} --failover-runs ${failoverOpts.runs}${values.parts ? ` --parts ${values.parts}` : ''}`,
    tasks,
    postgres: skipped ? { skipped } : { fsync: true, server: 'Debian postgresql package, test/postgres.ts' },
    rows,
    cluster: cluster ?? (skipped ? { skipped } : notRun),
    failover: failover ?? (skipped ? { skipped } : notRun),
    estimate: paper ?? { skipped },
  };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`scaleout-${date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${tasks.toLocaleString('en')} noop tasks, one SDK client, one dispatcher, 2 executors × 1,000 slots; median of ${runs} runs (min–max)\n`);
  console.log('| store | tasks/s | ratio to sqlite | dispatcher CPU µs/task | postgres CPU µs/task |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.store} | ${cell(r.tasksPerSecond)} | ${cell(r.ratioToSqlite)} | ${cell(r.dispatcherCpuUsPerTask)} | ${'postgresCpuUsPerTask' in r && r.postgresCpuUsPerTask ? cell(r.postgresCpuUsPerTask) : '–'} |`);
  if (skipped) {
    console.log(`\nPostgreSQL skipped (and with it the cluster and failover parts): ${skipped}`);
    return;
  }
  if (cluster) printCluster(cluster as Record<string, never>, clusterOpts.rounds);
  if (failover) printFailover(failover as Array<Record<string, never>>, failoverOpts.runs);
  if (paper) printEstimate(paper as Record<string, never>);
}

function printCluster(c: Record<string, never>, rounds: number): void {
  console.log(`\n${c.dispatchers} dispatchers on one PostgreSQL database, ${c.executors} simulated executors (${c.executorsPerDispatcher} per dispatcher, ${c.loadProcesses} load processes); ${c.tasksPerRound} noop tasks per round from one SDK load process per dispatcher; --partition-lease-ms ${c.partitionLeaseMs}; median of ${rounds} rounds (min–max)\n`);
  console.log('| metric | measured |');
  console.log('|---|---|');
  console.log(`| executors welcomed / in /api/status (per dispatcher) / after the rounds | ${c.welcomed} / ${(c.visibleInStatus as number[]).join(' + ')} / ${(c.connectedAfterRounds as number[]).join(' + ')} |`);
  console.log(`| registration, first dial to all welcomed / all in status, s | ${c.registrationSeconds} / ${c.visibleInStatusSeconds} |`);
  const or = (x: never) => (x ? cell(x) : '–');
  console.log(`| noop tasks/s, all connected | ${or(c.tasksPerSecond)} |`);
  console.log(`| dispatcher memory per executor (ΔRSS / executors, over the dispatchers), KB | ${cell(c.kbPerExecutor)} |`);
  console.log(`| CPU µs/task: dispatchers together / postgres | ${or(c.dispatcherCpuUsPerTask)} / ${or(c.postgresCpuUsPerTask)} |`);
  console.log(`| rounds completed; PostgreSQL deadlocks (pg_stat_database) | ${c.roundsCompleted} of ${rounds}; ${c.postgresDeadlocks} |`);
  if (c.failure) console.log(`\nThe rounds ended early: ${c.failure}`);
}

function printFailover(failover: Array<Record<string, never>>, runs: number): void {
  console.log(`\nkill -9 of the dispatcher holding a streaming client's session (sleep 5 ms tasks, 16 in flight); median of ${runs} runs (min–max)\n`);
  console.log('| --partition-lease-ms | kill to every partition held by the survivors, ms | to client resumed elsewhere, ms | to first result again, ms |');
  console.log('|---|---|---|---|');
  for (const f of failover) console.log(`| ${f.partitionLeaseMs} | ${cell(f.partitionsTakenMs)} | ${cell(f.resumedMs)} | ${cell(f.resultsAgainMs)} |`);
}

function printEstimate(e: Record<string, never>): void {
  console.log(`\nPaper estimate: a dispatcher ${e.dispatcherCpuUsPerTask} µs/task → ${e.perDispatcherTasksPerSecond} tasks/s per dispatcher core; PostgreSQL ${e.postgresCpuUsPerTask} µs/task → ${e.perPostgresCoreTasksPerSecond} tasks/s per server core; one PostgreSQL core keeps up with ${e.dispatchersPerPostgresCore} dispatchers\n`);
  console.log('| dispatchers (one machine each) | dispatchers alone | with PostgreSQL on 1 core | on 4 cores |');
  console.log('|---|---|---|---|');
  for (const r of e.rows as Array<Record<string, number>>) console.log(`| ${r.dispatchers} | ${r.dispatcherBound} | ${r.pgOneCore} | ${r.pgFourCores} |`);
}

/** The load average when the run ended (`uptime`), for the result file. */
function uptime(): string {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
