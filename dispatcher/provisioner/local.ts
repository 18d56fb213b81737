/**
 * The local backend: each "instance" is an executor process on this machine, started with the
 * instance id as its executor id. What `falconet up` scales with.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { CLI_PATH } from '../../executor/main.js';
import type { Backend, CloudState } from './backend.js';

export interface LocalBackendOptions {
  url: string;
  slots: number;
  /** More executor flags (labels, mode). */
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

const CONSOLE_BYTES = 16 * 1024;

export class LocalBackend implements Backend {
  readonly kind = 'local';
  readonly #procs = new Map<string, { child: ChildProcess; console: string }>();
  #n = 0;
  constructor(private readonly o: LocalBackendOptions) {}

  async launch(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `local-${process.pid}-${++this.#n}`;
      const child = spawn(process.execPath, [CLI_PATH, 'executor', '--dispatcher', this.o.url, '--id', id, '--slots', String(this.o.slots), ...(this.o.args ?? [])], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: this.o.env ?? process.env,
      });
      const entry = { child, console: '' };
      const keep = (d: Buffer) => {
        entry.console = (entry.console + d.toString()).slice(-CONSOLE_BYTES);
      };
      child.stdout!.on('data', keep);
      child.stderr!.on('data', (d: Buffer) => {
        keep(d);
        process.stderr.write(d);
      });
      this.#procs.set(id, entry);
      ids.push(id);
    }
    return ids;
  }

  async terminate(ids: string[]): Promise<void> {
    await Promise.all(ids.map((id) => this.#stop(id)));
  }

  #stop(id: string, graceMs = 3000): Promise<void> {
    const entry = this.#procs.get(id);
    if (!entry) return Promise.resolve();
    const { child } = entry;
    return new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  async consoleOutput(id: string): Promise<string> {
    return this.#procs.get(id)?.console ?? '';
  }

  async list(): Promise<Map<string, CloudState>> {
    const out = new Map<string, CloudState>();
    for (const [id, { child }] of this.#procs) out.set(id, child.exitCode === null && child.signalCode === null ? 'running' : 'gone');
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#procs.keys()].map((id) => this.#stop(id)));
  }
}
