/**
 * scaleout, the cluster parts (issue 15; bench/scaleout.ts runs them after its one-dispatcher
 * comparison, on the same PostgreSQL server, each on a fresh database):
 *
 * - {@link measureCluster}: N dispatchers on one database, `executors` simulated executors split
 *   evenly over them (bench/sim-executors.ts, each given ONE dispatcher URL), then no-op tasks/s
 *   from one SDK load process per dispatcher (bench/load.ts, sessions on their own dispatcher),
 *   registration time, dispatcher memory per executor, CPU per task of the dispatchers and of
 *   PostgreSQL.
 * - {@link measureFailover}: a client whose session lives on dispatcher A streams short `sleep`
 *   tasks; A is killed with SIGKILL; the time until results flow again (first result after the
 *   client resumed its session elsewhere), per `--partition-lease-ms`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { connect, type Client, type TaskSpec } from '../client/index.js';
import { query, type PgServer } from '../test/postgres.js';
import { exited, spread } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CLI = here('../client/cli.js');
const LOAD = here('./load.js');
const SIM = here('./sim-executors.js');
/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ: 100 on Linux). */
const HZ = 100;
const PARTITIONS = 256;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const env = { ...process.env, FALCONET_LOG: 'warn' };

/** CPU seconds (user + system) a process has used, or 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // after the command name, which may hold spaces
    return (Number(f[11]) + Number(f[12])) / HZ;
  } catch {
    return 0;
  }
}

/** The pids whose parent is `ppid` and whose command line contains `match`. */
export function childrenOf(ppid: number, match = ''): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === ppid && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(match)) out.push(Number(entry));
    } catch {} // gone meanwhile
  }
  return out;
}

/** CPU seconds of PostgreSQL's whole tree (backends that exited meanwhile are lost to the sum). */
export const pgCpu = (pg: PgServer): number => [pg.pid, ...childrenOf(pg.pid)].reduce((s, p) => s + cpuSeconds(p), 0);

/** Resident set of a process in bytes, from /proc. */
function rss(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Resolves with the first stdout line of `child` matching `re`; every line keeps being drained. */
function waitLine(child: ChildProcess, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re}`)), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const m = buf.slice(0, i).match(re);
        buf = buf.slice(i + 1);
        if (m) {
          clearTimeout(t);
          child.stdout!.off('data', onData);
          child.stdout!.resume(); // keep draining: a full pipe would stall the child
          resolve(m);
          return;
        }
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      reject(new Error(`exited ${code ?? sig} before ${re}`));
    });
  });
}

async function stopAll(procs: ChildProcess[]): Promise<void> {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await Promise.all(procs.map(exited));
}

const http = (url: string) => url.replace(/^ws/, 'http');
async function getJson<T>(url: string): Promise<T> {
  return (await (await fetch(url)).json()) as T;
}

interface Node {
  url: string;
  proc: ChildProcess;
  /** Rejects, with the tail of its log, if the dispatcher exits before the bench kills it. */
  died: Promise<never>;
}

/**
 * Starts `n` dispatchers on database `db`, waits until together they hold every partition and
 * each holds some. `procs` gets every process (the caller kills them).
 */
async function startDispatchers(db: string, n: number, extra: string[], procs: ChildProcess[]): Promise<Node[]> {
  const nodes: Node[] = [];
  for (let i = 0; i < n; i++) {
    const p = spawn(process.execPath, [CLI, 'dispatcher', '--port', '0', '--host', '127.0.0.1', '--store', db, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env });
    procs.push(p);
    let log = '';
    p.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-16_000)));
    const died = new Promise<never>((_, reject) =>
      p.once('exit', (code, sig) => {
        if (sig === 'SIGKILL') return; // ours
        process.stderr.write(`dispatcher ${i} exited ${code ?? sig}; its log's tail:\n${log.slice(-6000)}\n`);
        reject(new Error(`dispatcher ${i} exited ${code ?? sig}: ${log.slice(-1000)}`));
      }),
    );
    died.catch(() => {}); // raced where it matters
    const [, url] = await waitLine(p, /listening on (\S+)/, 60_000);
    nodes.push({ url, proc: p, died });
  }
  for (const deadline = Date.now() + 120_000; ; await sleep(100)) {
    const list = (await getJson<{ dispatchers: Array<{ partitions: number }> }>(http(nodes[0].url) + '/api/dispatchers').catch(() => ({ dispatchers: [] }))).dispatchers;
    if (list.length === n && list.every((d) => d.partitions > 0) && list.reduce((a, d) => a + d.partitions, 0) === PARTITIONS) break;
    if (Date.now() > deadline) throw new Error(`partitions did not spread over ${n} dispatchers: ${JSON.stringify(list)}`);
  }
  return nodes;
}

