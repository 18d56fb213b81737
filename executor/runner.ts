/**
 * Runs one attempt of one task: a command in a process group of its own, or a builtin that needs
 * no process (`noop`, `sleep`; for tests and benchmarks). Output is captured up to a bound and
 * flagged when cut. A timeout or a cancel kills the whole group (SIGTERM, then SIGKILL after a
 * grace period), so a shell's children die with it; so do leftovers once the main process exits,
 * or they would hold the task's pipes open and outlive its accounting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { ErrorCode, type AttemptResult, type TaskSpec } from '../protocol/index.js';

/** What the runner reports; the agent adds uid and attempt. */
export type Outcome = Omit<AttemptResult, 'uid' | 'attempt'>;

export interface RunnerOptions {
  /** Bytes kept of each of stdout and stderr. */
  outputLimit: number;
  /** Time between SIGTERM and SIGKILL when a task is timed out or cancelled. */
  killGraceMs: number;
  /** Environment every task starts from (the executor's own, minus its secrets). */
  baseEnv: NodeJS.ProcessEnv;
}

export interface RunningAttempt {
  readonly done: Promise<Outcome>;
  /** Stops the attempt; it then finishes with status `cancelled`. */
  cancel(): void;
}

/** Variables never passed to tasks: the executor's credential is not the task's business. */
const SECRET_ENV = ['FALCONET_TOKEN', 'FALCONET_EXECUTOR_TOKEN', 'FALCONET_CLIENT_TOKEN'];

export function taskBaseEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const base = { ...env };
  for (const k of SECRET_ENV) delete base[k];
  return base;
}

export function runAttempt(spec: TaskSpec, options: RunnerOptions): RunningAttempt {
  return spec.builtin !== undefined ? runBuiltin(spec) : runCommand(spec, options);
}

function outcome(status: Outcome['status'], startedAt: number, extra: Partial<Outcome> = {}): Outcome {
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
  truncated = false;
  constructor(private readonly limit: number) {}
  add(chunk: Buffer): void {
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
  const startedAt = Date.now();
  const cmd = spec.cmd ?? [];
  const argv = spec.shell ? ['/bin/sh', '-c', cmd.join(' ')] : cmd;
  const stdout = new BoundedCapture(options.outputLimit);
  const stderr = new BoundedCapture(options.outputLimit);
  let stopReason: 'timed_out' | 'cancelled' | null = null;
  let settle!: (o: Outcome) => void;
  const done = new Promise<Outcome>((resolve) => (settle = resolve));
  let settled = false;
  const finish = (o: Outcome) => {
    if (settled) return;
    settled = true;
    clearTimeout(timeoutTimer);
    clearTimeout(killTimer);
    settle(o);
  };

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
  let timeoutTimer: NodeJS.Timeout | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const stop = (reason: 'timed_out' | 'cancelled') => {
    if (stopReason || settled) return;
    stopReason = reason;
    killGroup(child, 'SIGTERM');
    killTimer = setTimeout(() => killGroup(child, 'SIGKILL'), options.killGraceMs);
  };
  if (spec.timeoutMs !== undefined) timeoutTimer = setTimeout(() => stop('timed_out'), spec.timeoutMs);

  child.stdout!.on('data', (c: Buffer) => stdout.add(c));
  child.stderr!.on('data', (c: Buffer) => stderr.add(c));
  if (spec.stdin !== undefined && child.stdin) {
    child.stdin.on('error', () => {}); // EPIPE when the task ignores its input
    child.stdin.end(spec.stdin);
  }
  child.on('error', (err) => {
    finish(outcome('failed', startedAt, { error: { code: ErrorCode.SPAWN_FAILED, message: `${argv[0]}: ${err.message}` } }));
  });
  child.on('exit', () => killGroup(child, 'SIGKILL'));
  child.on('close', (code, signal) => {
    const captured = { stdout: stdout.text(), stderr: stderr.text(), truncated: stdout.truncated || stderr.truncated, exitCode: code, signal };
    if (stopReason === 'timed_out') {
      finish(outcome('timed_out', startedAt, { ...captured, error: { code: ErrorCode.TASK_TIMEOUT, message: `timed out after ${spec.timeoutMs} ms; process group killed` } }));
    } else if (stopReason === 'cancelled') {
      finish(outcome('cancelled', startedAt, { ...captured, error: { code: ErrorCode.TASK_CANCELLED, message: 'cancelled; process group killed' } }));
    } else if (code === 0) {
      finish(outcome('succeeded', startedAt, captured));
    } else {
      const why = signal ? `killed by ${signal}` : `exited with code ${code}`;
      finish(outcome('failed', startedAt, { ...captured, error: { code: ErrorCode.TASK_FAILED, message: why } }));
    }
  });
  return { done, cancel: () => stop('cancelled') };
}
