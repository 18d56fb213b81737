/**
 * The store's writer thread. The dispatcher thread hands it one batch at a time; it writes the
 * batch in one transaction (fsync included with `--sync full`) and answers. Moving commits here
 * keeps the fsync wait off the dispatch loop, which meanwhile gathers the next, larger batch:
 * group commit that grows with load, and one row write for a task accepted, dispatched and
 * finished between two commits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Unpackr } from 'msgpackr';
import { traceClock } from './commit-trace.js';
import { batchWriter, openDatabase, storeError, type CommitBatch } from './sqlite.js';

export interface WriterData {
  dataDir: string;
  file: string;
  sync: 'full' | 'normal';
  /** The number of the newest task counters in the file (sqlite.ts, storedCounters). */
  countersSeq: number;
  /** Time each commit's steps and send the times with its answer (commit-trace.ts). */
  trace: boolean;
}

/** Messages from the writer: `ready` once open, then one answer per batch, in order. */
export type WriterReply =
  | { kind: 'ready' }
  /** `t`: when traced, the writer's times (woke, unpacked, statements done, committed). */
  | { kind: 'committed'; n: number; t?: number[] }
  | { kind: 'failed'; code: string; message: string }
  | { kind: 'found'; n: number; results: Array<Uint8Array | null> };

/** A request for stored results by (session, seq): answered in order with everything committed before it. */
export interface LookupRequest {
  lookup: number;
  refs: Array<[session: string, seq: number]>;
}

/** A request for the result memoized under `key` (memo.ts): answered `found` with one result or null. */
export interface MemoRequest {
  memo: number;
  key: string;
}

/** What the dispatcher thread asks of the writer, in order. */
export type WriterRequest = { n: number; bytes: Uint8Array } | LookupRequest | MemoRequest | 'close';

const port = parentPort!;
const data = workerData as WriterData;
try {
  const db = openDatabase(data.dataDir, data.file, data.sync);
  let statementsDone = 0;
  const write = batchWriter(db, data.countersSeq, data.trace ? () => (statementsDone = traceClock()) : undefined);
  const unpackr = new Unpackr({ useRecords: true });
  const resultAt = db.prepare('SELECT result FROM results WHERE session = ? AND seq = ?').pluck();
  const memoOf = db.prepare('SELECT result FROM memo WHERE key = ?').pluck();
  port.on('message', (msg: WriterRequest) => {
    if (msg === 'close') {
      db.close();
      port.close();
      return;
    }
    if ('memo' in msg) {
      let result: Uint8Array | null = null;
      try {
        result = (memoOf.get(msg.key) as Uint8Array | undefined) ?? null;
      } catch {} // not found: the task runs instead
      port.postMessage({ kind: 'found', n: msg.memo, results: [result] } satisfies WriterReply);
      return;
    }
    if ('lookup' in msg) {
      let results: Array<Uint8Array | null>;
      try {
        results = msg.refs.map(([session, seq]) => (resultAt.get(session, seq) as Uint8Array | undefined) ?? null);
      } catch {
        results = msg.refs.map(() => null); // a query is not worth failing the store over
      }
      port.postMessage({ kind: 'found', n: msg.lookup, results } satisfies WriterReply);
      return;
    }
    try {
      const woke = data.trace ? traceClock() : 0;
      const batch = unpackr.unpack(Buffer.from(msg.bytes.buffer, msg.bytes.byteOffset, msg.bytes.byteLength)) as CommitBatch;
      const unpacked = data.trace ? traceClock() : 0;
      write(batch);
      const t = data.trace ? [woke, unpacked, statementsDone, traceClock()] : undefined;
      port.postMessage({ kind: 'committed', n: msg.n, t } satisfies WriterReply);
    } catch (err) {
      const e = storeError(err, data.file);
      port.postMessage({ kind: 'failed', code: e.code, message: e.message } satisfies WriterReply);
    }
  });
  port.postMessage({ kind: 'ready' } satisfies WriterReply);
} catch (err) {
  const e = storeError(err, data.file);
  port.postMessage({ kind: 'failed', code: e.code, message: e.message } satisfies WriterReply);
}
