/**
 * The dispatcher's thin network adapter: the WebSocket endpoint and the HTTP API, on one port of
 * a transport (transport.ts: ws by default, or uWS). It authenticates the hello, decodes and validates every frame, feeds the core, and
 * once per turn of the event loop runs the scheduler, commits the journal and only then sends
 * what the core queued (so acknowledgements never precede durability).
 */
import type { Logger } from 'pino';
import {
  Codec,
  ErrorCode,
  RECORDS_CAP,
  PEERS_CAP,
  assertStandardMsgpack,
  isStandardMsgpack,
  FalconetError,
  PROTOCOL_VERSION,
  compileInbound,
  ClientMessageSchemas,
  ExecutorMessageSchemas,
  type ClientMessage,
  type ExecutorMessage,
  type LogChunk,
  type TaskResult,
  wireError,
  type WireError,
} from '../protocol/index.js';
import { DispatcherCore, type Outbox } from './core.js';
import { nullJournal, systemClock, type Clock, type ConnId } from './model.js';
import { Outbound, type CommittingJournal, type Conn } from './outbound.js';
import { cleartextWarning, isLoopback, type DispatcherConfig } from './config.js';
import { metricsFor, type ServerCounters } from './metrics.js';
import { createTransport, type PeerHandlers, type PeerSocket, type Transport } from './transport.js';
import { handleHttp, withStoredResults, type SessionRouter } from './http-api.js';
import { sameSecret } from './sessions.js';
import { PendingHellos } from './pending-hellos.js';
import type { Found } from './queries.js';
import type { MemoLoader } from './memo.js';

const validateClient = compileInbound<ClientMessage>(ClientMessageSchemas);
/** Live output goes to a reader only while its socket has less than this waiting (else it waits in its bounded buffer). */
const LOG_LOW_WATER_BYTES = 1 << 20;
/** Output characters per `log` message at most. */
const LOG_MESSAGE_CHARS = 256 * 1024;
const validateExecutor = compileInbound<ExecutorMessage>(ExecutorMessageSchemas);

/** Reads finished results the core no longer holds from the store, by (session, seq). */
export type ResultLookup = (refs: Array<{ session: string; seq: number }>) => Promise<Array<TaskResult | null>>;

/** What a provisioner adds to the dispatcher's API. */
export interface ServerExtension {
  status(): Record<string, unknown>;
  resetProvisioner(): void;
}

export class DispatcherServer {
  readonly core: DispatcherCore;
  /** Set by a provisioner: its status joins /api/status, and clients can reset it. */
  extension: ServerExtension | null = null;
  /** Several dispatchers over one database: where each session is served (cluster.ts); null alone. */
  router: SessionRouter | null = null;
  readonly #transport: Transport;
  /** Decodes every peer's frames (records or not); encodes for peers that announced records. */
  readonly #codec: Codec;
  /** Standard msgpack, for every other peer (and for anything sent before a hello). */
  readonly #plain: Codec;
  readonly #conns = new Map<ConnId, Conn>();
  /** The live dispatchers' URLs, sorted (see setPeers). */
  #peers: readonly string[] = [];
  readonly #out: Outbound;
  #nextConn = 1;
  #timers: NodeJS.Timeout[] = [];
  #stopping = false;
  /** The /metrics registry; main.ts adds the store's and the provisioner's metrics to it. */
  readonly metrics;
  /** Credentials refused, by the role asked for (HTTP: the task API's bearer token). */
  readonly #authFailures = { client: 0, executor: 0, http: 0 };
  /** Connections that have not completed their hello, in total and per remote address. */
  readonly #pending: PendingHellos;
  /** The transport's endpoint-wide frame limit, restored on a peer once its hello is accepted. */
  #maxPayloadBytes = 0;
  /** Refusals over the pending-hello cap since the last log line (logged at most once a second). */
  #refused = 0;
  #refusedLoggedAt = 0;
  #warnedNoLimit = false;

