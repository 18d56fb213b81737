/**
 * The dispatcher core on its own: no sockets, a manual clock, and every message in both
 * directions passed through the real codec and validators, as the adapter would.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compileInbound,
  ExecutorMessageSchemas,
  type DispatcherToClient,
  type ExecutorMessage,
  type TaskSpec,
} from '../protocol/index.js';
import { codec, fromClient, fromExecutor } from './wire.js';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';
import { Harness } from './core-harness.js';

test('higher priority first, FIFO within a priority', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'low1', builtin: 'noop' }, { id: 'high', builtin: 'noop', priority: 5 }, { id: 'low2', builtin: 'noop' }]);
  h.executor(10, { slots: 3 });
  h.core.schedule();
  const order = h.tasksFor(10).map((m) => m.spec.id);
  assert.deepEqual(order, ['high', 'low1', 'low2']);
});

test('fair share: sessions take turns within a priority', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.client(2);
  h.submit(1, Array.from({ length: 6 }, (_, i) => ({ id: `a${i}`, builtin: 'noop' as const })));
  h.submit(2, [{ id: 'b0', builtin: 'noop' }, { id: 'b1', builtin: 'noop' }]);
  h.executor(10, { slots: 4 });
  h.core.schedule();
  assert.deepEqual(h.tasksFor(10).map((m) => m.spec.id), ['a0', 'b0', 'a1', 'b1']);
});

test('labels: a task goes only to an executor that carries its labels', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'gpu', builtin: 'noop', labels: { gpu: 'a100' } }, { id: 'any', builtin: 'noop' }]);
  h.executor(10, { slots: 2 });
  h.core.schedule();
  assert.deepEqual(h.tasksFor(10).map((m) => m.spec.id), ['any']);
  h.executor(11, { slots: 2, labels: { gpu: 'a100', zone: 'x' } });
  h.core.schedule();
  assert.deepEqual(h.tasksFor(11).map((m) => m.spec.id), ['gpu']);
});

test('push window is the free slots: no prefetch unless asked', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, Array.from({ length: 5 }, () => ({ builtin: 'noop' as const })));
  h.executor(10, { slots: 2 });
  h.core.schedule();
  const first = h.tasksFor(10);
  assert.equal(first.length, 2);
  h.done(10, first[0].uid, first[0].attempt);
  h.core.schedule();
  assert.equal(h.tasksFor(10).length, 1, 'one slot freed, one task sent');

  const p = new Harness({ prefetch: 3 });
  p.client(1);
  p.submit(1, Array.from({ length: 10 }, () => ({ builtin: 'noop' as const })));
  p.executor(10, { slots: 2 });
  p.core.schedule();
  assert.equal(p.tasksFor(10).length, 5);
});

test('pull mode: an executor gets only what it asks for', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, Array.from({ length: 5 }, () => ({ builtin: 'noop' as const })));
  h.executor(10, { slots: 4, mode: 'pull' });
  h.core.schedule();
  assert.equal(h.tasksFor(10).length, 0);
  const pull = fromExecutor({ t: 'pull', n: 3 });
  if (pull.t === 'pull') h.core.pull(10, pull.n);
  h.core.schedule();
  assert.equal(h.tasksFor(10).length, 3);
});

test('lease expiry re-queues with attempt + 1, and a task that keeps losing executors is failed', { timeout: 10_000 }, () => {
  const h = new Harness({ defaultMaxAttempts: 2 });
  h.client(1);
  h.submit(1, [{ id: 'k', builtin: 'sleep', ms: 10_000 }]);
  h.take(1);
  h.executor(10);
  h.core.schedule();
  const [a1] = h.tasksFor(10);
  assert.equal(a1.attempt, 1);
  h.now += 1001;
  h.executor(11); // registered now, so its lease is fresh
  h.core.tick();
  assert.equal(h.closed.get(10), 'TASK_EXECUTOR_LOST');
  h.core.schedule();
  const [a2] = h.tasksFor(11);
  assert.equal(a2.uid, a1.uid);
  assert.equal(a2.attempt, 2);
  h.now += 1001;
  h.core.tick();
  const [r] = h.resultsFor(1);
  assert.equal(r.status, 'lost');
  assert.equal(r.error?.code, 'TASK_EXECUTOR_LOST');
  assert.equal(r.attempts, 2);
});

test('heartbeats keep a lease; a late result of a re-queued task is used once', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'x', builtin: 'noop' }]);
  h.executor(10);
  h.core.schedule();
  const [a] = h.tasksFor(10);
  for (let i = 0; i < 5; i++) {
    h.now += 500;
    h.core.executorSeen(10);
    h.core.tick();
  }
  assert.equal(h.core.view.executorCount, 1, 'still leased');
  h.done(10, a.uid, a.attempt);
  h.done(10, a.uid, a.attempt); // a duplicate delivery
  const results = h.resultsFor(1);
  assert.equal(results.length, 1);
  assert.equal(results[0].status, 'succeeded');
});

test('idempotent submit: the same id twice in a session is one task', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'same', builtin: 'noop' }], 1);
  h.submit(1, [{ id: 'same', builtin: 'noop' }], 2);
  const acks = h.take(1).filter((m) => m.t === 'accepted');
  assert.equal(acks.length, 2);
  assert.equal(h.core.view.queued, 1);
});

test('invalid tasks are rejected one by one; the rest of the batch is accepted', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ builtin: 'noop' }, { cmd: [] } as TaskSpec, { builtin: 'noop', cmd: ['x'] } as TaskSpec, { bogus: 1 } as unknown as TaskSpec]);
  const [ack] = h.take(1).filter((m): m is Extract<DispatcherToClient, { t: 'accepted' }> => m.t === 'accepted');
  assert.equal(ack.accepted, 1);
  assert.deepEqual(ack.rejected.map((r) => [r.index, r.code]), [[1, 'TASK_INVALID'], [2, 'TASK_INVALID'], [3, 'TASK_INVALID']]);
});

test('cancel: a queued task finishes cancelled at once, a running one via its executor', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'run', builtin: 'sleep', ms: 1e6 }, { id: 'wait', builtin: 'noop' }]);
  h.executor(10);
  h.core.schedule();
  const [a] = h.tasksFor(10);
  h.take(1);
  const c = fromClient({ t: 'cancel', ref: 7, ids: ['run', 'wait'] });
  if (c.t === 'cancel') h.core.cancel(1, c, false);
  const msgs = h.take(1);
  assert.deepEqual(msgs.filter((m) => m.t === 'result').map((m) => m.t === 'result' && m.result.id), ['wait']);
  assert.equal(msgs.find((m) => m.t === 'reply')?.t === 'reply' && (msgs.find((m) => m.t === 'reply') as { count?: number }).count, 2);
  assert.deepEqual(h.take(10), [{ t: 'cancel', uid: a.uid, attempt: a.attempt }]);
});

test('a resumed session gets every unacknowledged result again, in order', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1, 'S');
  h.submit(1, Array.from({ length: 3 }, (_, i) => ({ id: `t${i}`, builtin: 'noop' as const })));
  h.executor(10, { slots: 3 });
  h.core.schedule();
  for (const m of h.tasksFor(10)) h.done(10, m.uid, m.attempt);
  h.core.ack(1, 1);
  h.core.clientGone(1);
  h.client(2, 'S');
  const msgs = h.take(2);
  assert.equal(msgs[0].t, 'welcome');
  assert.deepEqual(msgs.slice(1).map((m) => m.t === 'result' && [m.seq, m.result.id]), [[2, 't1'], [3, 't2']]);
});

test('a late result of a re-queued task is used once, and the newer run is cancelled', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'x', builtin: 'sleep', ms: 10_000 }]);
  h.executor(10);
  h.core.schedule();
  const [a1] = h.tasksFor(10);
  // Executor 10 comes back (same incarnation) without the attempt: handed back, re-queued. It
  // comes back in pull mode, asking for nothing, so that the next attempt goes to executor 11.
  h.executor(10, { running: [], mode: 'pull' });
  h.take(10);
  h.executor(11);
  h.core.schedule();
  const [a2] = h.tasksFor(11);
  assert.equal(a2.attempt, a1.attempt + 1);
  h.done(10, a1.uid, a1.attempt); // the first attempt did finish after all
  assert.deepEqual(h.take(11), [{ t: 'cancel', uid: a2.uid, attempt: a2.attempt }]);
  h.done(11, a2.uid, a2.attempt);
  const results = h.resultsFor(1);
  assert.equal(results.length, 1);
  assert.equal(results[0].executor, 'e10');
});

test('every report is acknowledged once received, duplicates and unknown attempts too', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'x', builtin: 'noop' }]);
  h.executor(10);
  h.core.schedule();
  const [a] = h.tasksFor(10);
  h.done(10, a.uid, a.attempt);
  h.done(10, a.uid, a.attempt);
  h.done(10, 999, 1);
  assert.deepEqual(
    h.take(10).filter((m) => m.t === 'ack'),
    [a, a, { uid: 999, attempt: 1 }].map((x) => ({ t: 'ack', done: [{ uid: x.uid, attempt: x.attempt }] })),
  );
});

test('a reconnect loop ends: hand-backs without fault are capped (TASK_REQUEUE_LIMIT)', { timeout: 10_000 }, () => {
  const h = new Harness({ maxRequeues: 3 });
  h.client(1);
  h.submit(1, [{ id: 'loop', builtin: 'noop' }]);
  h.executor(10);
  for (let i = 0; i < 10; i++) {
    h.core.schedule();
    if (h.tasksFor(10).length === 0) break;
    h.executor(10, { running: [] }); // it comes back without the attempt, every time
  }
  const [r] = h.resultsFor(1);
  assert.equal(r?.status, 'lost');
  assert.equal(r.error?.code, 'TASK_REQUEUE_LIMIT');
  assert.equal(r.attempts, 4);
});

test('a retryable result code (SPAWN_HELPER_LOST) is retried up to maxAttempts', { timeout: 10_000 }, () => {
  const h = new Harness({ defaultMaxAttempts: 2 });
  h.client(1);
  h.submit(1, [{ id: 'r', cmd: ['true'] }]);
  h.executor(10);
  const helperLost = (uid: number, attempt: number) => {
    const m = fromExecutor({
      t: 'done',
      result: { uid, attempt, status: 'failed', exitCode: null, signal: 'SIGKILL', stdout: '', stderr: '', truncated: false, startedAt: h.now, finishedAt: h.now, error: { code: 'SPAWN_HELPER_LOST', message: 'helper died' } },
    });
    if (m.t === 'done') h.core.attemptDone(10, m.result);
  };
  h.core.schedule();
  const [a1] = h.tasksFor(10);
  helperLost(a1.uid, a1.attempt);
  assert.equal(h.resultsFor(1).length, 0, 'retried, not finished');
  h.core.schedule();
  const [a2] = h.tasksFor(10);
  assert.equal(a2.attempt, 2);
  helperLost(a2.uid, a2.attempt);
  const [r] = h.resultsFor(1);
  assert.equal(r.status, 'failed');
  assert.equal(r.error?.code, 'SPAWN_HELPER_LOST');
  assert.equal(r.attempts, 2);
});

test('a report the dispatcher cannot accept ends its attempt failed with RESULT_INVALID', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'big', cmd: ['yes'] }]);
  h.executor(10);
  h.core.schedule();
  const [a] = h.tasksFor(10);
  h.core.attemptInvalid(10, a.uid, a.attempt, 'done: /result/stdout: too long');
  const [r] = h.resultsFor(1);
  assert.equal(r.status, 'failed');
  assert.equal(r.error?.code, 'RESULT_INVALID');
  assert.match(r.error!.message, /too long/);
  assert.deepEqual(h.take(10), [{ t: 'ack', done: [{ uid: a.uid, attempt: a.attempt }] }]);
});

test('a cancelled task handed back by its executor ends cancelled instead of running again', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'c', builtin: 'sleep', ms: 1e6 }]);
  h.executor(10);
  h.core.schedule();
  h.tasksFor(10);
  const c = fromClient({ t: 'cancel', ref: 1, ids: ['c'] });
  if (c.t === 'cancel') h.core.cancel(1, c, false);
  h.executor(10, { running: [] });
  h.core.schedule();
  assert.equal(h.tasksFor(10).length, 0);
  const [r] = h.resultsFor(1);
  assert.equal(r.status, 'cancelled');
});

test('a resubmitted id is named in accepted.known, finished or not', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'a', builtin: 'noop' }, { id: 'b', builtin: 'noop' }], 1);
  h.executor(10);
  h.core.schedule();
  const [first] = h.tasksFor(10);
  h.done(10, first.uid, first.attempt);
  h.take(1);
  h.submit(1, [{ id: 'a', builtin: 'noop' }, { id: 'b', builtin: 'noop' }, { id: 'c', builtin: 'noop' }], 2);
  const [ack] = h.take(1).filter((m) => m.t === 'accepted');
  assert.deepEqual(ack.t === 'accepted' && ack.known, [
    { index: 0, id: 'a', finished: true },
    { index: 1, id: 'b', finished: false },
  ]);
});

test('session ids come from the injected id source', { timeout: 10_000 }, () => {
  const sent: DispatcherToClient[] = [];
  const out: Outbox = { toClient: (_c, m) => sent.push(m), toExecutor: () => {}, resultReceived: () => {}, close: () => {} };
  let n = 0;
  const core = new DispatcherCore({ heartbeatMs: 100, leaseMs: 1000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 1000 }, out, { now: () => 0 }, undefined, {
    session: () => `s-${++n}`,
    sessionKey: () => 'k'.repeat(24),
  });
  core.openSession(1, {}, false);
  core.openSession(2, {}, false);
  assert.deepEqual(
    sent.map((m) => m.t === 'welcome' && m.session),
    ['s-1', 's-2'],
  );
});

test('sessions belong to whoever opened them: resume and cancel need the key, cancel in every session the administrator', { timeout: 10_000 }, () => {
  const h = new Harness();
  assert.equal(h.client(1, 'mine', 'owner-key-0123456789'), null);
  h.submit(1, [{ id: 'a', builtin: 'sleep', ms: 1e6 }]);
  const welcome = h.take(1).find((m) => m.t === 'welcome');
  assert.equal(welcome?.t === 'welcome' && 'key' in welcome && welcome.key, 'owner-key-0123456789', 'a chosen key is the session key, returned in the welcome');
  h.client(2);
  h.take(2);
  // Another client: no key, a wrong key, then the right one while the owner reads (one reader).
  assert.equal(h.client(3, 'mine', 'wrong-key-0123456789')?.code, 'SESSION_FORBIDDEN');
  assert.equal(h.client(3, 'mine', 'owner-key-0123456789')?.code, 'SESSION_BUSY');
  const cancel = (conn: number, msg: Record<string, unknown>, admin: boolean) => {
    const c = fromClient({ t: 'cancel', ref: 9, ids: ['a'], ...msg });
    if (c.t === 'cancel') h.core.cancel(conn, c, admin);
    return h.take(conn).find((m) => m.t === 'reply');
  };
  const refused = (r: DispatcherToClient | undefined) => (r?.t === 'reply' && !r.ok ? r.error?.code : 'ok');
  assert.equal(refused(cancel(2, { session: 'mine' }, false)), 'SESSION_FORBIDDEN');
  assert.equal(refused(cancel(2, { session: 'mine', key: 'wrong-key-0123456789' }, false)), 'SESSION_FORBIDDEN');
  assert.equal(refused(cancel(2, { session: '*' }, false)), 'ADMIN_REQUIRED');
  assert.deepEqual(h.take(1).filter((m) => m.t === 'result'), [], 'refusals change nothing');
  const ok = cancel(2, { session: 'mine', key: 'owner-key-0123456789' }, false);
  assert.equal(ok?.t === 'reply' && ok.count, 1);
});

test('F1: an executor speaks only for attempts given to it; forged reports change nothing', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'run', builtin: 'sleep', ms: 1e6 }, { id: 'waiting', builtin: 'noop', labels: { pool: 'none' } }]);
  h.executor(10);
  h.executor(11, { mode: 'pull' });
  h.core.schedule();
  const [a] = h.tasksFor(10);
  const queuedUid = a.uid + 1;
  h.take(11);
  h.done(11, a.uid, a.attempt); // another executor's attempt
  h.done(11, queuedUid, 1); // a queued task never dispatched
  h.done(10, a.uid, a.attempt + 5); // an attempt that never existed
  assert.deepEqual(
    h.take(11).filter((m) => m.t === 'error').map((m) => m.t === 'error' && m.code),
    ['ATTEMPT_NOT_YOURS', 'ATTEMPT_NOT_YOURS'],
  );
  assert.ok(h.take(10).some((m) => m.t === 'error' && m.code === 'ATTEMPT_NOT_YOURS'));
  assert.equal(h.resultsFor(1).length, 0, 'no task finished');
  assert.equal(h.core.view.running, 1);
  assert.equal(h.core.view.queued, 1);
  h.done(10, a.uid, a.attempt);
  assert.deepEqual(h.resultsFor(1).map((r) => [r.id, r.status]), [['run', 'succeeded']]);
});

test('an executor id cannot be taken by another process while its connection lives', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.executor(10, { id: 'e', incarnation: 'real' });
  h.executor(20, { id: 'e', incarnation: 'stranger' });
  assert.equal(h.closed.get(20), 'EXECUTOR_ID_IN_USE');
  assert.equal(h.closed.has(10), false, 'the running executor is not ended');
  h.executor(30, { id: 'e', incarnation: 'real' }); // its own redial takes the id over
  assert.equal(h.closed.get(10), 'EXECUTOR_ID_IN_USE');
  assert.equal(h.closed.has(30), false);
});

test('ids never collide: generated ids are reserved, a duplicate in one submit is refused and not counted', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ builtin: 'noop' }, { id: '@1', builtin: 'noop' }, { id: 't1', builtin: 'noop' }, { id: 'x', builtin: 'noop' }, { id: 'x', builtin: 'noop' }]);
  const [ack] = h.take(1).filter((m) => m.t === 'accepted');
  assert.ok(ack.t === 'accepted');
  assert.equal(ack.accepted, 3);
  assert.deepEqual(ack.rejected.map((r) => [r.index, r.code]), [[1, 'TASK_INVALID'], [4, 'TASK_DUPLICATE']]);
  h.executor(10, { slots: 3 });
  h.core.schedule();
  assert.deepEqual(h.tasksFor(10).map((m) => m.spec.id ?? '(generated)'), ['(generated)', 't1', 'x']);
});

test('F4/F6: a non-string message type is INVALID_MESSAGE; 64-bit integers decode as numbers', { timeout: 10_000 }, () => {
  const validate = compileInbound<ExecutorMessage>(ExecutorMessageSchemas);
  // [{t: uint64 5}] and [{t: 'hb', at: uint64 1762518641152}] as a standard msgpack encoder writes them.
  const typeIsInt = Buffer.from('9181a174cf0000000000000005', 'hex');
  const [m1] = codec.decode(typeIsInt);
  const v1 = validate(m1);
  assert.equal(v1.ok, false);
  assert.equal(!v1.ok && v1.error.code, 'INVALID_MESSAGE');
  const hb = Buffer.from('9182a174a26862a26174cf0000019a5e4c2a00', 'hex');
  const [m2] = codec.decode(hb);
  assert.deepEqual(m2, { t: 'hb', at: 1762518641152 });
  assert.equal(validate(m2).ok, true);
});

test('after a restart, the executors of the store get at least 12 s to come back, however short the lease', { timeout: 10_000 }, () => {
  const h = new Harness({ leaseMs: 1000 });
  h.core.restoreExecutor({ id: 'back', hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: 'i1', mode: 'push', running: [] }, h.now);
  h.now += 11_000; // past the lease, within the redial backoff's reach
  h.core.tick();
  assert.equal(h.core.view.executorCount, 1);
  h.now += 2_000;
  h.core.tick();
  assert.equal(h.core.view.executorCount, 0);
});
