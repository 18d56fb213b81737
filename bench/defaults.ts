/**
 * defaults: what a person gets from `falconet up`'s defaults (issue 13, item 1), side by side in
 * every run, each variant on a fresh dispatcher (default durable store) with 2 executor processes:
 *   noop-defaults   N no-op tasks through `falconet submit --file` on the defaults: 2 × 1 slot
 *                   (what `up` starts on 2 cores), `--prefetch auto` (each executor's adaptive window)
 *   noop-2x1000     the same with 2 × 1,000 slots (the throughput bench's fleet)
 *   noop-prefetch0  the defaults before the adaptive window: 2 × 1 slot, `--prefetch 0`
 *   posix_spawn     a C loop starting `/bin/true` M times, 2 in flight (bench/spawn-helper/spawn-loop.c)
 *   true-defaults   M `{"cmd":["/bin/true"]}` through `falconet submit --file` on the defaults
 * Reports medians (min–max) and the ratios noop-defaults / noop-2x1000 (target ≥ 0.5) and
 * true-defaults / posix_spawn (target ≥ 0.8), taken within each run, then their median. The CLI
 * is timed from its spawn to its exit, results written to a file. Writes
 * bench/results/defaults-<date>.json.
 *
 *   npm run build && node dist/bench/defaults.js [--runs 3] [--tasks 100000] [--commands 5000]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cell, cliSubmit, resultsFile, spread, taskFile, withCluster } from './harness.js';

const SPAWN_LOOP_SRC = fileURLToPath(new URL('../../bench/spawn-helper/spawn-loop.c', import.meta.url));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, tasks: { type: 'string' }, commands: { type: 'string' } } });
  const runs = Number(values.runs ?? 3);
  const n = Number(values.tasks ?? 100_000);
  const m = Number(values.commands ?? 5000);
  const noop = taskFile(n, { builtin: 'noop' });
  const commands = taskFile(m, { cmd: ['/bin/true'] });
  const bin = mkdtempSync(join(tmpdir(), 'falconet-bench-loop-'));
  const samples: Record<string, number[]> = { 'noop-defaults': [], 'noop-2x1000': [], 'noop-prefetch0': [], posix_spawn: [], 'true-defaults': [] };
  const noopRatio: number[] = [];
  const trueRatio: number[] = [];
  try {
    const loop = join(bin, 'spawn-loop');
    execFileSync('cc', ['-O2', '-o', loop, SPAWN_LOOP_SRC], { stdio: 'inherit' });
    const cli = (args: string[], slots: number, file: string, count: number) =>
      withCluster({ dispatcherArgs: args, executors: 2, slots }, async (url) => (await cliSubmit(url, file, count)).tasksPerSecond);
    for (let r = 0; r < runs; r++) {
      const run: Record<string, number> = {};
      run['noop-defaults'] = await cli([], 1, noop.file, n);
      run['noop-2x1000'] = await cli([], 1000, noop.file, n);
      run['noop-prefetch0'] = await cli(['--prefetch', '0'], 1, noop.file, n);
      run.posix_spawn = (JSON.parse(execFileSync(loop, [String(m), '2'], { encoding: 'utf8' })) as { tasksPerSecond: number }).tasksPerSecond;
      run['true-defaults'] = await cli([], 1, commands.file, m);
      for (const [k, v] of Object.entries(run)) samples[k].push(v);
      noopRatio.push(run['noop-defaults'] / run['noop-2x1000']);
      trueRatio.push(run['true-defaults'] / run.posix_spawn);
      process.stderr.write(`run ${r + 1}/${runs}: ${Object.entries(run).map(([k, v]) => `${k} ${Math.round(v)}/s`).join(', ')}\n`);
    }
  } finally {
    for (const d of [noop.dir, commands.dir, bin]) rmSync(d, { recursive: true, force: true });
  }
  const rows = Object.entries(samples).map(([variant, xs]) => ({ variant, tasksPerSecond: spread(xs) }));
  const ratios = { noopDefaultsTo2x1000: spread(noopRatio, 2), trueDefaultsToPosixSpawn: spread(trueRatio, 2) };
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command: `node dist/bench/defaults.js --runs ${runs} --tasks ${n} --commands ${m}`, tasks: n, commands: m, rows, ratios };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`defaults-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`falconet submit --file on up's defaults (2 executors × 1 slot, durable store); median of ${runs} runs (min–max)\n`);
  console.log('| variant | tasks/s |');
  console.log('|---|---|');
  for (const row of rows) console.log(`| ${row.variant} | ${cell(row.tasksPerSecond)} |`);
  console.log(`\n- target noop-defaults ≥ 0.5 × noop-2x1000: ${ratios.noopDefaultsTo2x1000.median >= 0.5 ? 'met' : 'not met'} (${cell(ratios.noopDefaultsTo2x1000)})`);
  console.log(`- target true-defaults ≥ 0.8 × posix_spawn: ${ratios.trueDefaultsToPosixSpawn.median >= 0.8 ? 'met' : 'not met'} (${cell(ratios.trueDefaultsToPosixSpawn)})`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
