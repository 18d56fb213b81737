/**
 * Resource requests and what executors have of them: parsing a task's `resources`, whether a
 * request fits an executor (now, or ever), and the bookkeeping of what each executor has handed
 * out (GPUs by index). Pure: no I/O, no clock.
 *
 * Amounts are counted in thousandths, as integers, so that `cpus: 0.1` ten times adds up to
 * exactly one cpu. A task with resources takes one slot (the executor's concurrency limit, as for
 * every task) plus its resources; a task without takes one slot and nothing else, and never goes
 * through this file.
 */
import type { ExecutorInfo } from '../protocol/index.js';
import type { ExecutorRecord, TaskRecord } from './model.js';

const MILLI = 1000;

/** A task's `resources`, checked and in the form the scheduler compares. */
export interface ResourceRequest {
  /** Canonical form (`cpus=2,gpus=1`): tasks with equal keys are interchangeable for packing. */
  readonly key: string;
  /** Names requested with a positive amount, besides `gpus`. */
  readonly names: readonly string[];
  /** Their amounts, in thousandths. */
  readonly milli: readonly number[];
  /** Whole GPUs, handed out by index. */
  readonly gpus: number;
}

/**
 * The request of a task's `resources` (validated by the schema), or null for none: a task with
 * no `resources` (or `{}`) is a plain task.
 */
export function requestOf(resources: Record<string, number> | undefined): ResourceRequest | null {
  if (resources === undefined) return null;
  const keys = Object.keys(resources);
  if (keys.length === 0) return null;
  keys.sort();
  const names: string[] = [];
  const milli: number[] = [];
  let gpus = 0;
  for (const k of keys) {
    if (k === 'gpus') gpus = Math.round(resources[k]);
    else if (resources[k] > 0) {
      names.push(k);
      milli.push(Math.round(resources[k] * MILLI));
    }
  }
  const parts = names.map((n, i) => `${n}=${milli[i] / MILLI}`);
  if (gpus > 0) parts.push(`gpus=${gpus}`);
  parts.sort();
  return { key: parts.join(','), names, milli, gpus };
}

/** What an executor advertised, and what of it the attempts it holds use. */
export class ExecutorCapacity {
  /** Totals in thousandths, by name (`gpus` as a count, not in thousandths). */
  readonly total = new Map<string, number>();
  readonly used = new Map<string, number>();
  /** GPU indices not handed out, lowest first. */
  readonly freeGpus: number[];
  readonly gpuTotal: number;

  constructor(info: ExecutorInfo) {
    const r = info.resources ?? {};
    for (const k in r) if (k !== 'gpus') this.total.set(k, Math.round(r[k] * MILLI));
    const count = Math.floor(r.gpus ?? 0);
    const indices = info.gpuIndices && info.gpuIndices.length >= count ? info.gpuIndices.slice(0, count) : Array.from({ length: count }, (_, i) => i);
    this.freeGpus = indices.sort((a, b) => a - b);
    this.gpuTotal = count;
  }

  /** Whether the request fits in what is free now. */
  fitsNow(req: ResourceRequest): boolean {
    if (req.gpus > this.freeGpus.length) return false;
    for (let i = 0; i < req.names.length; i++) {
      const name = req.names[i];
      if ((this.used.get(name) ?? 0) + req.milli[i] > (this.total.get(name) ?? 0)) return false;
    }
    return true;
  }

  /** Whether the request fits in what the executor has at all (when it runs nothing else). */
  fitsEver(req: ResourceRequest): boolean {
    if (req.gpus > this.gpuTotal) return false;
    for (let i = 0; i < req.names.length; i++) if (req.milli[i] > (this.total.get(req.names[i]) ?? 0)) return false;
    return true;
  }

