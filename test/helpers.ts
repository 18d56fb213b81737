/**
 * Test harness: real dispatcher and executor processes on loopback, port 0, each tracked by pid
 * and stopped at the end of the test that started it.
 */
import { execSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { unpack } from 'msgpackr';
import type { StatusSnapshot } from '../dispatcher/status.js';
import { loadUws } from '../dispatcher/transport-uws.js';

export const CLI = fileURLToPath(new URL('../client/cli.js', import.meta.url));

/**
 * The transport every dispatcher a test starts uses, unless the test names one: ws by default,
 * `FALCONET_TEST_TRANSPORT=uws` to run the protocol suites over µWebSockets.js.
 */
export const TEST_TRANSPORT = process.env.FALCONET_TEST_TRANSPORT ?? 'ws';

/**
 * Fast timings so that lease expiry and reconnects take seconds, not a minute. The lease is 20
 * heartbeats long: a test process or executor whose event loop stalls for a second on a loaded
 * 2-core CI host must not lose its lease (which would re-queue tasks and break exact attempt
 * counts). Tests that wait for a lease to expire allow for LEASE_MS plus scheduling slack.
 */
export const LEASE_MS = 2000;
export const FAST = ['--heartbeat-ms', '100', '--lease-ms', String(LEASE_MS)];

/**
 * Every process any test of this file started and that still runs: killed when this test process
 * ends however it ends (a test that timed out never reaches its cleanup).
 */
const everyChild = new Set<ChildProcess>();
function killEveryChild(): void {
  for (const child of everyChild) {
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {}
  }
}
process.once('exit', killEveryChild);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    killEveryChild();
    process.exit(128 + (signal === 'SIGTERM' ? 15 : 2));
  });
}

export class Procs {
  readonly all = new Set<ChildProcess>();
  readonly dirs: string[] = [];
  /** The CLI's state dir (saved session keys) for every process started here: never the user's home. */
  #stateDir: string | null = null;

