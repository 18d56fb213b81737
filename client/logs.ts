/**
 * The SDK's live output reader ({@link Client.logs}): an async iterable of a task's output chunks,
 * as the dispatcher's `log` messages bring them, and a promise of how the stream ended.
 *
 * Chunks are `{stream: 'stdout' | 'stderr', data}` as the task wrote them; what falconet itself has
 * to say comes as `{stream: 'falconet', data}`: bytes dropped (a slow reader, or output the
 * executor no longer had), an attempt re-queued, an executor's connection lost. The iterator ends
 * after the dispatcher's `end`; `ended` then says the task's state (`succeeded`, …, or `running` /
 * `queued` for a reader that does not follow). A lost connection ends the stream with status
 * `disconnected` (a reconnecting client would get the kept head of the output again, so it does not
 * resubscribe on its own); `close()` of the client with `stopped`.
 */
import type { LogChunk, Msg, DispatcherToClient, TaskState } from '../protocol/index.js';
import { FalconetError } from '../protocol/index.js';

/** One piece of a task's output, or a note from falconet (`stream: 'falconet'`). */
export interface LogPiece {
  stream: LogChunk['stream'] | 'falconet';
  data: string;
  /** With a `falconet` note about a gap: how many bytes of output are missing there. */
  dropped?: number;
}

/** How a log stream ended. */
export interface LogEnd {
  /** The task's state then; `stopped`: the reader stopped; `disconnected`: the connection was lost. */
  status: TaskState | 'stopped' | 'disconnected';
  /** The attempt the output came from (absent when none ran). */
  attempt?: number;
}

/** What {@link Client.logs} returns: iterate it for the output; `ended` resolves when it is over. */
export interface LogStream extends AsyncIterable<LogPiece> {
  /** Resolves with how the stream ended; rejects (NOT_FOUND, CLIENT_CLOSED) if it never started. */
  readonly ended: Promise<LogEnd>;
  /** Stops reading: the iterator ends, the dispatcher stops sending. */
  stop(): void;
}

/** One stream's state inside the client; the client feeds it the `log` messages of its ref. */
export class LogReader implements LogStream {
  readonly ended: Promise<LogEnd>;
  #queue: LogPiece[] = [];
  #waiter: { resolve(r: IteratorResult<LogPiece>): void; reject(e: Error): void } | null = null;
  #end: LogEnd | null = null;
  #error: Error | null = null;
  #resolveEnd!: (e: LogEnd) => void;
  #rejectEnd!: (e: Error) => void;

  constructor(private readonly onStop: () => void) {
    this.ended = new Promise((res, rej) => ((this.#resolveEnd = res), (this.#rejectEnd = rej)));
    this.ended.catch(() => {}); // whoever awaits it sees the rejection; no one else must
  }

  /** A `log` message for this stream. */
  receive(m: Msg<DispatcherToClient, 'log'>): void {
    if (this.#end || this.#error) return;
    if (m.dropped) this.#put({ stream: 'falconet', data: `[falconet: ${m.dropped} bytes of output dropped here]\n`, dropped: m.dropped });
    if (m.note) this.#put({ stream: 'falconet', data: `[falconet: ${m.note}]\n` });
    for (const c of m.chunks) this.#put({ stream: c.stream, data: c.data });
    if (m.end) this.finish({ status: m.end.status, ...(m.end.attempt !== undefined ? { attempt: m.end.attempt } : {}) });
  }

  /** Ends the stream (the dispatcher's end, a lost connection, a stop). */
  finish(end: LogEnd): void {
    if (this.#end || this.#error) return;
    this.#end = end;
    this.#resolveEnd(end);
    this.#wake();
  }

  /** The request failed (NOT_FOUND, CLIENT_CLOSED): the iterator throws it once what came is read. */
  fail(err: FalconetError): void {
    if (this.#end || this.#error) return;
    this.#error = err;
    this.#rejectEnd(err);
    this.#wake();
  }

  stop(): void {
    if (this.#end || this.#error) return;
    this.onStop();
    this.finish({ status: 'stopped' });
  }

  [Symbol.asyncIterator](): AsyncIterator<LogPiece> {
    return {
      next: () => {
        const piece = this.#queue.shift();
        if (piece) return Promise.resolve({ value: piece, done: false });
        if (this.#error) return Promise.reject(this.#error);
        if (this.#end) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => (this.#waiter = { resolve, reject }));
      },
      return: () => {
        this.stop();
        this.#queue = [];
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  #put(piece: LogPiece): void {
    const w = this.#waiter;
    if (w) {
      this.#waiter = null;
      w.resolve({ value: piece, done: false });
    } else this.#queue.push(piece);
  }

  #wake(): void {
    const w = this.#waiter;
    if (!w) return;
    this.#waiter = null;
    if (this.#error) w.reject(this.#error);
    else w.resolve({ value: undefined, done: true });
  }
}
