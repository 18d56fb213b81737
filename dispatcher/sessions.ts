/**
 * The session table: every client's stream of results, which outlives the client's connection.
 * A session keeps its unfinished tasks by id (for cancel and idempotent resubmits), the ids of
 * finished ones, and the results not yet acknowledged, in sequence order, for replay on resume.
 * Pure: no I/O; time comes in as arguments.
 */
import { timingSafeEqual } from 'node:crypto';
import { ErrorCode, type TaskResult } from '../protocol/index.js';
import { newSession, packFinished, unfinishedOf, type ConnId, type IdSource, type Journal, type SessionRecord } from './model.js';

/** What a client asks for when it opens or resumes a session (its hello). */
export interface OpenRequest {
  id?: string;
  cursor?: number;
  leaseMs?: number;
  /** Proof of ownership to resume; for a new session, its key (default: a random one). */
  key?: string;
}

/** What opening a session did: opened or resumed it, or refused with a code and why. */
export type Opened =
  | {
      session: SessionRecord;
      /** The dispatcher knew the session already. */
      resumed: boolean;
      /** A dead connection (silent past the limit) that held the session, to be closed. */
      replaced: ConnId | null;
    }
  | { refused: typeof ErrorCode.SESSION_FORBIDDEN | typeof ErrorCode.SESSION_BUSY; message: string };

/** Two secrets compared in constant time. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Whether `key` proves ownership of `session`. The administrator needs no key, and a session
 * restored from a store written before keys existed has none to prove.
 */
export function mayUse(session: SessionRecord, key: string | undefined, admin: boolean): boolean {
  return admin || session.key === null || (key !== undefined && sameSecret(key, session.key));
}

/** The refusal for a session used without its key. */
export function forbidden(id: string, key: string | undefined): { refused: typeof ErrorCode.SESSION_FORBIDDEN; message: string } {
  return {
    refused: ErrorCode.SESSION_FORBIDDEN,
    message: `session ${id} belongs to the client that opened it: ${key === undefined ? 'give its key' : 'the key is wrong'} (welcome.key; the CLI keeps it in its state dir, or pass --session-key), or use the administrator token`,
  };
}

export class SessionTable {
  readonly #byId = new Map<string, SessionRecord>();
  readonly #byConn = new Map<ConnId, SessionRecord>();

  constructor(
    private readonly journal: Journal,
    private ids: IdSource,
  ) {}

  /** Where new session ids come from from now on (several dispatchers: ids of this one's partitions). */
  useIds(ids: IdSource): void {
    this.ids = ids;
  }

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

  /**
   * Resumes `req.id` (or opens a new session) for `conn`. Resuming needs the session's key (or
   * `admin`), and a session has one reader: while another live connection holds it, the newcomer
   * is refused (SESSION_BUSY), never let in to take it over. A holder that `silent` says has gone
   * quiet past its heartbeats (a half-open connection after a network cut) is dead: the newcomer
   * replaces it. Nothing changes on a refusal.
   */
  open(conn: ConnId, now: number, req: OpenRequest, admin: boolean, silent: (holder: ConnId) => boolean = () => false): Opened {
    const { id, cursor, leaseMs } = req;
    let session = id === undefined ? undefined : this.#byId.get(id);
    const resumed = session !== undefined;
    let replaced: ConnId | null = null;
    if (!session) {
      session = newSession(id ?? this.ids.session(), now, leaseMs ?? null, null, req.key ?? this.ids.sessionKey());
      this.#byId.set(session.id, session);
      this.journal.sessionChanged(session);
    } else if (!mayUse(session, req.key, admin)) {
      return forbidden(session.id, req.key);
    } else if (session.conn !== null && session.conn !== conn) {
      if (!silent(session.conn)) {
        return { refused: ErrorCode.SESSION_BUSY, message: `session ${session.id} is being read by another connection; a session has one reader (try again once it has gone)` };
      }
      replaced = session.conn;
      this.#byConn.delete(replaced);
    }
    session.conn = conn;
    session.goneAt = null;
    if (leaseMs !== undefined && session.leaseMs !== leaseMs) {
      session.leaseMs = leaseMs;
      this.journal.sessionChanged(session);
    }
    this.#byConn.set(conn, session);
    if (cursor !== undefined) this.ack(session, cursor);
    return { session, resumed, replaced };
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
   * A session for clients without a result stream (HTTP): created if new (with `key`, or a random
   * one), its results acknowledged as they are stored from now on (queries still find them). An
   * existing session needs its key, as for a resume.
   */
  ensureDetached(id: string | undefined, now: number, key: string | undefined, admin: boolean): SessionRecord | ReturnType<typeof forbidden> {
    let session = id === undefined ? undefined : this.#byId.get(id);
    if (!session) {
      session = newSession(id ?? this.ids.session(), now, null, now, key ?? this.ids.sessionKey());
      this.#byId.set(session.id, session);
      this.journal.sessionChanged(session);
    } else if (!mayUse(session, key, admin)) return forbidden(session.id, key);
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

  /** Lets an idle session go from memory (its partition moves to another dispatcher); the store keeps it. */
  forget(session: SessionRecord): void {
    if (session.conn !== null) this.#byConn.delete(session.conn);
    this.#byId.delete(session.id);
  }

  /** A session from the store; its client counts as away from `now`, until it reattaches. */
  restore(id: string, createdAt: number, acked: number, leaseMs: number | null, key: string | null, now: number): void {
    const session = newSession(id, createdAt, leaseMs, now, key);
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
  finishRestore(sessions: Iterable<SessionRecord> = this.#byId.values()): void {
    for (const s of sessions) s.unacked.sort((a, b) => a.seq - b.seq);
  }
}
