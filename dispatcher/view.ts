/**
 * The core seen from outside: status, metrics, the server and the provisioner read the
 * dispatcher's state through this, never through the core's own tables, so that nothing outside
 * the core can change a record behind the scheduler's back.
 */
import type { ExecutorInfo, DataCounters } from '../protocol/index.js';
import { labelsFit, type ExecutorRecord } from './model.js';
import { unsatisfiable, type ResourceRequest } from './resources.js';
import type { ExecutorRegistry } from './registry.js';
import type { Scheduler } from './scheduler.js';
import type { SessionTable } from './sessions.js';
import type { TaskLifecycle } from './lifecycle.js';
import type { Rates, StoredCounters } from './status.js';

/** One executor as the outside sees it. */
export interface ExecutorView {
  readonly info: Readonly<ExecutorInfo>;
  /** Connected now (false while a lost executor's lease runs out, or before it comes back after a restart). */
  readonly connected: boolean;
  readonly draining: boolean;
  readonly leaving: boolean;
  /** Attempts it holds. */
  readonly running: number;
  readonly completed: number;
  readonly registeredAt: number;
  readonly lastSeen: number;
  /** Since when it has held no attempt (null while it holds some). */
  readonly idleSince: number | null;
  readonly data: Readonly<DataCounters> | null;
  /** Locality keys its cache holds (null before it said). */
  readonly cached: number | null;
  /** Tasks it asked to keep beyond its slots (its adaptive window, `--prefetch auto`). */
  readonly window: number;
}

function executorView(e: ExecutorRecord): ExecutorView {
  return {
    info: e.info,
    connected: e.conn !== null,
    draining: e.draining,
    leaving: e.leaving,
    running: e.running.size,
    completed: e.completed,
    registeredAt: e.registeredAt,
    lastSeen: e.lastSeen,
    idleSince: e.idleSince,
    data: e.data,
    cached: e.holds?.size ?? null,
    window: e.extra,
  };
}

export class CoreView {
  constructor(
    private readonly core: { readonly startedAt: number; readonly rates: Rates; readonly steals: { asked: number; returned: number } },
    private readonly sessions: SessionTable,
    private readonly registry: ExecutorRegistry,
    private readonly scheduler: Scheduler,
    private readonly tasks: TaskLifecycle,
  ) {}

  /** Work stealing since start: `steal` messages sent, tasks given back (steal.ts). */
  get steals(): { asked: number; returned: number } {
    return this.core.steals;
  }

  get startedAt(): number {
    return this.core.startedAt;
  }

  /** Counters and per-second rates (read them; the core writes them). */
  get rates(): Readonly<Rates> {
    return this.core.rates;
  }

  /** Tasks waiting for an executor. */
  get queued(): number {
    return this.scheduler.size + (this.tasks.extras?.unqueued() ?? 0);
  }

  /** Tasks dispatched and not finished. */
  get running(): number {
    return this.tasks.size - this.scheduler.size - (this.tasks.extras?.held() ?? 0);
  }

  /** Attempts started (since the store began, with a durable store). */
  get dispatched(): number {
    return this.tasks.dispatched;
  }

  /** The counters the durable store keeps across restarts. */
  counters(): StoredCounters {
    const r = this.core.rates;
    return { submitted: r.submitted, dispatched: this.tasks.dispatched, retried: r.retried, finished: { ...r.finished } };
  }

  /** Finished results their clients have not acknowledged yet, over every session. */
  unackedResults(): number {
    let n = 0;
    for (const s of this.sessions.values()) n += s.unacked.length;
    return n;
  }

  get executorCount(): number {
    return this.registry.size;
  }

  /** A snapshot of every registered executor. */
  executors(): ExecutorView[] {
    const out: ExecutorView[] = [];
    for (const e of this.registry.values()) out.push(executorView(e));
    return out;
  }

  executor(id: string): ExecutorView | undefined {
    const e = this.registry.get(id);
    return e ? executorView(e) : undefined;
  }

  /**
   * Queued resource requests, by request and labels: how many tasks wait with it, and why when no
   * connected executor could ever run it (what `status` shows and the provisioner launches for).
   */
  requestWaits(): Array<{ request: string; labels: string; tasks: number; reason: string | null }> {
    const live = [...this.registry.values()].filter((e) => e.conn !== null && !e.draining && !e.leaving);
    const byKey = new Map<string, { request: string; labels: string; tasks: number; reason: string | null }>();
    for (const lane of this.scheduler.requests.lanes()) {
      if (lane.size === 0) continue;
      const key = `${lane.labelKey}\n${lane.request.key}`;
      const seen = byKey.get(key);
      if (seen) {
        seen.tasks += lane.size;
        continue;
      }
      const labels = lane.labelKey === '' ? undefined : Object.fromEntries(lane.labelKey.split('\n').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      const fitting = live.filter((e) => labelsFit(labels, e.info.labels));
      let reason = live.length === 0 ? null : unsatisfiable(lane.request, fitting);
      if (this.registry.waitHint && (reason !== null || live.length === 0)) reason = `${reason ?? 'no executor is connected'}; ${this.registry.waitHint(lane.request)}`;
      byKey.set(key, { request: lane.request.key, labels: lane.labelKey.split('\n').join(','), tasks: lane.size, reason });
    }
    return [...byKey.values()];
  }

  /**
   * Queued resource requests by request and labels, the oldest lanes first: what the provisioner
   * launches instance types for (fit-plan.ts). Read once per provisioner poll, and only when
   * instance types are configured.
   */
  queuedRequests(): Array<{ request: ResourceRequest; labels?: Record<string, string>; tasks: number }> {
    const byKey = new Map<string, { request: ResourceRequest; labels?: Record<string, string>; tasks: number }>();
    for (const lane of this.scheduler.requests.lanes()) {
      if (lane.size === 0) continue;
      const key = `${lane.labelKey}\n${lane.request.key}`;
      const seen = byKey.get(key);
      if (seen) seen.tasks += lane.size;
      else byKey.set(key, { request: lane.request, ...(lane.labelKey === '' ? {} : { labels: labelsOfKey(lane.labelKey) }), tasks: lane.size });
    }
    return [...byKey.values()];
  }

  /** Sets what follows the reason a request no executor can run waits (see `ExecutorRegistry.waitHint`). */
  setWaitHint(hint: ((req: ResourceRequest) => string) | null): void {
    this.registry.waitHint = hint;
  }

  /** The executor held for a long-waiting request, if any. */
  get reservation(): { executor: string; request: string } | null {
    const r = this.scheduler.reservation;
    return r === null ? null : { executor: r.executor, request: r.request };
  }

  hasSession(id: string): boolean {
    return this.sessions.get(id) !== undefined;
  }

  sessionCounts(): { total: number; connected: number } {
    return { total: this.sessions.size, connected: this.sessions.connected() };
  }
}

/** A lane's label key (`k=v` lines) back as labels. */
function labelsOfKey(labelKey: string): Record<string, string> {
  return Object.fromEntries(labelKey.split('\n').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}
