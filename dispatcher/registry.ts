/**
 * The executor registry: who is registered, by id and by connection; who has credit (the set the
 * scheduler visits); what each executor's cache holds (the holders index data-aware scheduling
 * reads); and the attempts each one holds. Pure: no I/O; time comes in as arguments.
 *
 * Credit invariant: an executor is in `hungry` whenever it may have credit > 0 while connected
 * and not draining. Entries are added eagerly and pruned lazily by the scheduler, which checks
 * credit, connection and draining again before it dispatches anything.
 */
import type { ExecutorInfo } from '../protocol/index.js';
import { capacityOf, type ResourceRequest } from './resources.js';
import { newExecutor, type ConnId, type ExecutorRecord, type Journal, type TaskRecord } from './model.js';

/** What registering an executor found. */
export interface Registered {
  exec: ExecutorRecord;
  /** A connection of the same executor process that held this id before, to be closed. */
  displaced: ConnId | null;
  /**
   * Attempts the dispatcher thought it held that it did not report: `crashed` when a new
   * incarnation came (the process died with them), else lost in transit (no one's fault).
   */
  missing: Array<{ task: TaskRecord; crashed: boolean }>;
}

export class ExecutorRegistry {
  readonly #byId = new Map<string, ExecutorRecord>();
  readonly #byConn = new Map<ConnId, ExecutorRecord>();
  /** Executors with credit, visited by the scheduler. */
  readonly hungry = new Set<ExecutorRecord>();
  /**
   * Executors that announced `steal` and hold more attempts than slots (some wait in their local
   * queue, or their results are on the way): where work stealing looks (steal.ts), kept in step
   * by hold/unhold so that an idle fleet costs a turn nothing.
   */
  readonly backlogged = new Set<ExecutorRecord>();
  /** Executors by the locality keys their caches hold: who a task may wait for (max-cache-hit). */
  readonly #holders = new Map<string, Set<ExecutorRecord>>();
  /**
   * Said after the reason a request no executor can run waits (which instance type the
   * provisioner launches for it, or that none fits); set by a provisioner with instance types.
   */
  waitHint: ((req: ResourceRequest) => string) | null = null;

  constructor(private readonly journal: Journal) {}

  get size(): number {
    return this.#byId.size;
  }

  get(id: string): ExecutorRecord | undefined {
    return this.#byId.get(id);
  }

  values(): IterableIterator<ExecutorRecord> {
    return this.#byId.values();
  }

  /** The executor a connection speaks for. */
  of(conn: ConnId): ExecutorRecord | undefined {
    return this.#byConn.get(conn);
  }

  /** Executors whose caches hold `key`. */
  holdersOf(key: string): Iterable<ExecutorRecord> {
    return this.#holders.get(key) ?? [];
  }

  /**
   * Registers an executor, or takes it back and reconciles what it holds with what we think.
   * Returns null, changing nothing, when another process holds the id on a live connection: an id
   * is not enough to take an executor's place (its own redial, the same incarnation, is).
   */
  register(conn: ConnId, info: ExecutorInfo, now: number, prefetch: number): Registered | null {
    let exec = this.#byId.get(info.id);
    if (exec && exec.conn !== null && exec.conn !== conn && exec.info.incarnation !== info.incarnation) return null;
    let displaced: ConnId | null = null;
    const missing: Registered['missing'] = [];
    if (exec) {
      if (exec.conn !== null && exec.conn !== conn) {
        this.#byConn.delete(exec.conn);
        displaced = exec.conn;
      }
      const reported = new Set(info.running.map((r) => `${r.uid}:${r.attempt}`));
      const crashed = exec.info.incarnation !== info.incarnation;
      for (const task of exec.running.values()) {
        if (!reported.has(`${task.uid}:${task.attempt}`)) missing.push({ task, crashed });
      }
      exec.info = info;
      exec.capacity = null; // what it has may have changed: rebuilt from `info` and its attempts
      exec.conn = conn;
      exec.lastSeen = now;
      exec.draining = false;
      exec.leaving = false;
    } else {
      exec = newExecutor(info, conn, now, now);
      this.#byId.set(info.id, exec);
    }
    this.journal.executorRegistered(exec);
    this.#byConn.set(conn, exec);
    // The window counts what it still holds after reconciliation, which the caller does next.
    exec.credit = info.mode === 'push' ? Math.max(0, info.slots + prefetch - (exec.running.size - missing.length)) : 0;
    exec.extra = 0; // an adaptive window starts again from the slots: the executor resends its own
    if (exec.credit > 0) this.hungry.add(exec);
    return { exec, displaced, missing };
  }

