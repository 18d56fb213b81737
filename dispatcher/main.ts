/**
 * Starting and stopping a dispatcher process: config, logger, store, server, signals.
 * Shared by `falconet dispatcher` and `falconet up`.
 */
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { compileDispatcherConfig, type DispatcherOptions, type TlsFiles } from './config.js';
import { addProvisionerMetrics, addStoreMetrics } from './metrics.js';
import { DispatcherServer } from './server.js';
import { randomUUID } from 'node:crypto';
import { SqliteStore } from './store.js';
import type { DurableStore } from './durable-store.js';
import type { ProvisionerFlags } from './provisioner/setup.js';
import type { Provisioner } from './provisioner/provisioner.js';
import type { PgStore } from './pg-store.js';
import type { Cluster } from './cluster.js';
import { PARTITIONS, partitionOf } from './pg-schema.js';

export interface StoreChoice {
  store?: string;
  dataDir?: string;
  sync?: string;
  /** Several dispatchers on one postgres:// store (docs/scale-out.md). */
  advertise?: string;
  partitionLeaseMs?: number;
  inboxPollMs?: number;
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
  /** Written on its executors' rows and checked by its commits' fences (PostgreSQL). */
  const dispatcherId = randomUUID();
  if (kind === 'sqlite') {
    store = SqliteStore.open({ dataDir: options.dataDir ?? defaultDataDir(), sync });
  } else if (kind === 'postgres') {
    // Loaded only when asked for: `npm start` and the SQLite default never touch the pg client.
    const { PgStore } = await import('./pg-store.js');
    store = await PgStore.open({ url: choice, owner: dispatcherId });
  } else {
    log.warn('STORE IS MEMORY: nothing is persisted; a restart loses every queued task, result and session');
  }
  let instances: Array<{ id: string; record: unknown }> = [];
  const server = await DispatcherServer.start(config, log, {
    ...(store ? { journal: store, lookupResults: (refs) => store!.lookupResults(refs), lookupMemo: (key) => store!.lookupMemo(key) } : {}),
    recover: async (core) => {
      // On PostgreSQL, partitions are loaded as the cluster takes them (below), not all at once.
      if (!store || kind === 'postgres') return;
      const { instances: kept, ...found } = await store.recover(core);
      instances = kept;
      log.info({ store: store.name, ...(kind === 'sqlite' ? { sync } : {}), ...found, instances: kept.length }, 'store opened');
    },
    onFatal: (err) => {
      process.stderr.write(`falconet: ${(err as FalconetError).code ?? ErrorCode.STORE_FAILED}: ${err.message}\n`);
      process.exit(1);
    },
  }).catch(async (err: NodeJS.ErrnoException) => {
    await store?.close().catch(() => {}); // the listen error is what the operator must see
    throw err?.code === 'EADDRINUSE' ? addressInUse(config.host, config.port) : err;
  });
  if (store) addStoreMetrics(server.metrics, store);
  let provisioner: Provisioner | null = null;
  const cluster = kind === 'postgres' ? await joinCluster(server, store as PgStore, dispatcherId, choice, options, log, (leader, cluster) => {
    if (!options.provisioner) return;
    // The lead moves with the advisory lock: start the provisioner on the new leader, stop it on a
    // dispatcher that lost the lock (its instances are in the database for the next leader).
    if (leader) {
      void (async () => {
        const kept = await cluster.instances();
        const others = cluster.dispatchers().filter((d) => !d.self).map((d) => d.url);
        // It sees the whole cluster (every queue, its executors wherever they are): they may follow the work.
        const fleet = { fleet: cluster.fleet(), goneAfterMs: cluster.fleetGraceMs };
        const started = await (await import('./provisioner/setup.js')).startProvisioner(server, store, kept, { ...options.provisioner!, otherDispatchers: others, fleet }, log);
        provisioner = started;
        addProvisionerMetrics(server.metrics, started);
      })().catch((err: Error) => log.error({ err: err.message }, 'the provisioner did not start'));
    } else void provisioner?.stop().then(() => (provisioner = null));
  }) : null;
  log.info({ url: server.url, transport: config.transport, tls: config.tls !== null, leaseMs: config.leaseMs, heartbeatMs: config.heartbeatMs, prefetch: config.prefetch, store: kind }, 'listening');
  const { tlsWarning } = server.tlsStatus();
  if (tlsWarning) log.warn(tlsWarning);
  if (config.tls) reloadTlsOnSighup(server, config.tls, log);
  // Loaded only when asked for: the AWS SDK costs every other command (executors!) startup time.
  if (options.provisioner && !cluster) {
    provisioner = await (await import('./provisioner/setup.js')).startProvisioner(server, store, instances, options.provisioner, log);
    addProvisionerMetrics(server.metrics, provisioner);
  }
  return {
    server,
    store,
    storeSummary: store ? `store: ${store.name}${kind === 'sqlite' ? ` (sync ${sync})` : ''}` : 'store: MEMORY, nothing is kept across restarts',
    get provisioner() {
      return provisioner;
    },
    async stop() {
      await provisioner?.stop();
      await server.close();
      await store?.close();
      // After the last commit: the partitions go to the others at once, not after a lease.
      await cluster?.stop();
    },
  };
}

/**
 * Joins the dispatchers sharing a PostgreSQL store: the cluster takes this dispatcher's share of
 * the partitions (loading them) before it returns; clients that arrive meanwhile are told MOVED.
 */
async function joinCluster(server: DispatcherServer, store: PgStore, id: string, url: string, options: StoreChoice, log: Logger, onLeader: (leader: boolean, cluster: Cluster) => void): Promise<Cluster> {
  const { Cluster } = await import('./cluster.js');
  const cluster = new Cluster({
    url,
    id,
    advertise: options.advertise ?? server.url,
    partitions: PARTITIONS,
    partitionOf,
    leaseMs: options.partitionLeaseMs ?? 10_000,
    inboxPollMs: options.inboxPollMs ?? 100,
    store,
    log,
    wake: () => server.wake(),
    onPeers: (urls) => server.setPeers(urls),
    onLeader,
    onFatal: (err) => {
      process.stderr.write(`falconet: ${(err as FalconetError).code ?? ErrorCode.STORE_FENCED}: ${err.message}\n`);
      process.exit(1);
    },
  });
  server.router = cluster;
  await cluster.start(server.core);
  return cluster;
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

