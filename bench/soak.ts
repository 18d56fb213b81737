/**
 * The soak (issue 14 item 8): a steady mixed load (noop, short commands, sleeps) through the SDK
 * while executors are killed (-9) and restarted, one is SIGSTOPped for longer than the lease and
 * SIGCONTed, connections are cut by a loopback TCP proxy that everyone dials through, and the
 * dispatcher is killed -9 and restarted on the same port and --data-dir.
 *
 * At the end: every accepted task has exactly one result, no process this run started (nor any
 * of their children, such as spawn helpers) is left, the dispatcher's open file descriptors did
 * not grow, and its RSS stayed flat. `npm run soak -- --minutes N [--seed S]`.
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { connect, type Client, type TaskResult } from '../client/index.js';
import { Procs, alive, exited, freePort, mulberry32, startDispatcher, startExecutor, status, waitFor, within, type Dispatcher } from '../test/helpers.js';
import { fdsOf, rssOf, MiB } from './hostile.js';

export interface SoakOptions {
  ms: number;
  seed: number;
  log?: (line: string) => void;
  /** Mean time between chaos events of each kind, scaled down for short runs. */
  dispatcherRestartMs?: number;
  executorKillMs?: number;
  stopMs?: number;
  cutMs?: number;
}

export interface SoakReport {
  seed: number;
  ms: number;
  submitted: number;
  accepted: number;
  results: number;
  duplicates: number;
  statuses: Record<string, number>;
  events: Record<string, number>;
  /** Per dispatcher incarnation: RSS (MB) and fd samples, early and late. */
  incarnations: Array<{ pid: number; seconds: number; rss: { first: number; max: number; last: number }; fds: { first: number; max: number; last: number } }>;
  leaked: number[];
  fdGrowth: number;
  /** The largest growth of one dispatcher's RSS over its life (last sample minus first). */
  rssGrowthMB: number;
  /** Last dispatcher's last RSS minus the first one's: the store it recovers grows with every finished task kept for --retention. */
  rssAcrossRestartsMB: number;
  failures: string[];
}

/** A loopback TCP proxy to a port that may come and go; `cut()` drops every connection through it. */
class Proxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  port = 0;
  constructor(private readonly target: () => number) {
    this.#server = createServer((down) => {
      const up = tcpConnect({ host: '127.0.0.1', port: this.target() });
      const pair: [Socket, Socket] = [down, up];
      this.#pairs.add(pair);
      const end = () => {
        this.#pairs.delete(pair);
        down.destroy();
        up.destroy();
      };
      down.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
      down.pipe(up);
      up.pipe(down);
    });
  }
  async listen(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
    this.port = (this.#server.address() as { port: number }).port;
  }
  cut(): number {
    const n = this.#pairs.size;
    for (const [a, b] of [...this.#pairs]) {
      a.destroy();
      b.destroy();
    }
    return n;
  }
  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}

/** Every pid whose parent is in `roots`, recursively (children of executors: spawn helpers, tasks). */
function descendants(roots: Set<number>): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'latin1');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {}
  }
  const out: number[] = [];
  let frontier = new Set(roots);
  while (frontier.size > 0) {
    const next = new Set<number>();
    for (const [pid, ppid] of parent) if (frontier.has(ppid) && !roots.has(pid) && !out.includes(pid)) (out.push(pid), next.add(pid));
    frontier = next;
  }
  return out;
}

