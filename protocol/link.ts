/**
 * The dialing side of a connection, shared by executors and clients: dial until a dispatcher is
 * there (and again after any loss), say hello, wait for welcome, batch outgoing messages into
 * frames once per event-loop turn, send heartbeats, and declare the dispatcher gone when it has
 * been silent too long.
 *
 * Several dispatchers: the link is given one URL or several and moves between them as
 * protocol/dial-plan.ts says (a failed dial goes to the next candidate at once, only a full round
 * of failures backs off; once welcomed the link stays; MOVED sends it to `to`, boundedly).
 *
 * What must survive a reconnect (a client's unacknowledged submits, an executor's undelivered
 * results) is the caller's to keep: the link drops what it could not send, and calls `onUp` after
 * each welcome so the caller can send it again.
 *
 * Frame limits are negotiated: the welcome names the dispatcher's `maxFrameBytes`, and from then on
 * the link encodes and decodes with that limit. A message that cannot be encoded within it is
 * handed back to its owner (`onUnsendable`); the other messages of the same turn still go out.
 */
import WebSocket from 'ws';
import { Codec } from './codec.js';
import { ErrorCode, FalconetError } from './errors.js';
import type { InboundValidator } from './validate.js';
import { tlsFailure, trustedCas } from './tls.js';
import { candidateLookup, dispatcherUrl, type Candidate, type Resolver } from './dispatchers.js';
import { DialPlan } from './dial-plan.js';

/** Errors after which dialing again cannot help: stop and tell the user. */
const FATAL: ReadonlySet<string> = new Set([ErrorCode.AUTH_FAILED, ErrorCode.AUTH_WRONG_ROLE, ErrorCode.VERSION_MISMATCH, ErrorCode.NOT_FOUND, ErrorCode.SESSION_FORBIDDEN]);

/** Where the link goes next, after a failed dial, a loss or a redirect ({@link LinkOptions.onRetry}). */
export interface RetryInfo {
  /** The candidate that failed, was lost or redirected (`ws://d.example:7878 (10.0.0.5)`). */
  from: string;
  /** The candidate dialed next (after a failed round: the first of the next round, as now resolved). */
  next: string;
  /** How long the link waits before that dial (0: at once). */
  delayMs: number;
  /** True when this wait is a backoff: a full round failed, or MOVED came too often in a row. */
  backoff: boolean;
  /** The close code and the last socket error, as {@link LinkOptions.onDown} gets them. */
  reason: string;
  /** With a redirect: the URL the dispatcher sent us to. */
  moved?: string;
}

export interface LinkOptions<In extends { t: string }> {
  /**
   * The dispatcher(s): one ws:// or wss:// URL or several, already checked (see
   * dispatcherUrls in protocol/dispatchers.ts), tried in turn.
   */
  url: string | readonly string[];
  /**
   * The order of the candidates: `first` (the list's order, starting at its first; clients) or
   * `random` (a per-link random order, so that a fleet of executors starts spread over the
   * dispatchers and does not follow one lost dispatcher to the same next one).
   */
  order?: 'first' | 'random';
  /** Resolves DNS names at each dial round (default: `dns.promises.lookup(host, {all: true})`). */
  resolve?: Resolver;
  /** How long one dial (TCP, TLS and the upgrade) may take before it counts as failed (default 15 s). */
  dialTimeoutMs?: number;
  /** Built at each connect: it carries what the peer must know now (cursor, running attempts). */
  hello(): Record<string, unknown>;
  validate: InboundValidator<In>;
  /** Called with the welcome; after it returns, queued messages are flushed. */
  onUp(welcome: In): void;
  onMessage(msg: In): void;
  /**
   * The connection is gone; the link is already dialing again (unless closed). `reason` names the
   * close code and, when there was one, the last socket error (ECONNRESET, a failed upgrade);
   * `where` the dispatcher lost and the one dialed next ('' when the link was closed).
   */
  onDown?(reason: string, where: { lost: string; next: string }): void;
  /** Every time the link schedules its next dial (after a failed dial, a loss or a redirect): for logs. */
  onRetry?(info: RetryInfo): void;
  /**
   * A message passed to {@link Link.send} that cannot be encoded within the negotiated frame limit
   * (FRAME_TOO_LARGE). It was not sent; the owner decides what to do (split it, fail its waiter).
   * Without this callback the message is dropped.
   */
  onUnsendable?(msg: unknown, err: FalconetError): void;
  /** The dispatcher refused us for good (bad credential, incompatible version). */
  onFatal(err: FalconetError): void;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Frame limit until the welcome names the dispatcher's (default 16 MiB). */
  maxFrameBytes?: number;
  /** Extra fields for each heartbeat (an executor's data counters). */
  heartbeatExtra?(): Record<string, unknown>;
  /**
   * wss://: PEM CA certificate(s) trusted besides Node's root CAs to verify the dispatcher.
   * A certificate that does not verify (or a wss:// URL answered without TLS) is fatal at once:
   * TLS_FAILED through onFatal, no redial.
   */
  ca?: string | Buffer;
}

