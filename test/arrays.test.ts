/**
 * Job arrays end to end: a real dispatcher and executors on loopback. An array of 10,000 with two
 * failing elements retried on their own (ids ID[i], exactly one result each); `--array` on the
 * CLI; `falconet task 'ID[i]'`; cancel of one element and of the whole array; a dispatcher
 * killed with -9 mid-array loses nothing, runs nothing finished twice, and keeps one spec on disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { TaskResult } from '../client/index.js';
import { Procs, exited, freePort, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor, type Dispatcher } from './helpers.js';

type Line = TaskResult & { line: number | null };
const jsonLines = (text: string): Line[] => (text.trim() === '' ? [] : text.trim().split('\n').map((l) => JSON.parse(l) as Line));

test('an array of 10,000: ids ID[i], one result each, two failing elements retried on their own', { timeout: 300_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '4']);
  startExecutor(procs, d.url, ['--slots', '4']);
  await waitExecutors(d.url, 2);
  const marks = procs.tmpDir();
  // Elements 77 and 4242 fail (exit 3) the first time and succeed the second; retryOnExit retries them.
  const script = 'case "$1" in 77|4242) [ -e "$D/$1" ] || { : > "$D/$1"; exit 3; };; esac; echo "el $1"';
  const spec = { id: 'A', array: { from: 1, to: 10_000 }, cmd: ['sh', '-c', script, 'sh', '{index}'], env: { D: marks }, retryOnExit: [3] };
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '-'], { input: JSON.stringify(spec) + '\n', timeoutMs: 240_000 });
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  const results = jsonLines(r.stdout);
  assert.equal(results.length, 10_000, 'exactly one result per element');
  const byId = new Map(results.map((x) => [x.id, x]));
  assert.equal(byId.size, 10_000);
  for (let i = 1; i <= 10_000; i++) {
    const x = byId.get(`A[${i}]`);
    assert.ok(x, `a result for A[${i}]`);
    assert.equal(x.status, 'succeeded');
    assert.equal(x.stdout, `el ${i}\n`);
    assert.equal(x.attempts, i === 77 || i === 4242 ? 2 : 1, `attempts of A[${i}]`);
  }
  assert.deepEqual(readdirSync(marks).sort(), ['4242', '77']);
  assert.match(r.stderr, /10,000 succeeded/);
  const info = await runCli(procs, ['task', '--dispatcher', d.url, 'A[4242]', '--json']);
  assert.equal(info.code, 0, info.stderr);
  const shown = JSON.parse(info.stdout) as { state: string; attempt: number };
  assert.equal(shown.state, 'succeeded');
  assert.equal(shown.attempt, 2);
});

test('submit --array FROM-TO -- CMD {}: the index in the arguments; cancel of one element and of a whole array', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '--array', '5-54', '--', 'echo', 'item', '{}']);
  assert.equal(r.code, 0, r.stderr);
  const results = jsonLines(r.stdout);
  assert.equal(results.length, 50);
  assert.deepEqual(new Set(results.map((x) => x.stdout)), new Set(Array.from({ length: 50 }, (_, i) => `item ${i + 5}\n`)));
  assert.ok(results.every((x) => /\[\d+\]$/.test(x.id)));
  const bad = await runCli(procs, ['submit', '--dispatcher', d.url, '--array', '9-3', '--', 'true']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /TO is below FROM/);

  // A long array, detached: one element cancelled before it has run, then the rest.
  const sub = await runCli(procs, ['submit', '--dispatcher', d.url, '--detach', '--print-ids', '-'], {
    input: JSON.stringify({ id: 'long', array: { from: 1, to: 5000 }, builtin: 'sleep', ms: 60_000 }) + '\n',
  });
  assert.equal(sub.code, 0, sub.stderr);
  assert.equal(sub.stdout.trim(), 'long');
  const q = await runCli(procs, ['task', '--dispatcher', d.url, 'long[4000]', '--json']);
  assert.equal(q.code, 0, q.stderr);
  assert.equal((JSON.parse(q.stdout) as { state: string }).state, 'queued');
  const one = await runCli(procs, ['cancel', '--dispatcher', d.url, 'long[4000]']);
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /cancelled 1/);
  const q2 = JSON.parse((await runCli(procs, ['task', '--dispatcher', d.url, 'long[4000]', '--json'])).stdout) as { state: string };
  assert.equal(q2.state, 'cancelled');
  const all = await runCli(procs, ['cancel', '--dispatcher', d.url, 'long']);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, /cancelled 4999/);
  await waitFor('the array to end', async () => {
    const s = await status(d.url);
    return s.tasks.queued === 0 && s.tasks.running === 0;
  }, 60_000);
  const arr = JSON.parse((await runCli(procs, ['task', '--dispatcher', d.url, 'long', '--json'])).stdout) as { state: string; waiting: string };
  assert.equal(arr.state, 'failed');
  assert.match(arr.waiting, /array of 5000 \(1-5000\): 5000 finished, 5000 not succeeded/);
});

async function dispatcherAt(procs: Procs, port: number, dataDir: string): Promise<Dispatcher> {
  return startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir]);
}

test('kill -9 of the dispatcher mid-array: every element finishes once, none that finished runs again, one spec on disk', { timeout: 300_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  const runs = procs.tmpDir();
  let d = await dispatcherAt(procs, port, dataDir);
  startExecutor(procs, d.url, ['--slots', '8']);
  startExecutor(procs, d.url, ['--slots', '8']);
  await waitExecutors(d.url, 2);
  // Each run of an element leaves a file named after its index and attempt's pid: runs are counted.
  const spec = { id: 'K', array: { from: 1, to: 3000 }, cmd: ['sh', '-c', ': > "$D/$1.$$"; sleep 0.02', 'sh', '{index}'], env: { D: runs } };
  const sub = await runCli(procs, ['submit', '--dispatcher', d.url, '--detach', '-'], { input: JSON.stringify(spec) + '\n' });
  assert.equal(sub.code, 0, sub.stderr);
  const session = sub.stdout.trim();
  const watch = procs.spawn(['watch', '--dispatcher', d.url, session]);
  let watched = '';
  let watchErr = '';
  watch.stdout!.on('data', (b: Buffer) => (watched += b));
  watch.stderr!.on('data', (b: Buffer) => (watchErr += b));
  const watchDone = exited(watch, 240_000, 'watch to see every element and exit');
  await waitFor('a third of the array done', () => watched.split('\n').length > 1000, 120_000);
  const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
  d = await dispatcherAt(procs, port, dataDir);
  const code = (await watchDone).code;
  assert.equal(code, 0, watchErr.slice(-2000));
  const results = jsonLines(watched);
  const ids = new Set(results.map((x) => x.id));
  assert.equal(ids.size, 3000);
  for (let i = 1; i <= 3000; i++) assert.ok(ids.has(`K[${i}]`), `K[${i}]`);
  assert.ok(results.every((x) => x.status === 'succeeded'));
  // At-least-once: only elements running at the crash may have run twice (a handful, not a third).
  const started = readdirSync(runs);
  assert.ok(started.length >= 3000 && started.length <= 3000 + 64, `${started.length} runs for 3000 elements`);
  const stop = exited(d.proc, 30_000, 'the dispatcher after SIGTERM');
  d.proc.kill('SIGTERM');
  await stop;
  const db = new Database(join(dataDir, 'falconet.db'), { readonly: true });
  try {
    const specs = db.prepare('SELECT count(*) FROM tasks WHERE spec IS NOT NULL').pluck().get() as number;
    assert.equal(specs, 1, 'the array is one spec on disk; element rows carry none');
  } finally {
    db.close();
  }
});
