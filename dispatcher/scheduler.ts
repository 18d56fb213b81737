/**
 * The scheduler: matches queued tasks to executors with credit. Pure: it reads the registry's
 * hungry set and holders index, takes tasks from the queue, and hands each match to `dispatch`;
 * it never sends anything itself.
 *
 * Order of a pass: cache hits first (every free executor takes the queued tasks whose inputs it
 * already holds: Falkon's data diffusion), then every free executor takes tasks in queue order
 * (priority, fair share across sessions, FIFO), skipping under `max-cache-hit` the tasks that
 * should wait a little for the busy executor that holds their data.
 */
import { TaskQueue } from './queue.js';
import { labelsFit, type ExecutorRecord, type TaskRecord } from './model.js';

export interface SchedulerOptions {
  /**
   * Data-aware scheduling: `first-available` sends a task to any free executor, preferring one
   * that holds its inputs; `max-cache-hit` also keeps a task waiting, up to `cacheWaitMs`, for the
   * executor that holds its inputs when that one is busy.
   */
  dataPolicy?: 'first-available' | 'max-cache-hit';
  cacheWaitMs?: number;
}

/** What the scheduler reads of the executor registry. */
export interface SchedulerRegistry {
  readonly hungry: Set<ExecutorRecord>;
  holdersOf(key: string): Iterable<ExecutorRecord>;
}

export class Scheduler {
  readonly queue = new TaskQueue();
  /** Queued tasks by the locality keys of their inputs (entries pruned lazily). */
  readonly #byLocality = new Map<string, Set<TaskRecord>>();
  /** Label requirements by their canonical key, so an executor's fit memo never re-parses a key. */
  readonly #labelsByKey = new Map<string, Record<string, string>>();

  constructor(
    private readonly options: SchedulerOptions,
    private readonly registry: SchedulerRegistry,
    /** Hands a task to an executor; the caller records the attempt and sends the assignment. */
    private readonly dispatch: (task: TaskRecord, exec: ExecutorRecord, now: number) => void,
  ) {}

  /** Live queued tasks. */
  get size(): number {
    return this.queue.size;
  }

  /** Queues a task (its state is already `queued`), indexing it by the data it needs. */
  enqueue(task: TaskRecord): void {
    this.queue.push(task);
    if (task.labelKey !== '' && !this.#labelsByKey.has(task.labelKey)) this.#labelsByKey.set(task.labelKey, task.spec.labels!);
    for (const key of task.locality ?? []) {
      let set = this.#byLocality.get(key);
      if (!set) this.#byLocality.set(key, (set = new Set()));
      set.add(task);
    }
  }

  /** A queued task left the queue another way (cancelled, finished by a late result). */
  discard(task: TaskRecord): void {
    this.queue.discard(task);
  }

  /** One pass. Call once per batch of inbound messages. */
  schedule(now: number): void {
    const hungry = this.registry.hungry;
    if (this.queue.size === 0 || hungry.size === 0) return;
    if (this.#byLocality.size > 0) {
      for (const exec of hungry) {
        if (exec.holds && exec.credit > 0 && exec.conn !== null && !exec.draining) this.#dispatchLocal(exec, now);
      }
    }
    const waits = this.options.dataPolicy === 'max-cache-hit' && this.#byLocality.size > 0;
    for (const exec of hungry) {
      if (exec.credit <= 0 || exec.conn === null || exec.draining) {
        hungry.delete(exec); // lazy pruning: see the credit invariant in registry.ts
        continue;
      }
      let skip = waits ? (t: TaskRecord) => this.#waitsForHolder(t, exec, now) : undefined;
      if (exec.info.endsAt !== undefined) skip = outlasting(exec.info.endsAt - now, skip);
      for (const task of this.queue.take(exec.credit, this.#fitsFor(exec), skip)) this.dispatch(task, exec, now);
      if (exec.credit <= 0) hungry.delete(exec);
      if (this.queue.size === 0) break;
    }
  }

  /** Whether `exec` may run tasks of a label key, memoised per executor (most fleets have no labels). */
  #fitsFor(exec: ExecutorRecord): (key: string) => boolean {
    return (key) => {
      if (key === '') return true;
      let ok = exec.fits?.get(key);
      if (ok === undefined) {
        ok = labelsFit(this.#labelsByKey.get(key), exec.info.labels);
        (exec.fits ??= new Map()).set(key, ok);
      }
      return ok;
    };
  }

  /** Gives `exec` queued tasks whose inputs it already holds (the cache-hit pass). */
  #dispatchLocal(exec: ExecutorRecord, now: number): void {
    const holds = exec.holds!;
    const fits = this.#fitsFor(exec);
    // Walk the smaller side: an executor may hold far more than is queued, or the reverse.
    const keys = holds.size <= this.#byLocality.size ? [...holds] : [...this.#byLocality.keys()].filter((k) => holds.has(k));
    for (const key of keys) {
      const waiting = this.#byLocality.get(key);
      if (!waiting) continue;
      for (const task of waiting) {
        if (exec.credit <= 0) return;
        waiting.delete(task); // pruned here: a task leaves every index entry it is met in
        if (task.state !== 'queued' || !fits(task.labelKey)) continue;
        if (exec.info.endsAt !== undefined && outlasting(exec.info.endsAt - now)(task)) continue;
        this.queue.discard(task);
        this.dispatch(task, exec, now);
      }
      if (waiting.size === 0) this.#byLocality.delete(key);
    }
  }

  /** A task that should wait for the busy executor holding its inputs (max-cache-hit). */
  #waitsForHolder(task: TaskRecord, exec: ExecutorRecord, now: number): boolean {
    if (task.locality === null) return false;
    if (now - task.submittedAt > (this.options.cacheWaitMs ?? 2000)) return false;
    // Only executors holding its first input can hold them all.
    for (const other of this.registry.holdersOf(task.locality[0])) {
      if (other === exec || other.conn === null || other.draining) continue;
      if (task.locality.every((k) => other.holds!.has(k))) return true;
    }
    return false;
  }
}

/**
 * Lifetime-aware placement: an executor that ends in `left` ms (its `--lifetime`, an EC2 notice)
 * starts no task whose `timeoutMs` exceeds that; a task without `timeoutMs` may start (it says
 * nothing about how long it runs). Only executors that know their end pay for this check.
 */
function outlasting(left: number, other?: (t: TaskRecord) => boolean): (t: TaskRecord) => boolean {
  return (t) => (t.spec.timeoutMs !== undefined && t.spec.timeoutMs > left) || (other !== undefined && other(t));
}
