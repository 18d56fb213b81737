/**
 * Everything the dispatcher sends, once per event-loop turn: per-connection buffers batched
 * into frames, and the group commit that decides when they may go. What goes to clients
 * (acknowledgements, results) is sent only once the turn's journal changes, and every earlier
 * batch, are on disk: that is the durability and exactly-once promise. What goes to executors
 * is sent at once: an assignment that a crash forgets is only an attempt the restarted
 * dispatcher cancels when the executor reports it, and holding it would tie every slot's
 * turnaround to the commit latency.
 */
import type { Logger } from 'pino';
import { ErrorCode, FalconetError, wireError, type Codec, type WireError } from '../protocol/index.js';
import type { ConnId, Journal } from './model.js';
import type { PeerSocket } from './transport.js';

/** One WebSocket peer, as the adapter tracks it. */
export interface Conn {
  readonly id: ConnId;
  readonly ws: PeerSocket;
  role: 'client' | 'executor' | null;
  /** How frames to this peer are encoded: msgpackr records if its hello announced them, else standard msgpack. */
  codec: Codec;
  out: unknown[];
  /** Executor reports received this turn, acknowledged once the turn is committed. */
  acks: Array<{ uid: number; attempt: number }>;
  /** Set once the connection is to end: nothing more is queued, it closes after the flush. */
  closing: WireError | null;
  helloTimer: NodeJS.Timeout | null;
  /** A client that presented the administrator token (or any client when no client token is set). */
  admin: boolean;
  /** When a frame last came from this peer (clients silent too long are dropped). */
  heardAt: number;
  /** A peer whose hello listed `peers`: it is told where the other dispatchers are. */
  wantsPeers?: boolean;
}

/** A journal whose commit may be asynchronous (the durable store) or absent (memory). */
export type CommittingJournal = Journal & { commit?(): Promise<void> | null | void };

/** WebSocket close codes paired with the error codes that cause them. */
const CLOSE_FOR: Partial<Record<string, number>> = {
  [ErrorCode.FRAME_TOO_LARGE]: 1009,
  [ErrorCode.SHUTTING_DOWN]: 1001,
  [ErrorCode.INTERNAL]: 1011,
};

/** The longest a commit waits for the next turn (#deferCommit); setTimeout's floor is 1 ms anyway. */
const DEFER_MS = 1;

/** Whether every message held in a turn is a submission's acknowledgement (no result, no executor ack, no close). */
function onlyAccepted(held: Outgoing[]): boolean {
  for (const { c, msgs, close } of held) {
    if (close !== null || c.role !== 'client') return false;
    for (const m of msgs) if ((m as { t?: string }).t !== 'accepted') return false;
  }
  return true;
}

/** Whether a turn sent a task to an executor. */
function assigns(now: Outgoing[]): boolean {
  for (const { c, msgs } of now) if (c.role === 'executor') for (const m of msgs) if ((m as { t?: string }).t === 'task') return true;
  return false;
}

/** What one connection was sent in one turn, held until that turn's changes are committed. */
interface Outgoing {
  c: Conn;
  msgs: unknown[];
  close: WireError | null;
}

/** Someone waiting for a turn's changes to be committed (see {@link Outbound.durable}). */
interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/** One turn's held messages, and who waits for its commit besides the peers. */
type Turn = Outgoing[] & { waiters?: Waiter[] };

export class Outbound {
  readonly #dirty = new Set<Conn>();
  #queued = false;
  /** Turns whose client messages wait for a commit, oldest first. */
  #held: Turn[] = [];
  /** Waiting for what was journaled before the next flush to be committed. */
  #waiters: Waiter[] = [];
  #committing: Promise<void> | null = null;
  /** A commit waiting for the next turn (see #deferCommit). */
  #deferTimer: NodeJS.Timeout | null = null;
  #failed = false;
  #stopped = false;
  /** Peers dropped as slow consumers, by role (metrics). */
  readonly slowConsumerDrops = { client: 0, executor: 0 };

  constructor(
    private readonly journal: CommittingJournal,
    private readonly log: Logger,
    /** Bytes that may wait for one peer before it is dropped as a slow consumer. */
    private readonly maxBufferedBytes: number,
    /** Runs first in every flush: the scheduler, so its assignments join the same turn. */
    private readonly beforeFlush: () => void,
    /** The store failed: nothing more will be acknowledged. */
    private readonly onStoreFailed: (err: Error) => void,
  ) {}

  /** Queues a message for the connection's next frame. */
  send(c: Conn, msg: unknown): void {
    if (c.closing) return;
    c.out.push(msg);
    this.#dirty.add(c);
    this.queueFlush();
  }

