/**
 * Memoized results (Reflow's cache): a task with a `cacheKey` whose key already has a successful
 * result finishes at once with that result, marked `cached: true`, without running. Pure: no I/O;
 * the durable store is reached only through the loader it is given.
 *
 * - **What is remembered**: the result of every *successful* run of a task with a `cacheKey`
 *   (also with `noCache`, which forces the run and then records it), under its key, newest wins.
 *   Failed, timed-out, cancelled and lost runs are never remembered. Entries expire with the
 *   store's retention (`--retention`), counted from when they were recorded.
 * - **Memory stays bounded**: with the durable store the index holds only keys and times; a hit
 *   reads its result from the store (its writer thread), asynchronously, and the task finishes
 *   when it arrives. With `--store memory` the results themselves are kept here.
 * - **Concurrent identical keys** (Reflow's rule): while a task with a key is queued or running,
 *   later tasks with the same key do not run; they wait for it. If it succeeds they finish with
 *   its result (cached); if it does not, the oldest waiting task runs in its place, and so on.
 *   A `noCache` task always runs.
 *
 * Tasks that wait here are `queued` but not in the scheduler's queue; `forget` takes one out
 * (cancel), and the lifecycle asks it before touching the queue.
 */
import type { TaskResult } from '../protocol/index.js';
import type { Clock, Journal, TaskRecord } from './model.js';

/** Reads the result stored under a key (the durable store, through its writer thread); null: none. */
export type MemoLoader = (key: string) => Promise<TaskResult | null>;

/** What the memo does to tasks, through the lifecycle. */
export interface MemoActions {
  /** Finishes a task with a memoized result: it never runs. */
  finishCached(task: TaskRecord, result: TaskResult): void;
  /** Puts a task in the scheduler's queue: it runs. */
  enqueue(task: TaskRecord): void;
}

interface Entry {
  /** When the result was recorded (ms since the epoch): expiry counts from here. */
  at: number;
  /** The result itself without a durable store; null when the store holds it. */
  result: TaskResult | null;
}

/** The run a key's later tasks wait for. */
interface Run {
  leader: TaskRecord;
  waiting: TaskRecord[];
}

export class Memo {
  /** Recorded keys, oldest first (a key recorded again moves to the end): expiry pops the front. */
  readonly #entries = new Map<string, Entry>();
  /** Keys with a task queued or running for them, and the tasks that wait for its outcome. */
  readonly #runs = new Map<string, Run>();
  /** Keys whose result is being read from the store, and the tasks that wait for it. */
  readonly #loading = new Map<string, TaskRecord[]>();
  #load: MemoLoader | null = null;
  #wake: () => void = () => {};

  constructor(
    private readonly actions: MemoActions,
    private readonly journal: Journal,
    private readonly clock: Clock,
  ) {}

  /** Recorded keys. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * `wake` is called after tasks finished asynchronously (the adapter then schedules, commits and
   * sends, as after a frame). With `load`, results live in a durable store: the index keeps keys
   * only and reads a hit's result through it. Call before anything is restored or accepted.
   */
  connect(wake: () => void, load?: MemoLoader): void {
    this.#wake = wake;
    this.#load = load ?? null;
  }

  /** A key the store kept (recovery; call oldest first). */
  restore(key: string, at: number): void {
    this.#entries.set(key, { at, result: null });
  }

  /** A task with a `cacheKey` is queued (accepted, or restored): it runs, waits, or finishes now. */
  admit(task: TaskRecord): void {
    const key = task.spec.cacheKey!;
    if (task.spec.noCache) {
      if (!this.#runs.has(key)) this.#runs.set(key, { leader: task, waiting: [] });
      return this.actions.enqueue(task);
    }
    const entry = this.#entries.get(key);
    if (entry) {
      // A hit finishes in a later turn, even from memory: the client hears `accepted` first.
      const loading = this.#loading.get(key);
      if (loading) return void loading.push(task);
      this.#loading.set(key, [task]);
      return this.#fetch(key, entry);
    }
    const run = this.#runs.get(key);
    if (run) return void run.waiting.push(task);
    this.#runs.set(key, { leader: task, waiting: [] });
    this.actions.enqueue(task);
  }

  /** A restored task that is running on an executor: later tasks with its key wait for it. */
  adoptRunning(task: TaskRecord): void {
    const key = task.spec.cacheKey!;
    if (!this.#runs.has(key)) this.#runs.set(key, { leader: task, waiting: [] });
  }

  /**
   * Takes a task that waits here out (it was cancelled while queued). Returns false when it does
   * not wait here (it is in the scheduler's queue).
   */
  forget(task: TaskRecord): boolean {
    const key = task.spec.cacheKey!;
    const loading = this.#loading.get(key);
    const run = this.#runs.get(key);
    for (const list of [loading, run?.waiting]) {
      const i = list ? list.indexOf(task) : -1;
      if (i >= 0) {
        list!.splice(i, 1);
        return true;
      }
    }
    return false;
  }

  /**
   * A task with a `cacheKey` finished (any way). A successful run is recorded, in the same commit
   * as its result; the tasks that waited for it finish with its result, or the next one runs.
   */
  finished(task: TaskRecord, result: TaskResult): void {
    if (result.cached) return;
    const key = task.spec.cacheKey!;
    if (result.status === 'succeeded') {
      const at = this.clock.now();
      this.#entries.delete(key);
      this.#entries.set(key, { at, result: this.#load ? null : result });
      this.journal.memoRecorded?.(key, result, at);
    }
    const run = this.#runs.get(key);
    if (!run || run.leader !== task) return;
    this.#runs.delete(key);
    const waiting = run.waiting.filter((t) => t.state === 'queued');
    if (result.status === 'succeeded') {
      for (const t of waiting) this.actions.finishCached(t, cachedFor(t, result));
    } else if (waiting.length > 0) {
      const [next, ...rest] = waiting;
      this.#runs.set(key, { leader: next, waiting: rest });
      this.actions.enqueue(next);
    }
  }

  /** Forgets entries recorded before `now - retentionMs`, here and in the store. */
  expire(now: number, retentionMs: number): void {
    const before = now - retentionMs;
    let dropped = false;
    for (const [key, entry] of this.#entries) {
      if (entry.at >= before) break;
      this.#entries.delete(key);
      dropped = true;
    }
    if (dropped) this.journal.memoExpired?.(before);
  }

  #fetch(key: string, entry: Entry): void {
    const done = (result: TaskResult | null) => {
      const tasks = (this.#loading.get(key) ?? []).filter((t) => t.state === 'queued');
      this.#loading.delete(key);
      if (result) {
        for (const t of tasks) this.actions.finishCached(t, cachedFor(t, result));
      } else {
        // Gone from the store meanwhile (expired): the tasks run, as with no entry.
        this.#entries.delete(key);
        for (const t of tasks) this.admit(t);
      }
      this.#wake();
    };
    const read = entry.result ? Promise.resolve(entry.result) : this.#load ? this.#load(key) : Promise.resolve(null);
    read.then(done, () => done(null));
  }
}

/** The result `task` gets from a memoized run: that run's outcome, output and timings, under its own id. */
function cachedFor(task: TaskRecord, original: TaskResult): TaskResult {
  return { ...original, id: task.id, attempts: 0, cached: true };
}
