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

export class WsTransport implements Transport {
  readonly kind = 'ws' as const;
  readonly #http: Server;
  #wss: WebSocketServer | null = null;

  constructor(private readonly opts: TransportOptions) {
    this.#http = createServer();
  }

  async listen(handlers: TransportHandlers): Promise<void> {
    this.#http.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? '/').split('?')[0];
      handlers.http(path, req.headers.authorization).then(
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
