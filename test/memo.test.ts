/**
 * Memoized results (issue 12 item 5): a task whose `cacheKey` already has a successful result
 * finishes with it (`cached: true`) without running; the memo survives a kill -9 of the
 * dispatcher; `--no-cache` runs again and records the new result; a failed run is not memoized;
 * identical keys submitted together run once. Each command appends a line to a file, so the file
 * says how often it really ran. Real dispatcher and executor processes on loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TaskResult, type TaskSpec } from '../client/index.js';
import { Procs, exited, freePort, runCli, startDispatcher, startExecutor, waitExecutors, type Dispatcher } from './helpers.js';
import { Memo } from '../dispatcher/memo.js';
import { newSession, newTask, nullJournal } from '../dispatcher/model.js';

/** A command that appends a line to `file` and prints how many lines it has (which run this was). */
function counting(file: string, exit = 0): string[] {
  return ['sh', '-c', `echo run >> '${file}'; wc -l < '${file}'; exit ${exit}`];
}

function runs(file: string): number {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').length : 0;
}

async function submitAll(url: string, tasks: TaskSpec[]): Promise<TaskResult[]> {
  const client = await connect(url);
  try {
    return await Promise.all(tasks.map((t) => client.submit(t)));
  } finally {
    await client.close();
  }
}

async function kill9(d: Dispatcher): Promise<void> {
  const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
}

test('memo: a second run of a cacheKey is cached without running, also after kill -9; --no-cache runs again and records; failures are not memoized', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dir = procs.tmpDir();
  const dataDir = procs.tmpDir();
  const port = await freePort();
  let d = await startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir]);
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);

  const file = join(dir, 'a.log');
  const [first] = await submitAll(d.url, [{ id: 'a1', cmd: counting(file), cacheKey: 'key-a' }]);
  assert.equal(first.status, 'succeeded');
  assert.equal(first.cached, undefined);
  assert.equal(first.stdout.trim(), '1');

  const [second] = await submitAll(d.url, [{ id: 'a2', cmd: counting(file), cacheKey: 'key-a' }]);
  assert.equal(second.id, 'a2');
  assert.equal(second.status, 'succeeded');
  assert.equal(second.cached, true);
  assert.equal(second.stdout.trim(), '1', 'the first run\'s output');
  assert.equal(second.attempts, 0);
  assert.deepEqual(second.timings, first.timings, 'the first run\'s timings');
  assert.equal(runs(file), 1, 'the command ran once');

  // kill -9: the memo is in the store, written with the result it copies.
  await kill9(d);
  d = await startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir]);
  await waitExecutors(d.url, 1);
  const [third] = await submitAll(d.url, [{ id: 'a3', cmd: counting(file), cacheKey: 'key-a' }]);
  assert.equal(third.cached, true);
  assert.equal(third.stdout.trim(), '1');
  assert.equal(runs(file), 1, 'still one run after the restart');

  // A cached result is a result like any other: kept for a detached session and replayed to watch.
  const detached = await runCli(procs, ['submit', '--dispatcher', d.url, '--detach', '-'], { input: JSON.stringify({ id: 'a6', cmd: counting(file), cacheKey: 'key-a' }) + '\n' });
  assert.equal(detached.code, 0, detached.stderr);
  const watched = await runCli(procs, ['watch', '--dispatcher', d.url, detached.stdout.trim()]);
  assert.equal(watched.code, 0, watched.stderr);
  const w6 = JSON.parse(watched.stdout.trim()) as TaskResult;
  assert.deepEqual([w6.id, w6.cached, w6.stdout.trim()], ['a6', true, '1']);
  const shown = await runCli(procs, ['task', '--dispatcher', d.url, 'a6']);
  assert.match(shown.stdout, /cached/);
  assert.equal(runs(file), 1);

  // --no-cache forces a run, and its result replaces the memoized one.
  const line = JSON.stringify({ id: 'a4', cmd: counting(file), cacheKey: 'key-a' });
  const forced = await runCli(procs, ['submit', '--dispatcher', d.url, '--no-cache', '-'], { input: line + '\n' });
  assert.equal(forced.code, 0, forced.stderr);
  const r4 = JSON.parse(forced.stdout.trim()) as TaskResult;
  assert.equal(r4.cached, undefined);
  assert.equal(r4.stdout.trim(), '2');
  assert.equal(runs(file), 2);
  const plain = await runCli(procs, ['submit', '--dispatcher', d.url, '-'], { input: line.replace('a4', 'a5') + '\n' });
  assert.equal(plain.code, 0, plain.stderr);
  const r5 = JSON.parse(plain.stdout.trim()) as TaskResult;
  assert.equal(r5.cached, true);
  assert.equal(r5.stdout.trim(), '2', 'the newer result is the one memoized');
  assert.equal(runs(file), 2);

  // A failed run is not memoized: the next task with its key runs (and fails) again.
  const bad = join(dir, 'b.log');
  const [f1] = await submitAll(d.url, [{ id: 'b1', cmd: counting(bad, 3), cacheKey: 'key-b', maxAttempts: 1 }]);
  assert.equal(f1.status, 'failed');
  const [f2] = await submitAll(d.url, [{ id: 'b2', cmd: counting(bad, 3), cacheKey: 'key-b', maxAttempts: 1 }]);
  assert.equal(f2.status, 'failed');
  assert.equal(f2.cached, undefined);
  assert.equal(runs(bad), 2);
});

