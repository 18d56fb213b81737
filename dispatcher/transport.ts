/**
 * The dispatcher's network transport: one port carrying the WebSocket endpoint and the HTTP API.
 * The server (server.ts) owns every protocol decision — hello, auth, frame limits, close codes,
 * the HTTP routes and their JSON — and talks to the network only through this interface, so
 * both transports behave the same:
 *
 * - `ws` (default): the `ws` package on a node:http server (transport-ws.ts).
 * - `uws`: µWebSockets.js (`@trufflesuite/uws-js-unofficial`, an optional dependency with
 *   binaries for Node 16/18/20 only; transport-uws.ts). Loaded only when asked for.
 *
 * TLS (`--tls-cert`, `--tls-key`): the same port serves wss:// and https:// instead (ws: an
 * https.Server under the WebSocketServer; uws: its SSLApp). `reloadTls()` reads the files again
 * (SIGHUP): ws swaps the secure context of the listening server in place; uWS.js cannot change
 * the certificate of a listening app, so uws binds a new SSLApp to the port in its place.
 * Either way, connections already open keep the certificate they were made with.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';

export const TRANSPORTS = ['ws', 'uws'] as const;
export type TransportKind = (typeof TRANSPORTS)[number];

/** One accepted WebSocket peer. */
export interface PeerSocket {
  /**
   * Sends one binary frame. Never drops it: what the socket cannot take now waits, in order,
   * until it drains (ws: the net.Socket's buffer; uws: a queue fed on `drain`).
   */
  send(frame: Buffer): void;
  /** Sends what is queued, then a close frame with this code and reason. */
  close(code: number, reason: string): void;
  /** Drops the connection at once, without the close handshake. */
  terminate(): void;
  /** Bytes handed to send() and not yet written to the kernel. */
  readonly bufferedAmount: number;
  /** The peer's IP address as text ('' if unknown); IPv4-mapped IPv6 addresses are given as IPv4. */
  readonly remoteAddress: string;
  /**
   * From now on, frames from this peer larger than `bytes` are refused by the transport while it
   * reads them, before they are buffered whole (close 1009). Returns false where the transport
   * cannot do that per connection (uWS: its limit is the endpoint's `maxPayloadBytes`).
   */
  limitPayload(bytes: number): boolean;
}

/** What the server does with one peer's events. */
export interface PeerHandlers {
  /** One frame; `data` is the server's to keep. */
  message(data: Buffer, isBinary: boolean): void;
  /** The connection is gone (either side closed it, or it broke). Called once. */
  close(): void;
}

export interface HttpReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One HTTP request, read whole (bodies are bounded by `maxPayloadBytes`). */
export interface HttpRequest {
  /** Upper case: GET, POST, ... */
  method: string;
  /** Without its query string. */
  path: string;
  /** The query string without its `?` ('' for none). */
  query: string;
  authorization: string | undefined;
  /** The body; null when it was larger than the transport accepts (answer 413). */
  body: Buffer | null;
}

export interface TransportHandlers {
  /** A peer completed the WebSocket upgrade (on any path). */
  connection(peer: PeerSocket): PeerHandlers;
  /** Any other HTTP request. */
  http(req: HttpRequest): Promise<HttpReply>;
}

export interface TransportOptions {
  host: string;
  port: number;
  /** Frames above this are cut off by the transport itself (close 1009, no error message). */
  maxPayloadBytes: number;
  log: Logger;
  /** Serve TLS with the certificate and key in these PEM files. */
  tls?: { certFile: string; keyFile: string } | null;
}

/**
 * Reads the certificate and key files and checks that they load as a pair; throws a plain Error
 * saying which file is wrong. Used at startup (USAGE) and on each reload (the old pair stays).
 */
export function loadTlsPair(files: { certFile: string; keyFile: string }): { cert: Buffer; key: Buffer } {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} file ${file}: ${(err as Error).message}`);
    }
  };
  const cert = read(files.certFile, 'certificate');
  const key = read(files.keyFile, 'key');
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`the TLS certificate file ${files.certFile} holds no PEM certificate`);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(`the TLS certificate ${files.certFile} and key ${files.keyFile} do not load together: ${(err as Error).message}`);
  }
  return { cert, key };
}

export interface Transport {
  readonly kind: TransportKind;
  /** Binds the port (0: any free one); rejects if it cannot. */
  listen(handlers: TransportHandlers): Promise<void>;
  /** The bound port. */
  readonly port: number;
  /** Stops accepting and ends idle HTTP connections; WebSockets are the server's to close. */
  close(): Promise<void>;
  /** True when it serves TLS (wss://, https://). */
  readonly tls: boolean;
  /**
   * Reads the TLS certificate and key files again; new connections get the new pair. Rejects
   * (keeping the old pair) when the files do not load; a no-op without TLS.
   */
  reloadTls(): Promise<void>;
}

/**
 * The transport of that kind, not yet listening. `uws` throws FalconetError
 * TRANSPORT_UNAVAILABLE when µWebSockets.js cannot be loaded here.
 */
export async function createTransport(kind: TransportKind, opts: TransportOptions): Promise<Transport> {
  if (kind === 'uws') {
    const { UwsTransport, loadUws } = await import('./transport-uws.js');
    return new UwsTransport(loadUws(), opts);
  }
  const { WsTransport } = await import('./transport-ws.js');
  return new WsTransport(opts);
}
