/**
 * cli: the CLI against the SDK (issue 13, item 2), side by side in every run, each on a fresh
 * dispatcher (default durable store) with 2 executor processes × 1,000 slots:
 *   sdk   N no-op tasks through the SDK (bench/load.js: submitMany, 50,000 in flight, results read
 *         with results()), timed from the load process's spawn to its exit
 *   cli   the same N tasks as a JSON-lines file through `falconet submit --file`, results written
 *         as JSON lines to a file, timed from spawn to exit (reading, checking, writing included)
 * Reports medians (min–max), the SDK's own in-process rate (first submit to last result), and
 * cli / sdk within each run, then its median (target ≥ 0.8). Writes bench/results/cli-<date>.json.
 *
 *   npm run build && node dist/bench/cli.js [--runs 3] [--tasks 1000000]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cell, cliSubmit, resultsFile, spread, taskFile, withCluster } from './harness.js';

const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, tasks: { type: 'string' } } });
  const runs = Number(values.runs ?? 3);
  const n = Number(values.tasks ?? 1_000_000);
  const input = taskFile(n, { builtin: 'noop' });
  const sdk: number[] = [];
  const sdkInProcess: number[] = [];
  const cli: number[] = [];
  const ratio: number[] = [];
  try {
    for (let r = 0; r < runs; r++) {
      const s = await withCluster({ dispatcherArgs: [], executors: 2, slots: 1000 }, async (url) => {
        const start = process.hrtime.bigint();
        const inside = JSON.parse(execFileSync(process.execPath, [LOAD, 'throughput', url, String(n)], { encoding: 'utf8' })) as { tasksPerSecond: number };
        return { wall: n / (Number(process.hrtime.bigint() - start) / 1e9), inside: inside.tasksPerSecond };
      });
      const c = await withCluster({ dispatcherArgs: [], executors: 2, slots: 1000 }, async (url) => (await cliSubmit(url, input.file, n)).tasksPerSecond);
      sdk.push(s.wall);
      sdkInProcess.push(s.inside);
      cli.push(c);
      ratio.push(c / s.wall);
      process.stderr.write(`run ${r + 1}/${runs}: sdk ${Math.round(s.wall)}/s (in process ${Math.round(s.inside)}/s), cli ${Math.round(c)}/s, cli/sdk ${(c / s.wall).toFixed(2)}\n`);
    }
  } finally {
    rmSync(input.dir, { recursive: true, force: true });
  }
  const rows = { sdk: spread(sdk), sdkInProcess: spread(sdkInProcess), cli: spread(cli), cliToSdk: spread(ratio, 2) };
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command: `node dist/bench/cli.js --runs ${runs} --tasks ${n}`, tasks: n, rows };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`cli-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${n.toLocaleString('en')} no-op tasks, 2 executors × 1,000 slots, durable store; median of ${runs} runs (min–max)\n`);
  console.log('| client | tasks/s (spawn to exit) | / sdk |');
  console.log('|---|---|---|');
  console.log(`| SDK (bench/load.js) | ${cell(rows.sdk)} | 1 |`);
  console.log(`| \`falconet submit --file\` | ${cell(rows.cli)} | ${cell(rows.cliToSdk)} |`);
  console.log(`\nThe SDK's own rate, first submit to last result: ${cell(rows.sdkInProcess)}`);
  console.log(`- target cli ≥ 0.8 × sdk: ${rows.cliToSdk.median >= 0.8 ? 'met' : 'not met'} (${rows.cliToSdk.median})`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
