/**
 * Every message falconet sends, one schema per message, one discriminated union per direction.
 * The schemas are the single source of truth: the TypeScript types are derived from them and the
 * codec's validators are compiled from them, so a field cannot be typed one way and checked
 * another. Field names are short but readable; msgpack records (see codec.ts) send each key once
 * per frame, so long names cost nothing on the hot path.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { ErrorCode } from './errors.js';

/** Bumped on any incompatible change; checked once, at `hello`. */
export const PROTOCOL_VERSION = 1;

const KiB = 1024;
const MiB = 1024 * KiB;
/** Bounds enforced on every inbound message, before anything touches state. */
export const LIMITS = {
  idLength: 256,
  argvItems: 4096,
  argLength: 64 * KiB,
  envEntries: 1024,
  stdinBytes: 1 * MiB,
  labelEntries: 64,
  tasksPerSubmit: 100_000,
  outputBytes: 1 * MiB,
  /** stdout and stderr of one attempt, in characters (UTF-16 units, what the schema counts). */
  outputChars: 2 * MiB,
  /** An attempt's error message, in characters. */
  errorChars: 16 * KiB,
  /** Elements of one job array (`array: {from, to}`). */
  arrayElements: 1_000_000,
  /** Ids one task may name in `after`. */
  afterItems: 10_000,
  /** A dispatcher URL on the wire (an error's MOVED `to`), in characters. */
  urlChars: 2048,
} as const;

/**
 * Cuts `text` to at most `max` characters, saying so at the end, so that what an executor reports
 * always fits the schema: a report the dispatcher refuses is a task that never finishes.
 */
export function fitText(text: string, max: number): string {
  if (text.length <= max) return text;
  const note = `\n[... ${text.length - max} more characters cut]`;
  return text.slice(0, Math.max(0, max - note.length)) + note;
}

const Id = Type.String({ minLength: 1, maxLength: LIMITS.idLength });
/** A session's secret: long enough not to be guessed, short enough to paste. */
const SessionKey = Type.String({ minLength: 16, maxLength: 256 });
const Short = Type.String({ maxLength: 1024 });
const Labels = Type.Record(Type.String({ maxLength: 128 }), Type.String({ maxLength: 1024 }), {
  maxProperties: LIMITS.labelEntries,
});
const Uint = Type.Integer({ minimum: 0 });
const Ms = Type.Number({ minimum: 0, maximum: 365 * 24 * 3600 * 1000 });
const Ref = Type.Integer({ minimum: 0 });
/**
 * Resource amounts by name: `cpus`, `memoryMb`, `gpus` or a custom name (`licence`, `scratchGb`).
 * Non-negative, counted to a thousandth (`cpus: 0.5`); `gpus` whole (they are handed out by index).
 */
const Resources = Type.Record(Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_.-]{0,63}$' }), Type.Number({ minimum: 0, maximum: 1e9 }), { maxProperties: 64 });

export const WireErrorSchema = Type.Object({
  code: Type.String({ maxLength: 64 }),
  message: Type.String({ maxLength: 64 * KiB }),
  retryable: Type.Boolean(),
});

