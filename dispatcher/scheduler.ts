/**
 * The scheduler: matches queued tasks to executors with credit. Pure: it reads the registry's
 * hungry set and holders index, takes tasks from the queue, and hands each match to `dispatch`;
 * it never sends anything itself.
 *
 * Order of a pass: cache hits first (every free executor takes the queued tasks whose inputs it
 * already holds: Falkon's data diffusion), then every free executor takes tasks in queue order
 * (priority, fair share across sessions, FIFO), skipping under `max-cache-hit` the tasks that
 * should wait a little for the busy executor that holds their data.
 *
 * Tasks with resource requests wait in their own queue (resource-queue.ts) and are packed: an
 * executor takes one only when it fits what it has free (resources.ts), before plain tasks of a
 * lower or equal priority and after those of a higher one. A request that has waited longer than
 * `reserveAfterMs` gets a reservation: the executor it fits best takes nothing else until it starts.
 */
import { TaskQueue } from './queue.js';
import { labelsFit, type ExecutorRecord, type TaskRecord } from './model.js';
import { ResourceQueue, type RequestLane } from './resource-queue.js';
import { capacityOf } from './resources.js';

export interface SchedulerOptions {
  /**
   * Data-aware scheduling: `first-available` sends a task to any free executor, preferring one
   * that holds its inputs; `max-cache-hit` also keeps a task waiting, up to `cacheWaitMs`, for the
   * executor that holds its inputs when that one is busy.
   */
  dataPolicy?: 'first-available' | 'max-cache-hit';
  cacheWaitMs?: number;
  /**
   * How long a task with resource requests may wait before an executor is reserved for it (it
   * then takes no other task until this one starts), so that a stream of small requests cannot
   * starve a large one. Default 30 s.
   */
  reserveAfterMs?: number;
}

/** How often, at most, the scheduler looks for a request to reserve an executor for. */
const RESERVE_CHECK_MS = 250;

/** What the scheduler reads of the executor registry. */
export interface SchedulerRegistry {
  readonly hungry: Set<ExecutorRecord>;
  holdersOf(key: string): Iterable<ExecutorRecord>;
  /** Every registered executor (where a reservation may go). */
  values(): Iterable<ExecutorRecord>;
}

export class Scheduler {
  readonly queue = new TaskQueue();
  /** Queued tasks by the locality keys of their inputs (entries pruned lazily). */
  readonly #byLocality = new Map<string, Set<TaskRecord>>();
  /** Label requirements by their canonical key, so an executor's fit memo never re-parses a key. */
  readonly #labelsByKey = new Map<string, Record<string, string>>();
  /** Queued tasks with resource requests. */
  readonly requests = new ResourceQueue();
  /** The one reservation in force: a lane's head waits for this executor. */
  #reserved: { lane: RequestLane; exec: ExecutorRecord } | null = null;
  #nextReserveCheck = 0;

  constructor(
    private readonly options: SchedulerOptions,
    private readonly registry: SchedulerRegistry,
    /** Hands a task to an executor; the caller records the attempt and sends the assignment. */
    private readonly dispatch: (task: TaskRecord, exec: ExecutorRecord, now: number) => void,
  ) {}

  /** Live queued tasks. */
  get size(): number {
    return this.queue.size + this.requests.size;
  }

