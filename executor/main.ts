/** Starting an executor process (`falconet executor`). */
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
