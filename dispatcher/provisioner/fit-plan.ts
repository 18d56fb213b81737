/**
 * Which instance types to launch for the resource requests that wait because no executor could
 * ever run them: the typed half of the provisioner's decision (policy.ts keeps the queue-depth
 * half, the bounds and the breaker). Pure: the queued request shapes, the live executors and the
 * pending instances in; the launches wanted and the tasks the default type cannot serve out.
 *
 * Rules, per request shape (request and labels; oldest first):
 * - A shape some live executor not launched with a type can run (the default type, or one
 *   started by hand) is left to queue depth, exactly as without types.
 * - Otherwise its tasks do not count as queue depth (a default instance would not run them), and
 *   the typed fleet serves it: executors of a type that fits, live or pending (a pending one
 *   credited with `slotsPerExecutor` free slots). When that covers the shape's tasks, nothing is
 *   launched. When it does not and no instance of a fitting type is pending, one instance of the
 *   smallest fitting type is wanted; while one is pending, none more. So one waiting task never
 *   launches ten instances, and a long queue of one shape grows its fleet one boot at a time.
 * - A shape no configured type fits is reported (`unfit`); it keeps waiting with its reason.
 * A launch planned for one shape counts as pending for the shapes after it (two shapes served
 * by one type launch it once).
 */
import { labelsFit } from '../model.js';
import type { ResourceRequest } from '../resources.js';
import { fitsResources, smallestFitting, type InstanceType } from './instance-types.js';

/** Queued tasks of one request and labels. */
export interface WaitingShape {
  request: ResourceRequest;
  labels?: Record<string, string>;
  tasks: number;
}

/** A connected, not draining executor as the plan sees it. */
export interface FitExecutor {
  /** The type it was launched with; null for the default type or an executor not ours. */
  type: string | null;
  resources: Readonly<Record<string, number>> | undefined;
  labels: Readonly<Record<string, string>>;
  freeSlots: number;
}

export interface FitInput {
  /** Configured types, smallest first (`orderTypes`). */
  types: readonly InstanceType[];
  shapes: readonly WaitingShape[];
  executors: readonly FitExecutor[];
  /** Instances launched and not registered yet, with their type (null: the default type). */
  pending: ReadonlyArray<{ type: string | null }>;
  /** Labels every launched executor carries (`--executor-labels`, `--labels`). */
  labels: Readonly<Record<string, string>>;
  slotsPerExecutor: number;
}

export interface FitPlan {
  /** One entry per launch wanted: the type, and the request it is for (for the reason line). */
  launch: Array<{ type: string; request: string }>;
  /** Queued tasks only the typed fleet can serve: not queue depth for the default type. */
  excluded: number;
  /** Requests no configured type fits. */
  unfit: string[];
}

/** Plans this poll's typed launches (see the file comment for the rules). */
export function planFit(input: FitInput): FitPlan {
  const { types, slotsPerExecutor } = input;
  const pending = input.pending.filter((p) => p.type !== null).map((p) => types.find((t) => t.name === p.type)).filter((t): t is InstanceType => t !== undefined);
  const plan: FitPlan = { launch: [], excluded: 0, unfit: [] };
  for (const shape of input.shapes) {
    // An instance we launch would not carry the labels the tasks need: nothing to launch for them.
    if (shape.tasks <= 0 || !labelsFit(shape.labels, input.labels as Record<string, string>)) continue;
    let typedFree = 0;
    let byDefault = false;
    for (const e of input.executors) {
      if (!labelsFit(shape.labels, e.labels as Record<string, string>) || !fitsResources(shape.request, e.resources)) continue;
      if (e.type === null) {
        byDefault = true;
        break;
      }
      typedFree += Math.max(0, e.freeSlots);
    }
    if (byDefault) continue;
    plan.excluded += shape.tasks;
    const fittingPending = pending.filter((t) => fitsResources(shape.request, t.resources)).length;
    typedFree += fittingPending * slotsPerExecutor;
    if (shape.tasks <= typedFree || fittingPending > 0) continue;
    const type = smallestFitting(types, shape.request);
    if (type === undefined) {
      // Only worth saying when nothing live runs it either (a typed executor may, just busy).
      if (typedFree === 0 && !plan.unfit.includes(shape.request.key)) plan.unfit.push(shape.request.key);
      continue;
    }
    plan.launch.push({ type: type.name, request: shape.request.key });
    pending.push(type);
  }
  return plan;
}
