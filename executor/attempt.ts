/**
 * One attempt with its data: a sandbox directory of its own, inputs staged in before the run,
 * outputs uploaded after a success, the sandbox removed afterwards unless the task asks to keep
 * it. Tasks without inputs or outputs skip all of this and run as before (no sandbox).
 *
 * Whatever goes wrong here (a sandbox that cannot be made, a cache that cannot be opened) fails
 * the attempt with a code of its own and leaves the executor serving: the next task tries again.
 * The state shared by an executor's attempts (the content cache, its named environments, the data
 * counters) lives in an {@link AttemptContext} that the agent owns, not in this module.
 */
import { mkdir, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, FalconetError, localityKey, type TaskSpec } from '../protocol/index.js';
import { ContentCache } from './cache.js';
import { runAttempt, type Outcome, type OutputSink, type RunnerOptions, type RunningAttempt } from './runner.js';
import { insideSandbox, stageInputs, uploadOutputs, type StagingStats } from './staging.js';
import { Environments, type PreparedEnvironment } from './environments.js';

export interface DataOptions {
  /** Where the content cache lives; it survives executor restarts. */
  cacheDir: string;
  cacheBudgetBytes: number;
  /** Where attempt sandboxes are made. */
  workDir: string;
}

/** Data moved by one executor, for its heartbeat and the dispatcher's status. */
export interface DataCounters {
  cacheHits: number;
  cacheMisses: number;
  bytesIn: number;
  bytesOut: number;
}

/** The defaults: a cache per executor id under the user's cache dir, 10 GiB. */
export function defaultDataOptions(executorId: string, env: NodeJS.ProcessEnv = process.env): DataOptions {
  const base = env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return {
    cacheDir: env.FALCONET_CACHE_DIR ?? join(base, 'falconet', executorId.replace(/[^\w.-]/g, '_')),
    cacheBudgetBytes: Number(env.FALCONET_CACHE_BUDGET ?? 10 * 1024 ** 3),
    workDir: env.FALCONET_WORK_DIR ?? join(tmpdir(), `falconet-${executorId.replace(/[^\w.-]/g, '_')}`),
  };
}

/**
 * What one executor's attempts share: its content cache (opened on first use), its named
 * environments and its data counters. One per agent, so that two agents in one process (tests)
 * share nothing, and a failure of one does not stick to the other.
 */
export class AttemptContext {
  readonly counters: DataCounters = { cacheHits: 0, cacheMisses: 0, bytesIn: 0, bytesOut: 0 };
  #cache: Promise<ContentCache> | null = null;
  #environments: Environments | null = null;

  constructor(
    readonly data: DataOptions,
    /** The runner environment setups run with (the agent's own, not the helper-queue one). */
    private readonly runner: RunnerOptions,
    readonly log: Logger,
  ) {}

