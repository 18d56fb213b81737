/**
 * The local backend: each "instance" is an executor process on this machine, started with the
 * instance id as its executor id. What `falconet up` scales with.
 *
 * After a restart (even a kill -9 of `falconet up`), the executors it had started keep running
 * and redial. `adopt` finds them again by their id on the command line (/proc), so that the new
 * dispatcher counts them toward its fleet and can stop them, instead of launching more beside
 * them. Local executors retire on their own when no dispatcher comes back (`--dispatcher-timeout`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { CLI_PATH } from '../../executor/main.js';
import type { Backend, CloudState } from './backend.js';
import { resourcesText, type InstanceType } from './instance-types.js';

export interface LocalBackendOptions {
  url: string;
  slots: number;
  /** More executor flags (labels, mode). */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Seconds a local executor waits for a dispatcher that is gone before it exits (default 300). */
  dispatcherTimeoutS?: number;
}

const CONSOLE_BYTES = 16 * 1024;
/** Ids of the executors this backend starts: `local-<pid of the dispatcher>-<n>`. */
const LOCAL_ID = /^local-\d+-\d+$/;

/** A process we started (child) or found again after a restart (pid only). */
interface LocalProc {
  child: ChildProcess | null;
  pid: number;
  console: string;
}

export class LocalBackend implements Backend {
  readonly kind = 'local';
  readonly #procs = new Map<string, LocalProc>();
  #n = 0;
  constructor(private readonly o: LocalBackendOptions) {}

  async launch(count: number, type?: InstanceType): Promise<string[]> {
    // A type's resources override what the executor would detect (and add custom ones).
    const typed = type ? ['--resources', resourcesText(type.resources)] : [];
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `local-${process.pid}-${++this.#n}`;
      const args = [CLI_PATH, 'executor', '--dispatcher', this.o.url, ...(this.o.url.includes(',') ? ['--dispatcher-order', 'first'] : []), '--id', id, '--slots', String(this.o.slots), '--dispatcher-timeout', String(this.o.dispatcherTimeoutS ?? 300)];
      const child = spawn(process.execPath, [...args, ...(this.o.args ?? []), ...typed], { stdio: ['ignore', 'pipe', 'pipe'], env: this.o.env ?? process.env });
      const entry: LocalProc = { child, pid: child.pid ?? -1, console: '' };
      const keep = (d: Buffer) => {
        entry.console = (entry.console + d.toString()).slice(-CONSOLE_BYTES);
      };
      child.stdout!.on('data', keep);
      child.stderr!.on('data', (d: Buffer) => {
        keep(d);
        process.stderr.write(d);
      });
      child.on('error', (err) => keep(Buffer.from(`spawn failed: ${err.message}\n`)));
      this.#procs.set(id, entry);
      ids.push(id);
    }
    return ids;
  }

  /** Finds the recorded executors still running on this machine (Linux: by their command line). */
  async adopt(instanceIds: string[]): Promise<void> {
    const wanted = new Set(instanceIds.filter((id) => LOCAL_ID.test(id) && !this.#procs.has(id)));
    if (wanted.size === 0) return;
    let pids: string[] = [];
    try {
      pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
    } catch {
      return; // no /proc: nothing can be found; they retire on their own dispatcher timeout
    }
    for (const pid of pids) {
      const argv = await readFile(`/proc/${pid}/cmdline`, 'utf8').then((s) => s.split('\0'), () => [] as string[]);
      const at = argv.indexOf('--id');
      const id = at >= 0 ? argv[at + 1] : undefined;
      if (id !== undefined && wanted.has(id) && argv.includes('executor')) {
        this.#procs.set(id, { child: null, pid: Number(pid), console: '' });
        wanted.delete(id);
      }
    }
  }

  isStray(executorId: string): boolean {
    return LOCAL_ID.test(executorId) && !this.#procs.has(executorId);
  }

  async terminate(ids: string[]): Promise<void> {
    await Promise.all(ids.map((id) => this.#stop(id)));
  }

  #stop(id: string, graceMs = 3000): Promise<void> {
    const entry = this.#procs.get(id);
    if (!entry || !running(entry)) return Promise.resolve();
    const { child, pid } = entry;
    if (child) {
      return new Promise((resolve) => {
        const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
        child.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        child.kill('SIGTERM');
      });
    }
    // Not our child: no exit event; signal it and watch it go.
    signal(pid, 'SIGTERM');
    return new Promise((resolve) => {
      const started = Date.now();
      const timer = setInterval(() => {
        if (!alive(pid)) {
          clearInterval(timer);
          resolve();
        } else if (Date.now() - started > graceMs) signal(pid, 'SIGKILL');
      }, 50);
    });
  }

  async consoleOutput(id: string): Promise<string> {
    return this.#procs.get(id)?.console ?? '';
  }

  async list(): Promise<Map<string, CloudState>> {
    const out = new Map<string, CloudState>();
    for (const [id, entry] of this.#procs) out.set(id, running(entry) ? 'running' : 'gone');
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#procs.keys()].map((id) => this.#stop(id)));
  }
}

function running(p: LocalProc): boolean {
  return p.child ? p.child.exitCode === null && p.child.signalCode === null : alive(p.pid);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // ESRCH: it is already gone, which is what we want
  }
}
