/**
 * Dispatcher configuration: options as a user gives them (flags, environment, files), then
 * defaults, then one compiled form that everything else reads. Compilation is where bad config
 * is refused, with a stable code, before anything listens.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { DEFAULT_MAX_FRAME_BYTES, ErrorCode, FalconetError } from '../protocol/index.js';
import { TRANSPORTS, type TransportKind } from './transport.js';

/** The well-known port executors and clients dial by default. */
export const DEFAULT_PORT = 7878;

export interface DispatcherOptions {
  host?: string;
  port?: number;
  clientToken?: string;
  clientTokenFile?: string;
  executorToken?: string;
  executorTokenFile?: string;
  /** Allow a non-loopback address without tokens. */
  insecure?: boolean;
  /** Require the client token on HTTP even on a loopback address (off loopback it always is). */
  httpAuth?: boolean;
  heartbeatMs?: number;
  leaseMs?: number;
  prefetch?: number;
  maxAttempts?: number;
  /** Hand-backs without fault (reconnect, drain) a task may take before it ends lost. */
  maxRequeues?: number;
  maxFrameBytes?: number;
  /** Bytes that may wait to be sent to one peer before it is dropped as a slow consumer. */
  maxBufferedBytes?: number;
  helloTimeoutMs?: number;
  /** Seconds a finished session is kept before it is collected. */
  retentionS?: number;
  dataPolicy?: string;
  cacheWaitMs?: number;
  /** ws (default) or uws. */
  transport?: string;
}

/** The compiled form: every field present and checked. */
export interface DispatcherConfig {
  host: string;
  port: number;
  clientToken: string | undefined;
  executorToken: string | undefined;
  insecure: boolean;
  /** Status, metrics and dashboard need the client token (off only on loopback). */
  httpAuth: boolean;
  heartbeatMs: number;
  leaseMs: number;
  tickMs: number;
  prefetch: number;
  defaultMaxAttempts: number;
  maxRequeues: number;
  maxFrameBytes: number;
  maxBufferedBytes: number;
  helloTimeoutMs: number;
  retentionMs: number;
  dataPolicy: 'first-available' | 'max-cache-hit';
  cacheWaitMs: number;
  transport: TransportKind;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
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
  const prefetch = o.prefetch ?? 0;
  if (!Number.isInteger(prefetch) || prefetch < 0) throw new FalconetError(ErrorCode.USAGE, `--prefetch must be an integer ≥ 0 (got ${prefetch})`);
  return {
    host,
    port,
    clientToken,
    executorToken,
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
    retentionMs: positive('--retention', o.retentionS ?? 24 * 3600, 0) * 1000,
    dataPolicy: dataPolicy(o.dataPolicy),
    cacheWaitMs: positive('--cache-wait-ms', o.cacheWaitMs ?? 2000, 0),
    transport: transport(o.transport),
  };
}
