/**
 * Questions about tasks and sessions from any client (the SDK's `task()`, `falconet task`, the
 * HTTP API): where a task is (queued, running and where, or how it ended) and its result. Pure:
 * it reads the core's tables and says which stored results it still needs; the adapter fetches
 * those from the store (a result acknowledged by its client lives only there).
 */
import type { SessionInfo, TaskInfo, TaskResult, TaskState } from '../protocol/index.js';
import { labelsFit, unfinishedOf, unpackFinished, type ExecutorRecord, type SessionRecord, type TaskRecord } from './model.js';
import { arrayPartInfo } from './arrays.js';
import { unsatisfiable } from './resources.js';
import type { ExecutorRegistry } from './registry.js';
import type { SessionTable } from './sessions.js';

export interface TaskFilter {
  ids?: string[];
  session?: string;
  state?: TaskState | 'finished';
  limit?: number;
}

/** A finished task whose result is not in memory: the store has it at (session, seq). */
export interface StoredResultRef {
  session: string;
  seq: number;
  /** Index in `tasks` of the info it completes. */
  index: number;
}

export interface Found {
  tasks: TaskInfo[];
  /** Ids asked for that no session has. */
  missing: string[];
  /** Results to fetch from the store, when the caller wants results. */
  stored: StoredResultRef[];
}

const DEFAULT_LIMIT = 1000;

export function findTasks(sessions: SessionTable, registry: ExecutorRegistry, filter: TaskFilter, now?: number): Found {
  const found: Found = { tasks: [], missing: [], stored: [] };
  const scope = filter.session !== undefined ? [sessions.get(filter.session)].filter((s) => s !== undefined) : [...sessions.values()];
  if (filter.ids) {
    for (const id of filter.ids) {
      let hit = false;
      // Newest session first: an id reused across sessions answers with its latest task.
      for (let i = scope.length - 1; i >= 0 && !hit; i--) hit = describe(scope[i], id, registry, found, true, now);
      if (!hit) found.missing.push(id);
    }
    return found;
  }
  const limit = filter.limit ?? DEFAULT_LIMIT;
  const wants = (state: TaskState): boolean =>
    filter.state === undefined || filter.state === state || (filter.state === 'finished' && state !== 'queued' && state !== 'running');
  for (let i = scope.length - 1; i >= 0 && found.tasks.length < limit; i--) {
    const session = scope[i];
    for (const task of session.tasks.values()) {
      if (found.tasks.length >= limit) break;
      if (wants(task.state === 'queued' ? 'queued' : 'running')) found.tasks.push(unfinishedInfo(task, registry, now));
    }
    // Finished ones newest first.
    if (filter.state === 'queued' || filter.state === 'running') continue;
    for (const [id, packed] of session.finishedIds.newestFirst()) {
      if (found.tasks.length >= limit) break;
      if (wants(unpackFinished(packed).status)) describe(session, id, registry, found, false, now);
    }
  }
  return found;
}

/** Adds what `session` knows of task `id` to `found`; false when it has no such task. */
function describe(session: SessionRecord, id: string, registry: ExecutorRegistry, found: Found, withResult: boolean, now?: number): boolean {
  const task = session.tasks.get(id);
  if (task) {
    found.tasks.push(unfinishedInfo(task, registry, now));
    return true;
  }
  const packed = session.finishedIds.get(id);
  if (packed === undefined) {
    // A job array, or one of its elements still waiting for the queue.
    const part = session.arrays !== null ? arrayPartInfo(session, id) : null;
    if (part) found.tasks.push(part);
    return part !== null;
  }
  const { seq, status } = unpackFinished(packed);
  const kept = withResult ? resultInMemory(session, seq) : undefined;
  const info: TaskInfo = {
    id,
    session: session.id,
    state: status,
    attempt: kept?.attempts ?? 0,
    executor: kept?.executor ?? null,
    submittedAt: kept?.timings.submitted ?? null,
    dispatchedAt: kept?.timings.dispatched ?? null,
    ...(kept ? { result: kept } : {}),
  };
  if (withResult && !kept) found.stored.push({ session: session.id, seq, index: found.tasks.length });
  found.tasks.push(info);
  return true;
}

/** Fills in what a stored result says (the adapter calls this with what the store returned). */
export function completeInfo(info: TaskInfo, result: TaskResult | null): void {
  if (!result) return;
  info.result = result;
  info.attempt = result.attempts;
  info.executor = result.executor;
  info.submittedAt = result.timings.submitted;
  info.dispatchedAt = result.timings.dispatched;
}

function resultInMemory(session: SessionRecord, seq: number): TaskResult | undefined {
  // Unacknowledged results are in sequence order: binary search.
  const list = session.unacked;
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].seq === seq) return list[mid].result;
    if (list[mid].seq < seq) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

function unfinishedInfo(task: TaskRecord, registry: ExecutorRegistry, now?: number): TaskInfo {
  const queued = task.state === 'queued';
  const info: TaskInfo = {
    id: task.id,
    session: task.session.id,
    state: queued ? 'queued' : 'running',
    attempt: task.attempt,
    executor: task.executor?.info.id ?? null,
    submittedAt: task.submittedAt,
    dispatchedAt: task.dispatchedAt,
  };
  if (queued && task.spec.after !== undefined && task.queueGen === 0) {
    info.waiting = 'waiting for the tasks it names in after to succeed';
  } else if (queued) {
    const why = whyWaiting(task, registry, now);
    if (why) info.waiting = why;
  }
  return info;
}

/** Why a queued task is not running, when it is something the user can act on (`now`: for executors' remaining lives). */
function whyWaiting(task: TaskRecord, registry: ExecutorRegistry, now?: number): string | null {
  let connected = 0;
  const fitting: ExecutorRecord[] = [];
  for (const e of registry.values()) {
    if (e.conn === null || e.draining || e.leaving) continue;
    connected++;
    if (labelsFit(task.spec.labels, e.info.labels)) fitting.push(e);
  }
  const hint = task.request !== null && registry.waitHint ? `; ${registry.waitHint(task.request)}` : '';
  if (connected === 0) return `no executor is connected${hint}`;
  if (fitting.length === 0) return `no connected executor carries the labels ${task.labelKey.split('\n').join(',')}`;
  if (task.request !== null) {
    const why = unsatisfiable(task.request, fitting);
    if (why !== null) return `${why}${hint}`;
  }
  const timeout = task.spec.timeoutMs;
  if (timeout !== undefined && now !== undefined) {
    let longest = 0;
    for (const e of fitting) {
      if (e.info.endsAt === undefined) return null;
      longest = Math.max(longest, e.info.endsAt - now);
    }
    if (longest < timeout) return `no connected executor lives long enough for its timeoutMs ${timeout} (the longest has ${Math.max(0, Math.round(longest / 1000))} s left)`;
  }
  return null;
}

export function sessionInfos(sessions: SessionTable): SessionInfo[] {
  const out: SessionInfo[] = [];
  for (const s of sessions.values()) {
    out.push({ id: s.id, createdAt: s.createdAt, connected: s.conn !== null, submitted: s.submitted, finished: s.finished, unfinished: unfinishedOf(s), unacked: s.unacked.length });
  }
  return out;
}
