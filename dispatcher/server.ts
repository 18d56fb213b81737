/**
 * The dispatcher's thin network adapter: one HTTP server carrying the WebSocket endpoint and the
 * HTTP API. It authenticates the hello, decodes and validates every frame, feeds the core, and
 * once per turn of the event loop runs the scheduler, commits the journal and only then sends
 * what the core queued (so acknowledgements never precede durability).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import type { Logger } from 'pino';
import {
  Codec,
  ErrorCode,
  FalconetError,
  PROTOCOL_VERSION,
  compileInbound,
  ClientMessageSchemas,
  ExecutorMessageSchemas,
  type ClientMessage,
  type ExecutorMessage,
  type InboundValidator,
  type WireError,
} from '../protocol/index.js';
import { DispatcherCore, type Outbox } from './core.js';
import { nullJournal, systemClock, type Clock, type ConnId, type Journal } from './model.js';
import type { DispatcherConfig } from './config.js';
import { metricsFor } from './metrics.js';

const validateClient = compileInbound<ClientMessage>(ClientMessageSchemas);
const validateExecutor = compileInbound<ExecutorMessage>(ExecutorMessageSchemas);

/** WebSocket close codes paired with the error codes that cause them. */
const CLOSE_FOR: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.FRAME_TOO_LARGE]: 1009,
  [ErrorCode.SHUTTING_DOWN]: 1001,
  [ErrorCode.INTERNAL]: 1011,
};

/** What one connection was sent in one turn, held until that turn's changes are committed. */
interface Outgoing {
  c: Conn;
  msgs: unknown[];
  close: WireError | null;
}

interface Conn {
  readonly id: ConnId;
  readonly ws: WebSocket;
  role: 'client' | 'executor' | null;
  out: unknown[];
  closing: WireError | null;
  helloTimer: NodeJS.Timeout | null;
}

export class DispatcherServer {
  readonly core: DispatcherCore;
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  readonly #codec: Codec;
  readonly #conns = new Map<ConnId, Conn>();
  readonly #dirty = new Set<Conn>();
  #nextConn = 1;
  #flushQueued = false;
  #timers: NodeJS.Timeout[] = [];
  #stopping = false;
  #failed = false;
  /** Turns whose messages wait for a commit, oldest first. */
  #held: Outgoing[][] = [];
  #committing: Promise<void> | null = null;
  readonly #metrics;