  private constructor(
    readonly config: DispatcherConfig,
    private readonly log: Logger,
    transport: Transport,
    journal: CommittingJournal,
    private readonly clock: Clock,
    onFatal: (err: Error) => void,
    private readonly lookupResults: ResultLookup | undefined,
    lookupMemo?: MemoLoader,
  ) {
    this.#transport = transport;
    this.#pending = new PendingHellos(config);
    this.#codec = new Codec({ maxFrameBytes: config.maxFrameBytes });
    this.#plain = new Codec({ maxFrameBytes: config.maxFrameBytes, records: false });
    this.#out = new Outbound(journal, log, config.maxBufferedBytes, () => {
      this.core.schedule();
      if (this.core.logsWaiting.size > 0) this.#pumpLogs();
    }, (err) => {
      const wire = wireError(ErrorCode.STORE_FAILED, err.message);
      for (const c of this.#conns.values()) {
        c.ws.send(c.codec.encode([{ t: 'error', ...wire }])[0]);
        c.ws.close(1011, ErrorCode.STORE_FAILED);
      }
      onFatal(err);
    });
    const outbox: Outbox = {
      toClient: (conn, msg) => this.#send(conn, msg),
      toExecutor: (conn, msg) => this.#send(conn, msg),
      resultReceived: (conn, uid, attempt) => {
        const c = this.#conns.get(conn);
        if (c) this.#out.ackResult(c, uid, attempt);
      },
      close: (conn, code, message, to) => {
        const c = this.#conns.get(conn);
        if (c) this.#out.fail(c, wireError(code, message, to));
      },
    };
    this.core = new DispatcherCore(config, outbox, clock, journal);
    this.core.connectMemo(() => this.#out.queueFlush(), lookupMemo);
    this.metrics = metricsFor(this.core.view, this.#counters());
  }

  /**
   * Builds the core, lets `recover` load it from the store, then listens; resolves once the port
   * is bound. `onFatal` is called if the store fails: nothing more is acknowledged after that.
   */
  static async start(
    config: DispatcherConfig,
    log: Logger,
    opts: {
      journal?: CommittingJournal;
      clock?: Clock;
      recover?: (core: DispatcherCore) => Promise<void> | void;
      /** Stored results, for task queries (the durable store's). */
      lookupResults?: ResultLookup;
      /** Memoized results by key, for tasks with a `cacheKey` (the durable store's; else kept in memory). */
      lookupMemo?: MemoLoader;
      onFatal?: (err: Error) => void;
    } = {},
  ): Promise<DispatcherServer> {
    // The transport first: a uWS that cannot load fails before the store is replayed.
    const transport = await createTransport(config.transport, {
      host: config.host,
      port: config.port,
      // The transport cuts off far-oversized frames; between 1× and 2× we answer FRAME_TOO_LARGE.
      maxPayloadBytes: config.maxFrameBytes * 2,
      log,
      tls: config.tls,
    });
    const server = new DispatcherServer(config, log, transport, opts.journal ?? nullJournal, opts.clock ?? systemClock, opts.onFatal ?? (() => {}), opts.lookupResults, opts.lookupMemo);
    server.#maxPayloadBytes = config.maxFrameBytes * 2;
    await opts.recover?.(server.core);
    await transport.listen({
      connection: (peer) => server.#onConnection(peer),
      http: (req) =>
        handleHttp(req, {
          core: server.core,
          metrics: server.metrics,
          lookup: opts.lookupResults,
          token: () => (config.httpAuth ? config.clientToken : undefined),
          isAdmin: (bearer) => config.clientToken === undefined || (bearer !== undefined && config.adminToken !== undefined && sameSecret(bearer, config.adminToken)),
          stopping: () => server.#stopping,
          authFailed: () => server.#authFailures.http++,
          statusExtra: () => ({ ...server.tlsStatus(), logs: server.core.logStats(), ...server.extension?.status(), ...(server.router ? { dispatchers: server.router.dispatchers() } : {}) }),
          get router() {
            return server.router;
          },
          durable: () => server.#out.durable(),
        }),
    });
    server.#timers.push(setInterval(() => server.#tick(), config.tickMs));
    server.#timers.push(setInterval(() => server.#heartbeat(), config.heartbeatMs));
    return server;
  }

  get port(): number {
    return this.#transport.port;
  }

  get transport(): Transport['kind'] {
    return this.#transport.kind;
  }

  get url(): string {
    const host = this.config.host.includes(':') ? `[${this.config.host}]` : this.config.host;
    return `${this.#transport.tls ? 'wss' : 'ws'}://${host}:${this.port}`;
  }

  /** Runs the scheduler and commits soon (results or partitions arrived from the store, not a peer). */
  wake(): void {
    this.#out.queueFlush();
  }

  /** Reads the TLS certificate and key again (SIGHUP); rejects, keeping the old pair, if they do not load. */
  reloadTls(): Promise<void> {
    return this.#transport.reloadTls();
  }

  /**
   * `/api/status`'s `tls` (true: wss:// and https://) and, off loopback without TLS,
   * `tlsWarning`: that tokens and tasks travel in clear.
   */
  tlsStatus(): { tls: boolean; tlsWarning?: string } {
    if (this.#transport.tls) return { tls: true };
    return isLoopback(this.config.host) ? { tls: false } : { tls: false, tlsWarning: cleartextWarning(this.config.host) };
  }

  /** What /metrics reads from the adapter, at scrape time. */
  #counters(): ServerCounters {
    return {
      connections: () => {
        const n = { client: 0, executor: 0, handshake: 0 };
        for (const c of this.#conns.values()) n[c.role ?? 'handshake']++;
        return n;
      },
      slowConsumerDrops: this.#out.slowConsumerDrops,
      authFailures: this.#authFailures,
    };
  }

  // ---- connections ------------------------------------------------------------------------------

  /** Connections without a completed hello: in total, and from `address`. */
  pendingHellos(address?: string): number {
    return this.#pending.count(address);
  }

  /**
   * Over the pending-hello cap (in total or for this address): answer RATE_LIMITED and close
   * (1013, try again later) at once, holding nothing for the peer; the socket is dropped after
   * 2 s if the peer ignores the close.
   */
  #refuseOverCap(ws: PeerSocket): PeerHandlers | null {
    const address = ws.remoteAddress;
    const why = this.#pending.overCap(address);
    if (why === null) return null;
    const error = wireError(ErrorCode.RATE_LIMITED, `${why}; try again later`);
    try {
      ws.send(this.#plain.encode([{ t: 'error', ...error }])[0]);
      ws.close(1013, ErrorCode.RATE_LIMITED);
    } catch {}
    setTimeout(() => ws.terminate(), 2000).unref();
    this.#refused++;
    const now = Date.now();
    if (now - this.#refusedLoggedAt >= 1000) {
      this.log.warn({ refused: this.#refused, address, pending: this.#pending.count(), fromAddress: this.#pending.count(address) }, 'connections refused: too many pending hellos');
      this.#refused = 0;
      this.#refusedLoggedAt = now;
    }
    return { message: () => {}, close: () => {} };
  }

  #addPending(c: Conn): void {
    this.#pending.add(c.id, c.ws.remoteAddress);
    if (!c.ws.limitPayload(this.config.helloMaxBytes) && !this.#warnedNoLimit && this.#transport.kind === 'ws') {
      this.#warnedNoLimit = true;
      this.log.warn('this ws version has no per-connection frame limit to set; pre-hello frames are bounded by --max-frame-bytes only');
    }
  }

  #onConnection(ws: PeerSocket): PeerHandlers {
    if (!this.#stopping) {
      const refused = this.#refuseOverCap(ws);
      if (refused) return refused;
    }
    const c: Conn = { id: this.#nextConn++, ws, role: null, codec: this.#plain, out: [], acks: [], closing: null, helloTimer: null, admin: false, heardAt: Date.now() };
    this.#conns.set(c.id, c);
    const handlers: PeerHandlers = {
      message: (data, isBinary) => this.#onFrame(c, data, isBinary),
      close: () => this.#onClose(c),
    };
    if (this.#stopping) {
      this.#out.fail(c, wireError(ErrorCode.SHUTTING_DOWN, 'dispatcher is shutting down'));
      return handlers;
    }
    this.#addPending(c);
    c.helloTimer = setTimeout(() => {
      this.#out.fail(c, wireError(ErrorCode.HELLO_TIMEOUT, `no hello within ${this.config.helloTimeoutMs} ms`));
    }, this.config.helloTimeoutMs);
    return handlers;
  }

  #onClose(c: Conn): void {
    if (c.helloTimer) clearTimeout(c.helloTimer);
    this.#pending.release(c.id);
    this.#conns.delete(c.id);
    this.#out.forget(c);
    if (c.role === 'client') this.core.clientGone(c.id);
    else if (c.role === 'executor') this.core.executorGone(c.id);
    this.#out.queueFlush();
  }

  #onFrame(c: Conn, data: Buffer, isBinary: boolean): void {
    if (c.closing) return;
    // Only a client's silence is judged (a second reader of its session); executors have leases.
    if (c.role === 'client') c.heardAt = Date.now();
    let messages: unknown[];
    try {
      if (!isBinary) throw new FalconetError(ErrorCode.BAD_FRAME, 'text frames are not part of the protocol; send binary msgpack');
      // A peer past its hello without the records capability speaks standard msgpack only.
      if (c.role !== null && c.codec === this.#plain && data.length <= this.config.maxFrameBytes) assertStandardMsgpack(data);
      // A peer whose hello itself came with records speaks msgpackr (an executor of an earlier
      // version, before the capability existed): it keeps records both ways.
      if (c.role === null && c.codec === this.#plain && !isStandardMsgpack(data)) c.codec = this.#codec;
      // ws cuts such frames while reading them (limitPayload); uWS hands them over whole.
      if (c.role === null && data.length > this.config.helloMaxBytes) {
        throw new FalconetError(ErrorCode.FRAME_TOO_LARGE, `a frame of ${data.length} bytes before the hello (limit ${this.config.helloMaxBytes}, --hello-max-bytes)`);
      }
      messages = this.#codec.decode(data);
    } catch (err) {
      const e = err instanceof FalconetError ? err : new FalconetError(ErrorCode.BAD_FRAME, String(err));
      this.#out.fail(c, e.toWire());
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
        this.#out.fail(c, wireError(ErrorCode.INTERNAL, String((err as Error).message)));
      }
    }
    this.#out.queueFlush();
  }

  #onHello(c: Conn, raw: unknown): void {
    const head = raw as { t?: unknown; v?: unknown; role?: unknown; token?: unknown } | null;
    if (head === null || typeof head !== 'object' || head.t !== 'hello') {
      return this.#out.fail(c, wireError(ErrorCode.HELLO_REQUIRED, 'the first message must be hello'));
    }
    if (head.v !== PROTOCOL_VERSION) {
      return this.#out.fail(c, wireError(ErrorCode.VERSION_MISMATCH, `protocol version ${String(head.v)} is not supported; this dispatcher speaks ${PROTOCOL_VERSION}`));
    }
    const role = head.role === 'client' || head.role === 'executor' ? head.role : null;
    if (!role) return this.#out.fail(c, wireError(ErrorCode.INVALID_MESSAGE, 'hello.role must be client or executor'));
    const checked = (role === 'client' ? validateClient : validateExecutor)(raw);
    if (!checked.ok) return this.#out.fail(c, checked.error);
    const auth = this.#authenticate(role, typeof head.token === 'string' ? head.token : undefined);
    if ('code' in auth) {
      this.#authFailures[role]++;
      return this.#out.fail(c, auth);
    }
    c.admin = auth.admin;
    if (c.helloTimer) clearTimeout(c.helloTimer);
    c.helloTimer = null;
    c.role = role;
    this.#pending.release(c.id);
    c.ws.limitPayload(this.#maxPayloadBytes);
    const msg = checked.msg;
    if (msg.t === 'hello' && msg.caps.includes(RECORDS_CAP)) c.codec = this.#codec;
    if (msg.t !== 'hello') return;
    if (msg.role === 'client') {
      // Several dispatchers: a session is served by the holder of its partition.
      const to = this.router && !(msg.session !== undefined && this.core.view.hasSession(msg.session)) ? this.router.route(msg.session) : null;
      if (to !== null) {
        const why = to === '' ? 'its partition is moving between dispatchers' : `it is served by ${to}`;
        return this.#out.fail(c, wireError(ErrorCode.MOVED, msg.session === undefined ? `no new session here now: ${why}` : `session ${msg.session}: ${why}`, to || undefined));
      }
      if (msg.attachOnly && msg.session !== undefined && !this.core.view.hasSession(msg.session)) {
        return this.#out.fail(c, wireError(ErrorCode.NOT_FOUND, `no session ${msg.session} (finished sessions are kept for --retention)`));
      }
      const refused = this.core.openSession(c.id, { id: msg.session, cursor: msg.cursor, leaseMs: msg.leaseMs, key: msg.key }, c.admin, (holder) => this.#silent(holder));
      if (refused) return this.#out.fail(c, refused);
      this.#tellPeers(c, msg.caps);
    } else {
      this.core.registerExecutor(c.id, msg.executor, msg.caps);
      this.#tellPeers(c, msg.caps);
      this.log.info({ executor: msg.executor.id, slots: msg.executor.slots, addresses: msg.executor.addresses }, 'executor registered');
    }
  }

  /**
   * Checks a hello's credential for `role`. The administrator token is a client credential that
   * may act on every session; with no client token at all (loopback only), every client is.
   */
  #authenticate(role: 'client' | 'executor', token: string | undefined): WireError | { admin: boolean } {
    const { clientToken, executorToken, adminToken } = this.config;
    const expected = role === 'client' ? clientToken : executorToken;
    if (expected === undefined) return { admin: role === 'client' };
    if (token !== undefined && sameSecret(token, expected)) return { admin: false };
    if (role === 'client' && token !== undefined && adminToken !== undefined && sameSecret(token, adminToken)) return { admin: true };
    const others = role === 'client' ? [executorToken] : [clientToken, adminToken];
    if (token !== undefined && others.some((o) => o !== undefined && sameSecret(token, o))) {
      return wireError(ErrorCode.AUTH_WRONG_ROLE, `this credential is for ${role === 'client' ? 'executors' : 'clients'}, not ${role}s`);
    }
    return wireError(ErrorCode.AUTH_FAILED, token === undefined ? 'a token is required' : 'wrong token');
  }

  #onClientMessage(c: Conn, raw: unknown): void {
    const v = validateClient(raw);
    if (!v.ok) return this.#reject(c, v.error, raw);
    const msg = v.msg;
    switch (msg.t) {
      case 'submit':
        if (this.#stopping) return this.#send(c.id, { t: 'error', ref: msg.ref, ...wireError(ErrorCode.SHUTTING_DOWN, 'dispatcher is shutting down') });
        return this.core.submit(c.id, msg);
      case 'cancel':
        return this.core.cancel(c.id, msg, c.admin);
      case 'ack':
        return this.core.ack(c.id, msg.cursor);
      case 'drain': {
        const ok = this.core.drain(msg.executor);
        return this.#send(c.id, {
          t: 'reply',
          ref: msg.ref,
          ok,
          ...(ok ? {} : { error: wireError(ErrorCode.NOT_FOUND, `no executor ${msg.executor}`) }),
        });
      }
      case 'provisioner': {
        if (!this.extension) {
          return this.#send(c.id, { t: 'reply', ref: msg.ref, ok: false, error: wireError(ErrorCode.NOT_FOUND, 'this dispatcher runs no provisioner') });
        }
        this.extension.resetProvisioner();
        return this.#send(c.id, { t: 'reply', ref: msg.ref, ok: true });
      }
      case 'query':
        return void this.#answerQuery(c, msg).catch((err: unknown) => {
          this.log.error({ err, conn: c.id }, 'query failed');
          this.#out.fail(c, wireError(ErrorCode.INTERNAL, String((err as Error)?.message)));
        });
      case 'sessions':
        return this.#send(c.id, { t: 'sessions', ref: msg.ref, sessions: this.core.sessionInfos() });
      case 'logs': {
        const finished = this.core.readLogs(c.id, msg);
        if (finished) {
          void this.#answerFinishedLogs(c, msg.ref, finished).catch((err: unknown) => {
            this.log.error({ err, conn: c.id }, 'logs failed');
            this.#out.fail(c, wireError(ErrorCode.INTERNAL, String((err as Error)?.message)));
          });
        }
        return;
      }
      case 'hb':
        return;
      case 'hello':
        return this.#reject(c, wireError(ErrorCode.INVALID_MESSAGE, 'hello was already received'), raw);
    }
  }

  #onExecutorMessage(c: Conn, raw: unknown): void {
    const v = validateExecutor(raw);
    if (!v.ok) {
      // A report we cannot accept still ends its attempt (RESULT_INVALID), or the task would
      // wait forever while the executor's heartbeats keep its lease alive.
      const attempt = attemptOf(raw);
      if (attempt) {
        this.log.warn({ conn: c.id, ...attempt, problem: v.error.message }, 'invalid attempt report; the attempt fails with RESULT_INVALID');
        return this.core.attemptInvalid(c.id, attempt.uid, attempt.attempt, v.error.message);
      }
      return this.#reject(c, v.error, raw);
    }
    const msg = v.msg;
    switch (msg.t) {
      case 'done':
        return this.core.attemptDone(c.id, msg.result);
      case 'pull':
        return this.core.pull(c.id, msg.n);
      case 'out':
        return this.core.attemptOutput(c.id, msg);
      case 'window':
        return this.core.window(c.id, msg.extra);
      case 'returned':
        return this.core.returned(c.id, msg.tasks);
      case 'hb':
        return this.core.executorSeen(c.id, msg.data, msg.holds);
      case 'bye':
        this.log.info({ conn: c.id, reason: msg.reason }, 'executor leaving');
        return this.core.executorBye(c.id);
      case 'lifetime':
        this.log.info({ conn: c.id, endsAt: new Date(msg.endsAt).toISOString(), reason: msg.reason, draining: msg.draining }, 'executor lifetime');
        return this.core.executorLifetime(c.id, msg.endsAt, msg.reason, msg.draining);
      case 'hello':
        return this.#reject(c, wireError(ErrorCode.INVALID_MESSAGE, 'hello was already received'), raw);
    }
  }

  /** Answers a task query; results only the store still has are read from it first. */
  async #answerQuery(c: Conn, msg: Extract<ClientMessage, { t: 'query' }>): Promise<void> {
    const found = this.core.findTasks({ ...(msg.ids ? { ids: msg.ids } : {}), ...(msg.session ? { session: msg.session } : {}), ...(msg.state ? { state: msg.state } : {}), ...(msg.limit ? { limit: msg.limit } : {}) });
    let tasks = found.tasks;
    try {
      tasks = await withStoredResults(found, this.lookupResults);
    } catch (err) {
      this.log.warn({ err }, 'reading stored results failed; answering without them');
    }
    this.#send(c.id, { t: 'tasks', ref: msg.ref, tasks, ...(found.missing.length ? { missing: found.missing } : {}) });
    this.#out.queueFlush();
  }

  /** `logs` of a finished task: the tail its result keeps (read from the store if need be), then the end. */
  async #answerFinishedLogs(c: Conn, ref: number, found: Found): Promise<void> {
    let tasks = found.tasks;
    try {
      tasks = await withStoredResults(found, this.lookupResults);
    } catch (err) {
      this.log.warn({ err }, 'reading stored results failed; answering without them');
    }
    const t = tasks[0];
    const r = t?.result;
    const chunks: LogChunk[] = [];
    if (r?.stdout) chunks.push({ stream: 'stdout', data: r.stdout });
    if (r?.stderr) chunks.push({ stream: 'stderr', data: r.stderr });
    const note = r ? undefined : 'the result of this task is no longer held (the in-memory store forgets acknowledged results)';
    this.#send(c.id, { t: 'log', ref, chunks, ...(note ? { note } : {}), end: { status: t?.state ?? 'lost', ...(r ? { attempt: r.attempts } : {}) } });
    this.#out.queueFlush();
  }

  /**
   * Moves live output to readers whose socket has room; the rest waits in each reader's bounded
   * buffer (and is dropped there, counted, when it overflows), and is tried again next turn or tick.
   */
  #pumpLogs(): void {
    for (const id of [...this.core.logsWaiting]) {
      const c = this.#conns.get(id);
      if (c && c.ws.bufferedAmount > LOG_LOW_WATER_BYTES) continue;
      const msgs = this.core.takeLogs(id, LOG_MESSAGE_CHARS);
      if (c) for (const m of msgs) this.#out.send(c, m);
    }
  }

  /** A bad message costs only itself: answer with its code and keep the connection. */
  #reject(c: Conn, error: WireError, raw: unknown): void {
    const ref = (raw as { ref?: unknown } | null)?.ref;
    this.#send(c.id, { t: 'error', ...(typeof ref === 'number' && ref >= 0 ? { ref } : {}), ...error });
  }

  /**
   * The live dispatchers (several over PostgreSQL; cluster.ts calls this after each round): told
   * to every executor and client that asked (`peers`) when they change, and after each welcome.
   */
  setPeers(urls: readonly string[]): void {
    const next = [...urls].sort();
    if (next.join('\n') === this.#peers.join('\n')) return;
    this.#peers = next;
    const msg = { t: 'peers', urls: next };
    for (const c of this.#conns.values()) if (c.wantsPeers) this.#send(c.id, msg);
  }

  /** After a welcome: a peer that asked (`peers` in its hello's caps) is told the live dispatchers, now and on changes. */
  #tellPeers(c: Conn, caps: readonly string[]): void {
    c.wantsPeers = caps.includes(PEERS_CAP);
    if (c.wantsPeers && this.#peers.length > 0) this.#send(c.id, { t: 'peers', urls: this.#peers });
  }

  #send(conn: ConnId, msg: unknown): void {
    const c = this.#conns.get(conn);
    if (c) this.#out.send(c, msg);
  }

  #tick(): void {
    this.core.tick();
    if (this.core.logsWaiting.size > 0) this.#pumpLogs();
    this.#out.queueFlush();
  }

  #heartbeat(): void {
    const hb = { t: 'hb', at: this.clock.now() };
    for (const c of this.#conns.values()) if (c.role !== null) this.#send(c.id, hb);
  }

  /**
   * Whether a connection has been silent for three heartbeats (or a lease, if longer): clients
   * send one every heartbeat, so such a connection is half-open (its peer gone after a network
   * cut) and may be replaced by a newer one asking for its session.
   */
  #silent(conn: ConnId): boolean {
    const c = this.#conns.get(conn);
    return c === undefined || Date.now() - c.heardAt > Math.max(3 * this.config.heartbeatMs, this.config.leaseMs);
  }

  // ---- HTTP -------------------------------------------------------------------------------------

  /**
   * Graceful shutdown: refuse new work, send what is queued, commit, close every connection as
   * "going away". Executors keep running their tasks and reconnect to the next dispatcher.
   */
  async close(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const t of this.#timers) clearInterval(t);
    this.#out.flush();
    await this.#out.stop();
    for (const c of this.#conns.values()) {
      if (c.helloTimer) clearTimeout(c.helloTimer);
      c.ws.close(1001, ErrorCode.SHUTTING_DOWN);
    }
    await this.#transport.close();
    for (const c of this.#conns.values()) c.ws.terminate();
  }
}

/** The attempt a malformed `done` names, when it names one: `{t: 'done', result: {uid, attempt}}`. */
function attemptOf(raw: unknown): { uid: number; attempt: number } | null {
  const m = raw as { t?: unknown; result?: { uid?: unknown; attempt?: unknown } } | null;
  if (m === null || typeof m !== 'object' || m.t !== 'done' || m.result === null || typeof m.result !== 'object') return null;
  const { uid, attempt } = m.result;
  return Number.isSafeInteger(uid) && Number.isSafeInteger(attempt) && (uid as number) >= 0 && (attempt as number) >= 0 ? { uid: uid as number, attempt: attempt as number } : null;
}
