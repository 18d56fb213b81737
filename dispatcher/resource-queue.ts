/**
 * The queue of tasks with resource requests, kept apart from the plain tasks' queue (queue.ts) so
 * that plain tasks pay nothing for packing. Tasks with the same priority, labels and request are
 * interchangeable for placement and wait in one FIFO lane; an executor takes the oldest head (by
 * priority, then submission) among the lanes whose request fits what it has free, so a big task
 * that does not fit yet does not hold back smaller ones behind it (that is what the reservation in
 * scheduler.ts is for). Pure data structure: no I/O, no clock. Removal is lazy, as in queue.ts.
 */
import { Deque } from './queue.js';
import type { TaskRecord } from './model.js';
import type { ResourceRequest } from './resources.js';

interface Entry {
  task: TaskRecord;
  gen: number;
}

const live = (e: Entry | undefined): boolean => e !== undefined && e.task.state === 'queued' && e.task.queueGen === e.gen;

/** Queued tasks of one priority, label key and request, oldest first. */
export class RequestLane {
  readonly entries = new Deque<Entry>();
  /** Live tasks in it. */
  size = 0;
  constructor(
    readonly key: string,
    readonly priority: number,
    readonly labelKey: string,
    readonly request: ResourceRequest,
  ) {}

  /** The oldest live task, dead entries at the head dropped on the way. */
  head(): TaskRecord | undefined {
    let e = this.entries.peek();
    while (e !== undefined && !live(e)) {
      this.entries.shift();
      e = this.entries.peek();
    }
    return e?.task;
  }
}

function laneKey(task: TaskRecord): string {
  return `${task.priority}\n${task.labelKey}\n${task.request!.key}`;
}

export class ResourceQueue {
  readonly #lanes = new Map<string, RequestLane>();
  #size = 0;
  #gen = 0;

  /** Live queued tasks with requests. */
  get size(): number {
    return this.#size;
  }

  /** Appends a task with a request (state already 'queued'). */
  push(task: TaskRecord): void {
    task.queueGen = ++this.#gen;
    const key = laneKey(task);
    let lane = this.#lanes.get(key);
    if (!lane) this.#lanes.set(key, (lane = new RequestLane(key, task.priority, task.labelKey, task.request!)));
    lane.entries.push({ task, gen: task.queueGen });
    lane.size++;
    this.#size++;
  }

  /** Forgets a task that left the queue another way (its state is no longer 'queued'). */
  discard(task: TaskRecord): void {
    const lane = this.#lanes.get(laneKey(task));
    if (!lane) return;
    lane.size--;
    this.#size--;
    if (lane.size === 0) this.#lanes.delete(lane.key);
  }

  /** The highest priority with a live task; -Infinity when none. */
  get topPriority(): number {
    let top = -Infinity;
    for (const lane of this.#lanes.values()) if (lane.priority > top && lane.head() !== undefined) top = lane.priority;
    return top;
  }

  /** Lanes with live tasks. */
  lanes(): IterableIterator<RequestLane> {
    return this.#lanes.values();
  }

  /**
   * The lane whose head an executor should take next: among lanes at `minPriority` or above that
   * `fits` accepts, the highest priority, then the oldest head. Undefined when none fits.
   */
  pick(minPriority: number, fits: (lane: RequestLane) => boolean): RequestLane | undefined {
    let best: RequestLane | undefined;
    let bestUid = Infinity;
    for (const lane of this.#lanes.values()) {
      if (lane.priority < minPriority || (best !== undefined && lane.priority < best.priority)) continue;
      const head = lane.head();
      if (head === undefined) continue;
      if ((best === undefined || lane.priority > best.priority || head.uid < bestUid) && fits(lane)) {
        best = lane;
        bestUid = head.uid;
      }
    }
    return best;
  }

  /** Removes and returns the head of `lane` (it must have one). */
  take(lane: RequestLane): TaskRecord {
    const task = lane.head()!;
    lane.entries.shift();
    lane.size--;
    this.#size--;
    if (lane.size === 0) this.#lanes.delete(lane.key);
    return task;
  }

  /** Lanes whose head was submitted at or before `before`, oldest head first. */
  overdue(before: number): RequestLane[] {
    const out: Array<{ lane: RequestLane; uid: number }> = [];
    for (const lane of this.#lanes.values()) {
      const head = lane.head();
      if (head !== undefined && head.submittedAt <= before) out.push({ lane, uid: head.uid });
    }
    return out.sort((a, b) => a.uid - b.uid).map((o) => o.lane);
  }
}
