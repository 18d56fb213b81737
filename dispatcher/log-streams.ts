/**
 * Live output readers (`falconet logs ID [-f]`, the SDK's `client.logs(id)`): the dispatcher's side.
 * Pure, like the rest of the core: no I/O, orders to executors through the Outbox, and what readers
 * are to receive waits here until the adapter takes it (as each reader's socket has room).
 *
 * The dispatcher keeps nothing per task unless someone reads it. Per read task it keeps the
 * readers; per reader a buffer of at most `readerBufferBytes`: what does not fit is dropped and
 * counted, and the reader gets `dropped: bytes` with the next chunks that fit, so a slow reader
 * costs bounded memory and never slows the task or other readers.
 *
 * The executor streams an attempt only while it has readers: `tail on` when a reader needs a
 * snapshot (the first, or a later one: each gets what the executor holds), `tail off` when the last
 * leaves. A reader takes the first `snapshot` after it joined, then the live messages after it; a
 * reader already live skips later snapshots (asked for someone else). When the attempt ends without
 * a result and the task runs again, readers get a note and follow the next attempt; when the task
 * ends they get `end` with its status.
 */
import type { DispatcherToClient, DispatcherToExecutor, ExecutorMessage, LogChunk, Msg, TaskState } from '../protocol/index.js';
import type { ConnId, ExecutorRecord, TaskRecord } from './model.js';

export type LogMessage = Msg<DispatcherToClient, 'log'>;
type EndStatus = TaskState | 'stopped';

/** How the log streams reach executors (the core's Outbox). */
export interface LogOrders {
  toExecutor(conn: ConnId, msg: DispatcherToExecutor): void;
}

export interface LogStreamsOptions {
  /** Bytes of output waiting for one reader at most; beyond, output is dropped and counted. */
  readerBufferBytes: number;
}

/** One piece of what a reader is to receive, in order. */
interface Item {
  chunks: LogChunk[];
  bytes: number;
  dropped: number;
  note?: string;
  end?: { status: EndStatus; attempt?: number };
}

interface Reader {
  readonly conn: ConnId;
  readonly ref: number;
  readonly follow: boolean;
  readonly watched: Watched;
  /** It has had its snapshot: it takes live output from now on. */
  live: boolean;
  items: Item[];
  bytes: number;
  /** Dropped since the last item that fit: said with the next one. */
  dropped: number;
  ended: boolean;
}

interface Watched {
  readonly task: TaskRecord;
  readonly readers: Set<Reader>;
  /** The attempt and executor connection `tail on` was last sent for (null: none asked). */
  asked: { attempt: number; conn: ConnId } | null;
}

export class LogStreams {
  readonly #watched = new Map<number, Watched>();
  readonly #byConn = new Map<ConnId, Set<Reader>>();
  /** Connections with items waiting. */
  readonly #waiting = new Set<ConnId>();

  constructor(
    private readonly out: LogOrders,
    private readonly options: LogStreamsOptions,
  ) {}

  /** True while any task is read: the core's hooks cost nothing otherwise. */
  get active(): boolean {
    return this.#watched.size > 0;
  }

  /** Connections with log messages to take. */
  get waiting(): ReadonlySet<ConnId> {
    return this.#waiting;
  }

