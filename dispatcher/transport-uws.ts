/**
 * The µWebSockets.js transport (`--transport uws`): WebSocket endpoint and HTTP API on one port,
 * served by uWS's own event handling in C++ (~4.6× ws per message here, ../shared/PLATFORM.md).
 *
 * Only `@trufflesuite/uws-js-unofficial` runs here (binaries for Node 16/18/20). Its entry point
 * silently falls back to a slow JS emulation when the binary does not load; we load the binary
 * itself, so a missing module or binary is TRANSPORT_UNAVAILABLE at startup, never a quiet
 * downgrade.
 *
 * Differences from ws that this file hides:
 * - uWS drops a frame sent while more than `maxBackpressure` bytes wait (send() returns 2).
 *   Such frames are queued here, in order, and sent on `drain`; a close waits for the queue.
 * - A uWS socket must not be touched after its close event: every call checks `closed`.
 * - A message's ArrayBuffer is valid only during the callback: it is copied.
 * - Its defaults close idle sockets after 120 s and send pings; both are off, as with ws.
 * - It binds with SO_REUSEPORT by default; we ask for an exclusive port, as node:http does.
 *
 * TLS: uWS's SSLApp (this build has it), reading the PEM files itself. The certificate cannot be
 * reloaded: uWS.js has no call that changes a listening app's certificate, and a new SSLApp cannot
 * take the port over while connections accepted by the old one live (the exclusive listen socket
 * sets no SO_REUSEADDR, so the kernel refuses the bind: tried, EADDRINUSE). reloadTls() therefore
 * rejects and says so; renewing the certificate means restarting the dispatcher (executors and
 * clients reconnect and resume), or using --transport ws. (SNI contexts, addServerName, could be
 * swapped, but only for peers that dial by name; those dialing an address get the default one.)
 */
import { createRequire } from 'node:module';
import { STATUS_CODES } from 'node:http';
import { dirname, join } from 'node:path';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { loadTlsPair, type PeerHandlers, type PeerSocket, type Transport, type TransportHandlers, type TransportOptions } from './transport.js';

/** The package (an optionalDependency). */
export const UWS_PACKAGE = '@trufflesuite/uws-js-unofficial';

// ---- the subset of the uWS.js API used here (its own typings may not be installed) -----------

interface UwsWebSocket {
  send(message: Uint8Array, isBinary: boolean): number;
  getBufferedAmount(): number;
  end(code: number, shortMessage: string): void;
  close(): void;
  getUserData(): { peer?: UwsPeer };
  getRemoteAddressAsText(): ArrayBuffer;
}
interface UwsHttpResponse {
  writeStatus(status: string): UwsHttpResponse;
  writeHeader(key: string, value: string): UwsHttpResponse;
  end(body: string): UwsHttpResponse;
  onAborted(handler: () => void): UwsHttpResponse;
  onData(handler: (chunk: ArrayBuffer, isLast: boolean) => void): void;
  cork(cb: () => void): UwsHttpResponse;
}
interface UwsHttpRequest {
  getUrl(): string;
  getMethod(): string;
  getQuery(): string | undefined;
  getHeader(lowerCaseKey: string): string;
}
interface UwsBehavior {
  maxPayloadLength: number;
  maxBackpressure: number;
  closeOnBackpressureLimit: number;
  idleTimeout: number;
  maxLifetime: number;
  sendPingsAutomatically: boolean;
  compression: number;
  open(ws: UwsWebSocket): void;
  message(ws: UwsWebSocket, message: ArrayBuffer, isBinary: boolean): void;
  drain(ws: UwsWebSocket): void;
  close(ws: UwsWebSocket, code: number, message: ArrayBuffer): void;
}
interface UwsApp {
  ws(pattern: string, behavior: UwsBehavior): UwsApp;
  any(pattern: string, handler: (res: UwsHttpResponse, req: UwsHttpRequest) => void): UwsApp;
  listen(host: string, port: number, options: number, cb: (listenSocket: object | false) => void): UwsApp;
}
/** SSLApp's options (file names: uWS reads the files itself). */
interface UwsSslOptions {
  cert_file_name: string;
  key_file_name: string;
}
export interface UwsModule {
  App(): UwsApp;
  /** Absent from builds without TLS. */
  SSLApp?(options: UwsSslOptions): UwsApp;
  us_listen_socket_close(listenSocket: object): void;
  us_socket_local_port(listenSocket: object): number;
  LIBUS_LISTEN_EXCLUSIVE_PORT: number;
}