export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const random = mulberry32(opts.seed);
  const jitter = (mean: number) => Math.round(mean * (0.5 + random()));
  const procs = new Procs();
  const failures: string[] = [];
  const report: SoakReport = {
    seed: opts.seed,
    ms: opts.ms,
    submitted: 0,
    accepted: 0,
    results: 0,
    duplicates: 0,
    statuses: {},
    events: { dispatcherKill9: 0, executorKill9: 0, sigstop: 0, proxyCut: 0, connectionsCut: 0 },
    incarnations: [],
    leaked: [],
    fdGrowth: 0,
    rssGrowthMB: 0,
    rssAcrossRestartsMB: 0,
    failures,
  };
  const everyPid = new Set<number>();
  const track = (c: ChildProcess) => {
    everyPid.add(c.pid!);
    return c;
  };
  const childPids = new Set<number>();
  const port = await freePort();
  const dataDir = procs.tmpDir();
  const proxy = new Proxy(() => port);
  await proxy.listen();
  const via = `ws://127.0.0.1:${proxy.port}`;
  let client: Client | null = null;
  let d: Dispatcher | null = null;
  type Sample = { t: number; rss: number; fds: number };
  let samples: Sample[] = [];
  let startedAt = Date.now();
  const closeIncarnation = () => {
    if (!d || samples.length === 0) return;
    const late = samples.slice(Math.floor(samples.length / 2));
    report.incarnations.push({
      pid: d.proc.pid!,
      seconds: Math.round((Date.now() - startedAt) / 1000),
      rss: { first: +(samples[0].rss / MiB).toFixed(1), max: +(Math.max(...samples.map((s) => s.rss)) / MiB).toFixed(1), last: +(late[late.length - 1].rss / MiB).toFixed(1) },
      fds: { first: samples[0].fds, max: Math.max(...samples.map((s) => s.fds)), last: late[late.length - 1].fds },
    });
  };
  const startD = async () => {
    d = await startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir, '--heartbeat-ms', '200', '--lease-ms', '3000']);
    track(d.proc);
    samples = [];
    startedAt = Date.now();
  };
  const executors: Array<ChildProcess | null> = [];
  const startE = (i: number) => {
    executors[i] = track(startExecutor(procs, via, ['--slots', '4', '--id', `soak-e${i}`]));
  };
  let stop = false;
  try {
    await startD();
    for (let i = 0; i < 4; i++) startE(i);
    await waitFor('executors', async () => (await status(d!.url)).executors.filter((e) => e.state !== 'disconnected').length >= 4, 30_000);
    client = await connect(via, { connectTimeoutMs: 60_000, onError: () => {} });
    const c = client;
    const results = new Map<string, TaskResult>();
    const pending: Array<Promise<void>> = [];
    // Anything on the unclaimed stream is a result no submit waits for: a duplicate.
    void (async () => {
      for await (const r of c.results()) {
        report.duplicates++;
        failures.push(`an unexpected (duplicate?) result for ${r.id}`);
      }
    })().catch(() => {});
    const load = (async () => {
      let n = 0;
      while (!stop) {
        for (let i = 0; i < 6; i++, n++) {
          const id = `s${n}`;
          const kind = n % 4;
          const spec = kind === 0 ? { id, builtin: 'noop' as const } : kind === 1 ? { id, cmd: ['echo', id] } : kind === 2 ? { id, builtin: 'sleep' as const, ms: 20 + (n % 180) } : { id, cmd: ['sleep', '0.05'] };
          report.submitted++;
          pending.push(
            c.submit({ ...spec, maxAttempts: 20 }).then(
              (r) => {
                if (results.has(id)) failures.push(`${id}: two results`);
                results.set(id, r);
                report.statuses[r.status] = (report.statuses[r.status] ?? 0) + 1;
                if (r.status === 'succeeded' && kind === 1 && r.stdout !== `${id}\n`) failures.push(`${id}: stdout ${JSON.stringify(r.stdout)}`);
              },
              (err: Error) => void failures.push(`${id}: ${err.message}`),
            ),
          );
        }
        await sleep(100);
      }
    })();
    const sampler = setInterval(() => {
      const pid = d?.proc.pid;
      if (!pid) return;
      const rss = rssOf(pid);
      const fds = fdsOf(pid);
      if (rss !== null && fds !== null) samples.push({ t: Date.now(), rss, fds });
      for (const p of descendants(everyPid)) childPids.add(p);
    }, 1000);
    // Chaos, each kind on its own clock.
    const next = {
      dispatcher: Date.now() + jitter(opts.dispatcherRestartMs ?? 120_000),
      kill: Date.now() + jitter(opts.executorKillMs ?? 20_000),
      stop: Date.now() + jitter(opts.stopMs ?? 45_000),
      cut: Date.now() + jitter(opts.cutMs ?? 30_000),
    };
    const deadline = Date.now() + opts.ms;
    let stopped: ChildProcess | null = null;
    while (Date.now() < deadline && failures.length === 0) {
      await sleep(250);
      const now = Date.now();
      if (d!.proc.exitCode !== null || d!.proc.signalCode !== null) failures.push(`the dispatcher exited by itself (${d!.proc.exitCode ?? d!.proc.signalCode})`);
      if (now >= next.dispatcher) {
        closeIncarnation();
        const exit = exited(d!.proc, 10_000, 'the dispatcher after kill -9');
        d!.proc.kill('SIGKILL');
        await exit;
        await sleep(jitter(1000));
        await startD();
        report.events.dispatcherKill9++;
        next.dispatcher = now + jitter(opts.dispatcherRestartMs ?? 120_000);
      }
      if (now >= next.kill) {
        const i = Math.floor(random() * executors.length);
        const e = executors[i];
        if (e && e !== stopped) {
          const exit = exited(e, 10_000, 'an executor after kill -9');
          e.kill('SIGKILL');
          await exit;
          report.events.executorKill9++;
          setTimeout(() => !stop && startE(i), jitter(2000));
          executors[i] = null;
        }
        next.kill = now + jitter(opts.executorKillMs ?? 20_000);
      }
      if (now >= next.stop && !stopped) {
        const e = executors.find((x) => x !== null) ?? null;
        if (e) {
          stopped = e;
          e.kill('SIGSTOP');
          report.events.sigstop++;
          setTimeout(() => {
            stopped?.kill('SIGCONT');
            stopped = null;
          }, 3000 + 2500); // lease 3 s
        }
        next.stop = now + jitter(opts.stopMs ?? 45_000);
      }
      if (now >= next.cut) {
        report.events.connectionsCut += proxy.cut();
        report.events.proxyCut++;
        next.cut = now + jitter(opts.cutMs ?? 30_000);
      }
    }
    stop = true;
    await load;
    if (stopped) (stopped as ChildProcess).kill('SIGCONT');
    await within(Promise.all(pending), 180_000, `every result (${results.size} of ${report.submitted})`).catch((err: Error) => failures.push(err.message));
    report.results = results.size;
    // Every task accepted has exactly one result; the dispatcher agrees.
    const mine = (await c.sessions()).find((s) => s.id === c.session.id);
    report.accepted = mine?.submitted ?? 0;
    if (!mine || mine.submitted !== report.submitted || mine.finished !== report.submitted || mine.unfinished !== 0) {
      failures.push(`the dispatcher counts the session ${JSON.stringify(mine)}; ${report.submitted} submitted, ${results.size} results`);
    }
    // Quiet for a few seconds, then the last samples.
    await sleep(5000);
    clearInterval(sampler);
    for (const p of descendants(everyPid)) childPids.add(p);
    closeIncarnation();
    const last = report.incarnations[report.incarnations.length - 1];
    const all = report.incarnations;
    report.fdGrowth = last.fds.last - all[0].fds.first;
    report.rssGrowthMB = +Math.max(...all.map((i) => i.rss.last - i.rss.first)).toFixed(1);
    report.rssAcrossRestartsMB = +(last.rss.last - all[0].rss.last).toFixed(1);
    // The dispatcher's fds: each incarnation, once quiet, holds what the first did (sockets of
    // the same peers, the store): allow a few for connections in flight.
    if (report.fdGrowth > 8) failures.push(`the dispatcher's file descriptors grew by ${report.fdGrowth} (${JSON.stringify(all.map((i) => i.fds))})`);
  } finally {
    stop = true;
    await client?.close().catch(() => {});
    for (const e of executors) e?.kill('SIGCONT');
    await procs.killAll();
    await proxy.close();
  }
  // No process left: everything started, and everything they started.
  await waitFor('every process to be gone', () => [...everyPid, ...childPids].every((p) => !alive(p)), 15_000).catch(() => {});
  report.leaked = [...everyPid, ...childPids].filter((p) => alive(p));
  if (report.leaked.length > 0) failures.push(`processes left: ${report.leaked.join(', ')}`);
  log(
    `soak: ${Math.round(opts.ms / 1000)} s, seed ${opts.seed}: ${report.submitted} submitted, ${report.accepted} accepted, ${report.results} results, ${report.duplicates} duplicates; ` +
      `statuses ${JSON.stringify(report.statuses)}; events ${JSON.stringify(report.events)}; ${everyPid.size} processes started (+${childPids.size} children seen), ${report.leaked.length} left; ` +
      `fd growth ${report.fdGrowth}; RSS growth within a dispatcher's life at most ${report.rssGrowthMB} MB, across restarts ${report.rssAcrossRestartsMB} MB`,
  );
  for (const i of report.incarnations) log(`soak: dispatcher ${i.pid}: ${i.seconds} s, RSS MB first/max/last ${i.rss.first}/${i.rss.max}/${i.rss.last}, fds ${i.fds.first}/${i.fds.max}/${i.fds.last}`);
  if (failures.length > 0) log(`soak: FAILED (seed ${opts.seed}):\n  ${failures.slice(0, 30).join('\n  ')}`);
  return report;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { minutes: { type: 'string' }, seed: { type: 'string' } } });
  const seed = values.seed !== undefined ? Number(values.seed) : (Math.random() * 2 ** 31) | 0;
  const report = await runSoak({ ms: Number(values.minutes ?? '10') * 60_000, seed });
  process.exit(report.failures.length > 0 ? 1 : 0);
}
