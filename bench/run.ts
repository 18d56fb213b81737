/**
 * `npm run bench` runs every scenario; `npm run bench -- NAME...` runs some; `--smoke` runs each
 * at a tiny size (what CI does: it checks that every scenario completes and writes its result
 * file, never a speed). Each scenario is its own script and process tree; see bench/RESULTS.md.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

interface Scenario {
  script: string;
  /** The measured run (bench/RESULTS.md). */
  full: string[];
  /** A run that only proves the scenario works end to end. */
  smoke: string[];
  /** Result files it writes, by prefix. */
  writes: string[];
  /** Runs only when named (and in --smoke): a comparison beyond the issue's scenarios. */
  optional?: boolean;
}

export const SCENARIOS: Record<string, Scenario> = {
  throughput: { script: 'throughput.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '2000'], writes: ['throughput-'] },
  latency: { script: 'latency.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '100'], writes: ['latency-'] },
  bullmq: { script: 'bullmq.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '2000', '--latency', '100'], writes: ['bullmq-'] },
  spawn: { script: 'spawn.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '100', '--no-profile'], writes: ['spawn-'] },
  scale: { script: 'scale.js', full: [], smoke: ['--runs', '1', '--executors', '200', '--per-process', '100', '--tasks', '2000'], writes: ['scale-'] },
  queue: { script: 'queue.js', full: [], smoke: ['--runs', '1', '--tasks', '5000'], writes: ['queue-'] },
  efficiency: { script: 'efficiency.js', full: [], smoke: ['--quick', '--slots', '100'], writes: ['efficiency-'] },
  resources: { script: 'resources.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '20000'], writes: ['resources-'] },
  staging: { script: 'staging.js', full: ['--runs', '3'], smoke: ['--tasks', '10', '--runs', '1'], writes: ['staging-'] },
  defaults: { script: 'defaults.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '2000', '--commands', '50'], writes: ['defaults-'] },
  cli: { script: 'cli.js', full: ['--runs', '3'], smoke: ['--runs', '1', '--tasks', '2000'], writes: ['cli-'] },
  scaleout: {
    script: 'scaleout.js',
    optional: false,
    full: ['--runs', '3'],
    // 3 dispatchers × 200 simulated executors, one failover with short leases.
    smoke: ['--runs', '1', '--tasks', '2000', '--executors', '600', '--per-process', '100', '--cluster-tasks', '2000', '--cluster-rounds', '1', '--failover-lease-ms', '1000', '--failover-runs', '1'],
    writes: ['scaleout-'],
  },
  transport: {
    optional: true,
    script: 'transport.js',
    full: ['--runs', '3'],
    smoke: ['--runs', '1', '--tasks', '2000', '--latency', '100', '--executors', '200', '--per-process', '100', '--scale-tasks', '2000'],
    writes: ['transport-'],
  },
};

function main(): number {
  const args = process.argv.slice(2);
  const smoke = args.includes('--smoke');
  const names = args.filter((a) => !a.startsWith('--'));
  for (const n of names) {
    if (!SCENARIOS[n]) {
      process.stderr.write(`unknown scenario ${JSON.stringify(n)}; known: ${Object.keys(SCENARIOS).join(', ')}\n`);
      return 2;
    }
  }
  let failed = 0;
  for (const name of names.length ? names : Object.keys(SCENARIOS).filter((n) => smoke || !SCENARIOS[n].optional)) {
    const s = SCENARIOS[name];
    const script = fileURLToPath(new URL(`./${s.script}`, import.meta.url));
    process.stderr.write(`\n== ${name}${smoke ? ' (smoke)' : ''}: node dist/bench/${s.script} ${(smoke ? s.smoke : s.full).join(' ')}\n`);
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [script, ...(smoke ? s.smoke : s.full)], { stdio: 'inherit' });
    process.stderr.write(`== ${name}: ${r.status === 0 ? 'done' : `FAILED (${r.status ?? r.signal})`} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    if (r.status !== 0) failed++;
  }
  return failed > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = main();