export class Link<In extends { t: string }> {
  #ws: WebSocket | null = null;
  #up = false;
  #closed = false;
  readonly #plan: DialPlan;
  /** Where the current connection was sent by MOVED (checked), until it closes. */
  #movedTo: string | null = null;
  #out: unknown[] = [];
  #flushQueued = false;
  #heartbeat: NodeJS.Timeout | null = null;
  #watchdog: NodeJS.Timeout | null = null;
  #retry: NodeJS.Timeout | null = null;
  #silenceMs = 0;
  #codec: Codec;
  /** The last thing that went wrong with the socket: why a dial or a connection failed. */
  #lastError: string | null = null;

  constructor(private readonly o: LinkOptions<In>) {
    this.#codec = new Codec({ maxFrameBytes: o.maxFrameBytes });
    this.#plan = new DialPlan(typeof o.url === 'string' ? [o.url] : o.url, o);
  }

  /** The URL of the dispatcher the link is connected to (null while not welcomed). */
  get dispatcher(): string | null {
    return this.#up ? (this.#plan.current?.url ?? null) : null;
  }

  /** The dispatchers this link knows: the configured ones, then those redirects named. */
  get urls(): readonly string[] {
    return this.#plan.urls;
  }

  /** The live dispatchers the connected one named: dialed too after a loss (see DialPlan.learn). */
  learn(urls: readonly string[]): void {
    this.#plan.learn(urls);
  }

  /** True between welcome and the next loss. */
  get up(): boolean {
    return this.#up;
  }

  /** Bytes written to the socket and not yet sent (0 while not connected): how far behind the network is. */
  get bufferedAmount(): number {
    return this.#ws?.bufferedAmount ?? 0;
  }

  /** The frame limit in force: the dispatcher's once it has welcomed us. */
  get maxFrameBytes(): number {
    return this.#codec.maxFrameBytes;
  }

  /**
   * Why the last dial or connection failed (`connect ECONNREFUSED 127.0.0.1:1`,
   * `Unexpected server response: 401`), or null if nothing failed since the last welcome.
   */
  get lastError(): string | null {
    return this.#lastError;
  }

  start(): void {
    this.#round().catch((err: unknown) => this.#fail(err));
  }

