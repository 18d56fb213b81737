/**
 * The core's parts on their own (sessions, registry, scheduler, the attempt rule): pure, no
 * sockets, time passed in. The facade's behaviour through the real codec is in core.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttemptResult, ExecutorInfo, TaskSpec } from '../protocol/index.js';
import { judgeAttempt } from '../dispatcher/attempts.js';
import { newSession, newTask, nullJournal, type ExecutorRecord, type SessionRecord, type TaskRecord } from '../dispatcher/model.js';
import { ExecutorRegistry } from '../dispatcher/registry.js';
import { Scheduler } from '../dispatcher/scheduler.js';
import { SessionTable, type Opened } from '../dispatcher/sessions.js';

const limits = { defaultMaxAttempts: 3, maxRequeues: 2 };
const session = newSession('s', 0, null, null, null);
let uid = 0;
const task = (spec: Partial<TaskSpec> = {}): TaskRecord => newTask(++uid, `t${uid}`, session, { builtin: 'noop', ...spec } as TaskSpec, 0);
const result = (over: Partial<AttemptResult>): AttemptResult => ({
  uid: 1, attempt: 1, status: 'failed', exitCode: 1, signal: null, stdout: '', stderr: '', truncated: false, startedAt: 0, finishedAt: 0, ...over,
});
const info = (id: string, over: Partial<ExecutorInfo> = {}): ExecutorInfo => ({
  id, hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: 'i', mode: 'push', running: [], ...over,
});

test('attempt rule: crashes count against maxAttempts, hand-backs only against maxRequeues', { timeout: 5000 }, () => {
  const t = task({ maxAttempts: 2 });
  t.attempt = 1;
  assert.deepEqual(judgeAttempt(t, { kind: 'requeue' }, limits), { retry: true });
  t.attempt = 2;
  assert.deepEqual(judgeAttempt(t, { kind: 'crash' }, limits), { retry: true }, 'one hand-back did not use up an attempt');
  t.attempt = 3;
  const v = judgeAttempt(t, { kind: 'crash' }, limits);
  assert.equal(v.retry, false);
  assert.equal(!v.retry && v.error?.code, 'TASK_EXECUTOR_LOST');
  assert.equal(t.lost, 2);
  const r = task();
  for (let i = 1; i <= 2; i++) assert.deepEqual(judgeAttempt(r, { kind: 'requeue' }, limits), { retry: true });
  const end = judgeAttempt(r, { kind: 'requeue' }, limits);
  assert.equal(!end.retry && end.error?.code, 'TASK_REQUEUE_LIMIT');
});

test('attempt rule: retryOnExit and retryable codes retry; other failures and successes end', { timeout: 5000 }, () => {
  const t = task({ retryOnExit: [3] });
  t.attempt = 1;
  assert.deepEqual(judgeAttempt(t, { kind: 'result', result: result({ exitCode: 3 }) }, limits), { retry: true });
  assert.deepEqual(judgeAttempt(t, { kind: 'result', result: result({ exitCode: null, error: { code: 'SPAWN_HELPER_LOST', message: '' } }) }, limits), { retry: true });
  assert.deepEqual(judgeAttempt(t, { kind: 'result', result: result({ exitCode: 4, error: { code: 'TASK_FAILED', message: 'x' } }) }, limits), {
    retry: false, status: 'failed', error: { code: 'TASK_FAILED', message: 'x' },
  });
  assert.deepEqual(judgeAttempt(t, { kind: 'result', result: result({ status: 'succeeded', exitCode: 0 }) }, limits), { retry: false, status: 'succeeded' });
  t.attempt = 3;
  const last = judgeAttempt(t, { kind: 'result', result: result({ exitCode: 3 }) }, limits);
  assert.equal(last.retry, false, 'no attempts left');
});

/** Opens or resumes, failing the test on a refusal. */
function opened(r: Opened): Exclude<Opened, { refused: string }> {
  if ('refused' in r) assert.fail(`refused: ${r.refused} ${r.message}`);
  return r;
}

