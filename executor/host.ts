/** What the agent needs of its host besides tasks: its addresses, and the shutdown command run on retirement. */
import { networkInterfaces } from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';

/** Runs the shutdown command; never rejects (a failure is logged, the caller exits anyway). */
export function runShutdownCommand(command: string, env: NodeJS.ProcessEnv, log: Logger, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve) => {
    log.info({ command }, 'running the shutdown command');
    let child: ChildProcess;
    try {
      child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'inherit', 'inherit'], env });
    } catch (err) {
      log.error({ command, err: (err as Error).message }, 'shutdown command could not start');
      return resolve();
    }
    const timer = setTimeout(() => {
      log.error({ command, timeoutMs }, 'shutdown command still running; exiting anyway');
      child.kill('SIGKILL');
      resolve();
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      log.error({ command, err: err.message }, 'shutdown command could not start');
      resolve();
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) log.error({ command, code, signal }, 'shutdown command failed');
      resolve();
    });
  });
}

/** Every non-internal address of this host, as its DHCP (or whoever) gave them. */
export function hostAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal) out.push(a.address);
  }
  return out;
}
