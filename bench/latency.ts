/**
 * latency: 10,000 sequential single `noop` tasks (after 1,000 unmeasured to warm the JIT up), round
 * trip at the client (SDK submit to result), on the memory store and on the durable store (SQLite,
 * `--sync full`, the default: every result waits for its fsync), each a fresh dispatcher with two
 * executor processes of 4 slots; the load in its own process. In the same run, the floor of the
 * stack: a plain `ws` ping-pong of one small msgpack message between two processes, the same
 * count; and the disk's floor: a 512-byte write + fdatasync loop on a file in the directory the
 * benches' stores use (the fsync every durable commit waits for), the same count. Prints
 * p50/p90/p99/max (median over runs) and p50 / floor, and writes bench/results/latency-<date>.json.
 *
 *   npm run build && node dist/bench/latency.js [--runs 3] [--tasks 10000] [--transport ws|uws]
 *        [--variants ws-floor,fsync-floor,memory,sqlite-full]
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, fdatasyncSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket, { WebSocketServer } from 'ws';
import { pack, unpack } from 'msgpackr';
import { STORE_VARIANTS, cell, cpuProfFlags, exited, percentile, resultsFile, spread, waitLine, withCluster } from './harness.js';

const SELF = fileURLToPath(new URL('./latency.js', import.meta.url));
const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));

interface Figures {
  p50us: number;
  p90us: number;
  p99us: number;
  maxus: number;
  /** Durable store: commits per task (warm-up included) and their mean duration, from /metrics. */
  commitsPerTask?: number;
  commitUs?: number;
}

/** Commits and their mean duration so far, from the dispatcher's /metrics (none on the memory store). */
async function commitFigures(url: string, tasks: number): Promise<Pick<Figures, 'commitsPerTask' | 'commitUs'>> {
  const text = await (await fetch(url.replace('ws', 'http') + '/metrics')).text();
  const num = (name: string) => Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1] ?? NaN);
  const count = num('falconet_store_commit_duration_seconds_count');
  const sum = num('falconet_store_commit_duration_seconds_sum');
  if (!(count > 0)) return {};
  return { commitsPerTask: +(count / tasks).toFixed(2), commitUs: Math.round((sum / count) * 1e6) };
}

/** The floor's server: echoes every frame back. */
function roleEcho(): void {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(data as Buffer)));
  wss.on('listening', () => process.stdout.write(`listening on ws://127.0.0.1:${(wss.address() as { port: number }).port}\n`));
}

/** The floor's client: n sequential round trips of a small msgpack message, as the SDK's are. */
async function rolePing(url: string, n: number): Promise<Figures> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let wake: () => void = () => {};
  ws.on('message', (data) => {
    unpack(data as Buffer);
    wake();
  });
  const times: number[] = [];
  const warm = Math.min(1000, n);
  for (let i = 0; i < n + warm; i++) {
    const t0 = process.hrtime.bigint();
    const back = new Promise<void>((r) => (wake = r));
    ws.send(pack({ t: 'submit', ref: i, tasks: [{ id: `p${i}`, builtin: 'noop' }] }));
    await back;
    if (i >= warm) times.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  ws.close();
  return figures(times);
}

/**
 * The disk's floor, in this process: n sequential 512-byte writes each followed by fdatasync, in a
 * file of the temp dir the benches' stores live in (withCluster), preallocated so that no write
 * changes its size (a WAL in steady state is overwritten, not grown). What one durable commit
 * cannot go below, whatever else it does.
 */
