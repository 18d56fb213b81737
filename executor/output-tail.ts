/**
 * Live output of the attempts someone reads (`falconet logs -f`): the executor's side. Nothing
 * here runs for an attempt no one follows: the dispatcher sends `tail on` when a reader subscribes
 * and `tail off` when the last one leaves. While on, the attempt's runner hands every piece its
 * task writes to a {@link Follower}, which decodes it as UTF-8 (a character split across two
 * reads is kept whole) and batches it into `out` messages once per event-loop turn, each bounded
 * in bytes so that it fits the negotiated frame.
 *
 * What goes first is a snapshot: what the executor keeps of the attempt's output for its result
 * (the first `--output-limit` bytes of each stream), marked `snapshot`, with `dropped` the bytes
 * written since that it no longer has. Output the link cannot take (more than
 * {@link MAX_BACKLOG_BYTES} waiting to be sent) is counted and said as `dropped`, never held.
 */
import { StringDecoder } from 'node:string_decoder';
import type { LogChunk } from '../protocol/index.js';
import type { OutputSink, RunningAttempt } from './runner.js';

/** An `out` message, executor → dispatcher. */
export interface OutMsg {
  t: 'out';
  uid: number;
  attempt: number;
  chunks: LogChunk[];
  dropped?: number;
  snapshot?: boolean;
}

/** Bytes waiting on the link above which followed output is dropped (and counted) instead of queued. */
export const MAX_BACKLOG_BYTES = 8 << 20;
/** Chunk bytes per `out` message at most, below any sane frame limit (see {@link LiveOutput}). */
const MAX_MESSAGE_BYTES = 256 * 1024;

export interface LiveOutputLink {
  send(msg: OutMsg): void;
  /** The negotiated frame limit. */
  readonly maxFrameBytes: number;
  /** Bytes waiting to be sent. */
  readonly bufferedAmount: number;
}

interface Batch {
  snapshot: boolean;
  dropped: number;
  chunks: LogChunk[];
  bytes: number;
}

/** One followed attempt: decodes what its task writes and batches it per turn. */
class Follower implements OutputSink {
  readonly #decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  #batches: Batch[] = [];

  constructor(
    readonly uid: number,
    readonly attempt: number,
    readonly run: RunningAttempt | null,
    private readonly owner: LiveOutput,
  ) {}

  snapshot(notKept: number): void {
    this.#batches.push({ snapshot: true, dropped: notKept, chunks: [], bytes: 0 });
    this.owner.queue(this);
  }

  data(stream: 'stdout' | 'stderr', bytes: Buffer): void {
    if (this.owner.backlogged()) return this.lost(bytes.length);
    const text = this.#decoders[stream].write(bytes);
    if (text.length === 0) return;
    const max = this.owner.maxMessageBytes();
    let batch = this.#batches[this.#batches.length - 1];
    for (let at = 0; at < text.length; ) {
      if (!batch || batch.bytes >= max) this.#batches.push((batch = { snapshot: false, dropped: 0, chunks: [], bytes: 0 }));
      // Characters, not bytes: up to 3 bytes each once encoded, so a third of the room is safe.
      const piece = text.slice(at, at + Math.max(1, Math.floor((max - batch.bytes) / 3)));
      at += piece.length;
      const last = batch.chunks[batch.chunks.length - 1];
      if (last?.stream === stream) last.data += piece;
      else batch.chunks.push({ stream, data: piece });
      batch.bytes += piece.length * 3;
    }
    this.owner.queue(this);
  }

  lost(bytes: number): void {
    const last = this.#batches[this.#batches.length - 1];
    if (last && last.chunks.length === 0) last.dropped += bytes;
    else this.#batches.push({ snapshot: false, dropped: bytes, chunks: [], bytes: 0 });
    this.owner.queue(this);
  }