  /** Bytes held for readers, over all of them (for status and tests: bounded by readers × buffer). */
  get heldBytes(): number {
    let n = 0;
    for (const readers of this.#byConn.values()) for (const r of readers) n += r.bytes;
    return n;
  }

  /** Tasks read now. */
  get tasks(): number {
    return this.#watched.size;
  }

  get readers(): number {
    let n = 0;
    for (const readers of this.#byConn.values()) n += readers.size;
    return n;
  }

  /** A reader of an unfinished task. A queued task without `follow` ends at once: it wrote nothing. */
  watch(conn: ConnId, ref: number, task: TaskRecord, follow: boolean): void {
    let w = this.#watched.get(task.uid);
    if (!w) this.#watched.set(task.uid, (w = { task, readers: new Set(), asked: null }));
    const r: Reader = { conn, ref, follow, watched: w, live: false, items: [], bytes: 0, dropped: 0, ended: false };
    w.readers.add(r);
    let mine = this.#byConn.get(conn);
    if (!mine) this.#byConn.set(conn, (mine = new Set()));
    mine.add(r);
    const conn2 = task.state === 'dispatched' ? task.executor?.conn : null;
    if (conn2 != null) this.#ask(w, conn2, true);
    else if (!follow) this.#end(r, task.state === 'queued' ? 'queued' : 'running', task.state === 'queued' ? undefined : "its executor's connection is down: no output now");
  }

  /** The reader `ref` of `conn` stops (the SDK's iterator was returned). */
  stop(conn: ConnId, ref: number): void {
    for (const r of this.#byConn.get(conn) ?? []) if (r.ref === ref && !r.ended) this.#end(r, 'stopped');
  }

  /** A read task started an attempt: its executor streams it (the snapshot of a new attempt is empty). */
  dispatched(task: TaskRecord): void {
    const w = this.#watched.get(task.uid);
    if (!w || task.executor?.conn == null) return;
    for (const r of w.readers) r.live = false;
    this.#ask(w, task.executor.conn, true);
  }

  /** Output from an executor: to the readers of that attempt. */
  output(exec: ExecutorRecord, msg: Msg<ExecutorMessage, 'out'>): void {
    const w = this.#watched.get(msg.uid);
    if (!w || w.task.attempt !== msg.attempt || w.task.executor !== exec || w.task.state !== 'dispatched') return;
    let bytes = 0;
    for (const c of msg.chunks) bytes += c.data.length;
    for (const r of w.readers) {
      if (r.ended) continue;
      if (msg.snapshot) {
        if (r.live) continue;
        r.live = true;
        this.#push(r, { chunks: msg.chunks, bytes, dropped: msg.dropped ?? 0 });
        if (!r.follow) this.#end(r, 'running');
      } else if (r.live) this.#push(r, { chunks: msg.chunks, bytes, dropped: msg.dropped ?? 0 });
    }
  }

  /** A read task's attempt ended without its result and the task waits to run again. */
  requeued(task: TaskRecord, why: string): void {
    const w = this.#watched.get(task.uid);
    if (!w) return;
    w.asked = null;
    for (const r of [...w.readers]) {
      if (!r.follow) this.#end(r, 'queued', `attempt ${task.attempt} ended without a result (${why})`);
      else {
        r.live = false;
        this.#push(r, { chunks: [], bytes: 0, dropped: 0, note: `attempt ${task.attempt} ended without a result (${why}); following attempt ${task.attempt + 1}` });
      }
    }
  }

  /** A read task finished: its readers get their end (its output came before its result). */
  finished(task: TaskRecord, status: TaskState): void {
    const w = this.#watched.get(task.uid);
    if (!w) return;
    for (const r of [...w.readers]) this.#end(r, status);
    this.#watched.delete(task.uid);
  }

  /** An executor's connection is gone: what its read attempts write meanwhile is not seen. */
  executorGone(exec: ExecutorRecord, conn: ConnId): void {
    for (const w of this.#watched.values()) {
      if (w.task.executor !== exec || w.asked?.conn !== conn) continue;
      w.asked = null;
      for (const r of [...w.readers]) {
        const note = `lost the connection to executor ${exec.info.id}; output it writes meanwhile is not seen`;
        if (!r.follow) this.#end(r, 'running', note);
        else this.#push(r, { chunks: [], bytes: 0, dropped: 0, note });
      }
    }
  }

  /** An executor came back holding attempts that are read: it streams them again. */
  executorBack(exec: ExecutorRecord): void {
    for (const w of this.#watched.values()) {
      if (w.task.executor === exec && w.task.state === 'dispatched' && exec.conn !== null && w.readers.size > 0) this.#ask(w, exec.conn, true);
    }
  }

  /** A client connection is gone: its readers go, and an attempt no one reads any more stops streaming. */
  clientGone(conn: ConnId): void {
    const mine = this.#byConn.get(conn);
    if (!mine) return;
    this.#byConn.delete(conn);
    this.#waiting.delete(conn);
    for (const r of mine) this.#drop(r);
  }

  /**
   * What `conn`'s readers are to receive now, as `log` messages of about `maxBytes` of chunk data
   * at most each (a single larger chunk goes alone). Readers whose end is taken are forgotten.
   */
  take(conn: ConnId, maxBytes: number): LogMessage[] {
    this.#waiting.delete(conn);
    const mine = this.#byConn.get(conn);
    if (!mine) return [];
    const msgs: LogMessage[] = [];
    for (const r of mine) {
      let msg: LogMessage | null = null;
      let size = 0;
      for (const item of r.items) {
        // A note, a drop or an end starts a message of its own (each message carries one of each).
        if (!msg || item.note !== undefined || item.dropped > 0 || size + item.bytes > maxBytes) {
          if (msg) msgs.push(msg);
          msg = { t: 'log', ref: r.ref, chunks: [] };
          size = 0;
          if (item.dropped > 0) msg.dropped = item.dropped;
          if (item.note !== undefined) msg.note = item.note;
        }
        msg.chunks.push(...item.chunks);
        size += item.bytes;
        if (item.end) msg.end = item.end;
      }
      if (msg) msgs.push(msg);
      r.items = [];
      r.bytes = 0;
      if (r.ended) {
        mine.delete(r);
        this.#drop(r);
      }
    }
    if (mine.size === 0) this.#byConn.delete(conn);
    return msgs;
  }

  #ask(w: Watched, conn: ConnId, on: boolean): void {
    w.asked = on ? { attempt: w.task.attempt, conn } : null;
    this.out.toExecutor(conn, { t: 'tail', uid: w.task.uid, attempt: w.task.attempt, on });
  }

  #push(r: Reader, item: Item): void {
    if (r.ended) return;
    if (item.bytes > 0 && r.bytes + item.bytes > this.options.readerBufferBytes) {
      r.dropped += item.bytes + item.dropped;
      return;
    }
    item.dropped += r.dropped;
    r.dropped = 0;
    r.items.push(item);
    r.bytes += item.bytes;
    this.#waiting.add(r.conn);
  }

  #end(r: Reader, status: EndStatus, note?: string): void {
    if (r.ended) return;
    const attempt = r.watched.task.attempt;
    this.#push(r, { chunks: [], bytes: 0, dropped: 0, ...(note !== undefined ? { note } : {}), end: { status, ...(attempt > 0 ? { attempt } : {}) } });
    r.ended = true;
    this.#leave(r);
  }

  /** The reader no longer receives output; the attempt stops streaming when no one reads it. */
  #leave(r: Reader): void {
    const w = r.watched;
    if (!w.readers.delete(r) || w.readers.size > 0) return;
    if (w.asked && w.task.state === 'dispatched' && w.task.executor?.conn === w.asked.conn) this.#ask(w, w.asked.conn, false);
    if (this.#watched.get(w.task.uid) === w) this.#watched.delete(w.task.uid);
  }

  #drop(r: Reader): void {
    this.#leave(r);
    this.#byConn.get(r.conn)?.delete(r);
  }
}