  /** Sends `error` and then closes the connection. */
  fail(c: Conn, error: WireError): void {
    if (c.closing) return;
    c.out.push({ t: 'error', ...error });
    c.closing = error;
    this.#dirty.add(c);
    this.queueFlush();
  }

  /** Acknowledges an executor's report of an attempt once this turn's changes are durable. */
  ackResult(c: Conn, uid: number, attempt: number): void {
    if (c.closing) return;
    c.acks.push({ uid, attempt });
    this.#dirty.add(c);
    this.queueFlush();
  }

  /**
   * Resolves once every change journaled so far is committed (at the next turn's release; at once
   * on the memory store). An HTTP submit or cancel is answered only then, as a client's `accepted`
   * is held: acknowledged means durable. Rejects if the store fails or the dispatcher stops first.
   */
  durable(): Promise<void> {
    if (this.#failed) return Promise.reject(new FalconetError(ErrorCode.STORE_FAILED, 'the store failed: nothing more is acknowledged'));
    if (this.#stopped) return Promise.reject(new FalconetError(ErrorCode.SHUTTING_DOWN, 'the dispatcher is shutting down'));
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.queueFlush();
    });
  }

  forget(c: Conn): void {
    this.#dirty.delete(c);
  }

  queueFlush(): void {
    if (this.#queued) return;
    this.#queued = true;
    setImmediate(() => this.flush());
  }

  /** Schedules, hands the turn's changes to the store, sends what may go now, holds the rest. */
  flush(): void {
    this.#queued = false;
    if (this.#failed || this.#stopped) return;
    this.beforeFlush();
    const held: Turn = [];
    const now: Outgoing[] = [];
    for (const c of this.#dirty) {
      (c.role === 'client' ? held : now).push({ c, msgs: c.out, close: c.closing });
      c.out = [];
      if (c.acks.length > 0) {
        // After the commit, like a client's: an executor that forgets a result we then lose in a
        // crash would make the restarted dispatcher run the attempt again.
        held.push({ c, msgs: [{ t: 'ack', done: c.acks }], close: null });
        c.acks = [];
      }
    }
    this.#dirty.clear();
    if (this.#waiters.length > 0) {
      held.waiters = this.#waiters;
      this.#waiters = [];
    }
    if (held.length > 0 || held.waiters) this.#held.push(held);
    if (!this.#committing) {
      // A turn that holds nothing new (a heartbeat, a window) does not end a deferral early.
      if (held.length > 0 ? onlyAccepted(held) && assigns(now) : this.#deferTimer !== null) this.#deferCommit();
      else this.#commit();
    }
    this.#release(now);
  }

  /**
   * Coalescing with an idle writer: a turn whose only held messages are `accepted` acks, and that
   * sent assignments, waits for the next turn (at most DEFER_MS) before its commit starts. The
   * executor's answer to a short task usually is that next turn, and then one commit (one fsync)
   * carries the task's acceptance and its result instead of two in a row: the durable round trip
   * of a short task loses a commit. Nothing is released before its commit, so a crash meanwhile
   * only loses submissions that were never acknowledged (the client sends them again). A busy
   * writer (a commit in flight) already groups everything that arrives meanwhile: no delay then.
   */
  #deferCommit(): void {
    if (this.#deferTimer !== null) return;
    this.#deferTimer = setTimeout(() => {
      this.#deferTimer = null;
      if (!this.#committing && this.#held.length > 0 && !this.#failed && !this.#stopped) this.#commit();
    }, DEFER_MS);
  }

  /**
   * Shutdown: waits until no commit is in flight, then stops. What happens after (connections
   * closing) changes nothing durable that matters and must not reach a store being closed.
   */
  async stop(): Promise<void> {
    if (this.#deferTimer !== null && !this.#committing && this.#held.length > 0) this.#commit();
    while (this.#committing) await this.#committing.catch(() => {});
    this.#stopped = true;
    this.#rejectWaiters(new FalconetError(ErrorCode.SHUTTING_DOWN, 'the dispatcher is shutting down'));
  }

  /** Waiters whose commit will not come (the store failed, or the dispatcher stops). */
  #rejectWaiters(err: FalconetError): void {
    const waiters = [...this.#waiters, ...this.#held.flatMap((t) => t.waiters ?? [])];
    this.#waiters = [];
    for (const t of this.#held) delete t.waiters;
    for (const w of waiters) w.reject(err);
  }

  /**
   * Group commit: one batch in flight; what accumulates meanwhile goes in the next one.
   * `durable`: groups of the commit that just ended, released here after this batch is handed
   * to the writer (and before anything of this batch), so that in-order delivery holds.
   */
  #commit(durable: Turn[] = []): void {
    if (this.#deferTimer !== null) {
      clearTimeout(this.#deferTimer);
      this.#deferTimer = null;
    }
    const groups = this.#held;
    this.#held = [];
    let pending: Promise<void> | null | void;
    try {
      pending = this.journal.commit?.();
    } catch (err) {
      for (const g of durable) this.#release(g);
      return this.#storeFailed(err as Error, groups);
    }
    for (const g of durable) this.#release(g);
    if (!pending) {
      for (const g of groups) this.#release(g);
      return;
    }
    this.#committing = pending.then(
      () => {
        this.#committing = null;
        // The next batch goes to the writer first: its transaction and fsync then overlap the
        // encoding and sending of what this one released, instead of waiting for them.
        if (this.#held.length > 0 && !this.#failed) this.#commit(groups);
        else for (const g of groups) this.#release(g);
      },
      (err: Error) => this.#storeFailed(err, groups),
    );
  }

  #release(group: Turn): void {
    if (group.waiters) for (const w of group.waiters) w.resolve();
    for (const { c, msgs, close } of group) {
      if (msgs.length > 0 && !this.#sent(c, msgs)) continue;
      if (msgs.length > 0) {
        // A peer that does not read must not grow our memory without bound. Dropping it loses
        // nothing: results stay in the session until acknowledged and are replayed on resume;
        // an executor's attempts are its to report when it redials.
        if (!c.closing && c.ws.bufferedAmount > this.maxBufferedBytes) {
          this.log.warn({ conn: c.id, role: c.role, buffered: c.ws.bufferedAmount }, 'slow consumer dropped');
          if (c.role !== null) this.slowConsumerDrops[c.role]++;
          const message = `${c.ws.bufferedAmount} bytes waited to be sent (limit ${this.maxBufferedBytes}); reconnect and resume`;
          this.fail(c, { code: ErrorCode.SLOW_CONSUMER, message, retryable: true });
        }
      }
      if (close) {
        c.ws.close(CLOSE_FOR[close.code] ?? 1008, close.code);
        // A peer that ignores the close handshake must not hold the socket forever.
        setTimeout(() => c.ws.terminate(), 2000).unref();
      }
    }
  }

  /**
   * Sends a turn's messages to one peer. A message that cannot be encoded (larger than any frame)
   * must not take the others with it: they go one by one, and then the connection fails with the
   * code, so that the peer reconnects and resumes (a client's results are replayed from its
   * session, an executor reports what it holds). Returns false when the connection failed.
   */
  #sent(c: Conn, msgs: unknown[]): boolean {
    try {
      for (const frame of c.codec.encode(msgs)) c.ws.send(frame);
      return true;
    } catch (err) {
      let failure: WireError | null = null;
      for (const msg of msgs) {
        try {
          for (const frame of c.codec.encode([msg])) c.ws.send(frame);
        } catch (e) {
          const code = (e as { code?: string }).code === ErrorCode.FRAME_TOO_LARGE ? ErrorCode.FRAME_TOO_LARGE : ErrorCode.INTERNAL;
          failure ??= wireError(code, `a ${(msg as { t?: string }).t ?? 'message'} could not be sent: ${(e as Error).message}`);
        }
      }
      this.log.error({ err, conn: c.id, role: c.role }, 'encode failed; failing the connection');
      c.closing = null; // fail() below must be able to queue its error even if a close was pending
      this.fail(c, failure ?? wireError(ErrorCode.INTERNAL, `encode failed: ${(err as Error).message}`));
      return false;
    }
  }

  /**
   * Crash-only: what the core holds is now ahead of the disk, so nothing more is acknowledged.
   * Clients resend what was not acknowledged to the next dispatcher on this store.
   */
  #storeFailed(err: Error, lost: Turn[] = []): void {
    // Whoever waited for the failed batch's commit hears it now (an HTTP answer must not hang).
    const failure = new FalconetError((err as FalconetError).code ?? ErrorCode.STORE_FAILED, `the store failed: ${err.message}`);
    for (const t of lost) for (const w of t.waiters ?? []) w.reject(failure);
    if (this.#failed) return;
    this.#failed = true;
    this.log.fatal({ err }, 'store commit failed; refusing to acknowledge anything more');
    this.#rejectWaiters(failure);
    this.onStoreFailed(err);
  }
}
