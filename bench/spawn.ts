/**
 * Command tasks against the machine's process-start ceiling, side by side in one run. Each run
 * measures, back to back, `/bin/true` started N times with 2 in flight (= cores) by:
 *   posix_spawn   a C loop (bench/spawn-helper/spawn-loop.c, compiled with `cc -O2` at run time)
 *   node-spawn    a Node loop of child_process.spawn (stdio ignored)
 *   node-spawn-executor-opts  the same with what executor/runner.ts asked before the helper (detached,
 *                 piped stdout/stderr)
 *   runner-helper a Node loop of executor/runner.ts runAttempt through the spawn helper
 *                 (executor/spawn-helper/): the executor's own spawn path, without the dispatcher
 *   falconet      a dispatcher (default durable store, temp data dir) + one executor `--slots 2`
 *                 (spawn helper); N command tasks `{"cmd": ["/bin/true"]}` through the SDK from a
 *                 load process
 *   falconet-node the same with the executor's `--spawner node` (child_process.spawn): the gain
 *   falconet-noop the first dispatcher and executor with N `noop` builtins: the dispatch path alone
 * and reports medians (min–max) of tasks/s, falconet / posix_spawn and falconet / node-spawn per
 * run (median of runs), the CPU each falconet process spent per task, and a CPU profile of the
 * executor (`node --cpu-prof`) from one extra falconet run. Writes bench/results/spawn-<date>.json.
 *
 *   npm run build && node dist/bench/spawn.js [--tasks 5000] [--runs 3] [--prefetch N] [--no-profile]
 *
 * --prefetch N is passed to the dispatcher (push mode keeps N tasks on the executor beyond its slots);
 * without it the dispatcher's default, each executor's adaptive window.
 * Internal roles (child processes of the above): --role load|node-spawn|runner.
 */
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { waitLine, exited, resultsFile } from './harness.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CLI = here('../client/cli.js');
const SELF = here('./spawn.js');
const SRC = here('../../bench/spawn-helper/');
const RUNNER = here('../executor/runner.js');
const IN_FLIGHT = 2;

type Figures = { tasks: number; seconds: number; tasksPerSecond: number; failed: number; cpuMs?: number };

// ---- child roles --------------------------------------------------------------------------------

/** N command (or noop) tasks through the SDK, all queued up front; first submit to last result. */
async function roleLoad(url: string, n: number, kind: string): Promise<Figures> {
  const { connect } = await import('../client/index.js');
  const client = await connect(url);
  const spec = kind === 'noop' ? { builtin: 'noop' as const } : { cmd: ['/bin/true'] };
  let received = 0;
  let failed = 0;
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  const reading = (async () => {
    for await (const r of client.results()) {
      if (r.status !== 'succeeded') failed++;
      if (++received === n) break;
    }
  })();
  await client.submitMany(
    (function* () {
      for (let i = 0; i < n; i++) yield { ...spec };
    })(),
    { maxInFlight: n },
  );
  await reading;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  await client.close();
  return { tasks: n, seconds, tasksPerSecond: n / seconds, failed, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** CPU (user + system) of this process and its reaped children so far, in ms. */
function ownCpuMs(): number {
  return cpuMsOf(process.pid) + childCpuMsOf(process.pid);
}

/** child_process.spawn of /bin/true, IN_FLIGHT at a time. */
function roleNodeSpawn(n: number, executorOpts: boolean): Promise<Figures> {
  const opts: SpawnOptions = executorOpts ? { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } } : { stdio: 'ignore' };
  return new Promise((resolve, reject) => {
    let started = 0;
    let done = 0;
    let failed = 0;
    const cpu0 = ownCpuMs();
    const start = process.hrtime.bigint();
    const one = () => {
      started++;
      const child = spawn('/bin/true', [], opts);
      if (executorOpts) {
        child.stdout!.on('data', () => {});
        child.stderr!.on('data', () => {});
      }
      child.on('error', reject);
      child.on('close', (code) => {
        if (code !== 0) failed++;
        if (++done === n) {
          const seconds = Number(process.hrtime.bigint() - start) / 1e9;
          resolve({ tasks: n, seconds, tasksPerSecond: n / seconds, failed, cpuMs: ownCpuMs() - cpu0 });
        } else if (started < n) one();
      });
    };
    for (let i = 0; i < Math.min(IN_FLIGHT, n); i++) one();
  });
}

/** executor/runner.ts's runAttempt of /bin/true through the spawn helper, IN_FLIGHT at a time. */
async function roleRunner(n: number): Promise<Figures> {
  const { runAttempt, taskBaseEnv } = (await import(RUNNER)) as typeof import('../executor/runner.js');
  const options = { outputLimit: 64 * 1024, killGraceMs: 2000, baseEnv: taskBaseEnv(), spawner: 'helper' as const };
  await runAttempt({ cmd: ['/bin/true'] }, options).done; // starts the helper, outside the timing
  let started = 0;
  let failed = 0;
  const cpu0 = ownCpuMs();
  const start = process.hrtime.bigint();
  const lane = async () => {
    while (started < n) {
      started++;
      if ((await runAttempt({ cmd: ['/bin/true'] }, options).done).status !== 'succeeded') failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, n) }, lane));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  // The helper's CPU and its children's: read before it exits (it is not our reaped child yet).
  const helperPid = helperOf(process.pid);
  const helperCpu = helperPid ? cpuMsOf(helperPid) + childCpuMsOf(helperPid) : 0;
  return { tasks: n, seconds, tasksPerSecond: n / seconds, failed, cpuMs: ownCpuMs() - cpu0 + helperCpu };
}