  private constructor(
    readonly config: DispatcherConfig,
    private readonly log: Logger,
    private readonly journal: Journal & { commit?(): Promise<void> | null | void },
    clock: Clock,
    private readonly onFatal: (err: Error) => void,
  ) {
    this.#codec = new Codec({ maxFrameBytes: config.maxFrameBytes });
    const outbox: Outbox = {
      toClient: (conn, msg) => this.#send(conn, msg),
      toExecutor: (conn, msg) => this.#send(conn, msg),
      close: (conn, code, message) => {
        const c = this.#conns.get(conn);
        if (c) this.#fail(c, { code, message, retryable: false });
      },
    };
    this.core = new DispatcherCore(config, outbox, clock, journal);
    this.#metrics = metricsFor(this.core);
    this.#http = createServer((req, res) => void this.#onHttp(req, res));
    this.#wss = new WebSocketServer({
      server: this.#http,
      perMessageDeflate: false,
      // ws itself cuts off far-oversized frames; between 1× and 2× we answer FRAME_TOO_LARGE.
      maxPayload: config.maxFrameBytes * 2,
    });
    this.#wss.on('connection', (ws) => this.#onConnection(ws));
  }

  /**
   * Builds the core, lets `recover` load it from the store, then listens; resolves once the port
   * is bound. `onFatal` is called if the store fails: nothing more is acknowledged after that.
   */
  static async start(
    config: DispatcherConfig,
    log: Logger,
    opts: {
      journal?: Journal & { commit?(): Promise<void> | null | void };
      clock?: Clock;
      recover?: (core: DispatcherCore) => Promise<void> | void;
      onFatal?: (err: Error) => void;
    } = {},
  ): Promise<DispatcherServer> {
    const server = new DispatcherServer(config, log, opts.journal ?? nullJournal, opts.clock ?? systemClock, opts.onFatal ?? (() => {}));
    await opts.recover?.(server.core);
    await new Promise<void>((resolve, reject) => {
      server.#http.once('error', reject);
      server.#http.listen(config.port, config.host, () => resolve());
    });
    server.#timers.push(setInterval(() => server.#tick(), config.tickMs));
    server.#timers.push(setInterval(() => server.#heartbeat(), config.heartbeatMs));
    return server;
  }

  get port(): number {
    return (this.#http.address() as AddressInfo).port;
  }

  get url(): string {
    const host = this.config.host.includes(':') ? `[${this.config.host}]` : this.config.host;
    return `ws://${host}:${this.port}`;
  }

  // ---- connections ------------------------------------------------------------------------------

  #onConnection(ws: WebSocket): void {
    const c: Conn = { id: this.#nextConn++, ws, role: null, out: [], closing: null, helloTimer: null };
    this.#conns.set(c.id, c);
    if (this.#stopping) {
      this.#fail(c, { code: ErrorCode.SHUTTING_DOWN, message: 'dispatcher is shutting down', retryable: true });
      return;
    }
    c.helloTimer = setTimeout(() => {
      this.#fail(c, { code: ErrorCode.HELLO_TIMEOUT, message: `no hello within ${this.config.helloTimeoutMs} ms`, retryable: true });
    }, this.config.helloTimeoutMs);
    ws.on('message', (data, isBinary) => this.#onFrame(c, data, isBinary));
    ws.on('error', (err) => this.log.debug({ err, conn: c.id }, 'socket error'));
    ws.on('close', () => this.#onClose(c));
  }

  #onClose(c: Conn): void {
    if (c.helloTimer) clearTimeout(c.helloTimer);
    this.#conns.delete(c.id);
    this.#dirty.delete(c);
    if (c.role === 'client') this.core.clientGone(c.id);
    else if (c.role === 'executor') this.core.executorGone(c.id);
    this.#queueFlush();
  }

  #onFrame(c: Conn, data: RawData, isBinary: boolean): void {
    if (c.closing) return;
    let messages: unknown[];
    try {
      if (!isBinary) throw new FalconetError(ErrorCode.BAD_FRAME, 'text frames are not part of the protocol; send binary msgpack');
      messages = this.#codec.decode(data as Buffer);
    } catch (err) {
      const e = err instanceof FalconetError ? err : new FalconetError(ErrorCode.BAD_FRAME, String(err));
      this.#fail(c, e.toWire());
      return;
    }
    for (const raw of messages) {
      if (c.closing) break;
      try {
        if (c.role === null) this.#onHello(c, raw);
        else if (c.role === 'client') this.#onClientMessage(c, raw);
        else this.#onExecutorMessage(c, raw);
      } catch (err) {
        // A bug must cost one connection, never the dispatcher.
        this.log.error({ err, conn: c.id }, 'message handling failed');
        this.#fail(c, { code: ErrorCode.INTERNAL, message: String((err as Error).message), retryable: true });
      }
    }
    this.#queueFlush();
  }

  #onHello(c: Conn, raw: unknown): void {
    const head = raw as { t?: unknown; v?: unknown; role?: unknown; token?: unknown } | null;
    if (head === null || typeof head !== 'object' || head.t !== 'hello') {
      return this.#fail(c, { code: ErrorCode.HELLO_REQUIRED, message: 'the first message must be hello', retryable: false });
    }
    if (head.v !== PROTOCOL_VERSION) {
      return this.#fail(c, {
        code: ErrorCode.VERSION_MISMATCH,
        message: `protocol version ${String(head.v)} is not supported; this dispatcher speaks ${PROTOCOL_VERSION}`,
        retryable: false,
      });
    }
    const role = head.role === 'client' || head.role === 'executor' ? head.role : null;
    if (!role) return this.#fail(c, { code: ErrorCode.INVALID_MESSAGE, message: 'hello.role must be client or executor', retryable: false });
    const checked = (role === 'client' ? validateClient : validateExecutor)(raw);
    if (!checked.ok) return this.#fail(c, checked.error);
    const authError = this.#authenticate(role, typeof head.token === 'string' ? head.token : undefined);
    if (authError) return this.#fail(c, authError);
    if (c.helloTimer) clearTimeout(c.helloTimer);
    c.helloTimer = null;
    c.role = role;
    const msg = checked.msg;
    if (msg.t !== 'hello') return;
    if (msg.role === 'client') {
      this.core.openSession(c.id, msg.session, msg.cursor, msg.leaseMs);
    } else {
      this.core.registerExecutor(c.id, msg.executor);
      this.log.info({ executor: msg.executor.id, slots: msg.executor.slots, addresses: msg.executor.addresses }, 'executor registered');
    }
  }

  #authenticate(role: 'client' | 'executor', token: string | undefined): WireError | null {
    const expected = role === 'client' ? this.config.clientToken : this.config.executorToken;
    const other = role === 'client' ? this.config.executorToken : this.config.clientToken;
    if (expected === undefined) return null;
    if (token !== undefined && sameSecret(token, expected)) return null;
    if (token !== undefined && other !== undefined && sameSecret(token, other)) {
      return { code: ErrorCode.AUTH_WRONG_ROLE, message: `this credential is for ${role === 'client' ? 'executors' : 'clients'}, not ${role}s`, retryable: false };
    }
    return { code: ErrorCode.AUTH_FAILED, message: token === undefined ? 'a token is required' : 'wrong token', retryable: false };
  }

  #onClientMessage(c: Conn, raw: unknown): void {
    const v = validateClient(raw);
    if (!v.ok) return this.#reject(c, v.error, raw);
    const msg = v.msg;
    switch (msg.t) {
      case 'submit':
        if (this.#stopping) return this.#send(c.id, { t: 'error', ref: msg.ref, code: ErrorCode.SHUTTING_DOWN, message: 'dispatcher is shutting down', retryable: true });
        return this.core.submit(c.id, msg);
      case 'cancel':
        return this.core.cancel(c.id, msg);
      case 'ack':
        return this.core.ack(c.id, msg.cursor);
      case 'drain': {
        const ok = this.core.drain(msg.executor);
        return this.#send(c.id, {
          t: 'reply',
          ref: msg.ref,
          ok,
          ...(ok ? {} : { error: { code: ErrorCode.NOT_FOUND, message: `no executor ${msg.executor}`, retryable: false } }),
        });
      }
      case 'hb':
        return;
      case 'hello':
        return this.#reject(c, { code: ErrorCode.INVALID_MESSAGE, message: 'hello was already received', retryable: false }, raw);
    }
  }

  #onExecutorMessage(c: Conn, raw: unknown): void {
    const v = validateExecutor(raw);
    if (!v.ok) return this.#reject(c, v.error, raw);
    const msg = v.msg;
    switch (msg.t) {
      case 'done':
        return this.core.attemptDone(c.id, msg.result);
      case 'pull':
        return this.core.pull(c.id, msg.n);
      case 'hb':
        return this.core.executorSeen(c.id);
      case 'bye':
        this.log.info({ conn: c.id, reason: msg.reason }, 'executor leaving');
        return this.core.executorBye(c.id);
      case 'hello':
        return this.#reject(c, { code: ErrorCode.INVALID_MESSAGE, message: 'hello was already received', retryable: false }, raw);
    }
  }

  /** A bad message costs only itself: answer with its code and keep the connection. */
  #reject(c: Conn, error: WireError, raw: unknown): void {
    const ref = (raw as { ref?: unknown } | null)?.ref;
    this.#send(c.id, { t: 'error', ...(typeof ref === 'number' && ref >= 0 ? { ref } : {}), ...error });
  }

  /** A bad frame or handshake ends the connection: send the error, then close. */
  #fail(c: Conn, error: WireError): void {
    if (c.closing) return;
    c.out.push({ t: 'error', ...error });
    c.closing = error;
    this.#dirty.add(c);
    this.#queueFlush();
  }

  #send(conn: ConnId, msg: unknown): void {
    const c = this.#conns.get(conn);
    if (!c || c.closing) return;
    c.out.push(msg);
    this.#dirty.add(c);
    this.#queueFlush();
  }

  // ---- the per-turn flush -----------------------------------------------------------------------

  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    setImmediate(() => this.#flush());
  }

  /**
   * Once per turn: schedule, then hand this turn's journal changes to the store. What goes to
   * clients (acknowledgements, results) is sent only once those changes, and every earlier
   * batch, are on disk: that is the durability and exactly-once promise. What goes to executors
   * is sent at once: an assignment that a crash forgets is only an attempt the restarted
   * dispatcher cancels when the executor reports it, and holding it would tie every slot's
   * turnaround to the commit latency.
   */
  #flush(): void {
    this.#flushQueued = false;
    if (this.#failed) return;
    this.core.schedule();
    const group: Outgoing[] = [];
    const now: Outgoing[] = [];
    for (const c of this.#dirty) {
      (c.role === 'client' ? group : now).push({ c, msgs: c.out, close: c.closing });
      c.out = [];
    }
    this.#dirty.clear();
    if (group.length > 0) this.#held.push(group);
    if (!this.#committing) this.#commit();
    this.#release(now);
  }

  /** Group commit: one batch in flight; what accumulates meanwhile goes in the next one. */
  #commit(): void {
    const groups = this.#held;
    this.#held = [];
    let pending: Promise<void> | null | void;
    try {
      pending = this.journal.commit?.();
    } catch (err) {
      return this.#storeFailed(err as Error);
    }
    if (!pending) {
      for (const g of groups) this.#release(g);
      return;
    }
    this.#committing = pending.then(
      () => {
        this.#committing = null;
        for (const g of groups) this.#release(g);
        if (this.#held.length > 0 && !this.#failed) this.#commit();
      },
      (err: Error) => this.#storeFailed(err),
    );
  }

  #release(group: Outgoing[]): void {
    for (const { c, msgs, close } of group) {
      if (msgs.length > 0) {
        try {
          for (const frame of this.#codec.encode(msgs)) c.ws.send(frame);
        } catch (err) {
          this.log.error({ err, conn: c.id }, 'encode failed');
        }
      }
      if (close) {
        c.ws.close(CLOSE_FOR[close.code as ErrorCode] ?? 1008, close.code);
        // A peer that ignores the close handshake must not hold the socket forever.
        setTimeout(() => c.ws.terminate(), 2000).unref();
      }
    }
  }

  /**
   * Crash-only: what the core holds is now ahead of the disk, so nothing more is acknowledged.
   * Clients resend what was not acknowledged to the next dispatcher on this store.
   */
  #storeFailed(err: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    this.log.fatal({ err }, 'store commit failed; refusing to acknowledge anything more');
    const wire = { code: ErrorCode.STORE_FAILED, message: err.message, retryable: true };
    for (const c of this.#conns.values()) {
      c.ws.send(this.#codec.encode([{ t: 'error', ...wire }])[0]);
      c.ws.close(1011, ErrorCode.STORE_FAILED);
    }
    this.onFatal(err);
  }

  #tick(): void {
    this.core.tick();
    this.#queueFlush();
  }

  #heartbeat(): void {
    const hb = { t: 'hb', at: Date.now() };
    for (const c of this.#conns.values()) if (c.role !== null) this.#send(c.id, hb);
  }

  // ---- HTTP -------------------------------------------------------------------------------------

  async #onHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return json(res, 200, { ok: !this.#stopping });
    if (this.config.httpAuth && this.config.clientToken !== undefined) {
      const auth = req.headers.authorization ?? '';
      const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      if (!sameSecret(token, this.config.clientToken)) {
        return json(res, 401, { error: { code: ErrorCode.AUTH_FAILED, message: 'Authorization: Bearer <client token> required', retryable: false } });
      }
    }
    if (path === '/api/status') return json(res, 200, this.core.status());
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': this.#metrics.contentType });
      res.end(await this.#metrics.metrics());
      return;
    }
    json(res, 404, { error: { code: ErrorCode.NOT_FOUND, message: `no route ${path}`, retryable: false } });
  }

  /**
   * Graceful shutdown: refuse new work, send what is queued, commit, close every connection as
   * "going away". Executors keep running their tasks and reconnect to the next dispatcher.
   */
  async close(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const t of this.#timers) clearInterval(t);
    this.#flush();
    while (this.#committing) await this.#committing.catch(() => {});
    for (const c of this.#conns.values()) {
      if (c.helloTimer) clearTimeout(c.helloTimer);
      c.ws.close(1001, ErrorCode.SHUTTING_DOWN);
    }
    this.#wss.close();
    await new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeAllConnections();
    });
    for (const c of this.#conns.values()) c.ws.terminate();
  }
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}
