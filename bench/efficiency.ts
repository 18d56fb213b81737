/**
 * Efficiency as Falkon's SC07 paper measured it: `sleep` builtin tasks of a fixed length on a fixed
 * number of slots, tasks = waves × slots, so the ideal time is waves × length; efficiency = ideal /
 * measured, measured at the client from the first submit to the last result.
 *
 * For each slot count a fresh dispatcher (default durable store, temp data dir) and 2 executor
 * processes with slots/2 each; the load runs in its own process (`--role load`), one per
 * measurement, after one unmeasured warm-up wave; every task length is measured `runs` times on
 * the same cluster. Prints a Markdown
 * table, writes bench/results/efficiency-<date>.json and an SVG plot of efficiency against task
 * length (one line per slot count) to bench/results/efficiency-<date>.svg.
 *
 *   npm run build && node dist/bench/efficiency.js [--quick] [--runs 3] [--slots 1000,4000,10000]
 *
 * Default size (about 3 minutes on 2 cores): slots 1,000 / 4,000 / 10,000; lengths 10 ms, 100 ms
 * and 1 s with 4 waves, 4 s with 2 waves (4 waves of 4 s would add 50 s per run); 3 runs.
 * --quick: lengths 10 ms, 100 ms, 1 s; 1 run (about 40 s).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuProfFlags, median, resultsFile, withCluster } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const SELF = here('./efficiency.js');
const EXECUTORS = 2;

interface LoadFigures {
  tasks: number;
  ms: number;
  seconds: number;
  failed: number;
  /** Client-side: from the first submit to the first result (the first wave plus dispatch). */
  firstResultS: number;
  /**
   * Where the time went, in ms from the first submit (wall clock, the executors' timestamps at
   * 1 ms resolution): when the first and the last task of each wave started (tasks sorted by
   * start), when the last task finished, and when its result reached the client.
   */
  timeline: { waveStarts: Array<[number, number]>; lastFinished: number; lastResult: number };
}

/** The load process: `tasks` sleep tasks of `ms`, all submitted at once; first submit to last result. */
async function roleLoad(url: string, tasks: number, ms: number, slots: number): Promise<LoadFigures> {
  const { connect } = await import('../client/index.js');
  const client = await connect(url);
  let received = 0;
  let failed = 0;
  let first = 0n;
  const started = new Float64Array(tasks);
  let lastFinished = 0;
  const wallStart = Date.now();
  const start = process.hrtime.bigint();
  const reading = (async () => {
    for await (const r of client.results()) {
      if (received === 0) first = process.hrtime.bigint();
      if (r.status !== 'succeeded') failed++;
      started[received] = (r.timings.started ?? r.timings.finished) - wallStart;
      lastFinished = Math.max(lastFinished, r.timings.finished - wallStart);
      if (++received === tasks) break;
    }
  })();
  await client.submitMany(
    (function* () {
      for (let i = 0; i < tasks; i++) yield { builtin: 'sleep' as const, ms };
    })(),
    { maxInFlight: tasks },
  );
  await reading;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await client.close();
  started.sort();
  const waveStarts: Array<[number, number]> = [];
  for (let w = 0; w * slots < tasks; w++) waveStarts.push([started[w * slots], started[Math.min(tasks, (w + 1) * slots) - 1]]);
  return { tasks, ms, seconds, failed, firstResultS: Number(first - start) / 1e9, timeline: { waveStarts, lastFinished, lastResult: Date.now() - wallStart } };
}