async function connected(url: string): Promise<number> {
  const s = await getJson<{ executors: Array<{ state: string }> }>(http(url) + '/api/status');
  return s.executors.filter((e) => e.state !== 'disconnected').length;
}

export interface ClusterOptions {
  dispatchers: number;
  executors: number;
  perProcess: number;
  /** No-op tasks per round, over all load processes. */
  tasks: number;
  rounds: number;
  /** `--partition-lease-ms` of the dispatchers. */
  leaseMs: number;
}

/** Part 1: dispatchers sharing one database, many simulated executors, no-op tasks/s. */
export async function measureCluster(pg: PgServer, o: ClusterOptions): Promise<Record<string, unknown>> {
  const db = await pg.newDatabase('cluster');
  const procs: ChildProcess[] = [];
  try {
    // As bench/scale.ts: slow heartbeats and leases (the load is the connections, not their chatter);
    // every simulated executor dials from loopback, hundreds at once: no pending-hello caps.
    const nodes = await startDispatchers(db, o.dispatchers, ['--partition-lease-ms', String(o.leaseMs), '--heartbeat-ms', '10000', '--lease-ms', '60000', '--max-pending-hellos', '1000000', '--max-pending-hellos-per-address', '1000000'], procs);
    await sleep(2000);
    const rssBefore = nodes.map((n) => rss(n.proc.pid!));

    // ---- registration: every load process at once, each simulated executor given one URL ----
    const per = Math.floor(o.executors / o.dispatchers);
    const t0 = performance.now();
    const ready: Array<Promise<RegExpMatchArray>> = [];
    let sims = 0;
    for (const [d, node] of nodes.entries()) {
      for (let i = 0; i * o.perProcess < per; i++) {
        const count = Math.min(o.perProcess, per - i * o.perProcess);
        const s = spawn(process.execPath, [SIM, '--url', node.url, '--count', String(count), '--prefix', `d${d}-sim${i}-`, '--batch', '250', '--heartbeat-ms', '10000', '--on-moved', 'redial'], { stdio: ['ignore', 'pipe', 'inherit'], env });
        procs.push(s);
        sims++;
        ready.push(waitLine(s, /^ready (\d+) (\d+)/, 900_000));
      }
    }
    const welcomed = (await Promise.race([Promise.all(ready), ...nodes.map((n) => n.died)])).reduce((a, m) => a + Number(m[1]), 0);
    const welcomeMs = performance.now() - t0;
    let visible: number[] = [];
    for (const deadline = welcomeMs + 120_000; ; await sleep(250)) {
      visible = await Promise.all(nodes.map((n) => connected(n.url)));
      if (visible.every((v) => v >= per) || performance.now() - t0 > deadline) break;
    }
    const visibleMs = performance.now() - t0;
    process.stderr.write(`cluster: ${welcomed} welcomed in ${(welcomeMs / 1000).toFixed(1)} s, ${visible.join(' + ')} visible in ${(visibleMs / 1000).toFixed(1)} s\n`);
    await sleep(3000);
    const rssWith = nodes.map((n) => rss(n.proc.pid!));
    const kbPerExecutor = nodes.map((_, i) => (rssWith[i] - rssBefore[i]) / per / 1024);

    // ---- no-op rounds: one load process per dispatcher, all at once -------------------------
    const rounds: Array<Record<string, number | number[]>> = [];
    // A dispatcher that stops during the rounds (STORE_FENCED, STORE_FAILED) ends them: what was
    // measured until then is kept, with the failure and PostgreSQL's log around it.
    let failure: string | null = null;
    for (let r = 0; r < o.rounds && failure === null; r++) {
      try {
        // Executors a dispatcher sent away (MOVED) at the end of the last round redial their own
        // (--on-moved redial): every round starts with all of them connected where they began.
        let before: number[] = [];
        for (const deadline = Date.now() + 180_000; ; await sleep(500)) {
          before = await Promise.all(nodes.map((n) => connected(n.url)));
          if (before.every((v) => v >= per)) break;
          if (Date.now() > deadline) throw new Error(`executors did not come back before round ${r + 1}: ${before.join(' + ')}`);
        }
        const cpu0 = { d: nodes.map((n) => cpuSeconds(n.proc.pid!)), pg: pgCpu(pg) };
        const share = Math.floor(o.tasks / nodes.length);
        const loads = Promise.all(nodes.map((n) => runLoad(['throughput', n.url, String(share)], procs)));
        loads.catch(() => {}); // a dispatcher's death is reported by `died`; its load process is killed with the rest
        const outs = await Promise.race([loads, ...nodes.map((n) => n.died)]);
        const cpu1 = { d: nodes.map((n) => cpuSeconds(n.proc.pid!)), pg: pgCpu(pg) };
        const total = share * nodes.length;
        const seconds = (Math.max(...outs.map((x) => x.endedAt)) - Math.min(...outs.map((x) => x.startedAt))) / 1000;
        const round = {
          connectedBefore: before,
          tasks: total,
          seconds: +seconds.toFixed(2),
          tasksPerSecond: Math.round(total / seconds),
          perDispatcherTasksPerSecond: outs.map((x) => Math.round(x.tasksPerSecond)),
          dispatcherCpuUsPerTask: +(((cpu1.d.reduce((a, b) => a + b) - cpu0.d.reduce((a, b) => a + b)) * 1e6) / total).toFixed(1),
          postgresCpuUsPerTask: +(((cpu1.pg - cpu0.pg) * 1e6) / total).toFixed(1),
        };
        rounds.push(round);
        process.stderr.write(`cluster round ${r + 1}/${o.rounds}: ${JSON.stringify(round)}\n`);
      } catch (err) {
        failure = `round ${r + 1}: ${(err as Error).message.slice(0, 1500)}`;
        process.stderr.write(`cluster: ${failure}\nPostgreSQL's log: ${pg.log().slice(-4000)}\n`);
      }
    }
    const after = await Promise.all(nodes.map((n) => connected(n.url).catch(() => 0)));
    const deadlocks = await query(db, 'SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()');
    const num = (k: string) => rounds.map((x) => Number(x[k]));
    return {
      dispatchers: o.dispatchers,
      partitionLeaseMs: o.leaseMs,
      executors: per * o.dispatchers,
      executorsPerDispatcher: per,
      loadProcesses: sims,
      perProcess: o.perProcess,
      welcomed,
      registrationSeconds: +(welcomeMs / 1000).toFixed(2),
      visibleInStatusSeconds: +(visibleMs / 1000).toFixed(2),
      visibleInStatus: visible,
      connectedAfterRounds: after,
      dispatcherRssBeforeMB: rssBefore.map((b) => +(b / 2 ** 20).toFixed(1)),
      dispatcherRssWithExecutorsMB: rssWith.map((b) => +(b / 2 ** 20).toFixed(1)),
      kbPerExecutor: spread(kbPerExecutor, 1),
      failure,
      postgresDeadlocks: Number(deadlocks[0]?.deadlocks ?? 0),
      roundsCompleted: rounds.length,
      tasksPerRound: Math.floor(o.tasks / o.dispatchers) * o.dispatchers,
      tasksPerSecond: rounds.length ? spread(num('tasksPerSecond')) : null,
      dispatcherCpuUsPerTask: rounds.length ? spread(num('dispatcherCpuUsPerTask'), 1) : null,
      postgresCpuUsPerTask: rounds.length ? spread(num('postgresCpuUsPerTask'), 1) : null,
      rounds,
    };
  } finally {
    await stopAll(procs);
  }
}


