/**
 * The dispatcher's in-memory records. They belong to the core (core.ts); adapters read them
 * only through the core's snapshots. Kept small on purpose: a queued task is one TaskRecord
 * plus the spec object as decoded from the wire (target: ≤ 1 KB per queued task).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { requestOf, type ExecutorCapacity, type ResourceRequest } from './resources.js';
import type { RequestLane } from './resource-queue.js';
import { FinishedIds } from './finished-ids.js';
import { localityKey, type DataCounters, type ExecutorInfo, type TaskResult, type TaskSpec, type TaskStatus } from '../protocol/index.js';

/** A connection handle chosen by the adapter; the core never looks inside it. */
export type ConnId = number;

/** Where a task is in its life. Terminal tasks leave the queue and the registry. */
export type TaskState = 'queued' | 'dispatched' | 'finished';

export interface TaskRecord {
  /** Dispatcher-wide number, used on the executor link (compact, unique across sessions). */
  readonly uid: number;
  /** The client's id, unique within its session. */
  readonly id: string;
  readonly session: SessionRecord;
  readonly spec: TaskSpec;
  readonly priority: number;
  /** Canonical form of `spec.labels` ('' for none): tasks with equal keys share a lane. */
  readonly labelKey: string;
  state: TaskState;
  /** Attempts started so far (the current one included). */
  attempt: number;
  /** Attempts whose executor was lost: the crash counter. */
  lost: number;
  /** Attempts handed back without fault (see attempts.ts): they do not count against maxAttempts. */
  requeues: number;
  executor: ExecutorRecord | null;
  /**
   * The last attempt taken back from an executor without its result, and that executor: the one
   * late report (besides the current attempt's) the task accepts. Any other is not that
   * executor's to make.
   */
  handedBack: { exec: ExecutorRecord; attempt: number } | null;
  cancelRequested: boolean;
  submittedAt: number;
  dispatchedAt: number | null;
  /** Set by the queue at each push; its entries carry it, so stale entries are recognised. */
  queueGen: number;
  /** Locality keys of its inputs (null without inputs): what data-aware scheduling matches. */
  locality: string[] | null;
  /** The job array this task is an element of (arrays.ts); null for a plain task. */
  element: JobArray | null;
  /** Its `resources`, parsed (null for a plain task): see resources.ts. */
  readonly request: ResourceRequest | null;
  /** The GPU indices of its current attempt (null when it has none). */
  gpus: number[] | null;
}

/**
 * A job array (arrays.ts): one template spec and compact per-element state. Elements get a
 * TaskRecord only while they wait near the head of the queue, run, or are retried.
 */
export interface JobArray {
  /** The template's uid (its row in the store); dependencies on the array use it. */
  readonly uid: number;
  readonly id: string;
  readonly session: SessionRecord;
  readonly spec: TaskSpec;
  readonly from: number;
  readonly to: number;
  readonly submittedAt: number;
  /** The next index not yet given a TaskRecord (indices below it have one, or finished). */
  next: number;
  /** Indices at or above `next` that already have a record or a result (restore, single cancels); lazily allocated. */
  covered: Uint8Array | null;
  /** Elements with a record that still wait for their first dispatch (the queue window). */
  window: number;
  /** Elements without a result yet. */
  unfinished: number;
  /** Elements that ended other than succeeded, and the first of them (named by DEPENDENCY_FAILED). */
  failed: number;
  firstFailure: string | null;
  /** Waiting for its `after` dependencies: no element is queued yet. */
  held: boolean;
}

export type ExecutorState = 'busy' | 'idle' | 'draining' | 'disconnected';