  /** Sends what is batched. */
  flush(link: LiveOutputLink): void {
    for (const b of this.#batches) {
      link.send({
        t: 'out',
        uid: this.uid,
        attempt: this.attempt,
        chunks: b.chunks,
        ...(b.dropped > 0 ? { dropped: b.dropped } : {}),
        ...(b.snapshot ? { snapshot: true } : {}),
      });
    }
    this.#batches = [];
  }
}

/**
 * The agent's followed attempts. The agent tells it about `tail` orders, attempts that start and
 * end, and connection losses; it tells the runners where their output goes.
 */
export class LiveOutput {
  readonly #followed = new Map<number, Follower>();
  /** `tail on` for attempts assigned here but not started yet (waiting in the local queue). */
  readonly #wanted = new Map<number, number>();
  readonly #dirty = new Set<Follower>();
  #flushQueued = false;

  constructor(private readonly link: LiveOutputLink) {}

  /**
   * A `tail` order. `run` is the attempt when it runs here now; `held` says whether it is ours at
   * all (running or waiting to start); an order for anything else is ignored.
   */
  order(uid: number, attempt: number, on: boolean, run: RunningAttempt | undefined, held: boolean): void {
    const current = this.#followed.get(uid);
    if (!on) {
      this.#wanted.delete(uid);
      if (current?.attempt === attempt) this.#stop(current);
      return;
    }
    if (!held) return;
    if (!run) {
      this.#wanted.set(uid, attempt);
      // Nothing written yet: an empty snapshot, so that a reader who does not follow gets its end.
      this.link.send({ t: 'out', uid, attempt, chunks: [], snapshot: true });
      return;
    }
    let f = current?.attempt === attempt ? current : undefined;
    if (!f) {
      if (current) this.#stop(current);
      f = new Follower(uid, attempt, run, this);
      this.#followed.set(uid, f);
    }
    if (run.follow) run.follow(f); // a fresh snapshot for the new reader, then what comes
    else f.snapshot(0); // a builtin: it writes nothing
  }

  /** An attempt starts (from the local queue): follow it if asked before. */
  started(uid: number, attempt: number, run: RunningAttempt): void {
    if (this.#wanted.size === 0 || this.#wanted.get(uid) !== attempt) return;
    this.#wanted.delete(uid);
    const f = new Follower(uid, attempt, run, this);
    this.#followed.set(uid, f);
    // Its (empty) snapshot went with the order; readers past theirs skip this one, which holds
    // nothing yet either (the command has not written).
    run.follow?.(f);
  }

  /** An attempt ended: what it wrote goes now, before its result. */
  ended(uid: number, attempt: number): void {
    if (this.#followed.size === 0 && this.#wanted.size === 0) return;
    if (this.#wanted.get(uid) === attempt) this.#wanted.delete(uid);
    const f = this.#followed.get(uid);
    if (f?.attempt !== attempt) return;
    this.#followed.delete(uid);
    this.#dirty.delete(f);
    f.flush(this.link);
  }

  /** The connection is gone: the dispatcher asks again for what it still wants after the next welcome. */
  reset(): void {
    for (const f of this.#followed.values()) f.run?.follow?.(null);
    this.#followed.clear();
    this.#wanted.clear();
    this.#dirty.clear();
  }

  /** How many attempts are followed (for tests and status). */
  get size(): number {
    return this.#followed.size + this.#wanted.size;
  }

  // ---- for the followers -----------------------------------------------------------------------

  queue(f: Follower): void {
    this.#dirty.add(f);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    setImmediate(() => {
      this.#flushQueued = false;
      for (const d of this.#dirty) d.flush(this.link);
      this.#dirty.clear();
    });
  }

  backlogged(): boolean {
    return this.link.bufferedAmount > MAX_BACKLOG_BYTES;
  }

  maxMessageBytes(): number {
    return Math.max(1024, Math.min(MAX_MESSAGE_BYTES, Math.floor(this.link.maxFrameBytes / 8)));
  }

  #stop(f: Follower): void {
    f.run?.follow?.(null);
    this.#followed.delete(f.uid);
    this.#dirty.delete(f);
    f.flush(this.link);
  }
}