function runLoad(args: string[], procs: ChildProcess[]): Promise<{ tasksPerSecond: number; startedAt: number; endedAt: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [LOAD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(p);
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`load exited ${code}: ${out}`))));
  });
}

export interface FailoverOptions {
  /** `--partition-lease-ms` values to measure, each on a fresh cluster per run. */
  leases: number[];
  runs: number;
}

/** Part 2: kill -9 the dispatcher holding a streaming client's session; time until results flow again. */
export async function measureFailover(pg: PgServer, o: FailoverOptions): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  let dbs = 0;
  for (const lease of o.leases) {
    const samples: Array<Record<string, number | string>> = [];
    for (let r = 0; r < o.runs; r++) {
      const s = await failoverOnce(await pg.newDatabase(`failover${++dbs}`), lease);
      samples.push(s);
      process.stderr.write(`failover --partition-lease-ms ${lease}, run ${r + 1}/${o.runs}: ${JSON.stringify(s)}\n`);
    }
    const num = (k: string) => samples.map((x) => Number(x[k]));
    out.push({ partitionLeaseMs: lease, resultsAgainMs: spread(num('resultsAgainMs')), resumedMs: spread(num('resumedMs')), partitionsTakenMs: spread(num('partitionsTakenMs')), runs: samples });
  }
  return out;
}

/** Short tasks, one stream: each finishes in a few ms, so results stop only while nobody runs them. */
const TASK: TaskSpec = { builtin: 'sleep', ms: 5 };

