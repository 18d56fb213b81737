/**
 * What `/api/status` and `falconet status` show: executors, the queue by state, sessions and
 * rates. Built on demand from the core's records; nothing here is on the dispatch path except
 * the two counters in Rates.
 */
import type { DataCounters, TaskResult, TaskStatus } from '../protocol/index.js';
import { Buckets, SECONDS_LONG, SECONDS_SHORT } from './histogram.js';
import type { ExecutorState } from './model.js';
import type { CoreView, ExecutorView } from './view.js';

/** The task counters the durable store keeps across restarts (the rest of the metrics are per process). */
export interface StoredCounters {
  submitted: number;
  dispatched: number;
  retried: number;
  finished: Partial<Record<TaskStatus, number>>;
}

/** Per-second rates over a sliding window, sampled from the core's tick. */
export class Rates {
  submitted = 0;
  readonly finished: Record<TaskStatus, number> = { succeeded: 0, failed: 0, timed_out: 0, cancelled: 0, lost: 0 };
  /** Attempts that ended and sent their task back to the queue (metrics). */
  retried = 0;
  /** Of finished tasks, in seconds (metrics): submitted → dispatched, dispatched → started, started → finished. */
  readonly queueWait = new Buckets(SECONDS_LONG);
  readonly dispatchToStart = new Buckets(SECONDS_SHORT);
  readonly runTime = new Buckets(SECONDS_LONG);
  #samples: Array<{ at: number; submitted: number; finished: number; dispatched: number }> = [];
  constructor(startedAt: number, readonly windowMs = 10_000) {
    this.#samples.push({ at: startedAt, submitted: 0, finished: 0, dispatched: 0 });
  }
  count(status: TaskStatus): void {
    this.finished[status]++;
  }
  /** A finished task's timings into the histograms (a stage that did not happen is skipped). */
  timed(t: TaskResult['timings']): void {
    if (t.dispatched !== null) this.queueWait.observe(Math.max(0, t.dispatched - t.submitted) / 1000);
    if (t.started !== null) {
      if (t.dispatched !== null) this.dispatchToStart.observe(Math.max(0, t.started - t.dispatched) / 1000);
      this.runTime.observe(Math.max(0, t.finished - t.started) / 1000);
    }
  }
  /** Counters kept by the store across a restart; the rate window starts again from them. */
  restore(c: StoredCounters, now: number, dispatched: number): void {
    this.submitted = c.submitted;
    this.retried = c.retried;
    for (const k of Object.keys(this.finished) as TaskStatus[]) this.finished[k] = c.finished[k] ?? 0;
    this.#samples = [{ at: now, submitted: this.submitted, finished: this.finishedTotal, dispatched }];
  }
  get finishedTotal(): number {
    const f = this.finished;
    return f.succeeded + f.failed + f.timed_out + f.cancelled + f.lost;
  }
  sample(now: number, dispatched: number): void {
    this.#samples.push({ at: now, submitted: this.submitted, finished: this.finishedTotal, dispatched });
    while (this.#samples.length > 2 && now - this.#samples[1].at >= this.windowMs) this.#samples.shift();
  }
  /** Rates per second between the oldest sample in the window and the newest. */
  perSecond(): { submitted: number; dispatched: number; finished: number } {
    const a = this.#samples[0];
    const b = this.#samples[this.#samples.length - 1];
    const dt = (b.at - a.at) / 1000;
    if (dt <= 0) return { submitted: 0, dispatched: 0, finished: 0 };
    const r = (x: number) => Math.round(x / dt);
    return { submitted: r(b.submitted - a.submitted), dispatched: r(b.dispatched - a.dispatched), finished: r(b.finished - a.finished) };
  }
}

export interface ExecutorStatus {
  id: string;
  state: ExecutorState;
  hostname: string;
  addresses: string[];
  slots: number;
  running: number;
  mode: 'push' | 'pull';
  labels: Record<string, string>;
  version: string;
  pid?: number;
  instanceId?: string;
  completed: number;
  registeredAt: number;
  lastSeenMsAgo: number;
  boot?: Array<{ phase: string; at: number }>;
  data?: DataCounters;
  /** Inputs its cache holds (count of locality keys). */
  cached?: number;
  /** What it advertised for resource requests (cpus, memoryMb, gpus, custom). */
  resources?: Record<string, number>;
  /** Push mode: tasks it asked to keep beyond its slots (its adaptive window, `--prefetch auto`). */
  window?: number;
  /** When it ends (ms since the epoch: its --lifetime or an EC2 notice) and why. */
  endsAt?: number;
  endReason?: string;
}

export interface StatusSnapshot {
  now: number;
  uptimeMs: number;
  executors: ExecutorStatus[];
  slots: { total: number; busy: number };
  tasks: { queued: number; running: number; finished: Record<TaskStatus, number>; submitted: number };
  sessions: { total: number; connected: number };
  rates: { submitted: number; dispatched: number; finished: number };
  /** Data staged by every executor: cache hit ratio and bytes moved. */
  data: DataCounters & { cacheHitRatio: number | null };
  /**
   * Queued tasks with resource requests, by request (and labels): `reason` says why no connected
   * executor could ever run them (null: one could, when it has room). Absent when there are none.
   */
  requests?: Array<{ request: string; labels: string; tasks: number; reason: string | null }>;
  /** The executor held for a long-waiting request (see the scheduler's reservation). */
  reservation?: { executor: string; request: string };
}

export function executorState(exec: Pick<ExecutorView, 'connected' | 'draining' | 'leaving' | 'running'>): ExecutorState {
  if (!exec.connected) return 'disconnected';
  if (exec.draining || exec.leaving) return 'draining';
  return exec.running > 0 ? 'busy' : 'idle';
}

export function snapshotOf(core: CoreView, now: number): StatusSnapshot {
  const executors: ExecutorStatus[] = [];
  let total = 0;
  let busy = 0;
  const data = { cacheHits: 0, cacheMisses: 0, bytesIn: 0, bytesOut: 0 };
  for (const exec of core.executors()) {
    const i = exec.info;
    total += i.slots;
    busy += Math.min(i.slots, exec.running);
    executors.push({
      id: i.id,
      state: executorState(exec),
      hostname: i.hostname,
      addresses: i.addresses,
      slots: i.slots,
      running: exec.running,
      mode: i.mode,
      labels: i.labels,
      version: i.version,
      ...(i.pid !== undefined ? { pid: i.pid } : {}),
      ...(i.instanceId !== undefined ? { instanceId: i.instanceId } : {}),
      completed: exec.completed,
      registeredAt: exec.registeredAt,
      lastSeenMsAgo: now - exec.lastSeen,
      ...(i.boot ? { boot: i.boot } : {}),
      ...(exec.data ? { data: exec.data } : {}),
      ...(exec.cached !== null ? { cached: exec.cached } : {}),
      ...(i.resources ? { resources: i.resources } : {}),
      ...(i.mode === 'push' ? { window: exec.window } : {}),
      ...(i.endsAt !== undefined ? { endsAt: i.endsAt, endReason: i.endReason ?? '' } : {}),
    });
    if (exec.data) for (const k of Object.keys(data) as Array<keyof DataCounters>) data[k] += exec.data[k];
  }
  return {
    now,
    uptimeMs: now - core.startedAt,
    executors,
    slots: { total, busy },
    tasks: {
      queued: core.queued,
      running: core.running,
      finished: { ...core.rates.finished },
      submitted: core.rates.submitted,
    },
    sessions: core.sessionCounts(),
    rates: core.rates.perSecond(),
    data: { ...data, cacheHitRatio: data.cacheHits + data.cacheMisses > 0 ? data.cacheHits / (data.cacheHits + data.cacheMisses) : null },
    ...requestsOf(core),
  };
}

/** The resource part of the snapshot: nothing at all when no task with requests waits. */
function requestsOf(core: CoreView): Pick<StatusSnapshot, 'requests' | 'reservation'> {
  const requests = core.requestWaits();
  const reservation = core.reservation;
  return { ...(requests.length ? { requests } : {}), ...(reservation ? { reservation } : {}) };
}