test('sessions: open, one reader with the key, ack, detach, expire by client lease, collect after retention', { timeout: 5000 }, () => {
  const ids = ['a', 'b'];
  const table = new SessionTable(nullJournal, { session: () => ids.shift()!, sessionKey: () => 'k'.repeat(24) });
  const { session: s, resumed } = opened(table.open(1, 0, {}, false));
  assert.equal(s.id, 'a');
  assert.equal(resumed, false);
  assert.equal(s.key, 'k'.repeat(24));
  // A second reader is refused, with or without the key; nothing changes for the first.
  assert.equal((table.open(2, 0, { id: 'a', key: 'k'.repeat(24) }, false) as { refused: string }).refused, 'SESSION_BUSY');
  assert.equal((table.open(2, 0, { id: 'a' }, false) as { refused: string }).refused, 'SESSION_FORBIDDEN');
  assert.equal((table.open(2, 0, { id: 'a', key: 'x'.repeat(24) }, false) as { refused: string }).refused, 'SESSION_FORBIDDEN');
  assert.equal((table.open(2, 0, { id: 'a' }, true) as { refused: string }).refused, 'SESSION_BUSY', 'the administrator needs no key, but the session still has one reader');
  assert.equal(table.of(1), s);
  assert.equal(table.of(2), undefined);
  // A holder gone silent past its heartbeats (a half-open connection) is replaced, with the key only.
  assert.equal((table.open(2, 0, { id: 'a' }, false, () => true) as { refused: string }).refused, 'SESSION_FORBIDDEN');
  assert.equal(opened(table.open(2, 0, { id: 'a', key: 'k'.repeat(24) }, false, (holder) => holder === 1)).replaced, 1);
  assert.equal(table.of(1), undefined);
  table.detach(1, 0);
  assert.equal(table.of(2), s, 'a late close of the replaced connection changes nothing');
  table.detach(2, 0);
  const again = opened(table.open(2, 0, { id: 'a', key: 'k'.repeat(24), leaseMs: 100 }, false));
  assert.equal(again.resumed, true);
  assert.equal(table.of(2), s);
  for (let i = 0; i < 3; i++) table.append(s, `x${i}`, { id: `x${i}` } as never);
  table.ack(s, 2);
  assert.deepEqual(s.unacked.map((u) => u.seq), [3]);
  s.tasks.set('pending', {} as TaskRecord);
  table.detach(2, 1000);
  assert.deepEqual(table.expire(1050, 10_000), [], 'within its lease');
  assert.deepEqual(table.expire(1101, 10_000).map((x) => x.id), ['a'], 'past its client lease with a task unfinished');
  s.tasks.clear();
  table.expire(1101 + 10_001, 10_000);
  assert.equal(table.get('a'), undefined, 'collected after retention');
});

test('registry: reconciliation tells crashes from hand-backs; credit and the hungry set', { timeout: 5000 }, () => {
  const reg = new ExecutorRegistry(nullJournal);
  const { exec } = reg.register(1, info('e', { slots: 2 }), 0, 1)!;
  assert.equal(exec.credit, 3);
  assert.ok(reg.hungry.has(exec));
  const a = task();
  const b = task();
  for (const t of [a, b]) {
    t.attempt = 1;
    reg.hold(exec, t);
  }
  // Same incarnation, reports only `a`: `b` was lost in transit.
  const back = reg.register(2, info('e', { slots: 2, running: [{ uid: a.uid, attempt: 1 }] }), 10, 1)!;
  assert.equal(back.displaced, 1);
  assert.deepEqual(back.missing.map((m) => [m.task.uid, m.crashed]), [[b.uid, false]]);
  assert.equal(back.exec.credit, 2, 'slots + prefetch minus what it still holds');
  // Another process cannot take the id while this connection lives.
  assert.equal(reg.register(9, info('e', { incarnation: 'stranger' }), 15, 0), null);
  assert.equal(exec.conn, 2);
  // A new incarnation once the old connection is gone: what it held died with it.
  reg.detach(2);
  const crashed = reg.register(3, info('e', { slots: 2, incarnation: 'j' }), 20, 0)!;
  assert.ok(crashed.missing.every((m) => m.crashed));
  assert.deepEqual(reg.expired(20 + 1001, 1000).map((e) => e.info.id), ['e']);
  assert.equal(reg.detach(3)?.info.id, 'e');
  assert.equal(exec.conn, null);
  assert.ok(!reg.hungry.has(exec));
});

test('scheduler: cache hits first, then queue order; labels fit; max-cache-hit waits for the holder', { timeout: 5000 }, () => {
  const reg = new ExecutorRegistry(nullJournal);
  const sent: Array<[string, string]> = [];
  const dispatch = (t: TaskRecord, e: ExecutorRecord) => {
    t.state = 'dispatched';
    reg.hold(e, t);
    sent.push([t.id, e.info.id]);
  };
  const sched = new Scheduler({ dataPolicy: 'max-cache-hit', cacheWaitMs: 1000 }, reg, dispatch);
  const plain = task();
  const gpu = task({ labels: { gpu: 'yes' } });
  const data = task({ inputs: [{ src: 's3://b/k', dst: 'k' }] });
  for (const t of [plain, gpu, data]) sched.enqueue(t);
  const holder = reg.register(1, info('holder'), 0, 0)!.exec;
  reg.setHolds(holder, new Set(data.locality!));
  const other = reg.register(2, info('other', { slots: 2 }), 0, 0)!.exec;
  holder.credit = 0; // busy
  reg.hungry.delete(holder);
  sched.schedule(10);
  assert.deepEqual(sent, [[plain.id, 'other']], 'the labelled task does not fit; the data task waits for its holder');
  reg.addCredit(holder, 1);
  sched.schedule(20);
  assert.deepEqual(sent.slice(1), [[data.id, 'holder']]);
  const labelled = reg.register(3, info('gpu', { labels: { gpu: 'yes' } }), 0, 0)!.exec;
  sched.schedule(30);
  assert.deepEqual(sent.slice(2), [[gpu.id, labelled.info.id]]);
  assert.equal(sched.size, 0);
});