test('memo: identical keys submitted together run once (the others wait and take its result), in memory; after a failure the next one runs', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dir = procs.tmpDir();
  const d = await startDispatcher(procs, ['--store', 'memory']);
  startExecutor(procs, d.url, ['--slots', '4']);
  await waitExecutors(d.url, 1);

  const file = join(dir, 'c.log');
  const tasks = [1, 2, 3, 4].map((i) => ({ id: `c${i}`, cmd: counting(file), cacheKey: 'key-c' }));
  const results = await submitAll(d.url, tasks);
  assert.deepEqual(results.map((r) => r.status), ['succeeded', 'succeeded', 'succeeded', 'succeeded']);
  assert.equal(results.filter((r) => r.cached).length, 3, 'three took the one run\'s result');
  assert.equal(runs(file), 1);
  const [again] = await submitAll(d.url, [{ id: 'c5', cmd: counting(file), cacheKey: 'key-c' }]);
  assert.equal(again.cached, true, 'the memory store keeps the memo too');
  assert.equal(runs(file), 1);

  // The first of a key fails: the next waiting task runs in its place, and its success serves the rest.
  const flaky = join(dir, 'd.log');
  const script = `n=$(($(cat '${flaky}' 2>/dev/null | wc -l) + 1)); echo run >> '${flaky}'; echo $n; [ $n -ge 2 ]`;
  const d3 = await submitAll(d.url, [1, 2, 3].map((i) => ({ id: `d${i}`, cmd: ['sh', '-c', script], cacheKey: 'key-d', maxAttempts: 1 })));
  assert.deepEqual(d3.map((r) => r.status), ['failed', 'succeeded', 'succeeded']);
  assert.equal(d3[2].cached, true);
  assert.equal(runs(flaky), 2);
});

test('memo core: entries expire with the retention (here and in the store); a waiting task that is cancelled never runs', { timeout: 10_000 }, async () => {
  let now = 1_000;
  const enqueued: string[] = [];
  const cached: string[] = [];
  const expired: number[] = [];
  const journal = { ...nullJournal, memoExpired: (before: number) => void expired.push(before) };
  const memo = new Memo({ finishCached: (t, r) => void cached.push(`${t.id}:${r.stdout}`), enqueue: (t) => void enqueued.push(t.id) }, journal, { now: () => now });
  let woken = 0;
  memo.connect(() => woken++);
  const session = newSession('s', 0, null, null, null);
  const task = (id: string, spec: Partial<TaskSpec> = {}) => newTask(Number(id.replace(/\D/g, '')) || 1, id, session, { builtin: 'noop', cacheKey: 'k', ...spec }, now);
  const ok = (id: string, stdout: string): TaskResult => ({ id, status: 'succeeded', exitCode: 0, signal: null, stdout, stderr: '', truncated: false, attempts: 1, executor: 'e', timings: { submitted: 0, dispatched: 0, started: 0, finished: 0 } });
  const failed = (id: string): TaskResult => ({ ...ok(id, ''), status: 'failed', exitCode: 1 });

  // t1 runs; t2 and t3 wait; t2 is cancelled; t1 fails: t3 (not t2) runs in its place.
  const [t1, t2, t3] = [task('t1'), task('t2'), task('t3')];
  for (const t of [t1, t2, t3]) memo.admit(t);
  assert.deepEqual(enqueued, ['t1']);
  t2.state = 'finished';
  assert.equal(memo.forget(t2), true);
  assert.equal(memo.forget(t1), false, 't1 is in the scheduler queue, not here');
  memo.finished(t1, failed('t1'));
  assert.deepEqual(enqueued, ['t1', 't3']);
  memo.finished(t3, ok('t3', 'three'));
  assert.equal(memo.size, 1);

  // A hit finishes in a later turn (after the client's `accepted`), then wakes the adapter.
  memo.admit(task('t4'));
  assert.deepEqual(cached, []);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(cached, ['t4:three']);
  assert.equal(woken, 1);

  // Past the retention the entry is gone, here and (through the journal) in the store.
  now += 5_000;
  memo.expire(now, 10_000);
  assert.equal(memo.size, 1, 'not yet');
  now += 6_000;
  memo.expire(now, 10_000);
  assert.equal(memo.size, 0);
  assert.deepEqual(expired, [now - 10_000]);
  memo.admit(task('t5'));
  assert.deepEqual(enqueued, ['t1', 't3', 't5'], 'an expired key runs again');
});
