/**
 * One attempt with its data: a sandbox directory of its own, inputs staged in before the run,
 * outputs uploaded after a success, the sandbox removed afterwards unless the task asks to keep
 * it. Tasks without inputs or outputs skip all of this and run as before (no sandbox).
 */
import { mkdir, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, FalconetError, localityKey, type TaskSpec } from '../protocol/index.js';
import { ContentCache } from './cache.js';
import { runAttempt, type Outcome, type RunnerOptions, type RunningAttempt } from './runner.js';
import { insideSandbox, stageInputs, uploadOutputs, type StagingStats } from './staging.js';
import { Environments, type PreparedEnvironment } from './environments.js';

export interface DataOptions {
  /** Where the content cache lives; it survives executor restarts. */
  cacheDir: string;
  cacheBudgetBytes: number;
  /** Where attempt sandboxes are made. */
  workDir: string;
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
 * The locality keys of what the cache holds (see protocol/locality.ts), or null before the first
 * staged task opened the cache. S3 entries are keyed by ETag too; locality is by source.
 */
export async function heldLocalityKeys(): Promise<string[] | null> {
  if (!cache) return null;
  const c = await cache;
  return c.keys().map((key) => {
    if (key.startsWith('sha256:')) return localityKey({ src: '', sha256: key.slice(7) });
    if (key.startsWith('s3:')) return localityKey({ src: `s3://${key.slice(3, key.lastIndexOf('@'))}` });
    return localityKey({ src: key.startsWith('url:') ? key.slice(4) : key });
  });
}

/** Data moved by this executor, for its heartbeat and the dispatcher's status. */
export const dataCounters = { cacheHits: 0, cacheMisses: 0, bytesIn: 0, bytesOut: 0 };

let cache: Promise<ContentCache> | null = null;

let environments: Environments | null = null;

export function startAttempt(spec: TaskSpec, name: string, runner: RunnerOptions, data: DataOptions): RunningAttempt {
  if (!spec.inputs?.length && !spec.outputs?.length && !spec.environment) return runAttempt(spec, runner);
  let inner: RunningAttempt | null = null;
  let cancelled = false;
  const startedAt = Date.now();
  const failed = (err: unknown): Outcome => {
    const e = err instanceof FalconetError ? err : new FalconetError(ErrorCode.INTERNAL, String((err as Error)?.message ?? err));
    return { status: cancelled ? 'cancelled' : 'failed', exitCode: null, signal: null, stdout: '', stderr: '', truncated: false, startedAt, finishedAt: Date.now(), error: { code: e.code, message: e.message } };
  };
  const done = (async (): Promise<Outcome> => {
    const sandbox = join(data.workDir, name);
    await mkdir(sandbox, { recursive: true });
    const stats: StagingStats = { cacheHits: 0, bytesIn: 0, bytesOut: 0 };
    let leases: Array<{ release(): void }> = [];
    try {
      cache ??= ContentCache.open(data.cacheDir, { budgetBytes: data.cacheBudgetBytes });
      const staged = await stageInputs(spec.inputs ?? [], sandbox, await cache);
      leases = staged.leases;
      Object.assign(stats, staged.stats);
      dataCounters.cacheHits += stats.cacheHits;
      dataCounters.cacheMisses += leases.length - stats.cacheHits;
      let env: PreparedEnvironment | null = null;
      if (spec.environment) {
        environments ??= new Environments(`${data.cacheDir}.envs`, runner, () => (cache ??= ContentCache.open(data.cacheDir, { budgetBytes: data.cacheBudgetBytes })));
        env = await environments.prepare(spec.environment, runner.baseEnv.PATH ?? '/usr/bin:/bin');
      }
      if (cancelled) throw new FalconetError(ErrorCode.TASK_CANCELLED, 'cancelled while staging');
      const cwd = spec.cwd === undefined ? sandbox : insideSandbox(sandbox, spec.cwd, 'cwd');
      inner = runAttempt({ ...spec, cwd, ...(env ? { env: { ...env.vars, ...spec.env } } : {}) }, runner);
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
      dataCounters.bytesIn += stats.bytesIn;
      dataCounters.bytesOut += stats.bytesOut;
      for (const l of leases) l.release();
      if (!spec.keepSandbox) await rm(sandbox, { recursive: true, force: true }).catch(() => {});
    }
  })();
  return {
    done,
    cancel() {
      cancelled = true;
      inner?.cancel();
    },
  };
}