/** What a client submits (PRODUCT.md §4). Exactly one of `cmd` and `builtin`. */
export const TaskSpecSchema = Type.Object(
  {
    id: Type.Optional(Id),
    cmd: Type.Optional(
      Type.Array(Type.String({ maxLength: LIMITS.argLength }), {
        minItems: 1,
        maxItems: LIMITS.argvItems,
      }),
    ),
    builtin: Type.Optional(Type.Union([Type.Literal('noop'), Type.Literal('sleep')])),
    /** Duration of the `sleep` builtin. */
    ms: Type.Optional(Ms),
    /** Run `cmd` through `/bin/sh -c` (joined with spaces); off by default. */
    shell: Type.Optional(Type.Boolean()),
    env: Type.Optional(
      Type.Record(Type.String({ maxLength: 1024 }), Type.String({ maxLength: LIMITS.argLength }), {
        maxProperties: LIMITS.envEntries,
      }),
    ),
    cwd: Type.Optional(Type.String({ maxLength: 4096 })),
    stdin: Type.Optional(Type.String({ maxLength: LIMITS.stdinBytes })),
    timeoutMs: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 365 * 24 * 3600 * 1000 })),
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
    /** Labels an executor must carry (all of them, equal values) to run this task. */
    labels: Type.Optional(Labels),
    /**
     * What the task needs of its executor while it runs, besides its slot: the scheduler packs tasks
     * so that the requests running on one executor never add up to more than it advertised.
     */
    resources: Type.Optional(Resources),
    /** Exit codes after which the task is retried (up to maxAttempts); none by default. */
    retryOnExit: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 255 }), { maxItems: 255 })),
    /** Staged into the attempt's sandbox before it runs: `src` s3://, https:// or a path on the executor. */
    inputs: Type.Optional(
      Type.Array(
        Type.Object(
          {
            src: Type.String({ minLength: 1, maxLength: 4096 }),
            dst: Type.String({ minLength: 1, maxLength: 4096 }),
            sha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })),
            size: Type.Optional(Type.Integer({ minimum: 0 })),
          },
          { additionalProperties: false },
        ),
        { maxItems: 1024 },
      ),
    ),
    /** Uploaded after the task succeeds: `src` in the sandbox, `dst` s3://bucket/key. */
    outputs: Type.Optional(
      Type.Array(Type.Object({ src: Type.String({ minLength: 1, maxLength: 4096 }), dst: Type.String({ minLength: 1, maxLength: 4096 }) }, { additionalProperties: false }), {
        maxItems: 1024,
      }),
    ),
    /** Keep the attempt's sandbox directory after it ends (for debugging). */
    keepSandbox: Type.Optional(Type.Boolean()),
    /** A named environment, prepared once per executor and reused (a venv, a toolchain). */
    environment: Type.Optional(
      Type.Object(
        {
          name: Type.String({ minLength: 1, maxLength: 128 }),
          setup: Type.Array(Type.String({ maxLength: LIMITS.argLength }), { minItems: 1, maxItems: LIMITS.argvItems }),
          /** Staged into the environment's directory before its setup runs (like task inputs). */
          files: Type.Optional(
            Type.Array(
              Type.Object(
                { src: Type.String({ minLength: 1, maxLength: 4096 }), dst: Type.String({ minLength: 1, maxLength: 4096 }), sha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })) },
                { additionalProperties: false },
              ),
              { maxItems: 256 },
            ),
          ),
          timeoutMs: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
        },
        { additionalProperties: false },
      ),
    ),
    /**
     * A job array: one task for each index from `from` to `to` (inclusive, at most
     * LIMITS.arrayElements), with ids `ID[index]`; `{index}` in `cmd` items, `env` values, `cwd`
     * and `stdin` becomes the index. The array itself has no result; each element has its own.
     */
    array: Type.Optional(
      Type.Object({ from: Type.Integer({ minimum: 0, maximum: 2 ** 31 }), to: Type.Integer({ minimum: 0, maximum: 2 ** 31 }) }, { additionalProperties: false }),
    ),
    /**
     * Ids of tasks (or whole arrays) of the same session that must succeed before this one runs:
     * earlier ones, or ones in the same submit. If one of them does not succeed, this task ends
     * `cancelled` with DEPENDENCY_FAILED.
     */
    after: Type.Optional(Type.Array(Id, { maxItems: LIMITS.afterItems })),
    /**
     * Memoization: a task whose key already has a successful result (any session, within the
     * store's retention) finishes at once with that result, marked `cached`, without running.
     */
    cacheKey: Type.Optional(Type.String({ minLength: 1, maxLength: LIMITS.idLength })),
    /** With `cacheKey`: run even if the key has a result, and record this run's result under it. */
    noCache: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type TaskSpec = Static<typeof TaskSpecSchema>;