  /** A fresh temporary directory, removed by killAll(). */
  tmpDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'falconet-test-'));
    this.dirs.push(dir);
    return dir;
  }

  spawn(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    if ((args[0] === 'dispatcher' || args[0] === 'up') && TEST_TRANSPORT !== 'ws' && !args.includes('--transport')) {
      args = [...args, '--transport', TEST_TRANSPORT];
    }
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, FALCONET_LOG: process.env.FALCONET_LOG ?? 'warn', FALCONET_STATE_DIR: (this.#stateDir ??= this.tmpDir()), ...env },
    });
    this.all.add(child);
    everyChild.add(child);
    child.once('exit', () => {
      this.all.delete(child);
      everyChild.delete(child);
    });
    // Drain the pipes so a chatty child never blocks on a full one.
    child.stderr!.on('data', (d: Buffer) => {
      if (process.env.FALCONET_TEST_VERBOSE) process.stderr.write(d);
    });
    return child;
  }

  /** Stops every process still running (SIGKILL after SIGCONT, in case one is stopped). */
  async killAll(): Promise<void> {
    try {
      // A dispatcher with a local provisioner stops the executors it started when it is stopped;
      // killed outright it leaves them (they outlive a crash of their dispatcher, on purpose).
      const dispatchers = [...this.all].filter((c) => c.spawnargs[2] === 'up' || (c.spawnargs[2] === 'dispatcher' && c.spawnargs.includes('--provisioner')));
      await Promise.all(
        dispatchers.map((child) => {
          const exit = exited(child, 5000).catch(() => undefined);
          try {
            process.kill(child.pid!, 'SIGCONT');
          } catch {}
          child.kill('SIGTERM');
          return exit;
        }),
      );
      await Promise.all(
        [...this.all].map((child) => {
          const exit = exited(child, 10_000, `process ${child.pid} (falconet ${child.spawnargs.slice(2, 4).join(' ')}) after SIGKILL`);
          try {
            process.kill(child.pid!, 'SIGCONT');
          } catch {}
          child.kill('SIGKILL');
          return exit;
        }),
      );
    } finally {
      for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * Resolves with the first match of `re` in what the child prints on `stream` (stdout unless told)
 * from now on, or rejects after `ms` or when the child exits first. Its timer and listeners are
 * removed either way.
 */
export function waitForLine(child: ChildProcess, re: RegExp, ms = 10_000, stream: 'stdout' | 'stderr' = 'stdout'): Promise<RegExpMatchArray> {
  const out = child[stream]!;
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = () => {
      clearTimeout(timer);
      out.off('data', onData);
      child.off('exit', onExit);
      out.resume();
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no ${stream} line matching ${re} within ${ms} ms; got ${JSON.stringify(buf.slice(-2000))}`));
    }, ms);
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) {
        done();
        resolve(m);
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      done();
      reject(new Error(`process exited with ${code ?? signal} before printing ${re} on ${stream}; got ${JSON.stringify(buf.slice(-2000))}`));
    };
    out.on('data', onData);
    child.once('exit', onExit);
  });
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * The child's exit, or a rejection naming `what` after `ms`: no wait on a process is unbounded,
 * so a process that never exits fails its test instead of hanging the run.
 */
export function exited(child: ChildProcess, ms: number, what = `process ${child.pid}`): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return within(new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))), ms, `${what} to exit`);
}

/** `p`, or a rejection after `ms` saying what did not happen; the timer is cleared either way. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export interface Dispatcher {
  url: string;
  port: number;
  proc: ChildProcess;
}

export async function startDispatcher(procs: Procs, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Dispatcher> {
  const store = args.includes('--store') || args.includes('--data-dir') ? [] : ['--data-dir', procs.tmpDir()];
  const proc = procs.spawn(['dispatcher', '--port', '0', ...FAST, ...store, ...args], env);
  // Generous: a start that recovers a large store on a loaded machine takes seconds.
  const m = await waitForLine(proc, /listening on (ws:\/\/[^\s]+:(\d+))/, 60_000);
  return { url: m[1], port: Number(m[2]), proc };
}

export function startExecutor(procs: Procs, url: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const proc = procs.spawn(['executor', '--dispatcher', url, ...args], env);
  proc.stdout!.resume();
  return proc;
}

export async function status(url: string, token?: string): Promise<StatusSnapshot> {
  const res = await fetch(url.replace(/^ws/, 'http') + '/api/status', { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return (await res.json()) as StatusSnapshot;
}

/**
 * Polls `probe` every 25 ms until it returns a truthy value, which it resolves with; rejects
 * after `ms` naming `what` (and the probe's last error, if it threw every time since).
 */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    await sleep(25);
  }
}

/**
 * Waits until `n` executors are connected. The deadline is generous (60 s): starting a Node
 * process takes seconds on a loaded 2-core machine, and a deadline only matters when it fails.
 */
export async function waitExecutors(url: string, n: number, token?: string, ms = 60_000): Promise<StatusSnapshot> {
  return waitFor(
    `${n} executors`,
    async () => {
      const s = await status(url, token).catch(() => undefined); // not listening yet
      if (!s) return undefined;
      return s.executors.filter((e) => e.state !== 'disconnected').length >= n ? s : undefined;
    },
    ms,
  );
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion, or rejects (with what it printed) if it runs longer than `timeoutMs`. */
export function runCli(procs: Procs, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = procs.spawn(args, opts.env);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  child.stdin!.end(opts.input ?? '');
  const ms = opts.timeoutMs ?? 60_000;
  return within(new Promise<CliResult>((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr }))), ms, `falconet ${args.join(' ').slice(0, 200)}`).catch(
    (err: Error) => {
      throw new Error(`${err.message}; stdout ${JSON.stringify(stdout.slice(-1000))}, stderr ${JSON.stringify(stderr.slice(-1000))}`);
    },
  );
}

/** A free loopback port (bound, then released), for processes that must start before their peer. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * True while the process runs. A zombie (dead, waiting for a reaper that may not be us, such as a
 * killed orphan before init reaps it) counts as dead. Any pid works, ours or not.
 */
export function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false; // EPERM: it exists, not ours
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false; // gone between the two checks
  }
}

/**
 * A seed for a test's randomness: FALCONET_TEST_SEED if set (to replay a failure), else a fresh
 * one. Print it (t.diagnostic) so that a failing run says how to reproduce it.
 */
export function testSeed(): number {
  const env = process.env.FALCONET_TEST_SEED;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n)) throw new Error(`FALCONET_TEST_SEED must be an integer, got ${JSON.stringify(env)}`);
    return n >>> 0;
  }
  return (Math.random() * 2 ** 32) >>> 0;
}

/** mulberry32: a tiny seeded PRNG; returns a function yielding floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A raw protocol peer (frames in and out as they are), as the ws test suite feeds them. */
export interface Raw {
  ws: WebSocket;
  messages: Array<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  /** The next message (from where the last call left off) matching `pred`; rejects after `ms`. */
  next(pred?: (m: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>;
}

export async function raw(url: string): Promise<Raw> {
  const ws = new WebSocket(url);
  const messages: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (data: Buffer) => {
    for (const m of unpack(data) as Array<Record<string, unknown>>) messages.push(m);
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  await new Promise((r) => ws.once('open', r));
  let seen = 0;
  return {
    ws,
    messages,
    closed,
    async next(pred = () => true, ms = 60_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        while (seen < messages.length) {
          const m = messages[seen++];
          if (pred(m)) return m;
        }
        let wake!: () => void;
        const arrived = new Promise<void>((r) => waiters.push((wake = r)));
        await within(arrived, Math.max(0, deadline - Date.now()), `a matching message (${messages.length} seen: ${JSON.stringify(messages.slice(-3)).slice(0, 500)})`).finally(() => {
          const i = waiters.indexOf(wake);
          if (i >= 0) waiters.splice(i, 1);
        });
      }
    },
  };
}

/**
 * Makes sure Debian packages a test needs are installed, as the project installs what its tests
 * need: when `present()` is false and we are root, `apt-get install` them (waiting for the dpkg
 * lock, since test files run side by side). Returns null when they are there, else why not (the
 * caller skips, saying so).
 */
export function ensureDebianPackages(packages: string[], present: () => boolean): string | null {
  if (present()) return null;
  if (process.getuid?.() !== 0) return `${packages.join(', ')} missing and not root (apt-get install -y ${packages.join(' ')})`;
  const apt = (args: string) =>
    execSync(`apt-get -o DPkg::Lock::Timeout=600 -q ${args}`, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 900_000 });
  try {
    apt('update');
    apt(`install -y --no-install-recommends ${packages.join(' ')}`);
  } catch (err) {
    return `apt-get install ${packages.join(' ')} failed: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim().split('\n').pop()}`;
  }
  return present() ? null : `${packages.join(', ')} still missing after apt-get install`;
}

/**
 * µWebSockets.js ships binaries for Node 16, 18 and 20 only. On another Node the uws cases are
 * skipped, visibly and with the reason (this); where a binary should exist, a load failure fails them.
 */
export const noUwsBinary = ((): string | false => {
  if (/^v(16|18|20)\./.test(process.version)) return false;
  try {
    loadUws();
    return false;
  } catch (err) {
    return `no µWebSockets.js binary for Node ${process.version}: ${(err as Error).message}`;
  }
})();
