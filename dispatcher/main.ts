/**
 * Starting and stopping a dispatcher process: config, logger, store, server, signals.
 * Shared by `falconet dispatcher` and `falconet up`.
 */
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { compileDispatcherConfig, type DispatcherOptions, type TlsFiles } from './config.js';
import { addProvisionerMetrics, addStoreMetrics } from './metrics.js';
import { prettyStream, resolveLogFormat } from './log-format.js';
import { DispatcherServer } from './server.js';
import { randomUUID } from 'node:crypto';
import { SqliteStore } from './store.js';
import type { DurableStore } from './durable-store.js';
import type { ProvisionerFlags } from './provisioner/setup.js';
import type { Provisioner } from './provisioner/provisioner.js';

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

export interface StoreChoice {
  store?: string;
  dataDir?: string;
  sync?: string;
}

/** The per-user default: $FALCONET_DATA_DIR, else $XDG_DATA_HOME/falconet, else ~/.local/share/falconet. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.FALCONET_DATA_DIR ?? join(env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'falconet');
}

export interface RunningDispatcher {
  server: DispatcherServer;
  store: DurableStore | null;
  provisioner: Provisioner | null;
  /** One line for people: where the state lives, or that none is kept. */
  storeSummary: string;
  stop(): Promise<void>;
}

function addressInUse(host: string, port: number): FalconetError {
  return new FalconetError(ErrorCode.ADDRESS_IN_USE, `port ${port} on ${host} is in use; pick another with --port`);
}

/**
 * Fails with ADDRESS_IN_USE when another process holds host:port, before the store is opened or
 * anything is logged: a second dispatcher on a busy port then says one line and exits 1. The
 * transport's own listen error (EADDRINUSE) is mapped too, for the rare port taken in between.
 */
async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? reject(addressInUse(host, port)) : resolve())); // anything else: the real listen reports it
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * Crash-only: an exception or rejection nothing handled means a bug left the core half-changed,
 * so the dispatcher logs it and exits 70 (EX_SOFTWARE) rather than serving from a state it cannot
 * trust; everything acknowledged is in the store, and a restart recovers it.
 */
function exitOnUnexpected(log: Logger): void {
  const crash = (what: string) => (err: unknown) => {
    log.fatal({ err: (err as Error)?.stack ?? String(err) }, `${what}; exiting`);
    process.exit(70);
  };
  process.on('unhandledRejection', crash('unhandled promise rejection'));
  process.on('uncaughtException', crash('uncaught exception'));
}

export async function startDispatcher(options: DispatcherOptions & StoreChoice & { provisioner?: ProvisionerFlags }, log: Logger): Promise<RunningDispatcher> {
  const config = compileDispatcherConfig(options);
  exitOnUnexpected(log);
  await checkPortFree(config.host, config.port);
  const choice = options.store ?? 'sqlite';
  const postgres = /^postgres(ql)?:\/\//.test(choice);
  const kind = postgres ? 'postgres' : choice;
  if (kind !== 'sqlite' && kind !== 'memory' && kind !== 'postgres') throw new FalconetError(ErrorCode.USAGE, `--store must be sqlite, memory or a postgres:// URL (got ${JSON.stringify(choice)})`);
  const sync = options.sync ?? 'full';
  if (sync !== 'full' && sync !== 'normal') throw new FalconetError(ErrorCode.USAGE, `--sync must be full or normal (got ${JSON.stringify(sync)})`);
  let store: DurableStore | null = null;
  if (kind === 'sqlite') {
    store = SqliteStore.open({ dataDir: options.dataDir ?? defaultDataDir(), sync });
  } else if (kind === 'postgres') {
    // Loaded only when asked for: `npm start` and the SQLite default never touch the pg client.
    const { PgStore } = await import('./pg-store.js');
    store = await PgStore.open({ url: choice, owner: randomUUID() });
  } else {
    log.warn('STORE IS MEMORY: nothing is persisted; a restart loses every queued task, result and session');
  }
  let instances: Array<{ id: string; record: unknown }> = [];
  const server = await DispatcherServer.start(config, log, {
    ...(store ? { journal: store, lookupResults: (refs) => store!.lookupResults(refs), lookupMemo: (key) => store!.lookupMemo(key) } : {}),
    recover: async (core) => {
      if (!store) return;
      const { instances: kept, ...found } = await store.recover(core);
      instances = kept;
      log.info({ store: store.name, ...(kind === 'sqlite' ? { sync } : {}), ...found, instances: kept.length }, 'store opened');
    },
    onFatal: (err) => {
      process.stderr.write(`falconet: ${ErrorCode.STORE_FAILED}: ${err.message}\n`);
      process.exit(1);
    },
  }).catch(async (err: NodeJS.ErrnoException) => {
    await store?.close().catch(() => {}); // the listen error is what the operator must see
    throw err?.code === 'EADDRINUSE' ? addressInUse(config.host, config.port) : err;
  });
  if (store) addStoreMetrics(server.metrics, store);
  log.info({ url: server.url, transport: config.transport, tls: config.tls !== null, leaseMs: config.leaseMs, heartbeatMs: config.heartbeatMs, prefetch: config.prefetch, store: kind }, 'listening');
  const { tlsWarning } = server.tlsStatus();
  if (tlsWarning) log.warn(tlsWarning);
  if (config.tls) reloadTlsOnSighup(server, config.tls, log);
  // Loaded only when asked for: the AWS SDK costs every other command (executors!) startup time.
  const provisioner = options.provisioner
    ? await (await import('./provisioner/setup.js')).startProvisioner(server, store, instances, options.provisioner, log)
    : null;
  if (provisioner) addProvisionerMetrics(server.metrics, provisioner);
  return {
    server,
    store,
    provisioner,
    storeSummary: store ? `store: ${store.name}${kind === 'sqlite' ? ` (sync ${sync})` : ''}` : 'store: MEMORY, nothing is kept across restarts',
    async stop() {
      await provisioner?.stop();
      await server.close();
      await store?.close();
    },
  };
}

/** One line on a certificate file for the log: subject, expiry, fingerprint; never throws. */
function describeCert(file: string): Record<string, string> {
  try {
    const c = new X509Certificate(readFileSync(file));
    return { subject: c.subject.replace(/\n/g, ', '), validTo: c.validTo, fingerprint256: c.fingerprint256 };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/**
 * SIGHUP reads the TLS certificate and key files again (a renewed certificate without a restart):
 * new connections get the new pair, open ones keep theirs. Files that do not load are logged and
 * the old pair stays. Only with TLS: without it SIGHUP keeps its default (the process ends).
 */
function reloadTlsOnSighup(server: DispatcherServer, tls: TlsFiles, log: Logger): void {
  log.info({ cert: tls.certFile, ...describeCert(tls.certFile) }, 'TLS certificate loaded');
  if (server.transport === 'uws') log.warn('the uws transport cannot reload its TLS certificate on SIGHUP: a renewed certificate needs a restart (or --transport ws)');
  let reloading: Promise<void> = Promise.resolve();
  process.on('SIGHUP', () => {
    reloading = reloading.then(() =>
      server.reloadTls().then(
        () => log.info({ cert: tls.certFile, ...describeCert(tls.certFile) }, 'SIGHUP: TLS certificate reloaded'),
        (err: Error) => log.error({ err: err.message }, 'SIGHUP: TLS certificate NOT reloaded; the previous one stays in use'),
      ),
    );
  });
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