// ---- orchestration ------------------------------------------------------------------------------



/** utime + stime of a process, in ms (from /proc; children not included). */
function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after the name start at 3 (state): utime is 14, stime 15 → indexes 11, 12; cutime, cstime 13, 14
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}
function childCpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / 100;
}
/** The pid of the spawn helper a process started, if it runs. */
function helperOf(pid: number): number | null {
  try {
    return Number(execFileSync('pgrep', ['-P', String(pid), '-f', 'falconet-spawn-helper'], { encoding: 'utf8' }).trim().split('\n')[0]) || null;
  } catch {
    return null; // pgrep exits 1 when there is none
  }
}
/** Busy and total jiffies of the whole machine. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = line.reduce((a, b) => a + b, 0);
  return { busy: total - line[3] - line[4], total };
}

function runChild(args: string[], execArgv: string[] = []): Figures {
  return JSON.parse(execFileSync(process.execPath, [...execArgv, SELF, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
}

type CpuSplit = { dispatcher: number; executor: number; executorChildren: number; load: number };
interface FalconetRun {
  cmd: Figures;
  noop?: Figures;
  cpuMsPerTask: CpuSplit;
  noopCpuMsPerTask?: CpuSplit;
  machineBusy: number;
  profile?: ProfileSummary;
  dispatcherProfile?: ProfileSummary;
}

async function falconetRun(n: number, opts: { noop: boolean; spawner: 'helper' | 'node'; prefetch: number | undefined; profileDir?: string }): Promise<FalconetRun> {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-spawn-'));
  const procs: ChildProcess[] = [];
  const env = { ...process.env, FALCONET_LOG: 'warn' };
  try {
    for (const who of ['dispatcher', 'executor']) if (opts.profileDir) mkdirSync(join(opts.profileDir, who), { recursive: true });
    const dProfArgs = opts.profileDir ? ['--cpu-prof', '--cpu-prof-dir', join(opts.profileDir, 'dispatcher')] : [];
    const d = spawn(process.execPath, [...dProfArgs, CLI, 'dispatcher', '--port', '0', '--host', '127.0.0.1', '--data-dir', dir, ...(opts.prefetch !== undefined ? ['--prefetch', String(opts.prefetch)] : [])], { stdio: ['ignore', 'pipe', 'ignore'], env });
    procs.push(d);
    const [, url] = await waitLine(d, /listening on (\S+)/);
    const profArgs = opts.profileDir ? ['--cpu-prof', '--cpu-prof-dir', join(opts.profileDir, 'executor')] : [];
    const e = spawn(process.execPath, [...profArgs, CLI, 'executor', '--dispatcher', url, '--slots', String(IN_FLIGHT), '--spawner', opts.spawner], { stdio: 'ignore', env });
    procs.push(e);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const s = (await (await fetch(url.replace('ws', 'http') + '/api/status')).json()) as { executors: unknown[] };
      if (s.executors.length === 1) break;
      if (Date.now() > deadline) throw new Error('executor did not register');
      await new Promise((r) => setTimeout(r, 50));
    }
    const per = (x: number) => +(x / n).toFixed(3);
    // CPU of every falconet process over one load: dispatcher, executor, the executor's reaped
    // children (the /bin/true processes), and the load process (its timed section).
    // The executor's spawn helper is its child until the executor exits: count its CPU as the
    // executor's and its reaped children (the /bin/true processes) as the executor's children.
    const helperCpu = () => {
      const h = helperOf(e.pid!);
      return h ? { own: cpuMsOf(h), kids: childCpuMsOf(h) } : { own: 0, kids: 0 };
    };
    const snapshot = () => {
      const h = helperCpu();
      return { d: cpuMsOf(d.pid!), e: cpuMsOf(e.pid!) + h.own, ec: childCpuMsOf(e.pid!) + h.kids, m: machineCpu() };
    };
    const measure = (kind: string) => {
      const before = snapshot();
      const f = runChild(['--role', 'load', '--url', url, '--tasks', String(n), '--kind', kind]);
      const after = snapshot();
      const cpu = { dispatcher: per(after.d - before.d), executor: per(after.e - before.e), executorChildren: per(after.ec - before.ec), load: per(f.cpuMs ?? 0) };
      f.cpuMs = (after.d - before.d) + (after.e - before.e) + (after.ec - before.ec) + (f.cpuMs ?? 0);
      return { f, cpu, busy: +((after.m.busy - before.m.busy) / (after.m.total - before.m.total)).toFixed(3) };
    };
    const cmd = measure('cmd');
    const noop = opts.noop ? measure('noop') : undefined;
    const out: FalconetRun = {
      cmd: cmd.f,
      ...(noop ? { noop: noop.f, noopCpuMsPerTask: noop.cpu } : {}),
      cpuMsPerTask: cmd.cpu,
      machineBusy: cmd.busy,
    };
    if (opts.profileDir) {
      e.kill('SIGTERM'); // a clean exit writes the profile
      await exited(e);
      d.kill('SIGTERM');
      await exited(d);
      const load = (who: string) => {
        const dir = join(opts.profileDir!, who);
        const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
        return file ? summarize(JSON.parse(readFileSync(join(dir, file), 'utf8')), who === 'executor') : undefined;
      };
      out.profile = load('executor');
      out.dispatcherProfile = load('dispatcher');
    }
    return out;
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await Promise.all(procs.map(exited));
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- CPU profile summary ------------------------------------------------------------------------

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}
interface ProfileSummary {
  totalMs: number;
  idlePct: number;
  topSelf: Array<{ fn: string; pct: number }>;
  inclusive: Array<{ fn: string; pct: number }>;
}

/** Top self time, and inclusive time of the executor's spawn path (`executorFilter`) or of every function. */
function summarize(p: CpuProfile, executorFilter: boolean): ProfileSummary {
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const name = (id: number) => {
    const c = byId.get(id)!.callFrame;
    const file = c.url.replace(/^.*\/(node_modules\/|dist\/)?/, '');
    return `${c.functionName || '(anonymous)'}${file ? ` ${file}:${c.lineNumber + 1}` : ''}`;
  };
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const selfBy = new Map<string, number>();
  for (const [id, t] of self) selfBy.set(name(id), (selfBy.get(name(id)) ?? 0) + t);
  // Inclusive time: a node's own samples plus its subtree's, counted once per name along a path.
  const incl = new Map<string, number>();
  const walk = (id: number, onPath: Set<string>): number => {
    const n = byId.get(id)!;
    let t = self.get(id) ?? 0;
    const nm = name(id);
    const fresh = !onPath.has(nm);
    if (fresh) onPath.add(nm);
    for (const c of n.children ?? []) t += walk(c, onPath);
    if (fresh) {
      onPath.delete(nm);
      incl.set(nm, (incl.get(nm) ?? 0) + t);
    }
    return t;
  };
  walk(p.nodes[0].id, new Set());
  const pct = (t: number) => +((100 * t) / total).toFixed(1);
  const idle = selfBy.get('(idle)') ?? 0;
  return {
    totalMs: Math.round(total / 1000),
    idlePct: pct(idle),
    topSelf: [...selfBy].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([fn, t]) => ({ fn, pct: pct(t) })),
    inclusive: [...incl]
      .filter(([fn]) => !executorFilter ? !/^\((root|idle)\)/.test(fn) : /^(spawn|ChildProcess\.spawn|runCommand|runAttempt|#start|#onMessage|#deliver|send|onexit|ChildProcess\._handle\.onexit|processTicksAndRejections|emit) /.test(fn + ' ') || /^\((garbage collector|program)\)/.test(fn))
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([fn, t]) => ({ fn, pct: pct(t) })),
  };
}