export const TaskStatusSchema = Type.Union([
  Type.Literal('succeeded'),
  Type.Literal('failed'),
  Type.Literal('timed_out'),
  Type.Literal('cancelled'),
  Type.Literal('lost'),
]);
/** Terminal states of a task (PRODUCT.md §4). */
export type TaskStatus = Static<typeof TaskStatusSchema>;

const Output = Type.String({ maxLength: LIMITS.outputChars });
const Nullable = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()]);

/** How a task's named environment was obtained, with timestamps, like boot phases. */
export const EnvironmentReportSchema = Type.Object({
  name: Type.String({ maxLength: 128 }),
  key: Type.String({ maxLength: 64 }),
  reused: Type.Boolean(),
  phases: Type.Array(Type.Object({ phase: Type.String({ maxLength: 64 }), at: Type.Number() }), { maxItems: 16 }),
});

/** One attempt's outcome as the executor reports it. `lost` is decided by the dispatcher only. */
export const AttemptResultSchema = Type.Object({
  uid: Uint,
  attempt: Uint,
  status: Type.Union([
    Type.Literal('succeeded'),
    Type.Literal('failed'),
    Type.Literal('timed_out'),
    Type.Literal('cancelled'),
  ]),
  exitCode: Nullable(Type.Integer()),
  signal: Nullable(Type.String({ maxLength: 32 })),
  stdout: Output,
  stderr: Output,
  truncated: Type.Boolean(),
  startedAt: Type.Number(),
  finishedAt: Type.Number(),
  error: Type.Optional(Type.Object({ code: Type.Unsafe<ErrorCode>(Type.String({ maxLength: 64 })), message: Type.String({ maxLength: LIMITS.errorChars }) })),
  environment: Type.Optional(EnvironmentReportSchema),
});
export type AttemptResult = Static<typeof AttemptResultSchema>;

/** What a client receives for each task, exactly once per session. */
export const TaskResultSchema = Type.Object({
  id: Id,
  status: TaskStatusSchema,
  exitCode: Nullable(Type.Integer()),
  signal: Nullable(Type.String()),
  stdout: Type.String(),
  stderr: Type.String(),
  truncated: Type.Boolean(),
  attempts: Uint,
  executor: Nullable(Type.String()),
  timings: Type.Object({
    submitted: Type.Number(),
    dispatched: Nullable(Type.Number()),
    started: Nullable(Type.Number()),
    finished: Type.Number(),
  }),
  /** Why it did not succeed: a stable code (see errors.ts; a newer dispatcher may send one this version does not list). */
  error: Type.Optional(Type.Object({ code: Type.Unsafe<ErrorCode>(Type.String()), message: Type.String() })),
  environment: Type.Optional(EnvironmentReportSchema),
  /** The task did not run: this is the memoized result of an earlier run with its `cacheKey` (its timings and executor). */
  cached: Type.Optional(Type.Boolean()),
});
export type TaskResult = Static<typeof TaskResultSchema>;

