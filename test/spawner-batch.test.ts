/**
 * The spawn helper's result batches (executor/spawn-helper/spawn-helper.c, "Batches"), through
 * runner.ts with real processes: while commands wait in the helper's queue, the results of those
 * that ended are held and come together once the queue has drained to half; each keeps its own
 * finish time; a stop asked after its task ended on its own does not rewrite how it ended; a
 * timeout that does reach a running task still reports it timed out; and a helper that dies with
 * results held ends every task once (SPAWN_HELPER_LOST, retryable), never twice, never not at all.
 *
 * The hold is set far beyond any test's length (HOLD), so that only the queue releases a batch:
 * no assertion depends on how fast this machine is. Each test waits on files its tasks write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '../protocol/index.js';
import { runAttempt, setHelperLimit, taskBaseEnv, type Outcome, type RunnerOptions, type RunningAttempt } from '../executor/runner.js';
import { DEFAULT_HELPER_PATH } from '../executor/spawner.js';
import { waitFor } from './helpers.js';

/** Longer than any test: a batch goes only when the queue drains (or with something urgent). */
const HOLD = 600_000;

/** Queued tasks in a helper of their own (a scope per test), limit 1, results held up to HOLD. */
function batched(scope: string, extra: Partial<RunnerOptions> = {}): RunnerOptions {
  const o: RunnerOptions = { outputLimit: 64 * 1024, killGraceMs: 300, baseEnv: taskBaseEnv(), spawner: 'helper', helperScope: `batch-${scope}`, helperQueue: true, resultHoldMs: HOLD, ...extra };
  setHelperLimit(o, 1);
  return o;
}

/**
 * Outcomes as they settle, and for each the others already settled by the end of the event-loop
 * turn it came in: results read from the helper's pipe together settle in one turn; results sent
 * one by one settle in turns of their own.
 */
function watch(runs: RunningAttempt[]): { outcomes: Promise<Outcome[]>; settledWith: Map<number, number[]>; count(): number } {
  const done = new Set<number>();
  const settledWith = new Map<number, number[]>();
  const outcomes = Promise.all(
    runs.map((r, i) =>
      r.done.then((o) => {
        done.add(i);
        setImmediate(() => settledWith.set(i, [...done].sort((x, y) => x - y)));
        return o;
      }),
    ),
  );
  return { outcomes, settledWith, count: () => done.size };
}

/** A task that writes its pid and says it started (files), then waits for its `go` file or a kill. */
const gated = (dir: string, name: string): string[] => ['/bin/sh', '-c', `echo $$ > ${join(dir, `${name}-pid`)}; touch ${join(dir, `${name}-started`)}; while [ ! -e ${join(dir, `${name}-go`)} ]; do sleep 0.01; done`];

/** Ends a gated task if it is still there (a test that failed half way). */
function release(dir: string, name: string): void {
  writeFileSync(join(dir, `${name}-go`), '');
  const file = join(dir, `${name}-pid`);
  if (!existsSync(file)) return;
  try {
    process.kill(-Number(readFileSync(file, 'utf8')), 'SIGKILL');
  } catch {
    // gone already
  }
}

