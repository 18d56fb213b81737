/** Starting an executor process (`falconet executor`). */
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ExecutorAgent, type ExecutorOptions } from './agent.js';

/** Exit status of an executor that hit a failure it did not expect (EX_SOFTWARE). */
export const CRASH_EXIT_CODE = 70;

/**
 * Starts the agent of this process. Crash-only: an exception or rejection that nothing handled
 * means a bug left some state half-changed (a slot never freed, a result never sent), so the
 * process logs it and exits {@link CRASH_EXIT_CODE} rather than lingering half-alive; the
 * dispatcher re-queues its attempts and the service manager (or the provisioner) starts a new one.
 */
export function startExecutor(options: ExecutorOptions, log: Logger): ExecutorAgent {
  const crash = (what: string) => (err: unknown) => {
    log.fatal({ err: (err as Error)?.stack ?? String(err) }, `${what}; exiting`);
    process.exit(CRASH_EXIT_CODE);
  };
  process.on('unhandledRejection', crash('unhandled promise rejection'));
  process.on('uncaughtException', crash('uncaught exception'));
  const agent = new ExecutorAgent(options, log, (code, reason) => {
    log.info({ code, reason }, 'executor exiting');
    process.exit(code);
  });
  agent.start();
  return agent;
}

/** The CLI entry point, for spawning executors as child processes. */
export const CLI_PATH = fileURLToPath(new URL('../client/cli.js', import.meta.url));
