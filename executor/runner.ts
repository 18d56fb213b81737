/**
 * Runs one attempt of one task: a command in a process group of its own, or a builtin that needs
 * no process (`noop`, `sleep`; for tests and benchmarks). Output is captured up to a bound and
 * flagged when cut. A timeout or a cancel kills the whole group (SIGTERM, then SIGKILL after a
 * grace period), so a shell's children die with it; so do leftovers once the main process exits,
 * or they would hold the task's pipes open and outlive its accounting.
 *
 * Commands start through the spawn helper (spawner.ts) when its binary is there: a Node spawn
 * forks the whole executor for each task. Node's child_process stays as the fallback (no
 * compiler at build time, a stale or dying helper) and for `spawner: 'node'`; both paths report
 * the same outcomes.
 *
 * An executor may hand its command tasks to the helper beyond its slots (`helperQueue`, with the
 * limit from {@link setHelperLimit}): they wait in the helper, which starts each as a slot frees.
 * A task's startedAt, and its timeout, then count from its real start, as the helper reports it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { ErrorCode, type AttemptResult, type TaskSpec } from '../protocol/index.js';
import { SpawnHelper, type HelperOutputSink, type HelperResult } from './spawner.js';

/** Where a followed attempt's live output goes (see {@link RunningAttempt.follow}). */
export type OutputSink = HelperOutputSink;

/** What the runner reports; the agent adds uid and attempt. */
export type Outcome = Omit<AttemptResult, 'uid' | 'attempt'>;

export interface RunnerOptions {
  /** Bytes kept of each of stdout and stderr. */
  outputLimit: number;
  /** Time between SIGTERM and SIGKILL when a task is timed out or cancelled. */
  killGraceMs: number;
  /** Environment every task starts from (the executor's own, minus its secrets). */
  baseEnv: NodeJS.ProcessEnv;
  /**
   * How commands start: `helper` (the default) uses the spawn helper when its binary exists and
   * falls back to `node` (child_process.spawn) otherwise. Builtins never start a process.
   */
  spawner?: 'helper' | 'node';
  /** The spawn helper's binary; by default the one `npm run build` puts next to this module. */
  helperPath?: string;
  /**
   * Which helper process (with `helperPath`): an executor uses a scope of its own, so that the
   * limit it sets is not shared with another executor in the same process. Default: ''.
   */
  helperScope?: string;
  /**
   * A command through the helper counts against the helper's limit ({@link setHelperLimit}) and
   * waits in the helper while the limit is reached. Without it a command starts at once.
   */
  helperQueue?: boolean;
  /**
   * While `helperQueue` commands wait in the helper, their results may wait there up to this
   * long (ms) to come in one batch (default 0: each at once). Set with {@link setHelperLimit}.
   */
  resultHoldMs?: number;
}

export interface RunningAttempt {
  readonly done: Promise<Outcome>;
  /** Stops the attempt; it then finishes with status `cancelled`. */
  cancel(): void;
  /**
   * Someone reads the attempt's output as it is written (`sink`), or no longer does (null): the
   * sink first gets a snapshot of what is kept for the result, then each piece written. Absent
   * for attempts that write nothing (builtins).
   */
  follow?(sink: OutputSink | null): void;
}

/** Variables never passed to tasks: the executor's credential is not the task's business. */
const SECRET_ENV = ['FALCONET_TOKEN', 'FALCONET_EXECUTOR_TOKEN', 'FALCONET_CLIENT_TOKEN'];

export function taskBaseEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const base = { ...env };
  for (const k of SECRET_ENV) delete base[k];
  return base;
}

/**
 * The helper of `options`, remembered per options object: the agent asks for it at every task's
 * start and end (the limit moves with each builtin), and building the lookup key each time was
 * the executor's largest single cost per no-op task.
 */
const helpers = new WeakMap<RunnerOptions, SpawnHelper>();
function helperOf(options: RunnerOptions): SpawnHelper {
  let h = helpers.get(options);
  if (h === undefined) helpers.set(options, (h = SpawnHelper.for(options.helperPath, options.helperScope)));
  return h;
}

/**
 * Sets how many `helperQueue` commands may run at once in the helper of `options` (its path and
 * scope); the others wait there, oldest first. No effect with `spawner: 'node'`.
 */
export function setHelperLimit(options: RunnerOptions, n: number): void {
  if (options.spawner !== 'node') helperOf(options).setLimit(n, options.resultHoldMs ?? 0);
}

