/**
 * Sums up the `.cpuprofile` files a bench run left (`FALCONET_BENCH_CPU_PROF=DIR`, harness.ts):
 * for each process, the time sampled, how much of it was busy (not idle), busy µs per task when
 * the task count is given, and the functions with the most self time.
 *
 *   node dist/bench/profile.js DIR [--tasks N] [--top 15]
 *
 * Busy time counts everything but `(idle)`: JavaScript, native code, the garbage collector and
 * `(program)` (V8 and libuv work outside any JavaScript frame). A process with worker threads
 * (the dispatcher's store writer) writes one profile per thread.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples: number[];
  timeDeltas: number[];
}

/** What one profile says. */
export interface ProfileFigures {
  file: string;
  sampledMs: number;
  busyMs: number;
  idlePct: number;
  gcPct: number;
  /** Busy µs per task, when the task count is known. */
  busyUsPerTask: number | null;
  top: Array<{ fn: string; pct: number }>;
}

/** Self time per function (by name and place) of one profile. */
export function summarizeProfile(file: string, tasks: number | null, top = 15): ProfileFigures {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const c = byId.get(p.samples[i])!.callFrame;
    const where = c.url.replace(/^.*\/(node_modules\/|dist\/)?/, '');
    const name = `${c.functionName || '(anonymous)'}${where ? ` ${where}:${c.lineNumber + 1}` : ''}`;
    const t = p.timeDeltas[i] ?? 0;
    total += t;
    self.set(name, (self.get(name) ?? 0) + t);
  }
  const idle = self.get('(idle)') ?? 0;
  const busy = total - idle;
  const pct = (t: number) => +((100 * t) / Math.max(1, total)).toFixed(1);
  return {
    file,
    sampledMs: Math.round(total / 1000),
    busyMs: Math.round(busy / 1000),
    idlePct: pct(idle),
    gcPct: pct(self.get('(garbage collector)') ?? 0),
    busyUsPerTask: tasks ? +(busy / tasks).toFixed(2) : null,
    top: [...self]
      .filter(([fn]) => fn !== '(idle)')
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([fn, t]) => ({ fn, pct: pct(t) })),
  };
}

/** Every .cpuprofile under `dir`. */
export function profilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...profilesUnder(path));
    else if (name.endsWith('.cpuprofile')) out.push(path);
  }
  return out.sort();
}

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { tasks: { type: 'string' }, top: { type: 'string' } } });
  const dir = positionals[0];
  if (!dir) {
    process.stderr.write('usage: node dist/bench/profile.js DIR [--tasks N] [--top 15]\n');
    process.exit(2);
  }
  const tasks = values.tasks ? Number(values.tasks) : null;
  for (const file of profilesUnder(dir)) {
    const f = summarizeProfile(file, tasks, Number(values.top ?? 15));
    console.log(`\n## ${relative(dir, file)}: ${f.sampledMs} ms sampled, busy ${f.busyMs} ms (idle ${f.idlePct} %, GC ${f.gcPct} %)${f.busyUsPerTask !== null ? `, ${f.busyUsPerTask} µs busy per task` : ''}`);
    for (const t of f.top) console.log(`  ${t.pct.toFixed(1).padStart(5)} %  ${t.fn}`);
  }
}

if (process.argv[1]?.endsWith('profile.js')) main();
