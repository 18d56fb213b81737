/**
 * throughput: 1,000,000 `noop` tasks from one SDK client in batches (submitMany, 50,000 in flight),
 * tasks/s from the first submit to the last result at the client; the durable store (SQLite,
 * `--sync full`, the default) and the memory store side by side in every run, each on a fresh
 * dispatcher process with two executor processes of 1,000 slots, the load in a fourth process.
 * Prints medians (min–max) and the durable / memory ratio (taken within each run, then the
 * median), and writes bench/results/throughput-<date>.json.
 *
 *   npm run build && node dist/bench/throughput.js [--runs 3] [--tasks 1000000] [--variants memory,sqlite-full,sqlite-normal]
 *        [--transport ws|uws]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { STORE_VARIANTS, cell, cpuProfFlags, resultsFile, spread, withCluster } from './harness.js';

const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, tasks: { type: 'string' }, variants: { type: 'string' }, transport: { type: 'string' } } });
  const transport = values.transport ?? 'ws';
  const runs = Number(values.runs ?? 3);
  const tasks = Number(values.tasks ?? 1_000_000);
  const variants = (values.variants ?? 'memory,sqlite-full').split(',');
  for (const v of variants) if (!STORE_VARIANTS[v]) throw new Error(`unknown variant ${v}; known: ${Object.keys(STORE_VARIANTS).join(', ')}`);
  const samples: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v, []]));
  for (let r = 0; r < runs; r++) {
    for (const v of variants) {
      const figures = await withCluster({ dispatcherArgs: [...STORE_VARIANTS[v], '--transport', transport], executors: 2, slots: 1000 }, async (url) =>
        JSON.parse(execFileSync(process.execPath, [...cpuProfFlags('client'), LOAD, 'throughput', url, String(tasks)], { encoding: 'utf8' })) as { tasksPerSecond: number },
      );
      samples[v].push(figures.tasksPerSecond);
      process.stderr.write(`run ${r + 1}/${runs} ${v}: ${Math.round(figures.tasksPerSecond)} tasks/s\n`);
    }
  }
  // Ratios within each run (the variants of a run ran back to back), then the median over runs:
  // this machine's speed drifts between runs more than within one.
  const base = samples.memory;
  const rows = variants.map((v) => ({
    store: v,
    tasksPerSecond: spread(samples[v]),
    ratioToMemory: base ? spread(samples[v].map((x, i) => x / base[i]), 2) : null,
  }));
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command: `node dist/bench/throughput.js --runs ${runs} --tasks ${tasks} --variants ${variants.join(',')} --transport ${transport}`, transport, tasks, rows };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`throughput-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${tasks.toLocaleString('en')} noop tasks, one SDK client, 2 executors × 1,000 slots; median of ${runs} runs (min–max)\n`);
  console.log('| store | tasks/s | ratio to memory |');
  console.log('|---|---|---|');
  for (const r of rows) console.log(`| ${r.store} | ${cell(r.tasksPerSecond)} | ${r.ratioToMemory ? cell(r.ratioToMemory) : '–'} |`);
  const durable = rows.find((r) => r.store === 'sqlite-full');
  if (durable) console.log(`\n- target ≥ 100,000 tasks/s durable: ${durable.tasksPerSecond.median >= 100_000 ? 'met' : `not met (${durable.tasksPerSecond.median})`}`);
  if (durable?.ratioToMemory) console.log(`- target durable ≥ 0.5 of memory: ${durable.ratioToMemory.median >= 0.5 ? 'met' : 'not met'} (${durable.ratioToMemory.median})`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