/**
 * Whether `spec` would run through the helper of `options` (a plain command: no builtin, no
 * inputs, outputs or environment, nothing the helper cannot carry), and whether that helper runs
 * and said hello (`ready`), so that tasks may wait in its queue. A command that would not run in
 * the helper starts with Node's spawn, at once.
 */
export function helperPlacement(spec: TaskSpec, options: RunnerOptions): { helper: boolean; ready: boolean } {
  if (options.spawner === 'node' || spec.builtin !== undefined || spec.inputs?.length || spec.outputs?.length || spec.environment) return { helper: false, ready: false };
  const cmd = spec.cmd ?? [];
  if (!helperCanRun(spec, spec.shell ? ['/bin/sh', '-c', cmd.join(' ')] : cmd)) return { helper: false, ready: false };
  const h = helperOf(options);
  return { helper: h.usable, ready: h.ready };
}

export function runAttempt(spec: TaskSpec, options: RunnerOptions): RunningAttempt {
  return spec.builtin !== undefined ? runBuiltin(spec) : runCommand(spec, options);
}

/** An outcome with nothing captured: the common shape, `extra` fills in what happened. */
export function outcome(status: Outcome['status'], startedAt: number, extra: Partial<Outcome> = {}): Outcome {
  return {
    status,
    exitCode: null,
    signal: null,
    stdout: '',
    stderr: '',
    truncated: false,
    startedAt,
    finishedAt: Date.now(),
    ...extra,
  };
}

function runBuiltin(spec: TaskSpec): RunningAttempt {
  const startedAt = Date.now();
  if (spec.builtin === 'noop') {
    return { done: Promise.resolve(outcome('succeeded', startedAt, { exitCode: 0 })), cancel() {} };
  }
  const ms = spec.ms ?? 0;
  let settle!: (o: Outcome) => void;
  const done = new Promise<Outcome>((resolve) => (settle = resolve));
  const timedOut = spec.timeoutMs !== undefined && spec.timeoutMs < ms;
  const timer = setTimeout(
    () =>
      settle(
        timedOut
          ? outcome('timed_out', startedAt, { error: { code: ErrorCode.TASK_TIMEOUT, message: `timed out after ${spec.timeoutMs} ms` } })
          : outcome('succeeded', startedAt, { exitCode: 0 }),
      ),
    timedOut ? spec.timeoutMs : ms,
  );
  return {
    done,
    cancel() {
      clearTimeout(timer);
      settle(outcome('cancelled', startedAt, { error: { code: ErrorCode.TASK_CANCELLED, message: 'cancelled' } }));
    },
  };
}

