/**
 * The task queue: priorities (higher first), FIFO within a priority for each session, and fair
 * share across sessions (round robin, one task per session per turn), so one client's million
 * tasks cannot starve another client's ten. Label requirements split a session's tasks into
 * lanes; an executor takes from the lanes it fits. Pure data structure: no I/O, no clock.
 *
 * Removal is lazy: a cancelled task stays in its deque, is no longer counted, and is skipped
 * when it reaches the head. That keeps cancel O(1) without a linked list per task. Each entry
 * remembers the task's queue generation, so a task that left and came back (re-queued) is never
 * served twice from an old entry.
 */
import type { TaskRecord } from './model.js';

/** An array-backed FIFO with amortised O(1) push and shift. */
export class Deque<T> {
  #items: T[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  push(item: T): void {
    this.#items.push(item);
  }
  /** Puts an item before the head (O(1) while shifted room is left; rare otherwise). */
  unshift(item: T): void {
    if (this.#head > 0) this.#items[--this.#head] = item;
    else this.#items.unshift(item);
  }
  peek(): T | undefined {
    return this.#items[this.#head];
  }
  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined as T; // let the task be collected
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

interface Entry {
  task: TaskRecord;
  gen: number;
}

const live = (e: Entry | undefined): boolean => e !== undefined && e.task.state === 'queued' && e.task.queueGen === e.gen;

/** One session's queued tasks at one priority, split by label requirement. */
class SessionLanes {
  readonly byLabel = new Map<string, Deque<Entry>>();
  size = 0;
  constructor(readonly sessionId: string) {}

  /**
   * The oldest live task in a lane the executor fits, removed; or undefined. A head that `skip`
   * refuses (it waits for the executor that holds its data) holds its lane back this turn.
   */
  take(fits: (labelKey: string) => boolean, skip?: (task: TaskRecord) => boolean): TaskRecord | undefined {
    let best: Deque<Entry> | undefined;
    let bestUid = Infinity;
    for (const [key, lane] of this.byLabel) {
      let head = lane.peek();
      while (head && !live(head)) {
        lane.shift();
        head = lane.peek();
      }
      if (!head) {
        this.byLabel.delete(key);
        continue;
      }
      if (head.task.uid < bestUid && fits(key) && !skip?.(head.task)) {
        best = lane;
        bestUid = head.task.uid;
      }
    }
    if (!best) return undefined;
    this.size--;
    return best.shift()!.task;
  }
}

class PriorityLevel {
  /** Sessions with queued tasks, visited round robin from `next`. */
  readonly ring: SessionLanes[] = [];
  readonly bySession = new Map<string, SessionLanes>();
  next = 0;
  constructor(readonly priority: number) {}
}

export class TaskQueue {
  #levels = new Map<number, PriorityLevel>();
  /** Priorities present, highest first. */
  #order: number[] = [];
  #size = 0;

  /** Live queued tasks. */
  get size(): number {
    return this.#size;
  }

  #gen = 0;

  /** The highest priority queued (perhaps of tasks since cancelled); -Infinity when empty. */
  get topPriority(): number {
    return this.#order.length > 0 ? this.#order[0] : -Infinity;
  }

  /**
   * Appends a task (state must already be 'queued'); `front`: before the others of its session,
   * priority and labels (a task given back by work stealing keeps its place at the head).
   */
  push(task: TaskRecord, front = false): void {
    task.queueGen = ++this.#gen;
    let level = this.#levels.get(task.priority);
    if (!level) {
      level = new PriorityLevel(task.priority);
      this.#levels.set(task.priority, level);
      this.#order.push(task.priority);
      this.#order.sort((a, b) => b - a);
    }
    const sid = task.session.id;
    let lanes = level.bySession.get(sid);
    if (!lanes) {
      lanes = new SessionLanes(sid);
      level.bySession.set(sid, lanes);
      level.ring.push(lanes);
    }
    let lane = lanes.byLabel.get(task.labelKey);
    if (!lane) {
      lane = new Deque();
      lanes.byLabel.set(task.labelKey, lane);
    }
    if (front) lane.unshift({ task, gen: task.queueGen });
    else lane.push({ task, gen: task.queueGen });
    lanes.size++;
    this.#size++;
  }

  /**
   * Forgets a queued task that left the queue another way (cancelled, finished by a late
   * result). The caller has already moved it out of 'queued'; its entry is skipped later.
   */
  discard(task: TaskRecord): void {
    const lanes = this.#levels.get(task.priority)?.bySession.get(task.session.id);
    if (!lanes) return;
    lanes.size--;
    this.#size--;
  }

  /**
   * Takes up to `max` tasks for one executor: highest priority first, sessions in turn,
   * FIFO within a session. `fits` says whether the executor may run a label key; priorities
   * below `minPriority` are left alone.
   */
  take(max: number, fits: (labelKey: string) => boolean, skip?: (task: TaskRecord) => boolean, minPriority = -Infinity): TaskRecord[] {
    const out: TaskRecord[] = [];
    for (let p = 0; p < this.#order.length && out.length < max && this.#order[p] >= minPriority; p++) {
      const level = this.#levels.get(this.#order[p])!;
      let barren = 0; // consecutive sessions with nothing this executor can run
      while (out.length < max && level.ring.length > 0 && barren < level.ring.length) {
        if (level.next >= level.ring.length) level.next = 0;
        const lanes = level.ring[level.next];
        const task = lanes.size > 0 ? lanes.take(fits, skip) : undefined;
        if (task) {
          out.push(task);
          this.#size--;
          barren = 0;
        } else {
          barren++;
        }
        if (lanes.size === 0) {
          level.ring.splice(level.next, 1);
          level.bySession.delete(lanes.sessionId);
        } else {
          level.next++;
        }
      }
      if (level.ring.length === 0) {
        this.#levels.delete(level.priority);
        this.#order.splice(p--, 1);
      }
    }
    return out;
  }
}