  /**
   * How far the request is from fitting now: the sum over what it asks of the share of the
   * executor's total still missing (0 when it fits). The reservation goes where this is smallest.
   */
  shortfall(req: ResourceRequest): number {
    let s = req.gpus > this.freeGpus.length ? (req.gpus - this.freeGpus.length) / Math.max(1, this.gpuTotal) : 0;
    for (let i = 0; i < req.names.length; i++) {
      const name = req.names[i];
      const total = this.total.get(name) ?? 0;
      const missing = (this.used.get(name) ?? 0) + req.milli[i] - total;
      if (missing > 0) s += missing / Math.max(1, total);
    }
    return s;
  }

  /** Takes what the task asks for; picks its GPUs (lowest free indices) unless it holds some already. */
  charge(task: TaskRecord): void {
    const req = task.request!;
    for (let i = 0; i < req.names.length; i++) this.used.set(req.names[i], (this.used.get(req.names[i]) ?? 0) + req.milli[i]);
    if (req.gpus === 0) return;
    if (task.gpus !== null && task.gpus.every((g) => this.freeGpus.includes(g))) {
      for (const g of task.gpus) this.freeGpus.splice(this.freeGpus.indexOf(g), 1);
    } else {
      task.gpus = this.freeGpus.splice(0, req.gpus);
    }
  }

  /** Gives back what the task took. */
  release(task: TaskRecord): void {
    const req = task.request!;
    for (let i = 0; i < req.names.length; i++) this.used.set(req.names[i], (this.used.get(req.names[i]) ?? 0) - req.milli[i]);
    if (task.gpus !== null) {
      for (const g of task.gpus) if (!this.freeGpus.includes(g)) this.freeGpus.push(g);
      this.freeGpus.sort((a, b) => a - b);
    }
  }

  /** What it has, as `cpus=4 memoryMb=15890 gpus=0` (for messages). */
  describe(): string {
    const parts = [...this.total].map(([k, v]) => `${k}=${v / MILLI}`);
    parts.push(`gpus=${this.gpuTotal}`);
    return parts.join(' ');
  }

  /** What it has of one resource, in the request's units. */
  amount(name: string): number {
    return name === 'gpus' ? this.gpuTotal : (this.total.get(name) ?? 0) / MILLI;
  }
}

/**
 * An executor's capacity, built on first use from its hello minus what the attempts it holds
 * use (so a re-registration or a restart needs nothing but `exec.capacity = null`). An executor
 * that advertised no `resources` (an older one) has none: it takes only plain tasks.
 */
export function capacityOf(exec: ExecutorRecord): ExecutorCapacity | null {
  if (exec.info.resources === undefined) return null;
  if (exec.capacity === null) {
    const cap = new ExecutorCapacity(exec.info);
    // Attempts that already have GPUs keep them; the others (restored after a restart) get some.
    const running = [...exec.running.values()].filter((t) => t.request !== null);
    running.sort((a, b) => (a.gpus === null ? 1 : 0) - (b.gpus === null ? 1 : 0));
    for (const t of running) cap.charge(t);
    exec.capacity = cap;
  }
  return exec.capacity;
}

/**
 * Why no connected executor can ever run this request, or null when one could (perhaps later).
 * `executors` are the connected, not draining executors whose labels fit the task.
 */
export function unsatisfiable(req: ResourceRequest, executors: Iterable<ExecutorRecord>): string | null {
  const caps: ExecutorCapacity[] = [];
  for (const e of executors) {
    const cap = capacityOf(e);
    if (cap === null) continue;
    if (cap.fitsEver(req)) return null;
    caps.push(cap);
  }
  const asked: Array<[string, number]> = req.names.map((n, i) => [n, req.milli[i] / MILLI]);
  if (req.gpus > 0) asked.push(['gpus', req.gpus]);
  for (const [name, amount] of asked) {
    const largest = caps.reduce((m, c) => Math.max(m, c.amount(name)), 0);
    if (largest < amount) return `needs ${name}=${amount}, the largest executor has ${largest}`;
  }
  return `needs ${req.key}, and no single executor has all of it`;
}
