/**
 * Validation of every inbound message before it touches state. Validators are compiled once
 * from the schemas in messages.ts (TypeBox's compiler emits plain JS checks, so this costs
 * about as much as hand-written ifs), and looked up by the message's `t`.
 */
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { ErrorCode, type WireError } from './errors.js';
import { LIMITS, TaskSpecSchema, type TaskSpec } from './messages.js';

export type Validated<M> = { ok: true; msg: M } | { ok: false; error: WireError };

/** A validator for one direction: known `t` values, each with its compiled schema. */
export type InboundValidator<M> = (raw: unknown) => Validated<M>;

function firstError(check: TypeCheck<TSchema>, value: unknown): string {
  const e = check.Errors(value).First();
  return e ? `${e.path || '/'}: ${e.message}` : 'invalid';
}

/** Compiles a validator for the union whose members are `schemas` (keyed by `t`). */
export function compileInbound<M>(schemas: Record<string, TSchema>): InboundValidator<M> {
  const checks = new Map<string, TypeCheck<TSchema>>();
  for (const [t, schema] of Object.entries(schemas)) checks.set(t, TypeCompiler.Compile(schema));
  return (raw: unknown): Validated<M> => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      return { ok: false, error: { code: ErrorCode.INVALID_MESSAGE, message: 'a message must be a map', retryable: false } };
    }
    const t = (raw as { t?: unknown }).t;
    if (typeof t !== 'string') {
      // Not a type we do not know, but no type at all: a malformed message (and never a value
      // such as a BigInt put into a message of ours).
      return { ok: false, error: { code: ErrorCode.INVALID_MESSAGE, message: `a message's t must be a string (got ${typeof t})`, retryable: false } };
    }
    const check = checks.get(t);
    if (!check) {
      return {
        ok: false,
        error: { code: ErrorCode.UNKNOWN_MESSAGE, message: `unknown message type ${JSON.stringify(t.slice(0, 64))}`, retryable: false },
      };
    }
    if (!check.Check(raw)) {
      return { ok: false, error: { code: ErrorCode.INVALID_MESSAGE, message: `${t}: ${firstError(check, raw)}`, retryable: false } };
    }
    return { ok: true, msg: raw as M };
  };
}

const taskCheck = TypeCompiler.Compile(TaskSpecSchema);

/** What the dispatcher's generated task ids start with; client ids may not, so the two never collide. */
export const GENERATED_ID_PREFIX = '@';

/** Validates one task spec, including the rules a schema cannot say. Returns a message or null. */
const RESOURCE_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

export function taskProblem(raw: unknown): string | null {
  if (!taskCheck.Check(raw)) return firstError(taskCheck, raw);
  const task = raw as TaskSpec;
  if ((task.cmd === undefined) === (task.builtin === undefined)) {
    return 'a task needs exactly one of cmd and builtin';
  }
  if (task.builtin === 'sleep' && task.ms === undefined) return 'builtin sleep needs ms';
  if (task.resources !== undefined) {
    for (const name in task.resources) if (!RESOURCE_NAME.test(name)) return `resources: ${JSON.stringify(name.slice(0, 80))} is not a resource name (a letter, then up to 63 letters, digits, _ . -)`;
    if (task.resources.gpus !== undefined && !Number.isInteger(task.resources.gpus)) return `resources.gpus must be a whole number (got ${task.resources.gpus})`;
  }
  if (task.id !== undefined && task.id.startsWith(GENERATED_ID_PREFIX)) return `ids starting with ${GENERATED_ID_PREFIX} are reserved for the ids the dispatcher generates`;
  if (task.array !== undefined) {
    const { from, to } = task.array;
    if (to < from) return `array: to (${to}) is below from (${from})`;
    if (to - from + 1 > LIMITS.arrayElements) return `array: ${to - from + 1} elements; at most ${LIMITS.arrayElements} per array`;
  }
  return null;
}
