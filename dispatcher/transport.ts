/**
 * The dispatcher's network transport: one port carrying the WebSocket endpoint and the HTTP API.
 * The server (server.ts) owns every protocol decision — hello, auth, frame limits, close codes,
 * the HTTP routes and their JSON — and talks to the network only through this interface, so
 * both transports behave the same:
 *
 * - `ws` (default): the `ws` package on a node:http server (transport-ws.ts).
 * - `uws`: µWebSockets.js (`@trufflesuite/uws-js-unofficial`, an optional dependency with
 *   binaries for Node 16/18/20 only; transport-uws.ts). Loaded only when asked for.
 */
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
}

export interface Transport {
  readonly kind: TransportKind;
  /** Binds the port (0: any free one); rejects if it cannot. */
  listen(handlers: TransportHandlers): Promise<void>;
  /** The bound port. */
  readonly port: number;
  /** Stops accepting and ends idle HTTP connections; WebSockets are the server's to close. */
  close(): Promise<void>;
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
