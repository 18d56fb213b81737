/**
 * Dependencies between tasks (`after: [ids]`): a task, or a whole job array, is held out of the
 * queue until every task it names has succeeded; if one of them fails, times out, is cancelled or
 * is lost, it ends `cancelled` with DEPENDENCY_FAILED naming that cause, and so do its own
 * dependants, transitively.
 *
 * Cost is a small constant per edge: adjacency lists of uids by dependency (`#dependants`) and a
 * count of unmet dependencies per held task (`#pending`); a dependency's end walks its list once.
 * Cascades go through a work list, so a chain of 100,000 failures does not grow the stack.
 *
 * Scope: `after` names ids of the same session: tasks submitted earlier (unfinished or finished)
 * or in the same submit, in any order, and whole arrays (an element alone may not be named).
 * Cycles can only form within one submit (anything earlier names only what existed before it),
 * so `planAfter` refuses them there, with unknown ids, before anything is accepted.
 *
 * Durable without a table of its own: `after` is in the stored spec, and after a restart
 * `wire` is run again for every held task and array against the restored states.
 */
import { ErrorCode, type TaskSpec } from '../protocol/index.js';
import { parseElementId } from './arrays.js';
import { unpackFinished, type SessionRecord } from './model.js';

/** What a name in `after` stands for, as things are now. */
export type Resolved =
  | { kind: 'pending'; uid: number }
  | { kind: 'done'; ok: boolean; cause: string }
  | { kind: 'unknown'; why: string };

/** Resolves one name of `after` in `session`. */
export function resolveAfter(session: SessionRecord, name: string): Resolved {
  const array = session.arrays?.get(name);
  if (array) return array.unfinished > 0 ? { kind: 'pending', uid: array.uid } : { kind: 'done', ok: array.failed === 0, cause: array.firstFailure ?? name };
  const elem = parseElementId(name);
  if (elem !== null && session.arrays?.has(elem.array)) return { kind: 'unknown', why: `${name} is one element of array ${elem.array}; after may name the whole array, not one element` };
  const task = session.tasks.get(name);
  if (task) return { kind: 'pending', uid: task.uid };
  const packed = session.finishedIds.get(name);
  if (packed !== undefined) return { kind: 'done', ok: unpackFinished(packed).status === 'succeeded', cause: name };
  return { kind: 'unknown', why: `after names ${name}, which this session does not have` };
}

/** A refusal of one task of a submit. */
export interface Refusal {
  code: ErrorCode;
  message: string;
}

/** True when some task of a submit names dependencies: only then does planAfter run. */
export function anyAfter(tasks: readonly unknown[]): boolean {
  for (const t of tasks) if ((t as { after?: unknown } | null)?.after !== undefined) return true;
  return false;
}

/**
 * Checks the `after` lists of one submit before anything is accepted: every name must resolve in
 * the session or name another valid task of the submit, and the submit's own edges must not
 * form a cycle. `problems` are the tasks' validation problems (null: valid), computed once by the
 * caller. Returns the refusals by index (a task behind a refused one is refused too).
 */
export function planAfter(session: SessionRecord, tasks: readonly unknown[], problems: ReadonlyArray<string | null>): Map<number, Refusal> {
  const refused = new Map<number, Refusal>();
  // Valid tasks of this submit by id (first occurrence); ids the session has already resolve there.
  const local = new Map<string, number>();
  tasks.forEach((raw, i) => {
    const id = (raw as TaskSpec | null)?.id;
    if (typeof id === 'string' && !local.has(id) && problems[i] === null && !session.tasks.has(id) && !session.finishedIds.has(id) && !session.arrays?.has(id)) local.set(id, i);
  });
  const deps = new Map<number, number[]>(); // index → indices it waits for within the submit
  const dependants = new Map<number, number[]>();
  for (const [, i] of local) {
    const after = (tasks[i] as TaskSpec).after ?? [];
    const mine: number[] = [];
    for (const name of after) {
      const j = local.get(name);
      if (j === i) {
        refused.set(i, { code: ErrorCode.DEPENDENCY_CYCLE, message: `task ${name} names itself in after` });
        break;
      }
      if (j !== undefined) {
        mine.push(j);
        let list = dependants.get(j);
        if (!list) dependants.set(j, (list = []));
        list.push(i);
        continue;
      }
      const r = resolveAfter(session, name);
      if (r.kind === 'unknown') {
        refused.set(i, { code: ErrorCode.DEPENDENCY_UNKNOWN, message: r.why });
        break;
      }
    }
    deps.set(i, mine);
  }
  // Kahn's order over the submit's own edges: what is never reached is on or behind a cycle.
  const waiting = new Map<number, number>();
  const ready: number[] = [];
  for (const [i, mine] of deps) {
    waiting.set(i, mine.length);
    if (mine.length === 0) ready.push(i);
  }
  while (ready.length > 0) {
    const j = ready.pop()!;
    waiting.delete(j);
    const bad = refused.get(j);
    for (const i of dependants.get(j) ?? []) {
      const id = (tasks[j] as TaskSpec).id!;
      if (bad && !refused.has(i)) refused.set(i, { code: bad.code === ErrorCode.DEPENDENCY_CYCLE ? ErrorCode.DEPENDENCY_CYCLE : ErrorCode.DEPENDENCY_UNKNOWN, message: `after names ${id}, which was refused (${bad.code})` });
      const left = waiting.get(i)! - 1;
      waiting.set(i, left);
      if (left === 0) ready.push(i);
    }
  }
  for (const i of waiting.keys()) {
    if (!refused.has(i)) refused.set(i, { code: ErrorCode.DEPENDENCY_CYCLE, message: `task ${(tasks[i] as TaskSpec).id} is on a cycle of after, or waits behind one` });
  }
  return refused;
}