export interface ExecutorRecord {
  info: ExecutorInfo;
  conn: ConnId | null;
  /** Attempts this executor holds, by task uid. */
  readonly running: Map<number, TaskRecord>;
  /** Tasks it may still receive: pull requests outstanding, or window room in push mode. */
  credit: number;
  /** Push mode with adaptive windows: the tasks beyond its slots it last asked for (`window`). */
  extra: number;
  draining: boolean;
  registeredAt: number;
  /** Last time anything arrived from it; the lease runs from here. */
  lastSeen: number;
  /** Memo of label compatibility, by task label key; made on the first labelled task (most fleets have none). */
  fits: Map<string, boolean> | null;
  completed: number;
  /** It said `bye`: its going away is planned, not a loss. */
  leaving: boolean;
  /** Since when it has held no attempt (null while it holds some): what idle scale-down reads. */
  idleSince: number | null;
  /** Data it moved, as of its last heartbeat. */
  data: DataCounters | null;
  /** Locality keys of the inputs its cache holds, as of the last heartbeat that changed them. */
  holds: Set<string> | null;
  /** What of its advertised resources its attempts use; built on first use (resources.ts `capacityOf`), reset when it registers again. */
  capacity: ExecutorCapacity | null;
  /** Held for a long-waiting large request (the scheduler's reservation): it takes nothing else until that starts. */
  reservedFor: RequestLane | null;
  /** Its hello announced `steal`: it may be asked to give back tasks that have not started (steal.ts). */
  steals: boolean;
  /** Tasks asked back by the `steal` in flight to it (0: none in flight; one at a time). */
  stealAsked: number;
  /** Not asked again before this time: what it gave back last found no free slot (no ping-pong). */
  stealPausedUntil: number;
}

export interface SessionRecord {
  readonly id: string;
  conn: ConnId | null;
  /** Unfinished tasks by client id (for cancel and idempotent resubmits). */
  readonly tasks: Map<string, TaskRecord>;
  /**
   * Finished tasks by id, each with its result's sequence number and final status packed into one
   * number (see packFinished): a resubmit of a finished id is still one task, and a query can say
   * how a task ended without keeping its result in memory. Map-like, built for a million ids.
   */
  readonly finishedIds: FinishedIds;
  /** Finished results not yet acknowledged, in sequence order. */
  readonly unacked: Array<{ seq: number; result: TaskResult }>;
  /** Sequence number of the last result stored for this session. */
  lastSeq: number;
  /** The client's cursor: every result with seq ≤ acked has been consumed. */
  acked: number;
  submitted: number;
  finished: number;
  createdAt: number;
  /** When its last client went away (null while one is connected). */
  goneAt: number | null;
  /** Client lease: cancel unfinished tasks when no client has been here this long. */
  leaseMs: number | null;
  /** Results need no reader (tasks submitted over HTTP): each is acknowledged as it is stored. */
  autoAck: boolean;
  /**
   * The session's secret, proof of ownership for another connection (docs/security.md). Null
   * only for a session restored from a store written before keys existed: anyone may resume it.
   */
  key: string | null;
  /** Job arrays by id (null until the session has one), kept after they finish, like finishedIds. */
  arrays: Map<string, JobArray> | null;
  /** Array elements without a result and without a record in `tasks` (not yet queued): results still to come. */
  unqueuedElements: number;
}

/** Tasks of a session that have no result yet: what `remaining` and `unfinished` count. */
export function unfinishedOf(session: SessionRecord): number {
  return session.tasks.size + session.unqueuedElements;
}

const STATUSES: readonly TaskStatus[] = ['succeeded', 'failed', 'timed_out', 'cancelled', 'lost'];

/** A finished task's sequence number and status as one number (8 bytes a task, not an object). */
export function packFinished(seq: number, status: TaskStatus): number {
  return seq * 8 + STATUSES.indexOf(status);
}

export function unpackFinished(packed: number): { seq: number; status: TaskStatus } {
  return { seq: Math.floor(packed / 8), status: STATUSES[packed % 8] };
}

/** Time source, injected so that leases and timeouts are testable without sleeping. */
export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