  /** A bug in dialing must end the link loudly, not as an unhandled rejection in the host process. */
  #fail(err: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimers();
    this.o.onFatal(new FalconetError(ErrorCode.INTERNAL, `dialing failed: ${(err as Error)?.message ?? String(err)}`));
  }

  /** Queues a message for the next frame. Returns false (and drops it) when not connected. */
  send(msg: unknown): boolean {
    if (!this.#up) return false;
    this.#out.push(msg);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(() => this.#flush());
    }
    return true;
  }

  /** Sends what is queued now, then closes for good. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#flush();
    this.#stopTimers();
    if (this.#retry) clearTimeout(this.#retry);
    const ws = this.#ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(1000, 'bye');
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, 1000).unref();
    });
  }

  /** Starts a dial round: resolves every name now, then dials. */
  async #round(): Promise<void> {
    const next = await this.#plan.round();
    this.#dial(next);
  }

  #dial(c: Candidate): void {
    if (this.#closed) return;
    this.#plan.dialing(c);
    let ws: WebSocket;
    try {
      const ca = trustedCas(this.o.ca);
      const lookup = candidateLookup(c);
      ws = new WebSocket(c.url, {
        perMessageDeflate: false,
        maxPayload: (this.o.maxFrameBytes ?? 16 << 20) * 2,
        // A candidate that swallows packets must not hold the round for the OS's TCP timeout.
        handshakeTimeout: this.o.dialTimeoutMs ?? 15_000,
        ...(ca ? { ca } : {}),
        ...(lookup ? { lookup } : {}),
      });
    } catch (err) {
      // A URL the ws library refuses cannot get better by dialing again.
      this.#closed = true;
      this.o.onFatal(new FalconetError(ErrorCode.USAGE, `cannot dial ${c.url}: ${(err as Error).message}`));
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('open', () => {
      for (const frame of this.#codec.encode([this.o.hello()])) ws.send(frame);
      this.#armWatchdog(30_000); // the welcome must come
    });
    ws.on('message', (data: Buffer) => this.#onFrame(ws, data));
    // 'close' follows and redials; the error is kept so that onDown and a caller giving up on the
    // dispatcher (UNREACHABLE) can say why: refused, not resolved, refused at upgrade.
    ws.on('error', (err) => {
      const why = err.message || (err as NodeJS.ErrnoException).code || String(err);
      // With several candidates, say which one failed.
      this.#lastError = this.#plan.size > 1 ? `${c.label}: ${why}` : why;
      // A certificate that does not verify does not start to verify by dialing again: end now,
      // loudly (TLS_FAILED with the cause), instead of a redial loop that looks like "not there".
      const tls = tlsFailure(err, c.url);
      if (tls && !this.#closed) {
        this.#closed = true;
        this.#stopTimers();
        this.o.onFatal(tls);
      }
    });
    ws.on('close', (code, reason) => this.#onClose(ws, `${code} ${reason.toString()}`.trim()));
  }

  #onFrame(ws: WebSocket, data: Buffer): void {
    let messages: unknown[];
    try {
      messages = this.#codec.decode(data);
    } catch (err) {
      this.#lastError = `undecodable frame from the dispatcher: ${(err as Error).message}`;
      ws.terminate();
      return;
    }
    this.#armWatchdog(this.#silenceMs || 30_000);
    for (const raw of messages) {
      const v = this.o.validate(raw);
      if (!v.ok) {
        // A type we do not know comes from a newer dispatcher: skip it. A known type that breaks
        // its schema is a bug on the other side; skipping it would lose it silently (a result
        // skipped here is acknowledged by the next one's cursor), so the link ends loudly.
        if (v.error.code === ErrorCode.UNKNOWN_MESSAGE) continue;
        this.#closed = true;
        this.o.onFatal(new FalconetError(ErrorCode.INVALID_MESSAGE, `the dispatcher sent a malformed message: ${v.error.message}`));
        ws.terminate();
        return;
      }
      const msg = v.msg;
      if (msg.t === 'error') {
        const e = msg as unknown as { code: string; message: string; retryable: boolean; ref?: number; to?: string };
        // The session (or this executor's place) is on another dispatcher: leave for it. The
        // dispatcher closes anyway; ending the socket here does not wait for its close.
        if (e.code === ErrorCode.MOVED && e.ref === undefined) {
          let to: string | null = null;
          try {
            to = e.to === undefined ? null : dispatcherUrl(e.to);
          } catch {}
          // No target at all: the dispatcher says "ask again shortly" ('' to the dial plan).
          this.#movedTo = e.to === undefined ? '' : to;
          this.#lastError = to ? `MOVED to ${to}: ${e.message}` : e.to === undefined ? `MOVED: ${e.message}` : `MOVED to no usable address (${JSON.stringify(e.to)}): ${e.message}`;
          ws.terminate();
          return;
        }
        // With a ref it answers one request (a `logs` of an unknown id), not the connection.
        if (FATAL.has(e.code) && e.ref === undefined) {
          this.#closed = true;
          this.o.onFatal(FalconetError.fromWire(e));
          ws.terminate();
          return;
        }
      }
      if (msg.t === 'welcome' && !this.#up) {
        const w = msg as unknown as { heartbeatMs: number; leaseMs?: number; maxFrameBytes?: number };
        this.#up = true;
        this.#plan.welcomed();
        this.#lastError = null;
        // The dispatcher's limit, both ways: it refuses larger frames and may send frames this large.
        // A fresh codec per connection is right anyway: msgpack records never span connections.
        if (w.maxFrameBytes && w.maxFrameBytes !== this.#codec.maxFrameBytes) this.#codec = new Codec({ maxFrameBytes: w.maxFrameBytes });
        this.#silenceMs = w.leaseMs ?? 3 * w.heartbeatMs;
        this.#armWatchdog(this.#silenceMs);
        this.#heartbeat = setInterval(() => this.send({ t: 'hb', at: Date.now(), ...this.o.heartbeatExtra?.() }), w.heartbeatMs);
        this.o.onUp(msg);
        continue;
      }
      if (msg.t === 'hb') continue;
      this.o.onMessage(msg);
    }
  }

  #armWatchdog(ms: number): void {
    if (this.#watchdog) clearTimeout(this.#watchdog);
    // Silence this long means the dispatcher (or the path to it) is gone: drop and redial.
    this.#watchdog = setTimeout(() => this.#ws?.terminate(), ms);
  }

  #onClose(ws: WebSocket, code: string): void {
    if (ws !== this.#ws) return;
    const wasUp = this.#up;
    this.#up = false;
    this.#out = [];
    this.#stopTimers();
    const reason = this.#lastError ? `${code}: ${this.#lastError}` : code;
    const lost = this.#plan.current?.label ?? '';
    if (this.#closed) {
      if (wasUp) this.o.onDown?.(reason, { lost, next: '' });
      return;
    }
    const moved = this.#movedTo;
    this.#movedTo = null;
    const { next, delayMs, backoff, newRound } = this.#plan.closed(wasUp, moved);
    if (wasUp) this.o.onDown?.(reason, { lost, next: next.label });
    this.o.onRetry?.({ from: lost, next: next.label, delayMs, backoff, reason, ...(moved !== null ? { moved } : {}) });
    this.#retry = setTimeout(() => (newRound ? this.#round().catch((err: unknown) => this.#fail(err)) : this.#dial(next)), delayMs);
  }

  #stopTimers(): void {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    if (this.#watchdog) clearTimeout(this.#watchdog);
    this.#heartbeat = this.#watchdog = null;
  }

  #flush(): void {
    this.#flushQueued = false;
    const ws = this.#ws;
    if (this.#out.length === 0 || !ws || ws.readyState !== WebSocket.OPEN) return;
    const batch = this.#out;
    this.#out = [];
    let frames: Buffer[];
    try {
      frames = this.#codec.encode(batch);
    } catch {
      // One message (or more) is larger than any frame may be. This runs from setImmediate, so a
      // throw would kill the host process: hand each such message back, send all the others.
      frames = this.#encodeSendable(batch);
    }
    for (const frame of frames) ws.send(frame);
  }

  /** The slow path of #flush: find the messages that cannot be encoded, encode the rest. */
  #encodeSendable(batch: unknown[]): Buffer[] {
    const sendable: unknown[] = [];
    for (const msg of batch) {
      try {
        this.#codec.encode([msg]);
        sendable.push(msg);
      } catch (err) {
        const e = err instanceof FalconetError ? err : new FalconetError(ErrorCode.INTERNAL, `cannot encode a ${(msg as { t?: string }).t ?? ''} message: ${String(err)}`);
        this.o.onUnsendable?.(msg, e);
      }
    }
    return this.#codec.encode(sendable);
  }
}
