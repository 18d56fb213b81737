/**
 * Test harness: real dispatcher and executor processes on loopback, port 0, each tracked by pid
 * and stopped at the end of the test that started it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { unpack } from 'msgpackr';
import type { StatusSnapshot } from '../dispatcher/status.js';

export const CLI = fileURLToPath(new URL('../client/cli.js', import.meta.url));

/**
 * The transport every dispatcher a test starts uses, unless the test names one: ws by default,
 * `FALCONET_TEST_TRANSPORT=uws` to run the protocol suites over µWebSockets.js.
 */
export const TEST_TRANSPORT = process.env.FALCONET_TEST_TRANSPORT ?? 'ws';

/** Fast timings so that lease expiry and reconnects take a second, not a minute. */
export const FAST = ['--heartbeat-ms', '100', '--lease-ms', '800'];

export class Procs {
  readonly all = new Set<ChildProcess>();
  readonly dirs: string[] = [];

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
      env: { ...process.env, FALCONET_LOG: process.env.FALCONET_LOG ?? 'warn', ...env },
    });
    this.all.add(child);
    child.once('exit', () => this.all.delete(child));
    // Drain the pipes so a chatty child never blocks on a full one.
    child.stderr!.on('data', (d: Buffer) => {
      if (process.env.FALCONET_TEST_VERBOSE) process.stderr.write(d);
    });
    return child;
  }

  /** Stops every process still running (SIGKILL after SIGCONT, in case one is stopped). */
  async killAll(): Promise<void> {
    await Promise.all(
      [...this.all].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            try {
              process.kill(child.pid!, 'SIGCONT');
            } catch {}
            child.kill('SIGKILL');
          }),
      ),
    );
    for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
}

/** Resolves with the first stdout line matching `re`, or rejects after `ms`. */
export function waitForLine(child: ChildProcess, re: RegExp, ms = 10_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${ms} ms; got ${JSON.stringify(buf)}`)), ms);
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve(m);
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`process exited with ${code} before printing ${re}; got ${JSON.stringify(buf)}`));
    });
  });
}

export interface Dispatcher {
  url: string;
  port: number;
  proc: ChildProcess;
}

export async function startDispatcher(procs: Procs, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Dispatcher> {
  const store = args.includes('--store') || args.includes('--data-dir') ? [] : ['--data-dir', procs.tmpDir()];
  const proc = procs.spawn(['dispatcher', '--port', '0', ...FAST, ...store, ...args], env);
  const m = await waitForLine(proc, /listening on (ws:\/\/[^\s]+:(\d+))/);
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

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

export async function waitExecutors(url: string, n: number, token?: string): Promise<StatusSnapshot> {
  return waitFor(`${n} executors`, async () => {
    const s = await status(url, token).catch(() => undefined); // not listening yet
    if (!s) return undefined;
    return s.executors.filter((e) => e.state !== 'disconnected').length >= n ? s : undefined;
  });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion. */
export function runCli(procs: Procs, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const child = procs.spawn(args, opts.env);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  child.stdin!.end(opts.input ?? '');
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
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

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A raw protocol peer (frames in and out as they are), as the ws test suite feeds them. */
export interface Raw {
  ws: WebSocket;
  messages: Array<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  next(pred?: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
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
    async next(pred = () => true) {
      for (;;) {
        while (seen < messages.length) {
          const m = messages[seen++];
          if (pred(m)) return m;
        }
        await new Promise<void>((r) => waiters.push(r));
      }
    },
  };
}