/** send() results. */
const DROPPED = 2;
/** Bytes uWS buffers per socket before frames wait in our queue instead. */
const MAX_BACKPRESSURE = 1 << 20;

/**
 * Loads the µWebSockets.js binary for this Node (not the package's JS fallback).
 * Throws FalconetError TRANSPORT_UNAVAILABLE with what is missing.
 */
export function loadUws(pkg = UWS_PACKAGE): UwsModule {
  const require = createRequire(import.meta.url);
  let dir: string;
  try {
    dir = dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new FalconetError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `--transport uws needs the optional package ${pkg}, which is not installed (npm install --include=optional); use --transport ws`,
    );
  }
  const binary = join(dir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  try {
    return require(binary) as UwsModule;
  } catch (err) {
    throw new FalconetError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `--transport uws: µWebSockets.js has no working binary for Node ${process.version} on ${process.platform}-${process.arch} (${(err as Error).message.split('\n')[0]}); use --transport ws`,
    );
  }
}

class UwsPeer implements PeerSocket {
  closed = false;
  handlers: PeerHandlers | null = null;
  /** Frames uWS refused (over its backpressure limit), oldest first. */
  #queue: Buffer[] = [];
  #queuedBytes = 0;
  #closeWith: [number, string] | null = null;

  /** Read in `open`, while uWS lets us. */
  readonly remoteAddress: string;

  constructor(private readonly ws: UwsWebSocket) {
    let addr = '';
    try {
      addr = Buffer.from(ws.getRemoteAddressAsText()).toString();
    } catch {}
    this.remoteAddress = addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
  }

  /**
   * uWS has one `maxPayloadLength` per endpoint, fixed at startup, and buffers a message whole in
   * C++ before the JS callback sees it: a per-connection limit is not possible here. Pre-hello
   * peers are bounded by their count only (docs/security.md).
   */
  limitPayload(_bytes: number): boolean {
    return false;
  }