/** The dispatcher's work-stealing counters (0 from a dispatcher without them; NaN if /metrics did not answer: a note, not a failure). */
async function steals(url: string): Promise<{ asked: number; returned: number }> {
  // Once more on a failure: a kept-alive socket the dispatcher closed meanwhile fails the first try.
  const get = () => fetch(url.replace(/^ws/, 'http') + '/metrics').then((r) => r.text(), () => null);
  const text = (await get()) ?? (await get());
  if (text === null) return { asked: NaN, returned: NaN };
  const read = (name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { asked: read('falconet_steals_total'), returned: read('falconet_tasks_stolen_total') };
}

interface Cell {
  slots: number;
  ms: number;
  waves: number;
  tasks: number;
  idealS: number;
  measuredS: number[];
  firstResultS: number[];
  efficiency: { median: number; min: number; max: number };
  failed: number;
}

// ---- SVG plot (hand-written, no dependency) ------------------------------------------------------

function svgPlot(cells: Cell[], title: string): string {
  const W = 640;
  const H = 420;
  const m = { l: 64, r: 150, t: 40, b: 56 };
  const lengths = [...new Set(cells.map((c) => c.ms))].sort((a, b) => a - b);
  const slotCounts = [...new Set(cells.map((c) => c.slots))].sort((a, b) => a - b);
  const lx0 = Math.log10(lengths[0]);
  const lx1 = Math.log10(lengths[lengths.length - 1]);
  const x = (ms: number) => m.l + ((Math.log10(ms) - lx0) / Math.max(1e-9, lx1 - lx0)) * (W - m.l - m.r);
  const y = (e: number) => m.t + (1 - e) * (H - m.t - m.b);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - m.r / 2 + m.l / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  for (let e = 0; e <= 1.0001; e += 0.1) {
    const yy = y(e).toFixed(1);
    out.push(`<line x1="${m.l}" y1="${yy}" x2="${W - m.r}" y2="${yy}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${m.l - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${Math.round(e * 100)}%</text>`);
  }
  for (const ms of lengths) {
    const xx = x(ms).toFixed(1);
    out.push(`<line x1="${xx}" y1="${m.t}" x2="${xx}" y2="${H - m.b}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${xx}" y="${H - m.b + 16}" text-anchor="middle">${ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 16}" text-anchor="middle">task length (log scale)</text>`);
  out.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">efficiency = ideal / measured</text>`);
  slotCounts.forEach((slots, i) => {
    const color = colors[i % colors.length];
    const pts = cells.filter((c) => c.slots === slots).sort((a, b) => a.ms - b.ms);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((c) => `${x(c.ms).toFixed(1)},${y(c.efficiency.median).toFixed(1)}`).join(' ')}"/>`);
    for (const c of pts) {
      out.push(`<circle cx="${x(c.ms).toFixed(1)}" cy="${y(c.efficiency.median).toFixed(1)}" r="3.5" fill="${color}"><title>${slots} slots, ${c.ms} ms: ${(100 * c.efficiency.median).toFixed(1)}%</title></circle>`);
      if (c.efficiency.max > c.efficiency.min) {
        const xx = x(c.ms).toFixed(1);
        out.push(`<line x1="${xx}" y1="${y(c.efficiency.min).toFixed(1)}" x2="${xx}" y2="${y(c.efficiency.max).toFixed(1)}" stroke="${color}" stroke-width="1"/>`);
      }
    }
    const ly = m.t + 10 + i * 20;
    out.push(`<line x1="${W - m.r + 14}" y1="${ly}" x2="${W - m.r + 38}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${W - m.r + 44}" y="${ly}" dominant-baseline="middle">${slots.toLocaleString('en')} slots</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---- main ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      runs: { type: 'string' },
      slots: { type: 'string' },
      role: { type: 'string' },
      url: { type: 'string' },
      tasks: { type: 'string' },
      ms: { type: 'string' },
      prefetch: { type: 'string' },
      store: { type: 'string' },
      lengths: { type: 'string' },
      'wave-slots': { type: 'string' },
    },
  });
  if (values.role === 'load') {
    process.stdout.write(JSON.stringify(await roleLoad(values.url!, Number(values.tasks), Number(values.ms), Number(values['wave-slots'] ?? values.tasks))) + '\n');
    return;
  }
  const quick = values.quick ?? false;
  const runs = Number(values.runs ?? (quick ? 1 : 3));
  const slotCounts = (values.slots ?? '1000,4000,10000').split(',').map(Number);
  // [length ms, waves]
  const lengths: Array<[number, number]> = values.lengths
    ? values.lengths.split(',').map((l) => l.split(':').map(Number) as [number, number])
    : quick
      ? [[10, 4], [100, 4], [1000, 4]]
      : [[10, 4], [100, 4], [1000, 4], [4000, 2]];
  // The dispatcher's default (`auto`: each executor's adaptive window) unless a fixed window is asked for.
  const prefetchArgs = values.prefetch !== undefined ? ['--prefetch', values.prefetch] : [];
  const cells: Cell[] = [];
  for (const slots of slotCounts) {
    const mine = lengths.map(([ms, waves]): Cell => ({ slots, ms, waves, tasks: waves * slots, idealS: (waves * ms) / 1000, measuredS: [], firstResultS: [], efficiency: { median: 0, min: 0, max: 0 }, failed: 0 }));
    await withCluster({ dispatcherArgs: [...prefetchArgs, '--store', values.store ?? 'sqlite'], executors: EXECUTORS, slots: Math.ceil(slots / EXECUTORS) }, async (url) => {
      // Warm-up, not measured: one wave of 10 ms tasks, so the first measurement does not pay for
      // the dispatcher's and executors' cold JIT and first store pages.
      execFileSync(process.execPath, [SELF, '--role', 'load', '--url', url, '--tasks', String(slots), '--ms', '10'], { stdio: ['ignore', 'ignore', 'inherit'] });
      for (let r = 0; r < runs; r++) {
        for (const c of mine) {
          const stealsBefore = await steals(url);
          const f = JSON.parse(
            execFileSync(process.execPath, [...cpuProfFlags('client'), SELF, '--role', 'load', '--url', url, '--tasks', String(c.tasks), '--ms', String(c.ms), '--wave-slots', String(slots)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }),
          ) as LoadFigures;
          c.measuredS.push(f.seconds);
          c.firstResultS.push(f.firstResultS);
          c.failed += f.failed;
          process.stderr.write(`${slots} slots, ${c.ms} ms × ${c.tasks}: ${f.seconds.toFixed(3)} s, efficiency ${((100 * c.idealS) / f.seconds).toFixed(1)}% (run ${r + 1}/${runs})\n`);
          const tl = f.timeline;
          const stealsAfter = await steals(url);
          process.stderr.write(`  started (first–last of each wave, ms): ${tl.waveStarts.map(([a, b]) => `${a}–${b}`).join(', ')}; last finished ${tl.lastFinished}, its result at the client ${tl.lastResult}; steals ${stealsAfter.asked - stealsBefore.asked}, tasks stolen ${stealsAfter.returned - stealsBefore.returned}\n`);
        }
      }
    });
    for (const c of mine) {
      const effs = c.measuredS.map((s) => c.idealS / s);
      c.efficiency = { median: +median(effs).toFixed(4), min: +Math.min(...effs).toFixed(4), max: +Math.max(...effs).toFixed(4) };
      cells.push(c);
    }
  }
  const date = new Date().toISOString();
  const day = date.slice(0, 10);
  const find = (slots: number, ms: number) => cells.find((c) => c.slots === slots && c.ms === ms);
  const maxSlots = Math.max(...slotCounts);
  const targets = [
    { target: '≥ 99% for 1 s tasks on 10,000 slots', cell: find(10_000, 1000), goal: 0.99 },
    { target: '≥ 95% for 100 ms tasks (on the most slots measured)', cell: find(maxSlots, 100), goal: 0.95 },
  ].map((t) => ({ target: t.target, measured: t.cell ? t.cell.efficiency.median : null, met: t.cell ? t.cell.efficiency.median >= t.goal : null }));
  const out = {
    date,
    machine: { cores: cpus().length, node: process.version },
    command: `node dist/bench/efficiency.js${quick ? ' --quick' : ''}${values.runs ? ` --runs ${runs}` : ''}${values.slots ? ` --slots ${values.slots}` : ''}`,
    executors: EXECUTORS,
    store: 'sqlite (default, durable)',
    runs,
    cells: cells.map((c) => ({
      slots: c.slots,
      taskMs: c.ms,
      waves: c.waves,
      tasks: c.tasks,
      idealS: c.idealS,
      measuredS: { median: +median(c.measuredS).toFixed(3), min: +Math.min(...c.measuredS).toFixed(3), max: +Math.max(...c.measuredS).toFixed(3) },
      firstResultS: +median(c.firstResultS).toFixed(3),
      efficiency: c.efficiency,
      failed: c.failed,
    })),
    targets,
  };
  const dir = resultsFile();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `efficiency-${day}.json`), JSON.stringify(out, null, 2) + '\n');
  writeFileSync(join(dir, `efficiency-${day}.svg`), svgPlot(cells, `falconet efficiency, sleep tasks (${out.machine.cores} cores, Node ${out.machine.node}, ${day})`));

  console.log(`sleep tasks, tasks = waves × slots, ${EXECUTORS} executor processes, durable store; median of ${runs} run(s) (min–max)\n`);
  console.log('| slots | task length | waves | tasks | ideal s | measured s | first result s | efficiency |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const c of out.cells) {
    const pct = (e: number) => (100 * e).toFixed(1);
    console.log(
      `| ${c.slots.toLocaleString('en')} | ${c.taskMs >= 1000 ? `${c.taskMs / 1000} s` : `${c.taskMs} ms`} | ${c.waves} | ${c.tasks.toLocaleString('en')} | ${c.idealS} | ${c.measuredS.median} (${c.measuredS.min}–${c.measuredS.max}) | ${c.firstResultS} | ${pct(c.efficiency.median)}% (${pct(c.efficiency.min)}–${pct(c.efficiency.max)}) |`,
    );
  }
  console.log('');
  for (const t of targets) console.log(`- ${t.target}: ${t.measured === null ? 'not measured' : `${(100 * t.measured).toFixed(1)}%, ${t.met ? 'met' : 'not met'}`}`);
  console.log(`\nWrote bench/results/efficiency-${day}.json and .svg`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(String(err?.stack ?? err) + '\n');
    process.exit(1);
  },
);
