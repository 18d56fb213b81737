/** Starting an executor process (`falconet executor`), and local executor processes for `up`. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ExecutorAgent, type ExecutorOptions } from './agent.js';

export function startExecutor(options: ExecutorOptions, log: Logger): ExecutorAgent {
  const agent = new ExecutorAgent(options, log, (code, reason) => {
    log.info({ code, reason }, 'executor exiting');
    process.exit(code);
  });
  agent.start();
  return agent;
}

/** The CLI entry point, for spawning executors as child processes. */
export const CLI_PATH = fileURLToPath(new URL('../client/cli.js', import.meta.url));

/**
 * Keeps `count` local executor processes running (restarting any that die unexpectedly) until
 * `stop()`. This is the seed of the provisioner's local backend.
 */
export class LocalExecutors {
  readonly children = new Set<ChildProcess>();
  #stopping = false;
  constructor(
    private readonly url: string,
    private readonly args: string[],
    private readonly log: Logger,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  start(count: number): void {
    for (let i = 0; i < count; i++) this.#spawn();
  }

  #spawn(): void {
    const child = spawn(process.execPath, [CLI_PATH, 'executor', '--dispatcher', this.url, ...this.args], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: this.env,
    });
    this.children.add(child);
    child.on('exit', (code, signal) => {
      this.children.delete(child);
      if (this.#stopping) return;
      this.log.warn({ pid: child.pid, code, signal }, 'local executor exited; starting another');
      setTimeout(() => this.#stopping || this.#spawn(), 1000).unref();
    });
  }

  /** Stops every executor (SIGTERM, then SIGKILL after `graceMs`) and waits for them. */
  async stop(graceMs = 3000): Promise<void> {
    this.#stopping = true;
    await Promise.all(
      [...this.children].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
            child.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
  }
}