/** What an executor says about itself at registration. */
export const ExecutorInfoSchema = Type.Object({
  id: Id,
  hostname: Short,
  addresses: Type.Array(Type.String({ maxLength: 64 }), { maxItems: 256 }),
  slots: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  memory: Uint,
  labels: Labels,
  version: Type.String({ maxLength: 64 }),
  pid: Type.Optional(Uint),
  /** Random per process start: a new incarnation means the old one died with its attempts. */
  incarnation: Type.String({ maxLength: 64 }),
  instanceId: Type.Optional(Short),
  /** `pull`: the executor asks for tasks; `push`: the dispatcher keeps its window full. */
  mode: Type.Union([Type.Literal('push'), Type.Literal('pull')]),
  /** Attempts this executor holds: still running, or finished with the result about to follow. */
  running: Type.Array(Type.Object({ uid: Uint, attempt: Uint }), { maxItems: 1_000_000 }),
  boot: Type.Optional(
    Type.Array(Type.Object({ phase: Type.String({ maxLength: 64 }), at: Type.Number() }), {
      maxItems: 64,
    }),
  ),
  /** What it has for tasks' resource requests (cpus, memoryMb, gpus, custom); absent: nothing (an older executor). */
  resources: Type.Optional(Resources),
  /** Its GPUs' indices (`nvidia-smi`), `resources.gpus` of them; absent: 0 … gpus-1. */
  gpuIndices: Type.Optional(Type.Array(Type.Integer({ minimum: 0, maximum: 65_535 }), { maxItems: 1024 })),
  /** When this executor will be gone (ms since the epoch): its `--lifetime`, or an EC2 interruption notice. */
  endsAt: Type.Optional(Type.Number()),
  /** Why it ends then (`lifetime`, `spot interruption: terminate`, `scheduled event: system-reboot`). */
  endReason: Type.Optional(Short),
  /** It drains on its own (its end is near): the dispatcher sends it nothing more. */
  draining: Type.Optional(Type.Boolean()),
});
export type ExecutorInfo = Static<typeof ExecutorInfoSchema>;

const Caps = Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64 });
const ErrorMsg = Type.Object({
  t: Type.Literal('error'),
  ref: Type.Optional(Ref),
  code: Type.String({ maxLength: 64 }),
  message: Type.String({ maxLength: 64 * KiB }),
  retryable: Type.Boolean(),
  /** With MOVED: the dispatcher to dial instead. */
  to: Type.Optional(Type.String({ minLength: 6, maxLength: LIMITS.urlChars, pattern: '^wss?://' })),
});
/** Data an executor moved, carried on its heartbeats (for status: cache hit ratio, bytes moved). */
export const DataCountersSchema = Type.Object({ cacheHits: Uint, cacheMisses: Uint, bytesIn: Uint, bytesOut: Uint });
export type DataCounters = Static<typeof DataCountersSchema>;
/** `holds`: an executor's cached inputs by locality key (sent when the set changed). */
const Heartbeat = Type.Object({
  t: Type.Literal('hb'),
  at: Type.Number(),
  data: Type.Optional(DataCountersSchema),
  holds: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 100_000 })),
});

// ---- client → dispatcher ----------------------------------------------------------------------
export const ClientHello = Type.Object({
  t: Type.Literal('hello'),
  v: Type.Integer(),
  role: Type.Literal('client'),
  token: Type.Optional(Type.String({ maxLength: 4096 })),
  caps: Caps,
  /** Resume this session; omitted to start a new one. */
  session: Type.Optional(Id),
  /** Last result sequence number this client has consumed. */
  cursor: Type.Optional(Uint),
  /**
   * Client lease: cancel the session's unfinished tasks once no client has been connected for
   * this long. Absent: tasks keep running for a later reattach.
   */
  leaseMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 24 * 3600 * 1000 })),
  /** With `session`: refuse (NOT_FOUND) rather than open it when the dispatcher does not know it. */
  attachOnly: Type.Optional(Type.Boolean()),
  /**
   * The session's key: required to resume a session (unless the token is the administrator's);
   * for a new session, the key it gets (default: a random one). `welcome.key` returns it.
   */
  key: Type.Optional(SessionKey),
});
export const Submit = Type.Object({
  t: Type.Literal('submit'),
  ref: Ref,
  tasks: Type.Array(Type.Unknown(), { maxItems: LIMITS.tasksPerSubmit }),
});
export const Cancel = Type.Object({
  t: Type.Literal('cancel'),
  ref: Ref,
  ids: Type.Array(Id, { maxItems: LIMITS.tasksPerSubmit }),
  /** Cancel in this session (default: the caller's own); `*` searches every session. */
  session: Type.Optional(Id),
  /** Cancel every unfinished task of the session. */
  all: Type.Optional(Type.Boolean()),
  /** The key of `session` when it is not the caller's own (the administrator needs none). */
  key: Type.Optional(SessionKey),
});
export const Ack = Type.Object({ t: Type.Literal('ack'), cursor: Uint });
export const Drain = Type.Object({ t: Type.Literal('drain'), ref: Ref, executor: Id });
/** States a task query reports: waiting, running (an attempt on an executor), or how it ended. */
export const TaskStateSchema = Type.Union([Type.Literal('queued'), Type.Literal('running'), ...TaskStatusSchema.anyOf]);
export type TaskState = Static<typeof TaskStateSchema>;
/**
 * Asks about tasks from any session: by `ids` (each looked up in every session, or in `session`),
 * or by listing (`session`, `state`, newest first, up to `limit`). Answered by `tasks`.
 */