function roleFsync(n: number): Figures {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-fsync-'));
  try {
    const fd = openSync(join(dir, 'floor'), 'w');
    const block = Buffer.alloc(512, 1);
    ftruncateSync(fd, 4096 * 1024);
    fdatasyncSync(fd);
    const times: number[] = [];
    const warm = Math.min(1000, n);
    for (let i = 0; i < n + warm; i++) {
      const t0 = process.hrtime.bigint();
      writeSync(fd, block, 0, block.length, (i % 1024) * 4096);
      fdatasyncSync(fd);
      if (i >= warm) times.push(Number(process.hrtime.bigint() - t0) / 1e3);
    }
    closeSync(fd);
    return figures(times);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function figures(times: number[]): Figures {
  const sorted = [...times].sort((a, b) => a - b);
  const us = (p: number) => Math.round(percentile(sorted, p));
  return { p50us: us(50), p90us: us(90), p99us: us(99), maxus: Math.round(sorted[sorted.length - 1]) };
}

async function floor(n: number): Promise<Figures> {
  const server = spawn(process.execPath, [SELF, '--role', 'echo'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [, url] = await waitLine(server, /listening on (\S+)/);
    return JSON.parse(execFileSync(process.execPath, [SELF, '--role', 'ping', '--url', url, '--tasks', String(n)], { encoding: 'utf8' })) as Figures;
  } finally {
    server.kill('SIGKILL');
    await exited(server);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, tasks: { type: 'string' }, role: { type: 'string' }, url: { type: 'string' }, transport: { type: 'string' }, variants: { type: 'string' } } });
  const transport = values.transport ?? 'ws';
  const n = Number(values.tasks ?? 10_000);
  if (values.role === 'echo') return roleEcho();
  if (values.role === 'fsync') {
    process.stdout.write(JSON.stringify(roleFsync(n)) + '\n');
    process.exit(0);
  }
  if (values.role === 'ping') {
    process.stdout.write(JSON.stringify(await rolePing(values.url!, n)) + '\n');
    process.exit(0);
  }
  const runs = Number(values.runs ?? 3);
  const variants = values.variants ? values.variants.split(',') : ['ws-floor', 'fsync-floor', 'memory', 'sqlite-full'];
  const samples: Record<string, Figures[]> = Object.fromEntries(variants.map((v) => [v, []]));
  for (let r = 0; r < runs; r++) {
    for (const v of variants) {
      const f =
        v === 'ws-floor'
          ? await floor(n)
          : v === 'fsync-floor'
            ? (JSON.parse(execFileSync(process.execPath, [SELF, '--role', 'fsync', '--tasks', String(n)], { encoding: 'utf8' })) as Figures)
            : await withCluster({ dispatcherArgs: [...STORE_VARIANTS[v], '--transport', transport], executors: 2, slots: 4 }, async (url) => {
              const f = JSON.parse(execFileSync(process.execPath, [...cpuProfFlags('client'), LOAD, 'latency', url, String(n)], { encoding: 'utf8' })) as Figures;
              return { ...f, ...(await commitFigures(url, n + Math.min(1000, n))) };
            });
      samples[v].push(f);
      process.stderr.write(`run ${r + 1}/${runs} ${v}: p50 ${f.p50us} µs, p99 ${f.p99us} µs${f.commitUs !== undefined ? `; ${f.commitsPerTask} commits per task, ${f.commitUs} µs each` : ''}\n`);
    }
  }
  const rows = variants.map((v) => {
    const s = samples[v];
    const pick = (k: keyof Figures) => spread(s.map((f) => f[k] ?? NaN));
    const commits = s.every((f) => f.commitUs !== undefined) ? { commitsPerTask: spread(s.map((f) => f.commitsPerTask!), 2), commitUs: pick('commitUs') } : {};
    return { variant: v, p50us: pick('p50us'), p90us: pick('p90us'), p99us: pick('p99us'), maxus: pick('maxus'), ...commits, p50ToFloor: spread(s.map((f, i) => f.p50us / (samples['ws-floor']?.[i]?.p50us ?? NaN)), 2) };
  });
  const out = { date: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, command: `node dist/bench/latency.js --runs ${runs} --tasks ${n} --transport ${transport} --variants ${variants.join(',')}`, transport, tasks: n, rows };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`latency-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log(`${n.toLocaleString('en')} sequential round trips at the client; median of ${runs} runs (min–max), µs\n`);
  console.log('| variant | p50 | p90 | p99 | max | p50 / ws floor | commits per task | µs per commit |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.variant} | ${cell(r.p50us)} | ${r.p90us.median} | ${cell(r.p99us)} | ${r.maxus.median} | ${r.p50ToFloor.median} | ${'commitsPerTask' in r ? r.commitsPerTask!.median : '–'} | ${'commitUs' in r ? r.commitUs!.median : '–'} |`);
  for (const r of rows.filter((x) => !x.variant.endsWith('-floor'))) {
    console.log(`- ${r.variant}: target p50 ≤ 400 µs ${r.p50us.median <= 400 ? 'met' : 'not met'}, p99 ≤ 2,000 µs ${r.p99us.median <= 2000 ? 'met' : 'not met'}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
