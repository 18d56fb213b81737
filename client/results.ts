/**
 * The result stream of a session on the client side: exactly-once delivery to the application
 * (by sequence number), the buffer of results nobody asked for yet, the iterators of
 * {@link Client.results}, and the cursor that acknowledges what the application has.
 *
 * Acknowledgement is lazy on purpose. A result handed out by an iterator counts as consumed only
 * when that iterator is asked for the next one (or is returned): a program that crashes while
 * handling a result gets it again from the dispatcher after it reattaches. So after a crash the
 * last few results come again; within one process every result is handed out once.
 */
import type { TaskResult } from '../protocol/index.js';

/** One received result, until every result up to it is handed out (then the cursor passes it). */
interface Entry {
  seq: number;
  result: TaskResult;
  /** Handed out and done with: the cursor may pass it. */
  taken: boolean;
}

type Reader = (entry: Entry | null) => void;

const DONE: IteratorResult<TaskResult> = Object.freeze({ value: undefined, done: true });

export class ResultStream {
  /** The highest sequence number received: anything at or below it is a replay. */
  #lastSeq: number;
  /** Every result up to this sequence number is handed out: what the dispatcher may forget. */
  #cursor: number;
  /** Received results above the cursor, in sequence order. */
  #window: Entry[] = [];
  /** Received results nobody has asked for yet, in sequence order. */
  #buffer: Entry[] = [];
  #readers: Reader[] = [];
  #closed = false;

  /** @param onAdvance called when the cursor moves: acknowledge up to it (the caller batches). */
  constructor(
    cursor: number,
    private readonly onAdvance: (cursor: number) => void,
  ) {
    this.#cursor = this.#lastSeq = cursor;
  }

  get cursor(): number {
    return this.#cursor;
  }

  /** Results received and not yet handed out. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /**
   * The dispatcher's view of the session after a welcome. A cursor ahead of ours means another
   * client consumed results meanwhile; `forgotten` means the dispatcher lost the session and
   * numbers results from 0 again (what is buffered stays, to be handed out).
   */
  rebase(cursor: number, forgotten: boolean): void {
    if (forgotten) {
      this.#window = [];
      this.#cursor = this.#lastSeq = 0;
      return;
    }
    if (cursor <= this.#cursor) return;
    this.#cursor = cursor;
    if (cursor > this.#lastSeq) this.#lastSeq = cursor;
    this.#window = this.#window.filter((e) => e.seq > cursor);
  }

  /**
   * A result arrived. `claimed`: a waiter (a submit() promise) takes it now; otherwise it goes to
   * the oldest waiting iterator, or into the buffer. Returns false for a replay already seen.
   */
  receive(seq: number, result: TaskResult, claimed: boolean): boolean {
    if (seq <= this.#lastSeq) return false;
    this.#lastSeq = seq;
    const entry: Entry = { seq, result, taken: claimed };
    this.#window.push(entry);
    if (claimed) this.#advance();
    else {
      const reader = this.#readers.shift();
      if (reader) reader(entry);
      else this.#buffer.push(entry);
    }
    return true;
  }

  /** Takes a buffered result out of the stream by task id (for a duplicate submit of a finished task). */
  take(id: string): TaskResult | undefined {
    const i = this.#buffer.findIndex((e) => e.result.id === id);
    if (i < 0) return undefined;
    const [entry] = this.#buffer.splice(i, 1);
    entry.taken = true;
    this.#advance();
    return entry.result;
  }

  /** No more results will come: waiting iterators end; buffered results are still handed out. */
  close(): void {
    this.#closed = true;
    for (const reader of this.#readers.splice(0)) reader(null);
  }

  /** An iterator over results not yet handed out, as they arrive; see Client.results(). */
  iterator(): AsyncIterableIterator<TaskResult> {
    let held: Entry | null = null; // handed out by this iterator; consumed when it moves on
    let pending: Promise<IteratorResult<TaskResult>> | null = null;
    let reader: Reader | null = null;
    let finished = false;
    const release = (): void => {
      if (!held) return;
      held.taken = true;
      held = null;
      this.#advance();
    };
    const next = (): Promise<IteratorResult<TaskResult>> => {
      // A next() that was given up on (a Promise.race with a timeout) still waits for the next
      // result: asking again returns that same promise, so the result it gets is not lost.
      if (pending) return pending;
      release();
      if (finished) return Promise.resolve(DONE);
      const entry = this.#buffer.shift();
      if (entry) {
        held = entry;
        return Promise.resolve({ value: entry.result, done: false });
      }
      if (this.#closed) {
        finished = true;
        return Promise.resolve(DONE);
      }
      pending = new Promise<IteratorResult<TaskResult>>((resolve) => {
        reader = (e) => {
          pending = reader = null;
          if (e === null) {
            finished = true;
            return resolve(DONE);
          }
          held = e;
          resolve({ value: e.result, done: false });
        };
        this.#readers.push(reader);
      });
      return pending;
    };
    const detach = (): Promise<IteratorResult<TaskResult>> => {
      finished = true;
      release();
      // Detach the waiting reader, so the next result goes to another iterator or the buffer
      // instead of into a promise nobody will read; that promise ends instead.
      if (reader) {
        const r = reader;
        this.#readers = this.#readers.filter((x) => x !== r);
        r(null);
      }
      return Promise.resolve(DONE);
    };
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      next,
      return: detach,
    };
  }

  #advance(): void {
    const before = this.#cursor;
    while (this.#window.length > 0 && this.#window[0].taken) this.#cursor = this.#window.shift()!.seq;
    if (this.#cursor !== before) this.onAdvance(this.#cursor);
  }
}
