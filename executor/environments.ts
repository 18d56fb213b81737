/**
 * Named environments (RADICAL-Pilot's venv case): a task may name `{name, setup: argv}`. The
 * executor prepares it once, keyed by its content (name and setup), in a directory of its own,
 * and reuses it for every later task that names it; tasks run with its `bin/` first on PATH and
 * FALCONET_ENV_DIR / VIRTUAL_ENV set. A failed setup fails the task with ENVIRONMENT_FAILED and
 * the tail of the setup's log, and is remembered (for `failureTtlMs`), so the tasks behind it
 * fail at once instead of running a broken setup again and again.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FalconetError, LIMITS } from '../protocol/index.js';
import { runAttempt, type RunnerOptions } from './runner.js';
import { stageInputs, type InputSpec } from './staging.js';
import type { ContentCache } from './cache.js';

export interface EnvironmentSpec {
  name: string;
  setup: string[];
  files?: InputSpec[];
  timeoutMs?: number;
}

/** What the task's result tells about its environment, like boot phases. */
export interface EnvironmentReport {
  name: string;
  key: string;
  reused: boolean;
  phases: Array<{ phase: string; at: number }>;
}

export interface PreparedEnvironment {
  dir: string;
  report: EnvironmentReport;
  /** Variables the task runs with. */
  vars: Record<string, string>;
}

/**
 * How much of a failed setup's log goes into the task's error: its last 10 lines, and of those at
 * most this many characters (one line may be megabytes). Well below LIMITS.errorChars, which the
 * whole message must fit, with room for the name, key and reason around it.
 */
export const LOG_TAIL_CHARS = Math.min(4096, LIMITS.errorChars / 4);

/** The last `lines` lines of `log`, at most `chars` characters of them (the start cut, marked). */
export function logTail(log: string, lines = 10, chars = LOG_TAIL_CHARS): string {
  const tail = log.trim().split('\n').slice(-lines).join('\n');
  return tail.length <= chars ? tail : `[...]${tail.slice(tail.length - chars)}`;
}

export class Environments {
  readonly #ready = new Map<string, Promise<string>>();
  readonly #failed = new Map<string, { at: number; error: FalconetError }>();

  constructor(
    private readonly root: string,
    private readonly runner: RunnerOptions,
    /** Where `files` come through (opened on first use). */
    private readonly cache: () => Promise<ContentCache>,
    private readonly failureTtlMs = 10 * 60_000,
  ) {}

  /** Prepares (or reuses) the environment; rejects with ENVIRONMENT_FAILED. */
  async prepare(spec: EnvironmentSpec, basePath: string): Promise<PreparedEnvironment> {
    const key = createHash('sha256').update(JSON.stringify([spec.name, spec.setup, spec.files ?? []])).digest('hex').slice(0, 16);
    const dir = join(this.root, `${spec.name.replace(/[^\w.-]/g, '_')}-${key}`);
    const phases: Array<{ phase: string; at: number }> = [{ phase: 'requested', at: Date.now() }];
    const failed = this.#failed.get(key);
    if (failed && Date.now() - failed.at < this.failureTtlMs) throw failed.error;
    let reused = true;
    let pending = this.#ready.get(key);
    if (!pending) {
      reused = existsSync(join(dir, '.falconet-ready'));
      pending = reused ? Promise.resolve(dir) : this.#setup(spec, dir, key, phases);
      this.#ready.set(key, pending);
      pending.catch(() => this.#ready.delete(key));
    }
    await pending;
    phases.push({ phase: reused ? 'reused' : 'ready', at: Date.now() });
    return {
      dir,
      report: { name: spec.name, key, reused, phases },
      vars: { FALCONET_ENV_DIR: dir, VIRTUAL_ENV: dir, PATH: `${join(dir, 'bin')}:${basePath}` },
    };
  }

  async #setup(spec: EnvironmentSpec, dir: string, key: string, phases: Array<{ phase: string; at: number }>): Promise<string> {
    try {
      await rm(dir, { recursive: true, force: true }); // a half-built one from a crash
      await mkdir(dir, { recursive: true });
    } catch (err) {
      // Not remembered as failed: the directory's trouble (a full disk) may pass by the next task.
      throw new FalconetError(ErrorCode.ENVIRONMENT_FAILED, `environment ${spec.name} (${key}): its directory ${dir} cannot be made: ${(err as Error)?.message ?? String(err)}`);
    }
    if (spec.files?.length) {
      phases.push({ phase: 'files-started', at: Date.now() });
      try {
        const { leases } = await stageInputs(spec.files, dir, await this.cache());
        for (const l of leases) l.release();
      } catch (err) {
        const error = new FalconetError(ErrorCode.ENVIRONMENT_FAILED, `environment ${spec.name} (${key}): its files could not be staged: ${(err as Error).message}`);
        this.#failed.set(key, { at: Date.now(), error });
        throw error;
      }
    }
    phases.push({ phase: 'setup-started', at: Date.now() });
    const outcome = await runAttempt(
      { cmd: spec.setup, cwd: dir, env: { FALCONET_ENV_DIR: dir }, timeoutMs: spec.timeoutMs ?? 10 * 60_000 },
      { ...this.runner, outputLimit: 64 * 1024 },
    ).done;
    await writeFile(join(dir, '.falconet-setup.log'), outcome.stdout + outcome.stderr).catch(() => {});
    if (outcome.status !== 'succeeded') {
      const tail = logTail(outcome.stdout + outcome.stderr);
      const why = outcome.error?.message ?? `exited with ${outcome.exitCode}`;
      const error = new FalconetError(ErrorCode.ENVIRONMENT_FAILED, `environment ${spec.name} (${key}) setup failed: ${why}${tail ? `; log tail:\n${tail}` : ''}`);
      this.#failed.set(key, { at: Date.now(), error });
      throw error;
    }
    await writeFile(join(dir, '.falconet-ready'), new Date().toISOString());
    return dir;
  }
}
