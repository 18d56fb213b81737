/**
 * The default transport: the `ws` package on a node:http server, both on one port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { PeerSocket, Transport, TransportHandlers, TransportOptions } from './transport.js';

class WsPeer implements PeerSocket {
  constructor(private readonly ws: WebSocket) {}
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
  readonly #http: Server;
  #wss: WebSocketServer | null = null;

  constructor(private readonly opts: TransportOptions) {
    this.#http = createServer();
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
    wss.on('connection', (ws) => {
      const peer = handlers.connection(new WsPeer(ws));
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
