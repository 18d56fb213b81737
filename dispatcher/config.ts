/**
 * Dispatcher configuration: options as a user gives them (flags, environment, files), then
 * defaults, then one compiled form that everything else reads. Compilation is where bad config
 * is refused, with a stable code, before anything listens.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { DEFAULT_MAX_FRAME_BYTES, ErrorCode, FalconetError } from '../protocol/index.js';
import { TRANSPORTS, loadTlsPair, type TransportKind } from './transport.js';

/** The well-known port executors and clients dial by default. */
export const DEFAULT_PORT = 7878;

export interface DispatcherOptions {
  host?: string;
  port?: number;
  clientToken?: string;
  clientTokenFile?: string;
  executorToken?: string;
  executorTokenFile?: string;
  /**
   * The administrator's credential: a client that may act on every session (cancel across
   * sessions, resume or cancel without a session's key). Must differ from the other two.
   */
  adminToken?: string;
  adminTokenFile?: string;
  /** Allow a non-loopback address without tokens. */
  insecure?: boolean;
  /** Require the client token on HTTP even on a loopback address (off loopback it always is). */
  httpAuth?: boolean;
  heartbeatMs?: number;
  leaseMs?: number;
  /** A fixed number of tasks beyond each push executor's free slots, or `auto` (default): each executor's adaptive window. */
  prefetch?: number | 'auto';
  maxAttempts?: number;
  /** Hand-backs without fault (reconnect, drain) a task may take before it ends lost. */
  maxRequeues?: number;
  maxFrameBytes?: number;
  /** Bytes that may wait to be sent to one peer before it is dropped as a slow consumer. */
  maxBufferedBytes?: number;
  helloTimeoutMs?: number;
  /** Largest frame a peer may send before its hello is accepted (bytes); enforced while reading. */
  helloMaxBytes?: number;
  /** Connections without a completed hello: at most this many in total (`--max-pending-hellos`). */
  maxPendingHellos?: number;
  /** ... and at most this many from one remote address (`--max-pending-hellos-per-address`). */
  maxPendingHellosPerAddress?: number;
  /** Seconds a finished session is kept before it is collected. */
  retentionS?: number;
  dataPolicy?: string;
  cacheWaitMs?: number;
  /** Seconds a task with resource requests waits before an executor is reserved for it. */
  reserveAfterS?: number;
  /** ws (default) or uws. */
  transport?: string;
  /** PEM certificate (chain) file: with tlsKey, serve wss:// and https:// (reloaded on SIGHUP). */
  tlsCert?: string;
  /** PEM private key file of tlsCert. */
  tlsKey?: string;
  /**
   * PEM CA file the executors this dispatcher starts (local, EC2 user-data) trust it with;
   * default: the tlsCert file (right for a self-signed certificate).
   */
  tlsCa?: string;
}

/** Where the dispatcher's TLS certificate and key are read from (again on SIGHUP). */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** What the dispatcher's own executors are told to trust (a file name). */
  caFile: string;
}

/** The compiled form: every field present and checked. */
export interface DispatcherConfig {
  host: string;
  port: number;
  clientToken: string | undefined;
  executorToken: string | undefined;
  /** undefined: nobody is the administrator, unless no client token is set (then every client is). */
  adminToken: string | undefined;
  insecure: boolean;
  /** Status, metrics and dashboard need the client token (off only on loopback). */
  httpAuth: boolean;
  heartbeatMs: number;
  leaseMs: number;
  tickMs: number;
  prefetch: number | 'auto';
  defaultMaxAttempts: number;
  maxRequeues: number;
  maxFrameBytes: number;
  maxBufferedBytes: number;
  helloTimeoutMs: number;
  /** Pre-hello frame limit: what an unauthenticated peer can make the dispatcher buffer. */
  helloMaxBytes: number;
  /** Cap on connections that have not completed their hello, in total and per remote address. */
  maxPendingHellos: number;
  maxPendingHellosPerAddress: number;
  retentionMs: number;
  dataPolicy: 'first-available' | 'max-cache-hit';
  cacheWaitMs: number;
  reserveAfterMs: number;
  transport: TransportKind;
  /** null: plain ws:// and http://. */
  tls: TlsFiles | null;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** What a dispatcher off loopback without TLS says at start and in its status. */
export function cleartextWarning(host: string): string {
  return `listening on ${host} without TLS: tokens and task specs travel in clear; give --tls-cert and --tls-key`;
}

function readToken(value: string | undefined, file: string | undefined, what: string): string | undefined {
  if (value !== undefined && value !== '') return value;
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new FalconetError(ErrorCode.USAGE, `cannot read the ${what} token file ${file}: ${(err as Error).message}`);
  }
  if (text === '') throw new FalconetError(ErrorCode.USAGE, `the ${what} token file ${file} is empty`);
  return text;
}