export const Query = Type.Object({
  t: Type.Literal('query'),
  ref: Ref,
  ids: Type.Optional(Type.Array(Id, { maxItems: 10_000 })),
  session: Type.Optional(Id),
  state: Type.Optional(Type.Union([TaskStateSchema, Type.Literal('finished')])),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
});
/** Lists the dispatcher's sessions. Answered by `sessions`. */
export const ListSessions = Type.Object({ t: Type.Literal('sessions'), ref: Ref });
/** Operator actions on the provisioner: `reset` closes its circuit breaker. */
export const ProvisionerAction = Type.Object({ t: Type.Literal('provisioner'), ref: Ref, action: Type.Literal('reset') });

/** One piece of a task's live output, in the order the task wrote it to that stream. */
export const LogChunkSchema = Type.Object({
  stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]),
  data: Type.String({ maxLength: LIMITS.outputChars }),
});
export type LogChunk = Static<typeof LogChunkSchema>;
/**
 * Reads a task's output (any session's, newest session first, or in `session`): what there is now
 * and, with `follow`, what it writes until it ends. Answered by `log` messages with the same `ref`,
 * the last with `end`. `stop` ends an earlier `logs` of this connection with the same `ref`.
 */
export const Logs = Type.Object({
  t: Type.Literal('logs'),
  ref: Ref,
  id: Id,
  session: Type.Optional(Id),
  follow: Type.Optional(Type.Boolean()),
  stop: Type.Optional(Type.Boolean()),
});

export const ClientMessageSchemas = { hello: ClientHello, submit: Submit, cancel: Cancel, ack: Ack, drain: Drain, provisioner: ProvisionerAction, query: Query, sessions: ListSessions, logs: Logs, hb: Heartbeat } as const;
export type ClientMessage =
  | Static<typeof Logs>
  | Static<typeof Query>
  | Static<typeof ListSessions>
  | Static<typeof ClientHello>
  | Static<typeof Submit>
  | Static<typeof Cancel>
  | Static<typeof Ack>
  | Static<typeof Drain>
  | Static<typeof ProvisionerAction>
  | Static<typeof Heartbeat>;

// ---- dispatcher → client ----------------------------------------------------------------------
export const ClientWelcome = Type.Object({
  t: Type.Literal('welcome'),
  v: Type.Integer(),
  role: Type.Literal('client'),
  session: Id,
  /** False when the session was new (or unknown to this dispatcher). */
  resumed: Type.Boolean(),
  cursor: Uint,
  /** Tasks of the session not finished yet. */
  unfinished: Uint,
  /** Results not yet acknowledged, sent again right after this welcome. */
  unacked: Uint,
  heartbeatMs: Uint,
  maxFrameBytes: Uint,
  caps: Caps,
  /** The session's key: what another connection needs to resume it, or to cancel in it. */
  key: Type.Optional(SessionKey),
});
export const Accepted = Type.Object({
  t: Type.Literal('accepted'),
  ref: Ref,
  accepted: Uint,
  /** As in `result`: results still to come to this connection. */
  remaining: Uint,
  rejected: Type.Array(
    Type.Object({ index: Uint, id: Type.Optional(Type.String()), code: Type.String(), message: Type.String() }),
  ),
  /**
   * Tasks of this submit whose id the session already had (an idempotent resubmit): `finished`
   * says whether that task has its result already (it came, or comes, on the result stream).
   */
  known: Type.Optional(Type.Array(Type.Object({ index: Uint, id: Id, finished: Type.Boolean() }))),
});
/**
 * `remaining`: results this connection will still receive after this one as things stand
 * (unfinished tasks plus replayed results behind it); 0 means the session is done.
 */
