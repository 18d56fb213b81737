/**
 * The core's side of running several dispatchers over one database (cluster.ts, docs/scale-out.md).
 * A dispatcher holds in memory only the sessions of the partitions it leases; this part of the
 * core answers what the cluster loop asks (which partitions hold work, which sessions can be let
 * go), takes back what it is handed (results that reached another dispatcher, signs of life of
 * executors connected elsewhere), and tells the core which attempts are another dispatcher's.
 *
 * Pure like the rest of the core: no I/O, time from the injected clock. Alone (no cluster), it is
 * inert: every uid is this dispatcher's and nothing is foreign.
 */
import { ErrorCode, type AttemptResult } from '../protocol/index.js';
import type { Outbox } from './core.js';
import { unfinishedOf, type Clock, type ExecutorRecord, type IdSource, type SessionRecord } from './model.js';
import type { ExecutorRegistry } from './registry.js';
import type { SessionTable } from './sessions.js';
import type { TaskLifecycle } from './lifecycle.js';

/** What the cluster tells the core; set once with {@link PartitionHost.join}. */
export interface ClusterMembership {
  /** Partitions in all: a uid's partition is `uid % partitions`. */
  partitions: number;
  /** The partition a session's tasks live in. */
  partitionOf(sessionId: string): number;
  /** A new session id in one of the partitions this dispatcher holds (it holds one: see SessionRouter). */
  newSessionId(): string;
  /** True while this dispatcher leases the partition. */
  owns(partition: number): boolean;
  /**
   * An attempt's result for a task of a partition this dispatcher does not hold (its executor
   * moved here after its dispatcher died): written to the store's inbox for the owner, in the
   * next commit, before the executor hears that it was received.
   */
  foreignResult(partition: number, executor: string, result: AttemptResult): void;
}

export class PartitionHost {
  #member: ClusterMembership | null = null;

  constructor(
    private readonly sessions: SessionTable,
    private readonly registry: ExecutorRegistry,
    private readonly tasks: TaskLifecycle,
    private readonly clock: Clock,
    private readonly ids: IdSource,
    private readonly out: Outbox,
  ) {}

  /**
   * Joins a cluster: from now on uids are tagged with their partition, drawn from `firstCounter`
   * on (a range this incarnation holds alone: see cluster.ts). Call before any task is accepted.
   */
  join(member: ClusterMembership, firstCounter: number): void {
    this.#member = member;
    this.sessions.useIds({ session: () => member.newSessionId(), sessionKey: this.ids.sessionKey });
    this.tasks.partitionUids(firstCounter, member.partitions, (s) => member.partitionOf(s.id));
  }

  get member(): ClusterMembership | null {
    return this.#member;
  }

  /** True when the task `uid` belongs to a partition another dispatcher holds (never when alone). */
  foreign(uid: number): boolean {
    const m = this.#member;
    return m !== null && this.tasks.get(uid) === undefined && !m.owns(uid % m.partitions);
  }

  /** Hands a foreign attempt's result to the cluster (see {@link ClusterMembership.foreignResult}). */
  forward(executor: string, result: AttemptResult): void {
    const m = this.#member!;
    m.foreignResult(result.uid % m.partitions, executor, result);
  }

  /**
   * A result another dispatcher received for one of our tasks (from the store's inbox), as if its
   * executor had reported it here. Returns false when nothing took it (the attempt is no longer
   * current: re-queued, finished or cancelled meanwhile); the inbox row goes either way.
   */
  remoteResult(executorId: string, result: AttemptResult): boolean {
    const exec = this.registry.get(executorId);
    if (!exec) return false;
    return this.tasks.reported(exec, result) !== 'refused';
  }

  /**
   * Executors that are alive at another dispatcher (their heartbeats there are recorded in the
   * store): the records we keep of them, for attempts we adopted with their partitions, do not
   * expire while they run there.
   */
  aliveElsewhere(ids: Iterable<string>): void {
    const now = this.clock.now();
    for (const id of ids) {
      const exec = this.registry.get(id);
      if (exec && exec.conn === null && exec.lastSeen < now) exec.lastSeen = now;
    }
  }

  /** Connected executors that hold nothing, have not since `since`, and are not draining: free to move. */
  #idle(since: number): ExecutorRecord[] {
    const out: ExecutorRecord[] = [];
    for (const e of this.registry.values()) if (e.conn !== null && e.running.size === 0 && !e.draining && !e.leaving && e.idleSince !== null && e.idleSince <= since) out.push(e);
    return out;
  }

  /** Executors connected here now. */
  connected(): number {
    let n = 0;
    for (const e of this.registry.values()) if (e.conn !== null) n++;
    return n;
  }

  /** How many executors have been idle here since `since` (what the cluster reports of this dispatcher). */
  idleCount(since: number): number {
    return this.#idle(since).length;
  }

  /**
   * Sends up to `n` executors idle since `since` to the dispatcher at `to` (MOVED): they hold no
   * attempt, so nothing is handed back; they register there and run its partitions' tasks.
   */
  sendAway(n: number, since: number, to: string): number {
    const moving = this.#idle(since).slice(0, n);
    for (const e of moving) this.out.close(e.conn!, ErrorCode.MOVED, `idle here; ${to} has tasks waiting`, to);
    return moving.length;
  }

  /** Executors we keep records of that are not connected here but hold attempts: who to ask the store about. */
  awaited(): string[] {
    const out: string[] = [];
    for (const exec of this.registry.values()) if (exec.conn === null && exec.running.size > 0) out.push(exec.info.id);
    return out;
  }

  /** Partitions with a session that has unfinished tasks or a client: not to be given away. */
  busyPartitions(): Set<number> {
    const busy = new Set<number>();
    const m = this.#member;
    if (!m) return busy;
    for (const s of this.sessions.values()) if (isBusy(s)) busy.add(m.partitionOf(s.id));
    return busy;
  }

  /**
   * Forgets the sessions of `partition` (all idle: see busyPartitions), so that it can be handed
   * to another dispatcher; the store keeps them. Returns how many were let go.
   */
  release(partition: number): number {
    const m = this.#member!;
    let n = 0;
    for (const s of [...this.sessions.values()]) {
      if (m.partitionOf(s.id) !== partition || isBusy(s)) continue;
      this.sessions.forget(s);
      n++;
    }
    return n;
  }
}

function isBusy(s: SessionRecord): boolean {
  return s.conn !== null || unfinishedOf(s) > 0;
}
