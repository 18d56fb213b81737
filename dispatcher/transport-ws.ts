/**
 * The default transport: the `ws` package on a node:http server, both on one port; with TLS, on
 * a node:https server (wss:// and https://), whose secure context reloadTls() swaps in place.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { loadTlsPair, type PeerSocket, type Transport, type TransportHandlers, type TransportOptions } from './transport.js';

/** The private field of ws's Receiver (ws 8.x lib/receiver.js) that bounds a frame while it is read. */
interface ReceiverInternals {
  _maxPayload?: unknown;
}

/** `::ffff:1.2.3.4` → `1.2.3.4`, so that one IPv4 host counts once whichever way it came in. */
export function plainAddress(addr: string | undefined): string {
  if (!addr) return '';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

class WsPeer implements PeerSocket {
  constructor(
    private readonly ws: WebSocket,
    readonly remoteAddress: string,
  ) {}
  /**
   * ws has no public per-connection limit: its Receiver checks `_maxPayload` against each frame's
   * header (and the running total of a fragmented message) before it buffers the payload, and
   * reads the field at every frame, so changing it between frames is enough. A documented hack,
   * tested in test/fuzz.test.ts ("pre-hello frames are cut while read"); if a ws upgrade renames
   * the field, this returns false and the endpoint's limit applies (the server logs it once).
   */
  limitPayload(bytes: number): boolean {
    const receiver = (this.ws as unknown as { _receiver?: ReceiverInternals })._receiver;
    if (!receiver || typeof receiver._maxPayload !== 'number') return false;
    receiver._maxPayload = bytes;
    return true;
  }
  send(frame: Buffer): void {
    this.ws.send(frame);
  }
  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
  terminate(): void {
    this.ws.terminate();
  }
  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }
}

/** The request body, or null once it passes `limit` bytes (the rest is read and dropped). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size <= limit) chunks.push(d);
    });
    req.on('end', () => resolve(size > limit ? null : Buffer.concat(chunks)));
    req.on('error', () => resolve(null));
  });
}

export class WsTransport implements Transport {
  readonly kind = 'ws' as const;
  readonly #http: Server | HttpsServer;
  #wss: WebSocketServer | null = null;

  constructor(private readonly opts: TransportOptions) {
    if (opts.tls) {
      const https = createHttpsServer(loadTlsPair(opts.tls));
      // A peer that gives up during the handshake (it does not trust us, it spoke plain HTTP).
      https.on('tlsClientError', (err) => opts.log.debug({ err: err.message }, 'TLS handshake failed'));
      this.#http = https;
    } else {
      this.#http = createServer();
    }
  }

  get tls(): boolean {
    return !!this.opts.tls;
  }

  async reloadTls(): Promise<void> {
    if (!this.opts.tls) return;
    (this.#http as HttpsServer).setSecureContext(loadTlsPair(this.opts.tls));
  }

  async listen(handlers: TransportHandlers): Promise<void> {
    this.#http.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      void readBody(req, this.opts.maxPayloadBytes)
        .then((body) =>
          handlers.http({
            method: req.method ?? 'GET',
            path: q < 0 ? url : url.slice(0, q),
            query: q < 0 ? '' : url.slice(q + 1),
            authorization: req.headers.authorization,
            body,
          }),
        )
        .then(
        (reply) => {
          res.writeHead(reply.status, reply.headers);
          res.end(reply.body);
        },
        (err: Error) => {
          this.opts.log.error({ err }, 'http handler failed');
          res.destroy();
        },
      );
    });
    const wss = new WebSocketServer({ server: this.#http, perMessageDeflate: false, maxPayload: this.opts.maxPayloadBytes });
    this.#wss = wss;
    // wss re-emits the http server's errors (EADDRINUSE at listen): that one is answered below.
    wss.on('error', () => {});
    wss.on('connection', (ws, req) => {
      const peer = handlers.connection(new WsPeer(ws, plainAddress(req.socket.remoteAddress)));
      ws.on('message', (data, isBinary) => peer.message(data as Buffer, isBinary));
      ws.on('error', (err) => this.opts.log.debug({ err }, 'socket error'));
      ws.on('close', () => peer.close());
    });
    await new Promise<void>((resolve, reject) => {
      this.#http.once('error', reject);
      this.#http.listen(this.opts.port, this.opts.host, () => resolve());
    });
  }

  get port(): number {
    return (this.#http.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.#wss?.close();
    await new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeAllConnections();
    });
  }
}