function positive(name: string, value: number, min = 1): number {
  if (!Number.isFinite(value) || value < min) {
    throw new FalconetError(ErrorCode.USAGE, `${name} must be a number ≥ ${min} (got ${value})`);
  }
  return value;
}

function dataPolicy(p: string | undefined): 'first-available' | 'max-cache-hit' {
  if (p === undefined || p === 'max-cache-hit' || p === 'first-available') return p ?? 'max-cache-hit';
  throw new FalconetError(ErrorCode.USAGE, `--data-policy must be first-available or max-cache-hit (got ${JSON.stringify(p)})`);
}

function transport(t: string | undefined): TransportKind {
  if (t === undefined) return 'ws';
  if ((TRANSPORTS as readonly string[]).includes(t)) return t as TransportKind;
  throw new FalconetError(ErrorCode.USAGE, `--transport must be ${TRANSPORTS.join(' or ')} (got ${JSON.stringify(t)})`);
}

function tlsFiles(o: DispatcherOptions, env: NodeJS.ProcessEnv): TlsFiles | null {
  const nonEmpty = (v: string | undefined) => (v === undefined || v === '' ? undefined : v);
  const certFile = nonEmpty(o.tlsCert ?? env.FALCONET_TLS_CERT);
  const keyFile = nonEmpty(o.tlsKey ?? env.FALCONET_TLS_KEY);
  const caFile = nonEmpty(o.tlsCa ?? env.FALCONET_TLS_CA);
  if (certFile === undefined && keyFile === undefined) {
    if (caFile !== undefined) throw new FalconetError(ErrorCode.USAGE, '--tls-ca needs --tls-cert and --tls-key');
    return null;
  }
  if (certFile === undefined || keyFile === undefined) throw new FalconetError(ErrorCode.USAGE, 'TLS needs both --tls-cert FILE and --tls-key FILE');
  try {
    loadTlsPair({ certFile, keyFile });
    if (caFile !== undefined && !readFileSync(caFile, 'utf8').includes('-----BEGIN CERTIFICATE-----')) throw new Error(`the --tls-ca file ${caFile} holds no PEM certificate`);
  } catch (err) {
    throw new FalconetError(ErrorCode.USAGE, (err as Error).message);
  }
  return { certFile, keyFile, caFile: caFile ?? certFile };
}

/** Defaults of the pre-authentication bounds (docs/security.md). */
export const DEFAULT_HELLO_MAX_BYTES = 64 * 1024;
export const DEFAULT_MAX_PENDING_HELLOS = 1024;
/** Per address: a fleet behind one NAT address boots in bursts; its executors also redial when refused. */
export const DEFAULT_MAX_PENDING_HELLOS_PER_ADDRESS = 256;

function pendingHellos(o: DispatcherOptions): Pick<DispatcherConfig, 'helloMaxBytes' | 'maxPendingHellos' | 'maxPendingHellosPerAddress'> {
  const helloMaxBytes = positive('--hello-max-bytes', o.helloMaxBytes ?? DEFAULT_HELLO_MAX_BYTES, 1024);
  const maxPendingHellos = positive('--max-pending-hellos', o.maxPendingHellos ?? DEFAULT_MAX_PENDING_HELLOS);
  const maxPendingHellosPerAddress = positive('--max-pending-hellos-per-address', o.maxPendingHellosPerAddress ?? Math.min(DEFAULT_MAX_PENDING_HELLOS_PER_ADDRESS, maxPendingHellos));
  for (const [name, v] of [['--hello-max-bytes', helloMaxBytes], ['--max-pending-hellos', maxPendingHellos], ['--max-pending-hellos-per-address', maxPendingHellosPerAddress]] as const) {
    if (!Number.isInteger(v)) throw new FalconetError(ErrorCode.USAGE, `${name} must be an integer (got ${v})`);
  }
  return { helloMaxBytes, maxPendingHellos, maxPendingHellosPerAddress };
}