async function failoverOnce(db: string, lease: number): Promise<Record<string, number | string>> {
  const procs: ChildProcess[] = [];
  let client: Client | null = null;
  try {
    const nodes = await startDispatchers(db, 3, ['--partition-lease-ms', String(lease)], procs);
    const list = (first: number) => nodes.map((_, i) => nodes[(first + i) % nodes.length].url).join(',');
    // One executor per dispatcher, each with every URL (its own first), as docs/scale-out.md runs them.
    for (let i = 0; i < nodes.length; i++) {
      const p = spawn(process.execPath, [CLI, 'executor', '--dispatcher', list(i), '--slots', '8', '--dispatcher-order', 'first'], { stdio: ['ignore', 'ignore', 'ignore'], env });
      procs.push(p);
    }
    for (const deadline = Date.now() + 60_000; (await Promise.all(nodes.map((n) => connected(n.url)))).reduce((a, b) => a + b) < nodes.length; await sleep(100)) {
      if (Date.now() > deadline) throw new Error('executors did not register');
    }
    // The session opens on the first URL of the list: A. Every result's arrival is stamped.
    const states: Array<{ at: number; state: string; dispatcher?: string }> = [];
    client = await connect(list(0), { connectTimeoutMs: 120_000, onState: (c) => states.push({ at: performance.now(), state: c.state, dispatcher: c.dispatcher }) });
    const home = states.filter((s) => s.state === 'connected').pop()?.dispatcher;
    if (home !== nodes[0].url) throw new Error(`the session opened on ${home}, not on the first dispatcher ${nodes[0].url}`);
    let stopping = false;
    const arrivals: number[] = [];
    const c = client;
    void (async () => {
      for await (const _ of c.results()) {
        arrivals.push(performance.now());
        if (stopping) break;
      }
    })().catch(() => {}); // ends with CLIENT_CLOSED at close()
    void c.submitMany((function* () {
      while (!stopping) yield TASK;
    })(), { maxInFlight: 16 }).catch(() => {});
    // Steady: 2 s of results flowing.
    for (const deadline = Date.now() + 60_000; arrivals.length < 50 || performance.now() - arrivals[0] < 2000; await sleep(50)) {
      if (Date.now() > deadline) throw new Error(`results did not flow before the kill (${arrivals.length})`);
    }
    const rateBefore = arrivals.filter((t) => t > performance.now() - 1000).length;
    const killedAt = performance.now();
    nodes[0].proc.kill('SIGKILL');
    await exited(nodes[0].proc);
    // Where the time goes: the survivors hold every partition (A's lease ran out and the next
    // lease round of another took them), then the client's redial (its backoff) and resume.
    let takenMs = NaN;
    void (async () => {
      for (const deadline = Date.now() + lease * 3 + 120_000; Date.now() < deadline; await sleep(25)) {
        const list = (await getJson<{ dispatchers: Array<{ url: string; partitions: number }> }>(http(nodes[1].url) + '/api/dispatchers').catch(() => ({ dispatchers: [] }))).dispatchers;
        if (list.filter((d) => d.url !== nodes[0].url).reduce((a, d) => a + d.partitions, 0) === PARTITIONS) {
          takenMs = Math.round(performance.now() - killedAt);
          return;
        }
      }
    })();
    // Results after the client resumed elsewhere (results A had sent before dying may still be
    // arriving in the first milliseconds; they do not count as "flowing again").
    let resumed: { at: number; dispatcher?: string } | undefined;
    for (const deadline = Date.now() + lease * 3 + 120_000; ; await sleep(10)) {
      resumed = states.find((s) => s.at > killedAt && s.state === 'connected');
      if (resumed && arrivals.some((t) => t > resumed!.at)) break;
      if (Date.now() > deadline) throw new Error(`results did not flow again within ${lease * 3 + 120} s of the kill; states ${JSON.stringify(states)}`);
    }
    const first = arrivals.find((t) => t > resumed!.at)!;
    for (const deadline = Date.now() + 10_000; Number.isNaN(takenMs) && Date.now() < deadline; ) await sleep(25);
    stopping = true;
    return {
      partitionLeaseMs: lease,
      partitionsTakenMs: takenMs,
      resumedMs: Math.round(resumed.at - killedAt),
      resultsAgainMs: Math.round(first - killedAt),
      resumedOn: resumed.dispatcher ?? '',
      resultsPerSecondBefore: rateBefore,
    };
  } finally {
    await client?.close().catch(() => {});
    await stopAll(procs);
  }
}