// ---- main ---------------------------------------------------------------------------------------

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const stat = (xs: number[]) => ({ median: Math.round(median(xs)), min: Math.round(Math.min(...xs)), max: Math.round(Math.max(...xs)) });

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tasks: { type: 'string' },
      runs: { type: 'string' },
      role: { type: 'string' },
      url: { type: 'string' },
      kind: { type: 'string' },
      prefetch: { type: 'string' },
      'executor-opts': { type: 'boolean' },
      'no-profile': { type: 'boolean' },
    },
  });
  const n = Number(values.tasks ?? 5000);
  if (values.role) {
    let f: Figures;
    if (values.role === 'load') f = await roleLoad(values.url!, n, values.kind ?? 'cmd');
    else if (values.role === 'node-spawn') f = await roleNodeSpawn(n, values['executor-opts'] ?? false);
    else if (values.role === 'runner') f = await roleRunner(n);
    else throw new Error(`unknown role ${values.role}`);
    process.stdout.write(JSON.stringify(f) + '\n');
    return;
  }
  const runs = Number(values.runs ?? 3);
  // Without --prefetch the dispatcher's default (auto: each executor's adaptive window).
  const prefetch = values.prefetch === undefined ? undefined : Number(values.prefetch);
  const bin = mkdtempSync(join(tmpdir(), 'falconet-spawn-helper-'));
  try {
    const loopBin = join(bin, 'spawn-loop');
    execFileSync('cc', ['-O2', '-o', loopBin, join(SRC, 'spawn-loop.c')], { stdio: 'inherit' });

    const tput: Record<string, number[]> = { 'posix_spawn': [], 'node-spawn': [], 'node-spawn-executor-opts': [], 'runner-helper': [], falconet: [], 'falconet-node': [], 'falconet-noop': [] };
    const failures: Record<string, number> = {};
    const cpuMs: Record<string, number[]> = Object.fromEntries(Object.keys(tput).map((k) => [k, []]));
    const falconetRuns: FalconetRun[] = [];
    const record = (name: string, f: Figures) => {
      tput[name].push(f.tasksPerSecond);
      if (f.cpuMs !== undefined) cpuMs[name].push(f.cpuMs / f.tasks);
      failures[name] = (failures[name] ?? 0) + f.failed;
    };
    for (let r = 0; r < runs; r++) {
      record('posix_spawn', JSON.parse(execFileSync(loopBin, [String(n), String(IN_FLIGHT)], { encoding: 'utf8' })));
      record('node-spawn', runChild(['--role', 'node-spawn', '--tasks', String(n)]));
      record('node-spawn-executor-opts', runChild(['--role', 'node-spawn', '--executor-opts', '--tasks', String(n)]));
      record('runner-helper', runChild(['--role', 'runner', '--tasks', String(n)]));
      const f = await falconetRun(n, { noop: true, spawner: 'helper', prefetch });
      falconetRuns.push(f);
      record('falconet', f.cmd);
      record('falconet-noop', f.noop!);
      const fn = await falconetRun(n, { noop: false, spawner: 'node', prefetch });
      record('falconet-node', fn.cmd);
      process.stderr.write(`run ${r + 1}/${runs}: ${Object.entries(tput).map(([k, v]) => `${k} ${Math.round(v.at(-1)!)}`).join(', ')} tasks/s\n`);
    }
    let profile: FalconetRun | undefined;
    if (!values['no-profile']) {
      const profDir = mkdtempSync(join(tmpdir(), 'falconet-spawn-prof-'));
      try {
        profile = await falconetRun(n, { noop: false, spawner: 'helper', prefetch, profileDir: profDir });
      } finally {
        rmSync(profDir, { recursive: true, force: true });
      }
    }
    const ratio = (a: string, b: string) => {
      const xs = tput[a].map((x, i) => x / tput[b][i]);
      return { median: +median(xs).toFixed(2), min: +Math.min(...xs).toFixed(2), max: +Math.max(...xs).toFixed(2) };
    };
    const split = (pick: (f: FalconetRun) => CpuSplit) =>
      Object.fromEntries((['dispatcher', 'executor', 'executorChildren', 'load'] as const).map((k) => [k, +median(falconetRuns.map((f) => pick(f)[k])).toFixed(3)])) as CpuSplit;
    const cpuPerTask = split((f) => f.cpuMsPerTask);
    const noopCpuPerTask = split((f) => f.noopCpuMsPerTask!);
    const out = {
      date: new Date().toISOString(),
      machine: { cores: cpus().length, node: process.version },
      command: `node dist/bench/spawn.js --tasks ${n} --runs ${runs}${prefetch ? ` --prefetch ${prefetch}` : ''}${values['no-profile'] ? ' --no-profile' : ''}`,
      prefetch: prefetch ?? 'auto',
      inFlight: IN_FLIGHT,
      rows: Object.entries(tput).map(([name, xs]) => ({
        name,
        tasksPerSecond: stat(xs),
        ratioToPosixSpawn: ratio(name, 'posix_spawn'),
        ratioToNodeSpawn: ratio(name, 'node-spawn'),
        cpuMsPerTask: cpuMs[name].length ? +median(cpuMs[name]).toFixed(3) : null,
        failed: failures[name] ?? 0,
        samples: xs.map(Math.round),
      })),
      target: { falconetOverPosixSpawn: 0.8, met: ratio('falconet', 'posix_spawn').median >= 0.8 },
      falconetCpuMsPerTask: cpuPerTask,
      falconetNoopCpuMsPerTask: noopCpuPerTask,
      falconetMachineBusy: median(falconetRuns.map((f) => f.machineBusy)),
      executorProfile: profile ? { tasksPerSecondWhileProfiled: Math.round(profile.cmd.tasksPerSecond), cpuMsPerTask: profile.cpuMsPerTask, ...profile.profile } : null,
      dispatcherProfile: profile?.dispatcherProfile ?? null,
    };
    mkdirSync(resultsFile(), { recursive: true });
    const file = resultsFile(`spawn-${out.date.slice(0, 10)}${prefetch ? `-prefetch${prefetch}` : ''}.json`);
    writeFileSync(file, JSON.stringify(out, null, 2) + '\n');

    console.log(`/bin/true, ${n} tasks, ${IN_FLIGHT} in flight, ${runs} run(s), dispatcher --prefetch ${prefetch ?? 'auto'}; ${out.machine.cores} cores, Node ${out.machine.node}\n`);
    console.log('| path | tasks/s, median (min–max) | / posix_spawn, median of runs (min–max) | / node-spawn (min–max) | CPU ms per task, all its processes |');
    console.log('|---|---|---|---|---|');
    for (const r of out.rows) {
      const t = r.tasksPerSecond;
      const p = r.ratioToPosixSpawn;
      const q = r.ratioToNodeSpawn;
      console.log(`| ${r.name} | ${t.median} (${t.min}–${t.max}) | ${p.median} (${p.min}–${p.max}) | ${q.median} (${q.min}–${q.max}) | ${r.cpuMsPerTask ?? ''} |`);
    }
    console.log(`\nTarget falconet ≥ 0.8 × posix_spawn: ${out.target.met ? 'met' : `not met (${ratio('falconet', 'posix_spawn').median})`}.`);
    console.log(
      `\nfalconet CPU per command task (ms, median of runs): dispatcher ${cpuPerTask.dispatcher}, executor ${cpuPerTask.executor}, ` +
        `its children (/bin/true) ${cpuPerTask.executorChildren}, load ${cpuPerTask.load}; machine busy ${Math.round(100 * out.falconetMachineBusy)}% of ${out.machine.cores} cores ` +
        `(other users' processes included). noop tasks: dispatcher ${noopCpuPerTask.dispatcher}, executor ${noopCpuPerTask.executor}, load ${noopCpuPerTask.load}`,
    );
    const printProfile = (pr: Partial<ProfileSummary>) => {
      console.log('| self time | % | | inclusive | % |');
      console.log('|---|---|---|---|---|');
      const rows = Math.max(pr.topSelf?.length ?? 0, pr.inclusive?.length ?? 0);
      for (let i = 0; i < rows; i++) {
        const s = pr.topSelf?.[i];
        const c = pr.inclusive?.[i];
        console.log(`| ${s ? '`' + s.fn + '`' : ''} | ${s?.pct ?? ''} | | ${c ? '`' + c.fn + '`' : ''} | ${c?.pct ?? ''} |`);
      }
    };
    if (out.executorProfile) {
      const pr = out.executorProfile;
      console.log(`\nExecutor CPU profile (one extra run at ${pr.tasksPerSecondWhileProfiled} tasks/s under --cpu-prof; ${pr.totalMs} ms sampled, idle ${pr.idlePct}%):\n`);
      printProfile(pr);
    }
    if (out.dispatcherProfile) {
      const pr = out.dispatcherProfile;
      console.log(`\nDispatcher CPU profile (the same run; ${pr.totalMs} ms sampled, idle ${pr.idlePct}%):\n`);
      printProfile(pr);
    }
    console.log(`\nWrote ${file}`);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(String(err?.stack ?? err) + '\n');
    process.exit(1);
  },
);
