/**
 * The load side of a benchmark, in its own process (the dispatcher runs in another): connects
 * with the SDK, runs one workload, prints one JSON line with what it measured.
 *
 *   node dist/bench/load.js throughput URL N      N noop tasks through submitMany, first submit to last result
 *                                                 (with `startedAt`/`endedAt`, wall-clock ms, so that
 *                                                 several load processes' runs can be added up, and
 *                                                 `cpuMs`, this process's CPU from the first submit on)
 *   node dist/bench/load.js latency URL N         N sequential single noop tasks, round trip at the client
 */
import { connect, type TaskSpec } from '../client/index.js';

function* noops(n: number): Generator<TaskSpec> {
  for (let i = 0; i < n; i++) yield { builtin: 'noop' };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<void> {
  const [kind, url, nText, windowText] = process.argv.slice(2);
  const n = Number(nText);
  const client = await connect(url);
  if (kind === 'throughput') {
    let received = 0;
    const startedAt = Date.now();
    const cpu0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    const reading = (async () => {
      for await (const _ of client.results()) if (++received === n) break;
    })();
    await client.submitMany(noops(n), { maxInFlight: Number(windowText ?? 50_000) });
    await reading;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000; // every thread of this process, from the first submit on
    process.stdout.write(JSON.stringify({ kind, tasks: n, seconds, tasksPerSecond: n / seconds, cpuMs, startedAt, endedAt: Date.now() }) + '\n');
  } else if (kind === 'latency') {
    const times: number[] = [];
    const warm = Math.min(1000, n);
    for (let i = 0; i < n + warm; i++) {
      const t0 = process.hrtime.bigint();
      await client.submit({ builtin: 'noop' });
      if (i >= warm) times.push(Number(process.hrtime.bigint() - t0) / 1e3); // the first ones warm the JIT up
    }
    times.sort((a, b) => a - b);
    const us = (p: number) => Math.round(percentile(times, p));
    process.stdout.write(JSON.stringify({ kind, tasks: n, p50us: us(50), p90us: us(90), p99us: us(99), maxus: Math.round(times[times.length - 1]) }) + '\n');
  } else {
    throw new Error(`unknown workload ${kind}`);
  }
  await client.close();
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(String(err?.stack ?? err) + '\n');
    process.exit(1);
  },
);