  /** Queues a task (its state is already `queued`), indexing it by the data it needs; `front`: at the head of its lane. */
  enqueue(task: TaskRecord, front = false): void {
    if (task.labelKey !== '' && !this.#labelsByKey.has(task.labelKey)) this.#labelsByKey.set(task.labelKey, task.spec.labels!);
    // Tasks with requests are packed, never sent by the cache-hit pass: they are not indexed by data.
    if (task.request !== null) return this.requests.push(task);
    this.queue.push(task, front);
    for (const key of task.locality ?? []) {
      let set = this.#byLocality.get(key);
      if (!set) this.#byLocality.set(key, (set = new Set()));
      set.add(task);
    }
  }

  /** A queued task left the queue another way (cancelled, finished by a late result). */
  discard(task: TaskRecord): void {
    if (task.request !== null) this.requests.discard(task);
    else this.queue.discard(task);
  }

  /** One pass. Call once per batch of inbound messages. */
  schedule(now: number): void {
    const hungry = this.registry.hungry;
    if ((this.queue.size === 0 && this.requests.size === 0) || hungry.size === 0) return;
    if (this.#byLocality.size > 0) {
      for (const exec of hungry) {
        if (exec.holds && exec.credit > 0 && exec.conn !== null && !exec.draining && exec.reservedFor === null) this.#dispatchLocal(exec, now);
      }
    }
    const packing = this.requests.size > 0;
    if (packing || this.#reserved !== null) this.#reserve(now);
    const waits = this.options.dataPolicy === 'max-cache-hit' && this.#byLocality.size > 0;
    // Free slots before windows: with several executors, each first takes what its idle slots can
    // start now, and only then fills its window (the tasks that wait on it). Otherwise the first
    // executor visited would take its whole window (up to a wave of long tasks) while another's
    // slots idle, doubling a burst's ramp.
    if (!packing && this.#reserved === null && hungry.size > 1 && this.queue.size > 0) {
      for (const exec of hungry) {
        const free = Math.min(exec.credit, exec.info.slots - exec.running.size);
        if (free <= 0 || exec.conn === null || exec.draining || exec.reservedFor !== null) continue;
        for (const task of this.queue.take(free, this.#fitsFor(exec), this.#skipFor(exec, waits, now))) this.dispatch(task, exec, now);
        if (this.queue.size === 0) return;
      }
    }
    for (const exec of hungry) {
      if (exec.credit <= 0 || exec.conn === null || exec.draining) {
        hungry.delete(exec); // lazy pruning: see the credit invariant in registry.ts
        continue;
      }
      if (exec.reservedFor !== null) {
        this.#startReserved(exec, now);
        if (exec.credit <= 0) hungry.delete(exec);
        continue;
      }
      const skip = this.#skipFor(exec, waits, now);
      if (packing) {
        // Plain tasks of a higher priority than every request, then requests down to the plain
        // tasks' top priority, then the rest of the plain tasks, then the rest of the requests.
        const above = this.requests.topPriority + 1;
        for (const task of this.queue.take(exec.credit, this.#fitsFor(exec), skip, above)) this.dispatch(task, exec, now);
        this.#pack(exec, now, this.queue.topPriority);
      }
      if (this.queue.size > 0 && exec.credit > 0) {
        for (const task of this.queue.take(exec.credit, this.#fitsFor(exec), skip)) this.dispatch(task, exec, now);
      }
      if (packing && exec.credit > 0) this.#pack(exec, now, -Infinity);
      if (exec.credit <= 0) hungry.delete(exec);
      if (this.queue.size === 0 && this.requests.size === 0) break;
    }
  }

  /**
   * What `exec` must pass over in the queue: tasks that wait for the executor holding their data
   * (`waits`: max-cache-hit) and tasks whose timeout outlasts its remaining life.
   */
  #skipFor(exec: ExecutorRecord, waits: boolean, now: number): ((t: TaskRecord) => boolean) | undefined {
    const holder = waits ? (t: TaskRecord) => this.#waitsForHolder(t, exec, now) : undefined;
    return exec.info.endsAt === undefined ? holder : outlasting(exec.info.endsAt - now, holder);
  }

  /**
   * Tasks given back by work stealing (steal.ts): each goes straight to an executor with a free
   * slot that fits it (a slot that would otherwise idle: the reason it was stolen), else to the
   * head of the queue. Returns how many found no free slot (the giver is then not asked again
   * for a while: steal.ts).
   */
  placeReturned(tasks: readonly TaskRecord[], now: number): number {
    // Under max-cache-hit a task that should wait for the executor holding its inputs (the one
    // that gave it back, usually) does not go to a free slot elsewhere: it goes back to the queue.
    const waits = this.options.dataPolicy === 'max-cache-hit';
    const free: ExecutorRecord[] = [];
    for (const exec of this.registry.hungry) {
      if (exec.conn !== null && !exec.draining && exec.reservedFor === null && exec.credit > 0 && exec.running.size < exec.info.slots) free.push(exec);
    }
    let unplaced = 0;
    for (const task of tasks) {
      let to: ExecutorRecord | undefined;
      for (let i = 0; i < free.length && to === undefined; i++) {
        const exec = free[i];
        if (exec.credit <= 0 || exec.running.size >= exec.info.slots) {
          free.splice(i--, 1);
          continue;
        }
        if (this.fits(task, exec) && !tooLongFor(exec, task, now) && !(waits && this.#waitsForHolder(task, exec, now))) to = exec;
      }
      if (to !== undefined) this.dispatch(task, to, now);
      else {
        this.enqueue(task, true);
        unplaced++;
      }
    }
    return unplaced;
  }

  /**
   * Whether `exec` may run `task` now: the one per-task placement predicate (labels, and for a
   * task with requests, what the executor has free).
   */
  fits(task: TaskRecord, exec: ExecutorRecord): boolean {
    if (task.labelKey !== '' && !this.#fitsFor(exec)(task.labelKey)) return false;
    if (task.request === null) return true;
    return capacityOf(exec)?.fitsNow(task.request) ?? false;
  }

  /** A request may start on `exec` now: it fits, and (lifetime-aware placement) `exec` outlives its timeoutMs. */
  #startsHere(task: TaskRecord, exec: ExecutorRecord, now: number): boolean {
    return this.fits(task, exec) && !tooLongFor(exec, task, now);
  }

  /** Gives `exec` the requests that fit what it has free, at `minPriority` or above, while it has credit. */
  #pack(exec: ExecutorRecord, now: number, minPriority: number): void {
    while (exec.credit > 0 && this.requests.size > 0) {
      const lane = this.requests.pick(minPriority, (l) => this.#startsHere(l.head()!, exec, now));
      if (lane === undefined) return;
      this.dispatch(this.requests.take(lane), exec, now);
    }
  }

  /** A reserved executor takes the request it is held for once that fits, and then is free again. */
  #startReserved(exec: ExecutorRecord, now: number): void {
    const lane = exec.reservedFor!;
    const head = lane.head();
    if (head === undefined) return this.#release();
    if (!this.#startsHere(head, exec, now)) return;
    this.dispatch(this.requests.take(lane), exec, now);
    this.#release();
  }

  #release(): void {
    if (this.#reserved === null) return;
    this.#reserved.exec.reservedFor = null;
    this.#reserved = null;
  }

  /**
   * Backfill-lite: the oldest request that has waited past `reserveAfterMs` gets the executor
   * where it is closest to fitting (of those that could ever run it), which takes no new task until
   * it starts. One reservation at a time; it ends when the request starts, leaves the queue, or the
   * executor goes. Looked at every RESERVE_CHECK_MS at most, so a request no executor can run costs
   * a pass nothing.
   */
  #reserve(now: number): void {
    const r = this.#reserved;
    const before = now - (this.options.reserveAfterMs ?? 30_000);
    if (r !== null) {
      // Still wanted: its lane's head has waited long enough (it may have started elsewhere) and the executor is here.
      if ((r.lane.head()?.submittedAt ?? Infinity) <= before && r.exec.conn !== null && !r.exec.draining) return;
      this.#release();
    }
    if (now < this.#nextReserveCheck || this.requests.size === 0) return;
    this.#nextReserveCheck = now + RESERVE_CHECK_MS;
    for (const lane of this.requests.overdue(before)) {
      const head = lane.head()!;
      let best: ExecutorRecord | null = null;
      let bestShort = Infinity;
      for (const exec of this.registry.values()) {
        if (exec.conn === null || exec.draining || !this.#fitsFor(exec)(lane.labelKey)) continue;
        const cap = capacityOf(exec);
        if (cap === null || !cap.fitsEver(head.request!)) continue;
        const short = cap.shortfall(head.request!);
        if (short < bestShort) {
          best = exec;
          bestShort = short;
        }
      }
      if (best !== null) {
        best.reservedFor = lane;
        this.#reserved = { lane, exec: best };
        return;
      }
    }
  }

  /** The executor held for a waiting request, and that request (`cpus=4`), if any. */
  get reservation(): { executor: string; request: string; task: TaskRecord | undefined } | null {
    const r = this.#reserved;
    return r === null ? null : { executor: r.exec.info.id, request: r.lane.request.key, task: r.lane.head() };
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
        if (tooLongFor(exec, task, now)) continue;
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

/** Whether `task`'s timeoutMs outlasts what is left of `exec`'s life (false for an executor without a known end). */
function tooLongFor(exec: ExecutorRecord, task: TaskRecord, now: number): boolean {
  return exec.info.endsAt !== undefined && task.spec.timeoutMs !== undefined && task.spec.timeoutMs > exec.info.endsAt - now;
}