/** Applies environment fallbacks and defaults, validates, and returns the compiled config. */
export function compileDispatcherConfig(o: DispatcherOptions, env: NodeJS.ProcessEnv = process.env): DispatcherConfig {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new FalconetError(ErrorCode.USAGE, `--port must be 0..65535 (got ${port})`);
  const clientToken = readToken(o.clientToken ?? env.FALCONET_CLIENT_TOKEN, o.clientTokenFile ?? env.FALCONET_CLIENT_TOKEN_FILE, 'client');
  const executorToken = readToken(o.executorToken ?? env.FALCONET_EXECUTOR_TOKEN, o.executorTokenFile ?? env.FALCONET_EXECUTOR_TOKEN_FILE, 'executor');
  if (clientToken !== undefined && clientToken === executorToken) {
    throw new FalconetError(ErrorCode.USAGE, 'the client and executor tokens must differ, or a client could register as an executor');
  }
  const adminToken = readToken(o.adminToken ?? env.FALCONET_ADMIN_TOKEN, o.adminTokenFile ?? env.FALCONET_ADMIN_TOKEN_FILE, 'admin');
  if (adminToken !== undefined && (adminToken === clientToken || adminToken === executorToken)) {
    throw new FalconetError(ErrorCode.USAGE, 'the admin token must differ from the client and executor tokens');
  }
  if (adminToken !== undefined && clientToken === undefined) {
    throw new FalconetError(ErrorCode.USAGE, '--admin-token needs --client-token: without a client token every client is the administrator');
  }
  const insecure = o.insecure ?? false;
  if (!isLoopback(host) && !insecure && (clientToken === undefined || executorToken === undefined)) {
    throw new FalconetError(
      ErrorCode.INSECURE_CONFIG,
      `refusing to listen on ${host} without both a client and an executor token; give --client-token and --executor-token (or their _FILE forms), or --insecure`,
    );
  }
  const heartbeatMs = positive('--heartbeat-ms', o.heartbeatMs ?? 2_000, 10);
  const leaseMs = positive('--lease-ms', o.leaseMs ?? 15_000, 10);
  if (leaseMs < 2 * heartbeatMs) throw new FalconetError(ErrorCode.USAGE, `--lease-ms (${leaseMs}) must be at least twice --heartbeat-ms (${heartbeatMs})`);
  const prefetch = o.prefetch ?? 'auto';
  if (prefetch !== 'auto' && (!Number.isInteger(prefetch) || prefetch < 0)) throw new FalconetError(ErrorCode.USAGE, `--prefetch must be an integer ≥ 0 (got ${prefetch})`);
  return {
    host,
    port,
    clientToken,
    executorToken,
    adminToken,
    insecure,
    httpAuth: o.httpAuth === true || !isLoopback(host),
    heartbeatMs,
    leaseMs,
    tickMs: Math.max(5, Math.min(250, Math.floor(leaseMs / 4))),
    prefetch,
    defaultMaxAttempts: positive('--max-attempts', o.maxAttempts ?? 3),
    maxRequeues: positive('--max-requeues', o.maxRequeues ?? 20, 0),
    maxFrameBytes: positive('--max-frame-bytes', o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, 1024),
    maxBufferedBytes: positive('--max-buffered-bytes', o.maxBufferedBytes ?? 64 * 1024 * 1024, 64 * 1024),
    helloTimeoutMs: positive('--hello-timeout-ms', o.helloTimeoutMs ?? 10_000, 10),
    ...pendingHellos(o),
    retentionMs: positive('--retention', o.retentionS ?? 24 * 3600, 0) * 1000,
    dataPolicy: dataPolicy(o.dataPolicy),
    cacheWaitMs: positive('--cache-wait-ms', o.cacheWaitMs ?? 2000, 0),
    reserveAfterMs: positive('--reserve-after', o.reserveAfterS ?? 30, 0) * 1000,
    transport: transport(o.transport),
    tls: tlsFiles(o, env),
  };
}