export const ResultMsg = Type.Object({ t: Type.Literal('result'), seq: Uint, remaining: Uint, result: TaskResultSchema });
export const Reply = Type.Object({
  t: Type.Literal('reply'),
  ref: Ref,
  ok: Type.Boolean(),
  count: Type.Optional(Uint),
  error: Type.Optional(WireErrorSchema),
});
/** What a task query says of one task. */
export const TaskInfoSchema = Type.Object({
  id: Id,
  session: Id,
  state: TaskStateSchema,
  /** Attempts started so far. */
  attempt: Uint,
  /** The executor of the running attempt, or of the last one. */
  executor: Nullable(Type.String()),
  submittedAt: Nullable(Type.Number()),
  dispatchedAt: Nullable(Type.Number()),
  /** Why a queued task waits, when the dispatcher can tell (no executor fits its labels, none connected). */
  waiting: Type.Optional(Type.String()),
  /** The result of a finished task, when the dispatcher still has it (the in-memory store forgets acknowledged results). */
  result: Type.Optional(TaskResultSchema),
});
export type TaskInfo = Static<typeof TaskInfoSchema>;
/** The answer to `query`: what was found, and the ids asked for that no session has. */
export const TasksMsg = Type.Object({ t: Type.Literal('tasks'), ref: Ref, tasks: Type.Array(TaskInfoSchema), missing: Type.Optional(Type.Array(Id)) });
export const SessionInfoSchema = Type.Object({
  id: Id,
  createdAt: Type.Number(),
  connected: Type.Boolean(),
  submitted: Uint,
  finished: Uint,
  unfinished: Uint,
  /** Results finished and not yet acknowledged by a client. */
  unacked: Uint,
});
export type SessionInfo = Static<typeof SessionInfoSchema>;
export const SessionsMsg = Type.Object({ t: Type.Literal('sessions'), ref: Ref, sessions: Type.Array(SessionInfoSchema) });
/**
 * Output of the task a `logs` asked for (`ref`). `dropped`: bytes of output left out just before
 * these chunks (a slow reader, or beyond what the executor keeps); `note`: what happened to the
 * task meanwhile (its attempt was re-queued, its executor's connection was lost); `end`: the last
 * message of this `ref`, with the task's state then (`succeeded`…, or `queued`/`running` when the
 * reader did not follow).
 */
export const LogMsg = Type.Object({
  t: Type.Literal('log'),
  ref: Ref,
  chunks: Type.Array(LogChunkSchema),
  dropped: Type.Optional(Uint),
  note: Type.Optional(Type.String({ maxLength: 4096 })),
  end: Type.Optional(Type.Object({ status: Type.Union([TaskStateSchema, Type.Literal('stopped')]), attempt: Type.Optional(Uint) })),
});
/** The hello capability by which a peer (executor or client) asks to be told where the other dispatchers are. */
export const PEERS_CAP = 'peers';
/**
 * The live dispatchers' URLs, this one's included (several dispatchers over PostgreSQL), sent to
 * a peer whose hello lists `peers` right after its welcome and again whenever the set changes:
 * after losing its dispatcher it dials them too, not only the URLs it was given (nats'
 * `connect_urls`). An executor started before the others joined still finds them.
 */