  /** Any sign of life renews the lease of the executor behind `conn`. */
  seen(conn: ConnId, now: number): ExecutorRecord | undefined {
    const exec = this.#byConn.get(conn);
    if (exec) exec.lastSeen = now;
    return exec;
  }

  addCredit(exec: ExecutorRecord, n: number): void {
    exec.credit += n;
    if (exec.credit > 0) this.hungry.add(exec);
  }

  /**
   * A push-mode executor's adaptive window changed to `extra` tasks beyond its slots: its credit
   * moves by the difference (below 0 it takes nothing until enough attempts finish).
   */
  setExtra(exec: ExecutorRecord, extra: number): void {
    if (exec.info.mode !== 'push' || exec.draining || exec.conn === null) return;
    const delta = extra - exec.extra;
    exec.extra = extra;
    this.addCredit(exec, delta);
  }

  /** A push-mode executor finished an attempt: its window has room for one more. */
  returnCredit(exec: ExecutorRecord): void {
    if (exec.info.mode === 'push' && !exec.draining && exec.conn !== null) this.addCredit(exec, 1);
  }

  /** Sends it nothing more (draining, leaving, gone). */
  stopCredit(exec: ExecutorRecord): void {
    exec.credit = 0;
    this.hungry.delete(exec);
  }

  hold(exec: ExecutorRecord, task: TaskRecord): void {
    if (task.request !== null) capacityOf(exec)?.charge(task);
    exec.running.set(task.uid, task);
    exec.credit--;
    exec.idleSince = null;
    if (exec.steals && exec.running.size > exec.info.slots) this.backlogged.add(exec);
  }

  /** Puts `exec` in or out of `backlogged` after its `steals` or its attempts changed outside hold/unhold. */
  refreshBacklog(exec: ExecutorRecord): void {
    if (exec.steals && exec.running.size > exec.info.slots) this.backlogged.add(exec);
    else this.backlogged.delete(exec);
  }

  /** Takes an attempt off an executor; an executor left with none starts its idle clock. */
  unhold(exec: ExecutorRecord, uid: number, now: number): void {
    const task = exec.running.get(uid);
    if (task?.request != null) {
      exec.capacity?.release(task);
      task.gpus = null;
    }
    exec.running.delete(uid);
    if (exec.running.size <= exec.info.slots) this.backlogged.delete(exec);
    if (exec.running.size === 0) exec.idleSince ??= now;
  }

  /** Replaces what an executor's cache holds (null: it is gone), keeping the holders index in step. */
  setHolds(exec: ExecutorRecord, holds: Set<string> | null): void {
    for (const key of exec.holds ?? []) {
      const set = this.#holders.get(key);
      set?.delete(exec);
      if (set?.size === 0) this.#holders.delete(key);
    }
    exec.holds = holds;
    for (const key of holds ?? []) {
      let set = this.#holders.get(key);
      if (!set) this.#holders.set(key, (set = new Set()));
      set.add(exec);
    }
  }

  /** Its connection closed. Returns the record when that connection was its current one. */
  detach(conn: ConnId): ExecutorRecord | undefined {
    const exec = this.#byConn.get(conn);
    if (!exec) return undefined;
    this.#byConn.delete(conn);
    if (exec.conn !== conn) return undefined;
    exec.conn = null;
    this.stopCredit(exec);
    return exec;
  }

  /** Forgets an executor; the caller decides what becomes of the attempts it held. */
  remove(exec: ExecutorRecord): TaskRecord[] {
    this.#byId.delete(exec.info.id);
    this.journal.executorRemoved(exec);
    this.hungry.delete(exec);
    this.backlogged.delete(exec);
    this.setHolds(exec, null);
    if (exec.conn !== null) this.#byConn.delete(exec.conn);
    return [...exec.running.values()];
  }

  /** Executors silent for longer than `leaseMs`. */
  expired(now: number, leaseMs: number): ExecutorRecord[] {
    const out: ExecutorRecord[] = [];
    for (const exec of this.#byId.values()) if (now - exec.lastSeen > leaseMs) out.push(exec);
    return out;
  }

  /** An executor that held leases before a restart: it gets a full lease period from `now` to come back. */
  restore(info: ExecutorInfo, registeredAt: number, now: number): void {
    this.#byId.set(info.id, newExecutor(info, null, registeredAt, now));
  }
}