/** Where new session ids come from, injected like the clock so that tests can name them. */
export interface IdSource {
  session(): string;
  /** A new session's key: 144 random bits (24 characters). */
  sessionKey(): string;
}
export const randomIds: IdSource = { session: () => randomUUID(), sessionKey: () => randomBytes(18).toString('base64url') };

/**
 * Every state change of the core passes through this interface, in order. The in-memory store
 * ignores them; the durable store writes them and commits them as one group per turn of the event
 * loop (outbound.ts), before the adapter sends the acknowledgements the changes imply.
 */
export interface Journal {
  taskAccepted(task: TaskRecord): void;
  taskDispatched(task: TaskRecord): void;
  taskRequeued(task: TaskRecord): void;
  taskFinished(task: TaskRecord, seq: number, result: TaskResult): void;
  /** A new session, or a change of its cursor or lease. */
  sessionChanged(session: SessionRecord): void;
  /** A finished session past its retention: forget it and its results. */
  sessionCollected(session: SessionRecord): void;
  /** The lease table: who holds attempts, so a restarted dispatcher waits for them. */
  executorRegistered(exec: ExecutorRecord): void;
  executorRemoved(exec: ExecutorRecord): void;
  /** A successful result memoized under a task's `cacheKey` (memo.ts), with the commit of that result. */
  memoRecorded?(key: string, result: TaskResult, at: number): void;
  /** Memoized results recorded before `before` expired. */
  memoExpired?(before: number): void;
}

/** The journal of the in-memory store: keeps nothing. */
export const nullJournal: Journal = {
  taskAccepted() {},
  taskDispatched() {},
  taskRequeued() {},
  taskFinished() {},
  sessionChanged() {},
  sessionCollected() {},
  executorRegistered() {},
  executorRemoved() {},
};

/** A session with no tasks yet; its client is `conn` (or away since `goneAt`). */
export function newSession(id: string, createdAt: number, leaseMs: number | null, goneAt: number | null, key: string | null): SessionRecord {
  return { id, conn: null, tasks: new Map(), finishedIds: new FinishedIds(), unacked: [], lastSeq: 0, acked: 0, submitted: 0, finished: 0, createdAt, goneAt, leaseMs, autoAck: false, key, arrays: null, unqueuedElements: 0 };
}

/** An executor record holding no attempts; `now` starts its lease. */
export function newExecutor(info: ExecutorInfo, conn: ConnId | null, registeredAt: number, now: number): ExecutorRecord {
  return { info, conn, running: new Map(), credit: 0, extra: 0, draining: false, registeredAt, lastSeen: now, fits: null, completed: 0, leaving: false, idleSince: now, data: null, holds: null, capacity: null, reservedFor: null, steals: false, stealAsked: 0, stealPausedUntil: 0 };
}

/** A task record in the `queued` state. */
export function newTask(uid: number, id: string, session: SessionRecord, spec: TaskSpec, submittedAt: number): TaskRecord {
  return {
    uid,
    id,
    session,
    spec,
    priority: spec.priority ?? 0,
    labelKey: labelKeyOf(spec.labels),
    state: 'queued',
    attempt: 0,
    lost: 0,
    requeues: 0,
    executor: null,
    handedBack: null,
    cancelRequested: false,
    submittedAt,
    dispatchedAt: null,
    queueGen: 0,
    locality: spec.inputs?.length ? spec.inputs.map((i) => localityKey(i)) : null,
    element: null,
    request: spec.resources === undefined ? null : requestOf(spec.resources),
    gpus: null,
  };
}

/** Canonical key of a label requirement: sorted `k=v` pairs joined by newlines. */
export function labelKeyOf(labels: Record<string, string> | undefined): string {
  if (!labels) return '';
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  keys.sort();
  return keys.map((k) => `${k}=${labels[k]}`).join('\n');
}

/** True when an executor with `have` labels may run a task requiring `need`. */
export function labelsFit(need: Record<string, string> | undefined, have: Record<string, string>): boolean {
  if (!need) return true;
  for (const k in need) if (have[k] !== need[k]) return false;
  return true;
}
