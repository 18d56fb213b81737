/**
 * The dialing side of a connection, shared by executors and clients: dial with exponential
 * backoff and full jitter until the dispatcher is there (and again after any loss), say hello,
 * wait for welcome, batch outgoing messages into frames once per event-loop turn, send
 * heartbeats, and declare the dispatcher gone when it has been silent too long.
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

/** Errors after which dialing again cannot help: stop and tell the user. */
const FATAL: ReadonlySet<string> = new Set([ErrorCode.AUTH_FAILED, ErrorCode.AUTH_WRONG_ROLE, ErrorCode.VERSION_MISMATCH, ErrorCode.NOT_FOUND, ErrorCode.SESSION_FORBIDDEN]);

export interface LinkOptions<In extends { t: string }> {
  url: string;
  /** Built at each connect: it carries what the peer must know now (cursor, running attempts). */
  hello(): Record<string, unknown>;
  validate: InboundValidator<In>;
  /** Called with the welcome; after it returns, queued messages are flushed. */
  onUp(welcome: In): void;
  onMessage(msg: In): void;
  /**
   * The connection is gone; the link is already dialing again (unless closed). `reason` names the
   * close code and, when there was one, the last socket error (ECONNRESET, a failed upgrade).
   */
  onDown?(reason: string): void;
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
  #attempt = 0;
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
    this.#dial();
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

  #dial(): void {
    if (this.#closed) return;
    let ws: WebSocket;
    try {
      const ca = trustedCas(this.o.ca);
      ws = new WebSocket(this.o.url, { perMessageDeflate: false, maxPayload: (this.o.maxFrameBytes ?? 16 << 20) * 2, ...(ca ? { ca } : {}) });
    } catch (err) {
      // A URL the ws library refuses cannot get better by dialing again.
      this.#closed = true;
      this.o.onFatal(new FalconetError(ErrorCode.USAGE, `cannot dial ${this.o.url}: ${(err as Error).message}`));
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
      this.#lastError = err.message || (err as NodeJS.ErrnoException).code || String(err);
      // A certificate that does not verify does not start to verify by dialing again: end now,
      // loudly (TLS_FAILED with the cause), instead of a redial loop that looks like "not there".
      const tls = tlsFailure(err, this.o.url);
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
        const e = msg as unknown as { code: string; message: string; retryable: boolean; ref?: number };
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
        this.#attempt = 0;
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

  #onClose(ws: WebSocket, reason: string): void {
    if (ws !== this.#ws) return;
    const wasUp = this.#up;
    this.#up = false;
    this.#out = [];
    this.#stopTimers();
    if (wasUp) this.o.onDown?.(this.#lastError ? `${reason}: ${this.#lastError}` : reason);
    if (this.#closed) return;
    const base = this.o.initialBackoffMs ?? 100;
    const cap = this.o.maxBackoffMs ?? 10_000;
    const delay = Math.random() * Math.min(cap, base * 2 ** this.#attempt++);
    this.#retry = setTimeout(() => this.#dial(), delay);
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