/** What the dependency table needs of the rest of the core. */
export interface DependencyHost {
  /** All dependencies of held task (or array) `uid` succeeded: queue it. */
  release(uid: number): void;
  /** A dependency of held `uid` did not succeed: end it (and its elements) with DEPENDENCY_FAILED. */
  fail(uid: number, cause: string, how: string): void;
}

export class Dependencies {
  /** Held tasks and arrays by uid, each with its count of unmet dependencies. */
  readonly #pending = new Map<number, number>();
  /** Dependants by the uid of what they wait for. */
  readonly #dependants = new Map<number, number[]>();
  /** Ends still to propagate: [uid, ok, cause id, how it ended]. */
  #work: Array<[number, boolean, string, string]> = [];
  #draining = false;
  /** Edges held, for figures. */
  edges = 0;

  constructor(private readonly host: DependencyHost) {}

  /** Tasks and arrays waiting for dependencies. */
  get held(): number {
    return this.#pending.size;
  }

  /** True when something waits for `uid`: only then is its end worth a look. */
  waitedFor(uid: number): boolean {
    return this.#dependants.size > 0 && this.#dependants.has(uid);
  }

  isHeld(uid: number): boolean {
    return this.#pending.has(uid);
  }

  /**
   * Holds `uid` (a task or an array, accepted and not queued) until every name in `after`
   * succeeded: it is released at once when they all have, failed at once when one did not.
   */
  wire(uid: number, session: SessionRecord, after: readonly string[]): void {
    let pending = 0;
    let failed: [string, string] | null = null;
    for (const name of after) {
      const r = resolveAfter(session, name);
      if (r.kind === 'pending') {
        let list = this.#dependants.get(r.uid);
        if (!list) this.#dependants.set(r.uid, (list = []));
        list.push(uid);
        this.edges++;
        pending++;
      } else if (r.kind === 'unknown' || !r.ok) {
        failed = r.kind === 'unknown' ? [name, 'is unknown'] : [r.cause, 'did not succeed'];
        break;
      }
    }
    if (failed) {
      this.host.fail(uid, failed[0], failed[1]);
    } else if (pending === 0) this.host.release(uid);
    else this.#pending.set(uid, pending);
  }

  /** A held task ends another way (cancelled): forget it; its edges are skipped when met. */
  unhold(uid: number): boolean {
    return this.#pending.delete(uid);
  }

  /** Task or array `uid` ended (`ok`: succeeded; `cause`: the id to name; `how`: how it ended). Releases or fails what waits for it. */
  ended(uid: number, ok: boolean, cause: string, how: string): void {
    this.#work.push([uid, ok, cause, how]);
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let k = 0; k < this.#work.length; k++) {
        const [dep, good, why, end] = this.#work[k];
        const list = this.#dependants.get(dep);
        if (!list) continue;
        this.#dependants.delete(dep);
        this.edges -= list.length;
        for (const d of list) {
          const left = this.#pending.get(d);
          if (left === undefined) continue; // cancelled meanwhile, or already failed
          if (!good) {
            this.#pending.delete(d);
            this.host.fail(d, why, end);
          } else if (left === 1) {
            this.#pending.delete(d);
            this.host.release(d);
          } else this.#pending.set(d, left - 1);
        }
      }
    } finally {
      this.#work = [];
      this.#draining = false;
    }
  }
}