/** Collects a stream up to `limit` bytes and remembers whether it had more. */
class BoundedCapture {
  #chunks: Buffer[] = [];
  #bytes = 0;
  /** Bytes written, kept or not. */
  seen = 0;
  truncated = false;
  constructor(private readonly limit: number) {}
  /** What is kept so far. */
  kept(): Buffer {
    return Buffer.concat(this.#chunks, this.#bytes);
  }
  add(chunk: Buffer): void {
    this.seen += chunk.length;
    const room = this.limit - this.#bytes;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    if (chunk.length > room) {
      this.#chunks.push(chunk.subarray(0, room));
      this.#bytes += room;
      this.truncated = true;
    } else {
      this.#chunks.push(chunk);
      this.#bytes += chunk.length;
    }
  }
  text(): string {
    return Buffer.concat(this.#chunks, this.#bytes).toString('utf8');
  }
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function runCommand(spec: TaskSpec, options: RunnerOptions): RunningAttempt {
  const cmd = spec.cmd ?? [];
  const argv = spec.shell ? ['/bin/sh', '-c', cmd.join(' ')] : cmd;
  if (options.spawner !== 'node' && helperCanRun(spec, argv)) {
    const helper = helperOf(options);
    if (helper.usable) return runWithHelper(helper, spec, argv, options);
  }
  return runWithNode(spec, argv, options);
}

/** NUL cannot cross into a C string: Node rejects such tasks itself, with its own message. */
function helperCanRun(spec: TaskSpec, argv: readonly string[]): boolean {
  if (argv.length === 0 || (spec.cwd !== undefined && spec.cwd.includes('\0'))) return false;
  for (const a of argv) if (a.includes('\0')) return false;
  if (spec.env) for (const k in spec.env) if (k.includes('\0') || spec.env[k].includes('\0')) return false;
  return true;
}

/** The outcome of a command that ran to its end (or was stopped), whichever way it was started. */
function commandOutcome(
  spec: TaskSpec,
  startedAt: number,
  stopReason: 'timed_out' | 'cancelled' | null,
  captured: { stdout: string; stderr: string; truncated: boolean; exitCode: number | null; signal: NodeJS.Signals | null; finishedAt?: number },
): Outcome {
  if (stopReason === 'timed_out') {
    return outcome('timed_out', startedAt, { ...captured, error: { code: ErrorCode.TASK_TIMEOUT, message: `timed out after ${spec.timeoutMs} ms; process group killed` } });
  } else if (stopReason === 'cancelled') {
    return outcome('cancelled', startedAt, { ...captured, error: { code: ErrorCode.TASK_CANCELLED, message: 'cancelled; process group killed' } });
  } else if (captured.exitCode === 0) {
    return outcome('succeeded', startedAt, captured);
  }
  const why = captured.signal ? `killed by ${captured.signal}` : `exited with code ${captured.exitCode}`;
  return outcome('failed', startedAt, { ...captured, error: { code: ErrorCode.TASK_FAILED, message: why } });
}

/**
 * An attempt's one outcome: the first `finish` wins, clears the attempt's timeout and kill timers
 * and resolves `done`; later ones (a close after an error, a kill after the exit) are ignored.
 */
class Settlement {
  settled = false;
  timeoutTimer: NodeJS.Timeout | undefined;
  killTimer: NodeJS.Timeout | undefined;
  #resolve!: (o: Outcome) => void;
  readonly done = new Promise<Outcome>((resolve) => (this.#resolve = resolve));
  readonly finish = (o: Outcome): void => {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timeoutTimer);
    clearTimeout(this.killTimer);
    this.#resolve(o);
  };
}

function runWithHelper(helper: SpawnHelper, spec: TaskSpec, argv: string[], options: RunnerOptions): RunningAttempt {
  // The request time until the helper reports the real start (later for a task that waited in its queue).
  let startedAt = Date.now();
  let stopReason: 'timed_out' | 'cancelled' | null = null;
  let fallback: RunningAttempt | null = null;
  /** Who follows the output: handed on to the fallback if the helper turns out unusable. */
  let followed: OutputSink | null = null;
  const settlement = new Settlement();
  const finish = settlement.finish;
  const onResult = (r: HelperResult) => {
    switch (r.kind) {
      case 'exited': {
        // A stop that did not reach the process (it had ended on its own, its result held in the
        // helper's batch) does not make it timed out or cancelled: it is reported as it ended.
        const { exitCode, signal, stdout, stderr, truncated, finishedAt } = r;
        return finish(commandOutcome(spec, startedAt, r.killed ? stopReason : null, { exitCode, signal, stdout, stderr, truncated, finishedAt }));
      }
      case 'spawn-failed':
        // The message Node's spawn would give (`spawn /no/such ENOENT`), so that nothing matching on it changes.
        return finish(outcome('failed', startedAt, { error: { code: ErrorCode.SPAWN_FAILED, message: `${argv[0]}: spawn ${argv[0]} ${r.code}` } }));
      case 'lost':
        return finish(outcome('failed', startedAt, { error: { code: ErrorCode.SPAWN_HELPER_LOST, message: r.message } }));
      case 'not-started': {
        // Killed while it waited in the helper: as the executor's own queue reports it, no process.
        const now = Date.now();
        const error = stopReason === 'timed_out' ? { code: ErrorCode.TASK_TIMEOUT, message: `timed out after ${spec.timeoutMs} ms` } : { code: ErrorCode.TASK_CANCELLED, message: 'cancelled before it started' };
        return finish(outcome(stopReason ?? 'cancelled', now, { error }));
      }
      case 'unavailable':
        // The helper turned out unusable before this task started: nothing ran yet.
        if (stopReason) return finish(commandOutcome(spec, startedAt, stopReason, { stdout: '', stderr: '', truncated: false, exitCode: null, signal: null }));
        fallback = runWithNode(spec, argv, options);
        if (followed) fallback.follow?.(followed);
        // Node's path settles with an outcome and never rejects; if it ever did, the attempt still ends.
        fallback.done.then(finish, (err: unknown) => finish(outcome('failed', startedAt, { error: { code: ErrorCode.INTERNAL, message: `the command could not be run: ${(err as Error)?.message ?? String(err)}` } })));
        return;
    }
  };
  const stop = (reason: 'timed_out' | 'cancelled') => {
    if (fallback) return fallback.cancel();
    if (stopReason || settlement.settled || id === null) return;
    stopReason = reason;
    // A task still waiting in the helper is dropped there (reported 'not-started'); one that runs
    // gets the signal, whether or not its start report has reached us yet.
    helper.kill(id, 'SIGTERM');
    // Only while unsettled: a settled task's id may already belong to another task.
    settlement.killTimer = setTimeout(() => settlement.settled || helper.kill(id!, 'SIGKILL'), options.killGraceMs);
  };
  // The timeout runs from the real start: a task that waits in the helper's queue is not timed
  // while it waits. The report may come up to LAZY_MS (50 ms) late: its time says how much of the
  // timeout is already spent.
  const onStarted = (at: number) => {
    startedAt = at;
    if (spec.timeoutMs === undefined || settlement.settled || stopReason) return;
    settlement.timeoutTimer = setTimeout(() => stop('timed_out'), Math.max(0, spec.timeoutMs - (Date.now() - at)));
  };
  const env = spec.env ? { ...options.baseEnv, ...spec.env } : options.baseEnv;
  const id = helper.start({ argv, env, cwd: spec.cwd, stdin: spec.stdin, outputLimit: options.outputLimit, limited: options.helperQueue === true }, onResult, onStarted);
  if (id === null) return runWithNode(spec, argv, options);
  return {
    done: settlement.done,
    cancel: () => stop('cancelled'),
    follow: (sink) => {
      followed = sink;
      if (fallback) fallback.follow?.(sink);
      else if (!settlement.settled) helper.tail(id, sink);
    },
  };
}

/** Today's path: Node's child_process.spawn (a fork of this process per task). */
function runWithNode(spec: TaskSpec, argv: string[], options: RunnerOptions): RunningAttempt {
  const startedAt = Date.now();
  const stdout = new BoundedCapture(options.outputLimit);
  const stderr = new BoundedCapture(options.outputLimit);
  let stopReason: 'timed_out' | 'cancelled' | null = null;
  const settlement = new Settlement();
  const finish = settlement.finish;

  let child: ChildProcess;
  try {
    child = spawn(argv[0], argv.slice(1), {
      cwd: spec.cwd,
      env: spec.env ? { ...options.baseEnv, ...spec.env } : options.baseEnv,
      detached: true, // its own process group, so timeouts can kill the whole tree
      stdio: [spec.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    return {
      done: Promise.resolve(outcome('failed', startedAt, { error: { code: ErrorCode.SPAWN_FAILED, message: (err as Error).message } })),
      cancel() {},
    };
  }
  const stop = (reason: 'timed_out' | 'cancelled') => {
    if (stopReason || settlement.settled) return;
    stopReason = reason;
    killGroup(child, 'SIGTERM');
    settlement.killTimer = setTimeout(() => killGroup(child, 'SIGKILL'), options.killGraceMs);
  };
  if (spec.timeoutMs !== undefined) settlement.timeoutTimer = setTimeout(() => stop('timed_out'), spec.timeoutMs);

  let sink: OutputSink | null = null;
  child.stdout!.on('data', (c: Buffer) => {
    stdout.add(c);
    sink?.data('stdout', c);
  });
  child.stderr!.on('data', (c: Buffer) => {
    stderr.add(c);
    sink?.data('stderr', c);
  });
  if (spec.stdin !== undefined && child.stdin) {
    child.stdin.on('error', () => {}); // EPIPE when the task ignores its input
    child.stdin.end(spec.stdin);
  }
  child.on('error', (err) => {
    finish(outcome('failed', startedAt, { error: { code: ErrorCode.SPAWN_FAILED, message: `${argv[0]}: ${err.message}` } }));
  });
  child.on('exit', () => killGroup(child, 'SIGKILL'));
  child.on('close', (code, signal) => {
    finish(commandOutcome(spec, startedAt, stopReason, { stdout: stdout.text(), stderr: stderr.text(), truncated: stdout.truncated || stderr.truncated, exitCode: code, signal }));
  });
  const follow = (next: OutputSink | null) => {
    sink = settlement.settled ? null : next;
    if (!sink) return;
    const out = stdout.kept();
    const err = stderr.kept();
    sink.snapshot(stdout.seen - out.length + stderr.seen - err.length);
    if (out.length) sink.data('stdout', out);
    if (err.length) sink.data('stderr', err);
  };
  return { done: settlement.done, cancel: () => stop('cancelled'), follow };
}
