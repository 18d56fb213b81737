/**
 * The adaptive window (executor/window.ts): the pure policy, and through real processes that the
 * default dispatcher (`--prefetch auto`) keeps more than the slots on an executor for short tasks
 * and exactly the slots for long ones, while a fixed `--prefetch` overrides it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type TaskSpec } from '../client/index.js';
import { AdaptiveWindow, worthAnnouncing } from '../executor/window.js';
import { Procs, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

test('policy: no window before a task is seen; no-op tasks open it up to the cap', { timeout: 10_000 }, () => {
  const w = new AdaptiveWindow({ slots: 1 });
  assert.equal(w.extra, 0, 'nothing observed yet: exactly the slots');
  w.roundTrip(2);
  assert.equal(w.extra, 0, 'a round trip alone says nothing about tasks');
  for (let i = 0; i < 5; i++) w.taskRan(0); // a no-op reads 0 ms on a millisecond clock
  assert.ok(w.extra > 1, `no-op tasks open the window (got ${w.extra})`);
  for (let i = 0; i < 50; i++) w.roundTrip(5);
  assert.equal(w.extra, w.maxExtra, 'bounded by maxExtra');
});

test('policy: the window is about gain × slots × round trip / run time, and 0 for tasks of ten round trips or more', { timeout: 10_000 }, () => {
  const w = new AdaptiveWindow({ slots: 4, initialRoundTripMs: 2 });
  for (let i = 0; i < 100; i++) w.taskRan(1);
  // d → 1 ms, R = 2 ms: 2 × 4 × 2 / 1 = 16.
  assert.ok(w.extra >= 16 && w.extra <= 18, `short tasks: ${w.extra}`);
  w.taskRan(100); // one long task: the run time estimate jumps half way at once
  assert.equal(w.extra, 0, `a task of 25 round trips closes the window at once (estimates ${JSON.stringify(w.estimates)})`);
  for (let i = 0; i < 10; i++) w.taskRan(1);
  assert.equal(w.extra, 0, 'a few short tasks do not reopen it: tasks are not known to be short yet');
  for (let i = 0; i < 200; i++) w.taskRan(1);
  assert.ok(w.extra >= 16, `many short tasks reopen it (${w.extra})`);
  // Slow round trips (a loaded dispatcher, a far one) widen it; they are bounded at 100 ms each.
  const far = new AdaptiveWindow({ slots: 1, initialRoundTripMs: 1 });
  for (let i = 0; i < 200; i++) far.roundTrip(10_000);
  far.taskRan(900);
  assert.equal(far.extra, 1, 'a 900 ms task on a 100 ms round trip: one waiting');
  far.taskRan(5000);
  assert.equal(far.extra, 0, 'tasks over ten times the largest round trip: never a window');
});

test('policy: batchMs keeps that much work waiting for short tasks whatever the round trip, and leaves the long-task guard to the round trip', { timeout: 10_000 }, () => {
  const plain = new AdaptiveWindow({ slots: 1, initialRoundTripMs: 0.5 });
  const batched = new AdaptiveWindow({ slots: 1, initialRoundTripMs: 0.5, batchMs: 10 });
  for (let i = 0; i < 100; i++) {
    plain.taskRan(1);
    batched.taskRan(1);
  }
  // d → 1 ms: 2 × 1 × 0.5 / 1 = 1 without the floor; 2 × 1 × 10 / 1 = 20 with it.
  assert.equal(plain.extra, 1);
  assert.ok(batched.extra >= 20 && batched.extra <= 21, `a 10 ms batch of 1 ms tasks: ${batched.extra}`);
  // A task of 20 ms is 40 round trips: no window, floor or not (the floor does not move the guard).
  batched.taskRan(40);
  assert.equal(batched.extra, 0, `long tasks get no window (estimates ${JSON.stringify(batched.estimates)})`);
});

test('policy: announcing only changes worth a message', { timeout: 10_000 }, () => {
  assert.equal(worthAnnouncing(0, 0), false);
  assert.equal(worthAnnouncing(0, 1), true);
  assert.equal(worthAnnouncing(5, 0), true);
  assert.equal(worthAnnouncing(100, 110), false);
  assert.equal(worthAnnouncing(100, 125), true);
  assert.equal(worthAnnouncing(100, 70), true);
});

const noops = (n: number): TaskSpec[] => Array.from({ length: n }, () => ({ builtin: 'noop' as const }));

test('real processes: the default window grows beyond the slots for no-op tasks and is exactly the slots for long ones', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory']);
  startExecutor(procs, d.url, ['--slots', '1', '--id', 'one']);
  const before = await waitExecutors(d.url, 1);
  assert.equal(before.executors[0].window, 0, 'an executor starts with exactly its slots');
  const client = await connect(d.url);
  t.after(() => client.close());

  const summary = await client.submitMany(noops(300));
  assert.equal(summary.accepted, 300);
  const grown = await waitFor('the window to grow', async () => {
    const w = (await status(d.url)).executors[0].window ?? 0;
    return w > 1 && w;
  });
  assert.ok(grown > 1, `no-op tasks: window ${grown} beyond 1 slot`);

  // One task far longer than any round trip (they count at most 100 ms): the window closes.
  assert.equal((await client.submit({ builtin: 'sleep', ms: 2100 })).status, 'succeeded');
  await waitFor('the window to close', async () => (await status(d.url)).executors[0].window === 0);
  // And it is exactly the slots: of two long tasks one runs, the other waits at the dispatcher.
  const two = [client.submit({ builtin: 'sleep', ms: 2100 }), client.submit({ builtin: 'sleep', ms: 2100 })];
  const s = await waitFor('both accepted', async () => {
    const x = await status(d.url);
    return x.tasks.running + x.tasks.queued === 2 && x;
  });
  assert.deepEqual({ running: s.tasks.running, queued: s.tasks.queued }, { running: 1, queued: 1 });
  for (const r of await Promise.all(two)) assert.equal(r.status, 'succeeded');
});

test('real processes: a fixed --prefetch overrides the adaptive window', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--store', 'memory', '--prefetch', '0']);
  startExecutor(procs, d.url, ['--slots', '1', '--id', 'fixed']);
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  assert.equal((await client.submitMany(noops(300))).accepted, 300);
  // The executor never announces a window to a dispatcher that did not offer it.
  const s = await status(d.url);
  assert.equal(s.executors[0].window, 0);
  const two = [client.submit({ builtin: 'sleep', ms: 1000 }), client.submit({ builtin: 'noop' })];
  const x = await waitFor('both accepted', async () => {
    const y = await status(d.url);
    return y.tasks.running + y.tasks.queued === 2 && y;
  });
  assert.deepEqual({ running: x.tasks.running, queued: x.tasks.queued }, { running: 1, queued: 1 }, 'fixed 0: the noop waits at the dispatcher');
  await Promise.all(two);
});
