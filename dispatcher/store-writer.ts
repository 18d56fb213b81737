/**
 * The store's writer thread. The dispatcher thread hands it one batch at a time; it writes the
 * batch in one transaction (fsync included with `--sync full`) and answers. Moving commits here
 * keeps the fsync wait off the dispatch loop, which meanwhile gathers the next, larger batch:
 * group commit that grows with load, and one row write for a task accepted, dispatched and
 * finished between two commits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Unpackr } from 'msgpackr';
import { batchWriter, openDatabase, storeError, type CommitBatch } from './sqlite.js';

export interface WriterData {
  dataDir: string;
  file: string;
  sync: 'full' | 'normal';
}

/** Messages from the writer: `ready` once open, then one answer per batch, in order. */
export type WriterReply =
  | { kind: 'ready' }
  | { kind: 'committed'; n: number }
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

const port = parentPort!;
const data = workerData as WriterData;
try {
  const db = openDatabase(data.dataDir, data.file, data.sync);
  const write = batchWriter(db);
  const unpackr = new Unpackr({ useRecords: true });
  const resultAt = db.prepare('SELECT result FROM results WHERE session = ? AND seq = ?').pluck();
  const memoOf = db.prepare('SELECT result FROM memo WHERE key = ?').pluck();
  port.on('message', (msg: { n: number; bytes: Uint8Array } | LookupRequest | MemoRequest | 'close') => {
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
      write(unpackr.unpack(Buffer.from(msg.bytes.buffer, msg.bytes.byteOffset, msg.bytes.byteLength)) as CommitBatch);
      port.postMessage({ kind: 'committed', n: msg.n } satisfies WriterReply);
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
