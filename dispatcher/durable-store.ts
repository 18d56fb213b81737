/**
 * What the dispatcher needs of a durable store, whichever engine holds it: SQLite (store.ts, the
 * embedded default) or PostgreSQL (pg-store.ts, for several dispatchers on one database).
 * main.ts, the metrics and the provisioner see only this.
 */
import type { TaskResult } from '../protocol/index.js';
import type { DispatcherCore } from './core.js';
import type { Buckets } from './histogram.js';
import type { Journal } from './model.js';

/** What recovery found, for the log. */
export interface Recovered {
  sessions: number;
  queued: number;
  dispatched: number;
  finished: number;
  executors: number;
  instances: Array<{ id: string; record: unknown }>;
}

/**
 * A durable store: the core's Journal (changes recorded as they happen), written in group
 * commits; the adapter acknowledges what a commit holds only once it resolves.
 */
export interface DurableStore extends Journal {
  /** Where the state lives, for people: a file, or a URL without its password. */
  readonly name: string;
  /** Seconds from handing a batch over until it is durable. */
  readonly commitSeconds: Buckets;
  /** Changes (task rows, results, sessions, other records) per commit. */
  readonly batchChanges: Buckets;
  /** Loads everything kept into the core before the dispatcher serves. */
  recover(core: DispatcherCore): Promise<Recovered>;
  /** The result memoized under `key` (memo.ts), or null. */
  lookupMemo(key: string): Promise<TaskResult | null>;
  /** Stored results by (session, seq), for task queries; null where none is stored. */
  lookupResults(refs: Array<{ session: string; seq: number }>): Promise<Array<TaskResult | null>>;
  /** Provisioner instance records (written with the next commit). */
  putInstance(id: string, record: unknown): void;
  dropInstance(id: string): void;
  /** Writes what was recorded since the last commit: null when nothing was, else resolves once durable. */
  commit(): Promise<void> | null;
  /** Writes what is left and releases the store. */
  close(): Promise<void>;
}
