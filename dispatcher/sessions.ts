/**
 * The session table: every client's stream of results, which outlives the client's connection.
 * A session keeps its unfinished tasks by id (for cancel and idempotent resubmits), the ids of
 * finished ones, and the results not yet acknowledged, in sequence order, for replay on resume.
 * Pure: no I/O; time comes in as arguments.
 */
import type { TaskResult } from '../protocol/index.js';
import { newSession, packFinished, unfinishedOf, type ConnId, type IdSource, type Journal, type SessionRecord } from './model.js';

/** What opening a session did. */
export interface Opened {
  session: SessionRecord;
  /** The dispatcher knew the session already. */
  resumed: boolean;
  /** A connection this one took the session over from, to be closed. */
  displaced: ConnId | null;
}

export class SessionTable {
  readonly #byId = new Map<string, SessionRecord>();
  readonly #byConn = new Map<ConnId, SessionRecord>();

  constructor(
    private readonly journal: Journal,
    private readonly ids: IdSource,
  ) {}

  get size(): number {
    return this.#byId.size;
  }

  get(id: string): SessionRecord | undefined {
    return this.#byId.get(id);
  }

  values(): IterableIterator<SessionRecord> {
    return this.#byId.values();
  }

  /** The session a client connection speaks for. */
  of(conn: ConnId): SessionRecord | undefined {
    return this.#byConn.get(conn);
  }

  /** Sessions with a client connected now. */
  connected(): number {
    return this.#byConn.size;
  }

  /** Resumes `id` (or opens a new session) for `conn`; a newer connection takes it over. */
  open(conn: ConnId, now: number, id?: string, cursor?: number, leaseMs?: number): Opened {
    let session = id === undefined ? undefined : this.#byId.get(id);
    const resumed = session !== undefined;
    let displaced: ConnId | null = null;
    if (!session) {
      session = newSession(id ?? this.ids.session(), now, leaseMs ?? null, null);
      this.#byId.set(session.id, session);
      this.journal.sessionChanged(session);
    } else if (session.conn !== null && session.conn !== conn) {
      this.#byConn.delete(session.conn);
      displaced = session.conn;
    }
    session.conn = conn;
    session.goneAt = null;
    if (leaseMs !== undefined && session.leaseMs !== leaseMs) {
      session.leaseMs = leaseMs;
      this.journal.sessionChanged(session);
    }
    this.#byConn.set(conn, session);
    if (cursor !== undefined) this.ack(session, cursor);
    return { session, resumed, displaced };
  }

  /** The client consumed every result up to `cursor`: forget them. */
  ack(session: SessionRecord, cursor: number): void {
    if (cursor <= session.acked) return;
    session.acked = Math.min(cursor, session.lastSeq);
    let drop = 0;
    while (drop < session.unacked.length && session.unacked[drop].seq <= session.acked) drop++;
    if (drop > 0) session.unacked.splice(0, drop);
    this.journal.sessionChanged(session);
  }

  /** A client connection closed; its session stays, counting as away from `now`. */
  detach(conn: ConnId, now: number): void {
    const session = this.#byConn.get(conn);
    if (!session) return;
    this.#byConn.delete(conn);
    if (session.conn === conn) {
      session.conn = null;
      session.goneAt = now;
    }
  }

  /**
   * A session for clients without a result stream (HTTP): created if new, its results
   * acknowledged as they are stored from now on (queries still find them).
   */
  ensureDetached(id: string, now: number): SessionRecord {
    let session = this.#byId.get(id);
    if (!session) {
      session = newSession(id, now, null, now);
      this.#byId.set(id, session);
      this.journal.sessionChanged(session);
    }
    if (!session.autoAck) {
      session.autoAck = true;
      if (session.lastSeq > session.acked) this.ack(session, session.lastSeq);
    }
    return session;
  }

  /** Appends a finished task's result to its session's stream; returns its sequence number. */
  append(session: SessionRecord, id: string, result: TaskResult): number {
    session.tasks.delete(id);
    const seq = ++session.lastSeq;
    session.finishedIds.set(id, packFinished(seq, result.status));
    session.finished++;
    if (session.autoAck && session.conn === null) {
      session.acked = seq;
      this.journal.sessionChanged(session);
    } else session.unacked.push({ seq, result });
    return seq;
  }

  /**
   * Sessions whose client has been away past the session's lease with tasks unfinished (to be
   * cancelled); finished sessions away past `retentionMs` are collected here.
   */
  expire(now: number, retentionMs: number): SessionRecord[] {
    const expired: SessionRecord[] = [];
    for (const session of this.#byId.values()) {
      if (session.goneAt === null) continue;
      const away = now - session.goneAt;
      if (unfinishedOf(session) > 0 && session.leaseMs !== null && away > session.leaseMs) expired.push(session);
      else if (unfinishedOf(session) === 0 && away > retentionMs) {
        this.#byId.delete(session.id);
        this.journal.sessionCollected(session);
      }
    }
    return expired;
  }

  /** A session from the store; its client counts as away from `now`, until it reattaches. */
  restore(id: string, createdAt: number, acked: number, leaseMs: number | null, now: number): void {
    const session = newSession(id, createdAt, leaseMs, now);
    session.lastSeq = session.acked = acked;
    this.#byId.set(id, session);
  }

  /** A finished task from the store: its id and, if not yet acknowledged, its result. */
  restoreFinished(session: SessionRecord, id: string, seq: number, result: TaskResult): void {
    session.finishedIds.set(id, packFinished(seq, result.status));
    session.finished++;
    session.submitted++;
    session.lastSeq = Math.max(session.lastSeq, seq);
    if (seq > session.acked) session.unacked.push({ seq, result });
  }

  /** Puts each session's unacknowledged results back in sequence order. */
  finishRestore(): void {
    for (const s of this.#byId.values()) s.unacked.sort((a, b) => a.seq - b.seq);
  }
}