export const PeersMsg = Type.Object({
  t: Type.Literal('peers'),
  urls: Type.Array(Type.String({ minLength: 1, maxLength: 2048 }), { maxItems: 64 }),
});
export const DispatcherToClientSchemas = { welcome: ClientWelcome, accepted: Accepted, result: ResultMsg, reply: Reply, tasks: TasksMsg, sessions: SessionsMsg, log: LogMsg, peers: PeersMsg, error: ErrorMsg, hb: Heartbeat } as const;
export type DispatcherToClient =
  | Static<typeof LogMsg>
  | Static<typeof TasksMsg>
  | Static<typeof SessionsMsg>
  | Static<typeof ClientWelcome>
  | Static<typeof Accepted>
  | Static<typeof ResultMsg>
  | Static<typeof Reply>
  | Static<typeof PeersMsg>
  | Static<typeof ErrorMsg>
  | Static<typeof Heartbeat>;

// ---- executor → dispatcher --------------------------------------------------------------------
/** The most tasks an executor's `window` may ask for beyond its slots. */
export const WINDOW_MAX_EXTRA = 100_000;
/** The welcome capability that says the dispatcher sizes push windows from the executors' `window`. */
export const WINDOW_CAP = 'window';
export const ExecutorHello = Type.Object({
  t: Type.Literal('hello'),
  v: Type.Integer(),
  role: Type.Literal('executor'),
  token: Type.Optional(Type.String({ maxLength: 4096 })),
  caps: Caps,
  executor: ExecutorInfoSchema,
});
export const Pull = Type.Object({ t: Type.Literal('pull'), n: Type.Integer({ minimum: 0, maximum: 1_000_000 }) });
export const AttemptDone = Type.Object({ t: Type.Literal('done'), result: AttemptResultSchema });
export const Bye = Type.Object({ t: Type.Literal('bye'), reason: Short });
/**
 * Live output of an attempt a `tail` asked for. `snapshot`: these chunks begin what the executor
 * held when it was asked (the head it keeps for the result), with `dropped` the bytes written since
 * that it no longer has; later messages carry what the task writes next (`dropped`: bytes the
 * executor could not send).
 */
export const AttemptOutput = Type.Object({
  t: Type.Literal('out'),
  uid: Uint,
  attempt: Uint,
  chunks: Type.Array(LogChunkSchema, { maxItems: 100_000 }),
  dropped: Type.Optional(Uint),
  snapshot: Type.Optional(Type.Boolean()),
});
/**
 * Push mode, to a dispatcher that announced the `window` capability: keep `extra` tasks on this
 * executor beyond its slots (its adaptive window, executor/window.ts). Replaces the last one sent.
 */
export const WindowMsg = Type.Object({ t: Type.Literal('window'), extra: Type.Integer({ minimum: 0, maximum: WINDOW_MAX_EXTRA }) });
/**
 * The executor learned when it ends (an EC2 interruption notice or scheduled event, or its
 * lifetime nearing its end): no task whose `timeoutMs` exceeds what is left starts on it, and with
 * `draining` none at all. Sent only to a dispatcher whose welcome lists the `lifetime` capability.
 */
export const Lifetime = Type.Object({ t: Type.Literal('lifetime'), endsAt: Type.Number(), reason: Short, draining: Type.Boolean() });
/**
 * The hello capability that says the executor answers `steal` (work stealing): a dispatcher asks
 * only executors that announced it, so an older executor is simply never asked.
 */
export const STEAL_CAP = 'steal';
/** The most tasks one `steal` may ask back (and one `returned` may carry). */
export const STEAL_MAX = 1_000_000;
/**
 * The answer to `steal`: the attempts the executor gave back, none of which started or will start
 * there (possibly none: everything asked for had started). Sent once per `steal`, in its order.
 */