test('batches: results of tasks that ended wait while others queue, then come together, each with its own finish time; a stop after a task ended on its own does not change how it ended', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-batch-'));
  try {
    const o = batched('held');
    // Limit 1: a runs first; b, c, d, e, f wait (5 in the queue).
    const a = runAttempt({ cmd: ['/bin/sh', '-c', 'echo a-out; echo a-err >&2; exit 3'] }, o);
    const b = runAttempt({ cmd: gated(dir, 'b') }, o);
    const rest = Array.from({ length: 4 }, () => runAttempt({ cmd: ['/bin/true'] }, o));
    const w = watch([a, b, ...rest]);
    // b starts only once a was reaped: a's result exists now, and waits (4 still queued of 5).
    await waitFor('b to start', () => existsSync(join(dir, 'b-started')));
    const startedSeen = Date.now();
    assert.equal(w.count(), 0, 'a ended, but its result is held while the queue is more than half full');
    // A stop asked now does not reach a (it has ended): its result stays what a did.
    a.cancel();
    writeFileSync(join(dir, 'b-go'), '');
    // b ends, c starts (3 queued), c ends, d starts (2 queued: half of 5 or fewer): a, b, c go together.
    const [ra, rb, rc, ...others] = await w.outcomes;
    assert.deepEqual([ra.status, ra.exitCode, ra.stdout, ra.stderr, ra.error?.code], ['failed', 3, 'a-out\n', 'a-err\n', ErrorCode.TASK_FAILED]);
    assert.equal(rb.status, 'succeeded');
    assert.equal(rc.status, 'succeeded');
    for (const r of others) assert.equal(r.status, 'succeeded');
    await waitFor('the turns to be seen', () => w.settledWith.size === 6);
    assert.deepEqual(w.settledWith.get(0)?.slice(0, 3), [0, 1, 2], `one batch: a, b and c came in one turn (${JSON.stringify([...w.settledWith])})`);
    // Each keeps the time it really ended, not when the batch arrived.
    assert.ok(ra.finishedAt <= rb.startedAt, `a ended (${ra.finishedAt}) before b started (${rb.startedAt})`);
    assert.ok(ra.finishedAt <= startedSeen, `a's finish time (${ra.finishedAt}) is its end, before the test saw b start (${startedSeen})`);
  } finally {
    release(dir, 'b');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('batches: a timeout that reaches a running task still reports it timed out, and the held results still come', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-batch-'));
  try {
    const o = batched('timeout');
    const a = runAttempt({ cmd: ['/bin/true'] }, o);
    // b never gets its go: its timeout (from its real start) kills it.
    const b = runAttempt({ cmd: gated(dir, 'b'), timeoutMs: 400 }, o);
    const rest = Array.from({ length: 4 }, () => runAttempt({ cmd: ['/bin/true'] }, o));
    const w = watch([a, b, ...rest]);
    const [ra, rb, ...others] = await w.outcomes;
    assert.equal(ra.status, 'succeeded');
    assert.deepEqual([rb.status, rb.error?.code, rb.signal], ['timed_out', ErrorCode.TASK_TIMEOUT, 'SIGTERM']);
    assert.ok(rb.finishedAt - rb.startedAt >= 400, `b ran ${rb.finishedAt - rb.startedAt} ms before its 400 ms timeout`);
    for (const r of others) assert.equal(r.status, 'succeeded');
    // a ended long before b's timeout, yet its result came with later ones: held, not lost. Which
    // ones exactly is the machine's: a killed b ends when the kill's grace and its pipes' last
    // holders are through, which a loaded machine can put after c (CI saw [a, c] then b).
    await waitFor('the turns to be seen', () => w.settledWith.size === 6);
    const withA = w.settledWith.get(0) ?? [];
    assert.ok(withA.some((i) => i >= 1), `a's result was held until later ones came: ${JSON.stringify([...w.settledWith])}`);
    assert.ok(ra.finishedAt <= rb.startedAt, 'a ended before b started');
  } finally {
    release(dir, 'b');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('batches: the helper killed with results held ends every task once, SPAWN_HELPER_LOST (retryable)', { timeout: 120_000 }, async () => {
  // A path of its own (same binary): a helper process no other test shares.
  const helperPath = DEFAULT_HELPER_PATH.replace(/falconet-spawn-helper$/, './/falconet-spawn-helper');
  const dir = mkdtempSync(join(tmpdir(), 'falconet-batch-'));
  try {
    const o = batched('lost', { helperPath });
    const a = runAttempt({ cmd: ['/bin/sh', '-c', `echo $PPID > ${join(dir, 'helper')}`] }, o);
    const b = runAttempt({ cmd: gated(dir, 'b') }, o);
    const rest = Array.from({ length: 4 }, (_, i) => runAttempt({ cmd: ['/bin/sh', '-c', `touch ${join(dir, `ran-${i}`)}`] }, o));
    const ends = new Map<number, Outcome[]>();
    const all = [a, b, ...rest].map((r, i) => r.done.then((x) => void ends.set(i, [...(ends.get(i) ?? []), x])));
    await waitFor('b to start', () => existsSync(join(dir, 'b-started')));
    assert.equal(ends.size, 0, 'a ended and its result is held');
    const helper = Number(readFileSync(join(dir, 'helper'), 'utf8').trim());
    process.kill(helper, 'SIGKILL');
    await Promise.all(all);
    assert.equal(ends.size, 6);
    for (const [i, xs] of ends) {
      assert.equal(xs.length, 1, `task ${i} ended once`);
      assert.deepEqual([xs[0].status, xs[0].error?.code], ['failed', ErrorCode.SPAWN_HELPER_LOST], `task ${i}: ${xs[0].error?.message}`);
    }
    for (let i = 0; i < 4; i++) assert.equal(existsSync(join(dir, `ran-${i}`)), false, `waiting task ${i} never ran`);
    // The next task starts a new helper and runs.
    const next = await runAttempt({ cmd: ['/bin/sh', '-c', 'echo $PPID'] }, o).done;
    assert.equal(next.status, 'succeeded');
    assert.notEqual(Number(next.stdout.trim()), helper, 'a new helper');
  } finally {
    release(dir, 'b'); // its group is killed when its start report came before the helper died; else here
    rmSync(dir, { recursive: true, force: true });
  }
});
