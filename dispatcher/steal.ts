/**
 * Work stealing (Falkon, Dask, Ray: an executor's local queue is a prefetch the dispatcher may
 * revoke). An executor's window (executor/window.ts) keeps tasks waiting on it beyond its slots,
 * so that a freed slot turns to its next task without a round trip. The price, at the end of a
 * wave of equal tasks or behind a long task, is that tasks wait on a busy executor while another's
 * slots are free. The dispatcher then asks the busy one to give them back:
 *
 * - **trigger** (after each scheduling pass): nothing queued at the dispatcher, an executor with
 *   free slots (attempts held below its slots, credit left), and an executor that announced the
 *   `steal` capability holding more attempts than slots;
 * - **ask**: `steal {n}` with n = its backlog (attempts held beyond slots) up to the free slots not
 *   yet covered by a steal in flight; one steal in flight per executor;
 * - **answer**: the executor gives back up to n tasks that have not started, newest first, and
 *   names them in `returned` (a task that started meanwhile stays: none runs twice);
 * - **placement**: each given-back task goes straight to a free slot that fits it
 *   (`Scheduler.placeReturned`), else to the head of the queue; a task is not retried and no
 *   counter moves (`TaskLifecycle.givenBack`).
 *
 * The backlog the dispatcher sees includes results on their way, so it asks for at most what it
 * thinks waits and the executor answers with what really does; one that gave back less than asked
 * is not asked again for `retryMs`. One whose tasks found no free slot (labels, resources,
 * lifetime) is not asked again for `pauseMs`, so a task nobody else can run does not circle. Older executors, which do not announce `steal`, are never asked.
 *
 * Pure: no I/O but the outbox, time as an argument.
 */
import type { ExecutorRecord, TaskRecord } from './model.js';
import type { ExecutorRegistry } from './registry.js';
import type { Scheduler } from './scheduler.js';
import type { TaskLifecycle } from './lifecycle.js';
import type { Outbox } from './core.js';

/** How long an executor is not asked again after what it gave back found no free slot. */
export const STEAL_PAUSE_MS = 1000;
/**
 * How long an executor is not asked again after it gave back less than asked: what the dispatcher
 * counted as waiting there had started, was a result on its way, or waits in the spawn helper's
 * queue (which is not given back); asking again at once would only repeat the answer.
 */
export const STEAL_RETRY_MS = 50;

export class Stealer {
  /** Executors with a steal in flight. */
  readonly #asked = new Set<ExecutorRecord>();
  /** Steals sent and tasks given back since start (status, tests, the bench's notes). */
  readonly stats = { asked: 0, returned: 0 };

  constructor(
    private readonly registry: ExecutorRegistry,
    private readonly scheduler: Scheduler,
    private readonly tasks: TaskLifecycle,
    private readonly out: Outbox,
    private readonly pauseMs = STEAL_PAUSE_MS,
    private readonly retryMs = STEAL_RETRY_MS,
  ) {}

  /** After a scheduling pass: asks backlogged executors for tasks that free slots elsewhere could run now. */
  pass(now: number): void {
    const victims = this.registry.backlogged;
    if (victims.size === 0 || this.scheduler.size > 0) return;
    let want = 0;
    for (const v of victims) if (this.#askable(v, now)) want += v.running.size - v.info.slots;
    if (want <= 0) return;
    // Free slots, less what steals in flight will fill.
    let free = 0;
    for (const v of this.#asked) {
      if (v.stealAsked === 0 || v.conn === null) this.#asked.delete(v);
      else free -= v.stealAsked;
    }
    for (const exec of this.registry.hungry) {
      if (exec.conn === null || exec.draining || exec.reservedFor !== null || exec.credit <= 0) continue;
      const slots = exec.info.slots - exec.running.size;
      if (slots > 0) free += Math.min(slots, exec.credit);
      if (free >= want) break;
    }
    if (free <= 0) return;
    for (const v of victims) {
      if (free <= 0) return;
      if (!this.#askable(v, now)) continue;
      const n = Math.min(free, v.running.size - v.info.slots);
      free -= n;
      v.stealAsked = n;
      this.#asked.add(v);
      this.stats.asked++;
      this.out.toExecutor(v.conn!, { t: 'steal', n });
    }
  }

  #askable(v: ExecutorRecord, now: number): boolean {
    return v.conn !== null && v.stealAsked === 0 && now >= v.stealPausedUntil && v.running.size > v.info.slots;
  }

  /**
   * `exec` answered a steal: the attempts it gave back. Only attempts it holds count (anything else
   * is not its to give, and a started one it did not name runs on there).
   */
  returned(exec: ExecutorRecord, given: ReadonlyArray<{ uid: number; attempt: number }>, now: number): void {
    const asked = exec.stealAsked;
    exec.stealAsked = 0;
    this.#asked.delete(exec);
    const back: TaskRecord[] = [];
    for (const { uid, attempt } of given) {
      const task = exec.running.get(uid);
      if (task === undefined || task.attempt !== attempt) continue;
      if (this.tasks.givenBack(task, exec)) back.push(task);
    }
    this.stats.returned += back.length;
    if (back.length < asked) exec.stealPausedUntil = now + this.retryMs;
    if (back.length > 0 && this.scheduler.placeReturned(back, now) > 0) exec.stealPausedUntil = now + this.pauseMs;
  }

  /** A new connection of `exec` (a steal in flight on the old one is moot: what it gave back is reconciled by its hello). */
  reset(exec: ExecutorRecord, steals: boolean): void {
    exec.steals = steals;
    exec.stealAsked = 0;
    this.#asked.delete(exec);
    this.registry.refreshBacklog(exec);
  }
}