export const Returned = Type.Object({
  t: Type.Literal('returned'),
  tasks: Type.Array(Type.Object({ uid: Uint, attempt: Uint }), { maxItems: STEAL_MAX }),
});
export const ExecutorMessageSchemas = { hello: ExecutorHello, pull: Pull, done: AttemptDone, hb: Heartbeat, bye: Bye, out: AttemptOutput, window: WindowMsg, lifetime: Lifetime, returned: Returned } as const;
export type ExecutorMessage =
  | Static<typeof Returned>
  | Static<typeof AttemptOutput>
  | Static<typeof Lifetime>
  | Static<typeof ExecutorHello>
  | Static<typeof Pull>
  | Static<typeof AttemptDone>
  | Static<typeof Heartbeat>
  | Static<typeof Bye>
  | Static<typeof WindowMsg>;

// ---- dispatcher → executor --------------------------------------------------------------------
export const ExecutorWelcome = Type.Object({
  t: Type.Literal('welcome'),
  v: Type.Integer(),
  role: Type.Literal('executor'),
  heartbeatMs: Uint,
  leaseMs: Uint,
  maxFrameBytes: Uint,
  caps: Caps,
});
/** One attempt of one task, assigned to the receiving executor. */
export const Assign = Type.Object({
  t: Type.Literal('task'),
  uid: Uint,
  attempt: Uint,
  spec: TaskSpecSchema,
  /** The GPU indices this attempt may use (a task with `resources.gpus`): its CUDA_VISIBLE_DEVICES. */
  gpus: Type.Optional(Type.Array(Type.Integer({ minimum: 0, maximum: 65_535 }), { maxItems: 1024 })),
});
export const CancelAttempt = Type.Object({ t: Type.Literal('cancel'), uid: Uint, attempt: Uint });
export const DrainOrder = Type.Object({ t: Type.Literal('drain') });
/**
 * The dispatcher has these attempts' `done` (committed, when the store is durable): the executor
 * may forget them. Until then it keeps each result and sends it again after a reconnect.
 */
export const ResultsAck = Type.Object({
  t: Type.Literal('ack'),
  done: Type.Array(Type.Object({ uid: Uint, attempt: Uint }), { maxItems: 1_000_000 }),
});
/**
 * Someone reads this attempt's output (`on`), or no one does any more. On `on` the executor sends
 * a `snapshot` of what it holds, then streams what the attempt writes in `out` messages until `off`
 * or the attempt ends.
 */
export const TailOrder = Type.Object({ t: Type.Literal('tail'), uid: Uint, attempt: Uint, on: Type.Boolean() });
/**
 * Work stealing, to an executor that announced the `steal` capability: give back up to `n` of the
 * tasks assigned to you that have not started (newest first), and answer with `returned`. A task
 * that started meanwhile is not given back, so none runs twice.
 */
export const StealOrder = Type.Object({ t: Type.Literal('steal'), n: Type.Integer({ minimum: 1, maximum: STEAL_MAX }) });
export const DispatcherToExecutorSchemas = { welcome: ExecutorWelcome, task: Assign, cancel: CancelAttempt, drain: DrainOrder, ack: ResultsAck, tail: TailOrder, steal: StealOrder, peers: PeersMsg, error: ErrorMsg, hb: Heartbeat } as const;
export type DispatcherToExecutor =
  | Static<typeof StealOrder>
  | Static<typeof TailOrder>
  | Static<typeof ExecutorWelcome>
  | Static<typeof Assign>
  | Static<typeof CancelAttempt>
  | Static<typeof DrainOrder>
  | Static<typeof ResultsAck>
  | Static<typeof PeersMsg>
  | Static<typeof ErrorMsg>
  | Static<typeof Heartbeat>;

/** Narrows a union member by its `t`. */
export type Msg<U, T extends string> = Extract<U, { t: T }>;
