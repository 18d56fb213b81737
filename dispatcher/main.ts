/**
 * Starting and stopping a dispatcher process: config, logger, store, server, signals.
 * Shared by `falconet dispatcher` and `falconet up`.
 */
import { pino, type Logger } from 'pino';
import { compileDispatcherConfig, type DispatcherOptions } from './config.js';
import { nullJournal } from './model.js';
import { DispatcherServer } from './server.js';

/** Logs go to stderr as JSON lines; stdout is left for what a user or script reads. */
export function makeLogger(name: string): Logger {
  return pino({ name, level: process.env.FALCONET_LOG ?? 'info' }, pino.destination(2));
}

export async function startDispatcher(options: DispatcherOptions, log: Logger): Promise<DispatcherServer> {
  const config = compileDispatcherConfig(options);
  log.warn('store: memory; nothing is persisted, and a restart loses every queued task');
  const server = await DispatcherServer.start(config, log, nullJournal);
  log.info({ url: server.url, leaseMs: config.leaseMs, heartbeatMs: config.heartbeatMs, prefetch: config.prefetch }, 'listening');
  return server;
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits 0. */
export function onShutdownSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`falconet: ${signal}: shutting down\n`);
    stop().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`falconet: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}