  /**
   * The content cache, opened on first use. An open that fails rejects with CACHE_UNAVAILABLE
   * and is forgotten, so that the next task tries again (a full disk may have been cleared)
   * instead of every later task failing on the first one's error.
   */
  cache(): Promise<ContentCache> {
    if (this.#cache) return this.#cache;
    const dir = this.data.cacheDir;
    const opening = ContentCache.open(dir, { budgetBytes: this.data.cacheBudgetBytes }).catch((err: unknown) => {
      if (this.#cache === opening) this.#cache = null;
      this.log.warn({ dir, err: (err as Error)?.message }, 'content cache cannot be opened; tasks with data fail until it can');
      throw new FalconetError(ErrorCode.CACHE_UNAVAILABLE, `the executor's content cache at ${dir} cannot be opened: ${(err as Error)?.message ?? String(err)}`);
    });
    this.#cache = opening;
    return opening;
  }

  /** The named environments, next to the cache. */
  environments(): Environments {
    this.#environments ??= new Environments(`${this.data.cacheDir}.envs`, this.runner, () => this.cache());
    return this.#environments;
  }

  /**
   * The locality keys of what the cache holds (see protocol/locality.ts), or null while no cache
   * is open (before the first staged task, or after an open failed). Never rejects. S3 entries
   * are keyed by ETag too; locality is by source.
   */
  async heldLocalityKeys(): Promise<string[] | null> {
    if (!this.#cache) return null;
    let c: ContentCache;
    try {
      c = await this.#cache;
    } catch {
      return null; // the failed open was logged where it failed
    }
    return c.keys().map((key) => {
      if (key.startsWith('sha256:')) return localityKey({ src: '', sha256: key.slice(7) });
      if (key.startsWith('s3:')) return localityKey({ src: `s3://${key.slice(3, key.lastIndexOf('@'))}` });
      return localityKey({ src: key.startsWith('url:') ? key.slice(4) : key });
    });
  }
}

/** Makes the attempt's sandbox, or SANDBOX_FAILED (full disk, a work dir that is not a directory). */
async function makeSandbox(sandbox: string): Promise<void> {
  try {
    await mkdir(sandbox, { recursive: true });
  } catch (err) {
    throw new FalconetError(ErrorCode.SANDBOX_FAILED, `the attempt's sandbox ${sandbox} cannot be created: ${(err as Error)?.message ?? String(err)}`);
  }
}

export function startAttempt(spec: TaskSpec, name: string, runner: RunnerOptions, ctx: AttemptContext): RunningAttempt {
  if (!spec.inputs?.length && !spec.outputs?.length && !spec.environment) return runAttempt(spec, runner);
  let inner: RunningAttempt | null = null;
  let cancelled = false;
  /** Who follows the output, handed to the command once it runs (staging writes none). */
  let followed: OutputSink | null = null;
  const startedAt = Date.now();
  const failed = (err: unknown): Outcome => {
    const e = err instanceof FalconetError ? err : new FalconetError(ErrorCode.INTERNAL, String((err as Error)?.message ?? err));
    return { status: cancelled ? 'cancelled' : 'failed', exitCode: null, signal: null, stdout: '', stderr: '', truncated: false, startedAt, finishedAt: Date.now(), error: { code: e.code, message: e.message } };
  };
  const done = (async (): Promise<Outcome> => {
    const sandbox = join(ctx.data.workDir, name);
    const stats: StagingStats = { cacheHits: 0, bytesIn: 0, bytesOut: 0 };
    let leases: Array<{ release(): void }> = [];
    let made = false;
    try {
      await makeSandbox(sandbox);
      made = true;
      const staged = await stageInputs(spec.inputs ?? [], sandbox, await ctx.cache());
      leases = staged.leases;
      Object.assign(stats, staged.stats);
      ctx.counters.cacheHits += stats.cacheHits;
      ctx.counters.cacheMisses += leases.length - stats.cacheHits;
      let env: PreparedEnvironment | null = null;
      if (spec.environment) env = await ctx.environments().prepare(spec.environment, runner.baseEnv.PATH ?? '/usr/bin:/bin');
      if (cancelled) throw new FalconetError(ErrorCode.TASK_CANCELLED, 'cancelled while staging');
      const cwd = spec.cwd === undefined ? sandbox : insideSandbox(sandbox, spec.cwd, 'cwd');
      inner = runAttempt({ ...spec, cwd, ...(env ? { env: { ...env.vars, ...spec.env } } : {}) }, runner);
      if (followed) inner.follow?.(followed);
      const outcome: Outcome = { ...(await inner.done), ...(env ? { environment: env.report } : {}) };
      if (outcome.status === 'succeeded' && spec.outputs?.length) {
        try {
          await uploadOutputs(spec.outputs, sandbox, stats);
        } catch (err) {
          return { ...outcome, status: 'failed', error: failed(err).error };
        }
      }
      return outcome;
    } catch (err) {
      return failed(err);
    } finally {
      ctx.counters.bytesIn += stats.bytesIn;
      ctx.counters.bytesOut += stats.bytesOut;
      for (const l of leases) l.release();
      if (made && !spec.keepSandbox) {
        // Not fatal to the attempt, but sandboxes that pile up fill the disk: say so.
        await rm(sandbox, { recursive: true, force: true }).catch((err: unknown) => ctx.log.warn({ sandbox, err: (err as Error)?.message }, 'sandbox could not be removed'));
      }
    }
  })();
  return {
    done,
    cancel() {
      cancelled = true;
      inner?.cancel();
    },
    follow(sink) {
      followed = sink;
      if (inner) inner.follow?.(sink);
      // Staging writes nothing: the snapshot of a command not started yet is empty.
      else sink?.snapshot(0);
    },
  };
}