  send(frame: Buffer): void {
    if (this.closed || this.#closeWith) return;
    if (this.#queue.length > 0 || this.ws.send(frame, true) === DROPPED) {
      this.#queue.push(frame);
      this.#queuedBytes += frame.length;
    }
  }

  close(code: number, reason: string): void {
    if (this.closed || this.#closeWith) return;
    if (this.#queue.length > 0) this.#closeWith = [code, reason];
    else this.ws.end(code, reason);
  }

  terminate(): void {
    if (!this.closed) this.ws.close();
  }

  get bufferedAmount(): number {
    return this.closed ? 0 : this.ws.getBufferedAmount() + this.#queuedBytes;
  }

  /** uWS wrote some of its buffer: send what waits, then a close that waited for it. */
  drain(): void {
    while (this.#queue.length > 0 && !this.closed) {
      const frame = this.#queue[0];
      if (this.ws.send(frame, true) === DROPPED) return;
      this.#queue.shift();
      this.#queuedBytes -= frame.length;
    }
    if (this.#closeWith && !this.closed) this.ws.end(...this.#closeWith);
  }

  gone(): void {
    this.closed = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.handlers?.close();
  }
}

export class UwsTransport implements Transport {
  readonly kind = 'uws' as const;
  readonly #app: UwsApp;
  #listenSocket: object | null = null;
  #port = 0;

  constructor(
    private readonly uws: UwsModule,
    private readonly opts: TransportOptions,
  ) {
    if (opts.tls) {
      if (typeof uws.SSLApp !== 'function') {
        throw new FalconetError(
          ErrorCode.TRANSPORT_UNAVAILABLE,
          `--transport uws with --tls-cert/--tls-key: this µWebSockets.js build has no TLS (no SSLApp); use --transport ws for TLS`,
        );
      }
      loadTlsPair(opts.tls); // a clear error before uWS reads the files its own way
      this.#app = uws.SSLApp({ cert_file_name: opts.tls.certFile, key_file_name: opts.tls.keyFile });
    } else {
      this.#app = uws.App();
    }
  }

  get tls(): boolean {
    return !!this.opts.tls;
  }

  async listen(handlers: TransportHandlers): Promise<void> {
    this.#routes(this.#app, handlers);
    await new Promise<void>((resolve, reject) => {
      this.#app.listen(this.opts.host, this.opts.port, this.uws.LIBUS_LISTEN_EXCLUSIVE_PORT, (ls) => {
        if (!ls) return reject(new Error(`listen ${this.opts.host}:${this.opts.port} failed (address in use or not available)`));
        this.#listenSocket = ls;
        this.#port = this.uws.us_socket_local_port(ls);
        resolve();
      });
    });
  }

  async reloadTls(): Promise<void> {
    if (!this.opts.tls) return;
    throw new Error(
      'the uws transport cannot reload its TLS certificate (µWebSockets.js cannot change a listening app\'s certificate, nor rebind its port while connections live); restart the dispatcher to use the new certificate, or run it with --transport ws',
    );
  }

  #routes(app: UwsApp, handlers: TransportHandlers): void {
    app.ws('/*', {
      maxPayloadLength: this.opts.maxPayloadBytes,
      maxBackpressure: MAX_BACKPRESSURE,
      closeOnBackpressureLimit: 0,
      idleTimeout: 0,
      maxLifetime: 0,
      sendPingsAutomatically: false,
      compression: 0,
      open: (ws) => {
        const peer = new UwsPeer(ws);
        ws.getUserData().peer = peer;
        peer.handlers = handlers.connection(peer);
      },
      message: (ws, message, isBinary) => {
        // The ArrayBuffer is neutered when this returns; decoded messages may point into it.
        ws.getUserData().peer?.handlers?.message(Buffer.from(message.slice(0)), isBinary);
      },
      drain: (ws) => ws.getUserData().peer?.drain(),
      close: (ws) => ws.getUserData().peer?.gone(),
    });
    app.any('/*', (res, req) => {
      // The request object is valid only in this callback: copy what we need now.
      const path = req.getUrl();
      const method = req.getMethod().toUpperCase();
      const query = req.getQuery() ?? '';
      const authorization = req.getHeader('authorization');
      const hasBody = req.getHeader('content-length') !== '' || req.getHeader('transfer-encoding') !== '';
      let aborted = false;
      res.onAborted(() => (aborted = true));
      const chunks: Buffer[] = [];
      let size = 0;
      const body = new Promise<Buffer | null>((resolve) => {
        if (!hasBody) return resolve(Buffer.alloc(0));
        res.onData((chunk, isLast) => {
          size += chunk.byteLength;
          if (size <= this.opts.maxPayloadBytes) chunks.push(Buffer.from(chunk.slice(0))); // neutered after return
          if (isLast) resolve(size > this.opts.maxPayloadBytes ? null : Buffer.concat(chunks));
        });
      });
      body.then((b) => handlers.http({ method, path, query, authorization: authorization === '' ? undefined : authorization, body: b })).then(
        (reply) => {
          if (aborted) return;
          res.cork(() => {
            res.writeStatus(`${reply.status} ${STATUS_CODES[reply.status] ?? ''}`);
            for (const [k, v] of Object.entries(reply.headers)) res.writeHeader(k, v);
            res.end(reply.body);
          });
        },
        (err: Error) => {
          this.opts.log.error({ err }, 'http handler failed');
          if (!aborted) res.cork(() => res.writeStatus('500 Internal Server Error').end(''));
        },
      );
    });
  }

  get port(): number {
    return this.#port;
  }

  async close(): Promise<void> {
    if (this.#listenSocket) this.uws.us_listen_socket_close(this.#listenSocket);
    this.#listenSocket = null;
  }
}
