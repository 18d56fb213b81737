/**
 * The logger and the shutdown signals of a falconet process (dispatcher, executor, `up`): apart
 * from dispatcher/main.ts so that a process that is not a dispatcher (the executor, the CLI's
 * commands) does not load the dispatcher, its store and their dependencies to get them.
 */
import { pino, type Logger } from 'pino';
import { prettyStream, resolveLogFormat } from './log-format.js';

/** The logger of this process, once made: shutdown says what happened through it. */
let processLog: Logger | null = null;

/**
 * Logs go to stderr; stdout is left for what a user or script reads. On a terminal they are
 * readable lines (time, level, message, key fields); otherwise, or with `--log-format json` /
 * FALCONET_LOG_FORMAT=json, JSON lines (log-format.ts). The format chosen is handed down to the
 * executors this process starts (`up`), whose lines it forwards to the same terminal.
 */
export function makeLogger(name: string, format = resolveLogFormat(process.argv.slice(2), process.env, process.stderr.isTTY === true)): Logger {
  process.env.FALCONET_LOG_FORMAT = format;
  const level = process.env.FALCONET_LOG ?? 'info';
  const dest = pino.destination({ dest: 2, sync: true });
  processLog = pino({ name, level }, format === 'json' ? dest : prettyStream(dest, process.stderr.isTTY === true && !process.env.NO_COLOR));
  return processLog;
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits 0. */
export function onShutdownSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    // A requested stop is news, not a problem: one info line, through the logger when there is one.
    if (processLog) processLog.info({ signal }, 'shutting down');
    else process.stderr.write(`falconet: ${signal}: shutting down\n`);
    stop().then(
      () => process.exit(0),
      (err) => {
        if (processLog) processLog.error({ err }, 'shutdown failed');
        else process.stderr.write(`falconet: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}
