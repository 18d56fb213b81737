/**
 * Job arrays and dependencies in the pure core (dispatcher/arrays.ts, dependencies.ts): every
 * message through the real codec and validators, a manual clock, no sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type DispatcherToClient,
  type DispatcherToExecutor,
  type TaskSpec,
} from '../protocol/index.js';
import { fromClient, fromExecutor, toClient, toExecutor } from './wire.js';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';
import { ARRAY_WINDOW, elementSpec, parseElementId } from '../dispatcher/arrays.js';

type Assign = Extract<DispatcherToExecutor, { t: 'task' }>;
type Result = Extract<DispatcherToClient, { t: 'result' }>;

class Harness implements Outbox {
  readonly sent = new Map<number, Array<DispatcherToClient | DispatcherToExecutor>>();
  readonly core = new DispatcherCore({ heartbeatMs: 100, leaseMs: 1000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 60_000 }, this, { now: () => 1_000 });
  toClient(conn: number, msg: DispatcherToClient): void {
    this.#push(conn, toClient(msg));
  }
  toExecutor(conn: number, msg: DispatcherToExecutor): void {
    this.#push(conn, toExecutor(msg));
  }
  resultReceived(): void {}
  close(): void {}
  #push(conn: number, msg: DispatcherToClient | DispatcherToExecutor): void {
    let list = this.sent.get(conn);
    if (!list) this.sent.set(conn, (list = []));
    list.push(msg);
  }
  take(conn: number): Array<DispatcherToClient | DispatcherToExecutor> {
    const list = this.sent.get(conn) ?? [];
    this.sent.set(conn, []);
    return list;
  }
  client(conn: number): void {
    const hello = fromClient({ t: 'hello', v: 1, role: 'client', caps: [] });
    if (hello.t === 'hello') this.core.openSession(conn, {}, true);
    this.take(conn);
  }
  submit(conn: number, tasks: TaskSpec[]): Extract<DispatcherToClient, { t: 'accepted' }> {
    const m = fromClient({ t: 'submit', ref: 1, tasks });
    if (m.t === 'submit') this.core.submit(conn, m);
    const msgs = this.take(conn);
    this.sent.set(conn, msgs.filter((x) => x.t !== 'accepted')); // results it caused stay to be read
    return msgs.find((x) => x.t === 'accepted') as Extract<DispatcherToClient, { t: 'accepted' }>;
  }
  executor(conn: number, slots: number): void {
    const m = fromExecutor({ t: 'hello', v: 1, role: 'executor', caps: [], executor: { id: `e${conn}`, hostname: 'h', addresses: [], slots, memory: 0, labels: {}, version: 't', incarnation: 'i', mode: 'push', running: [] } });
    if (m.t === 'hello') this.core.registerExecutor(conn, m.executor);
    this.take(conn);
  }
  /** Schedules, and returns the assignments the executor got. */
  run(conn: number): Assign[] {
    this.core.schedule();
    return this.take(conn).filter((m): m is Assign => m.t === 'task');
  }
  done(conn: number, a: Assign, status: 'succeeded' | 'failed' = 'succeeded', exitCode = status === 'succeeded' ? 0 : 1): void {
    const m = fromExecutor({ t: 'done', result: { uid: a.uid, attempt: a.attempt, status, exitCode, signal: null, stdout: '', stderr: '', truncated: false, startedAt: 1, finishedAt: 2 } });
    if (m.t === 'done') this.core.attemptDone(conn, m.result);
  }
  results(conn: number): Result[] {
    return this.take(conn).filter((m): m is Result => m.t === 'result');
  }
  info(id: string) {
    return this.core.findTasks({ ids: [id] }).tasks[0];
  }
}

test('element specs: {index} in cmd, env, cwd and stdin; FALCONET_ARRAY_INDEX; element ids parse', { timeout: 10_000 }, () => {
  const spec = elementSpec({ id: 'A', array: { from: 1, to: 3 }, after: ['x'], cmd: ['prog', '{index}', 'n{index}.txt'], env: { K: 'v{index}' }, cwd: '/w/{index}', stdin: 'in {index}' }, 7);
  assert.deepEqual(spec, { cmd: ['prog', '7', 'n7.txt'], env: { K: 'v7', FALCONET_ARRAY_INDEX: '7' }, cwd: '/w/7', stdin: 'in 7' });
  assert.deepEqual(parseElementId('job[12]'), { array: 'job', index: 12 });
  assert.deepEqual(parseElementId('a[b][3]'), { array: 'a[b]', index: 3 });
  assert.equal(parseElementId('job[x]'), null);
  assert.equal(parseElementId('[3]'), null);
});

test('an array: one result per element under ID[i], a failing element retried on its own, remaining counts every element', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  const acc = h.submit(1, [{ id: 'A', array: { from: 1, to: 5 }, cmd: ['prog', '{index}'], retryOnExit: [3] }]);
  assert.equal(acc.accepted, 1);
  assert.equal(acc.remaining, 5);
  h.executor(10, 5);
  const first = h.run(10);
  assert.deepEqual(first.map((a) => a.spec.cmd), [1, 2, 3, 4, 5].map((i) => ['prog', String(i)]));
  for (const a of first) h.done(10, a, a.spec.cmd![1] === '4' ? 'failed' : 'succeeded', a.spec.cmd![1] === '4' ? 3 : 0);
  const r1 = h.results(1);
  assert.deepEqual(r1.map((r) => r.result.id), ['A[1]', 'A[2]', 'A[3]', 'A[5]']);
  assert.equal(r1.at(-1)!.remaining, 1);
  assert.equal(h.info('A').state, 'running');
  const again = h.run(10);
  assert.deepEqual(again.map((a) => [a.spec.cmd, a.attempt]), [[['prog', '4'], 2]]);
  h.done(10, again[0]);
  const r2 = h.results(1);
  assert.deepEqual(r2.map((r) => [r.result.id, r.result.attempts, r.remaining]), [['A[4]', 2, 0]]);
  assert.equal(h.info('A').state, 'succeeded');
  assert.equal(h.info('A[4]').state, 'succeeded');
  // A resubmit of the array is one array: known and finished, nothing runs again.
  const re = h.submit(1, [{ id: 'A', array: { from: 1, to: 5 }, cmd: ['prog', '{index}'] }]);
  assert.deepEqual(re.known, [{ index: 0, id: 'A', finished: true }]);
  assert.deepEqual(h.run(10), []);
});

test('a queued array of 1,000,000 holds at most ARRAY_WINDOW element records; cancel ends every element once', { timeout: 60_000 }, () => {
  const h = new Harness();
  h.client(1);
  const acc = h.submit(1, [{ id: 'big', array: { from: 0, to: 999_999 }, builtin: 'noop' }]);
  assert.equal(acc.remaining, 1_000_000);
  assert.equal(h.core.view.queued, 1_000_000);
  assert.equal(h.info('big[999999]').state, 'queued');
  assert.equal(h.info('big[5]').state, 'queued');
  // One element cancelled before it has a record; then the whole array.
  const c1 = fromClient({ t: 'cancel', ref: 2, ids: ['big[500000]'] });
  if (c1.t === 'cancel') h.core.cancel(1, c1, false);
  const one = h.take(1).filter((m): m is Result => m.t === 'result');
  assert.deepEqual(one.map((r) => [r.result.id, r.result.status]), [['big[500000]', 'cancelled']]);
  const c2 = fromClient({ t: 'cancel', ref: 3, ids: ['big'] });
  if (c2.t === 'cancel') h.core.cancel(1, c2, false);
  const all = h.take(1).filter((m): m is Result => m.t === 'result');
  assert.equal(all.length, 999_999);
  assert.equal(new Set(all.map((r) => r.result.id)).size, 999_999);
  assert.equal(all.at(-1)!.remaining, 0);
  assert.equal(h.info('big').state, 'failed');
  assert.ok(ARRAY_WINDOW <= 4096);
});

test('dependencies: a diamond runs in order, whatever the order of the submit', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  const acc = h.submit(1, [
    { id: 'd', builtin: 'noop', after: ['b', 'c'] },
    { id: 'b', builtin: 'noop', after: ['a'] },
    { id: 'c', builtin: 'noop', after: ['a'] },
    { id: 'a', builtin: 'noop' },
  ]);
  assert.deepEqual(acc.rejected, []);
  assert.equal(acc.remaining, 4);
  h.executor(10, 4);
  assert.equal(h.info('d').waiting, 'waiting for the tasks it names in after to succeed');
  const s1 = h.run(10);
  assert.deepEqual(s1.map((a) => a.spec.id), ['a']);
  assert.equal(h.core.view.running, 1);
  h.done(10, s1[0]);
  const s2 = h.run(10);
  assert.deepEqual(s2.map((a) => a.spec.id).sort(), ['b', 'c']);
  h.done(10, s2[0]);
  assert.deepEqual(h.run(10), []);
  h.done(10, s2[1]);
  const s3 = h.run(10);
  assert.deepEqual(s3.map((a) => a.spec.id), ['d']);
});

test('dependencies: a failure cancels its dependants transitively with DEPENDENCY_FAILED; later submits see finished states', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.submit(1, [{ id: 'a', builtin: 'noop', maxAttempts: 1 }, { id: 'b', builtin: 'noop', after: ['a'] }, { id: 'c', builtin: 'noop', after: ['b'] }, { id: 'x', builtin: 'noop' }]);
  h.executor(10, 4);
  const s = h.run(10);
  h.done(10, s.find((a) => a.spec.id === 'a')!, 'failed');
  const r = h.results(1).map((m) => m.result);
  assert.deepEqual(r.map((x) => [x.id, x.status, x.error?.code]), [['a', 'failed', x(r[0])], ['b', 'cancelled', 'DEPENDENCY_FAILED'], ['c', 'cancelled', 'DEPENDENCY_FAILED']]);
  assert.match(r[1].error!.message, /dependency a ended failed/);
  assert.match(r[2].error!.message, /dependency b ended cancelled \(DEPENDENCY_FAILED\)/);
  // A later task naming a failed one ends at once; naming a succeeded one runs.
  h.done(10, s.find((a) => a.spec.id === 'x')!);
  h.results(1);
  h.submit(1, [{ id: 'late-bad', builtin: 'noop', after: ['a'] }, { id: 'late-ok', builtin: 'noop', after: ['x'] }]);
  assert.deepEqual(h.results(1).map((m) => [m.result.id, m.result.error?.code]), [['late-bad', 'DEPENDENCY_FAILED']]);
  assert.deepEqual(h.run(10).map((a) => a.spec.id), ['late-ok']);
});
const x = (r: { error?: { code: string } }) => r.error?.code;

test('dependencies: cycles and unknown ids are refused per task at submit, with what waits behind them', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  const acc = h.submit(1, [
    { id: 'p', builtin: 'noop', after: ['q'] },
    { id: 'q', builtin: 'noop', after: ['p'] },
    { id: 'behind', builtin: 'noop', after: ['q'] },
    { id: 'self', builtin: 'noop', after: ['self'] },
    { id: 'lost', builtin: 'noop', after: ['nobody'] },
    { id: 'behind-lost', builtin: 'noop', after: ['lost'] },
    { id: 'fine', builtin: 'noop' },
  ]);
  const codes = Object.fromEntries(acc.rejected.map((r) => [r.id, r.code]));
  assert.deepEqual(codes, { p: 'DEPENDENCY_CYCLE', q: 'DEPENDENCY_CYCLE', behind: 'DEPENDENCY_CYCLE', self: 'DEPENDENCY_CYCLE', lost: 'DEPENDENCY_UNKNOWN', 'behind-lost': 'DEPENDENCY_UNKNOWN' });
  assert.equal(acc.accepted, 1);
  assert.equal(acc.remaining, 1);
});

test('an array after a task waits for it; a task after an array waits for every element; elements may not be named', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  const acc = h.submit(1, [
    { id: 'prep', builtin: 'noop' },
    { id: 'A', array: { from: 1, to: 3 }, builtin: 'noop', after: ['prep'] },
    { id: 'merge', builtin: 'noop', after: ['A'] },
    { id: 'bad', builtin: 'noop', after: ['A[2]'] },
  ]);
  assert.deepEqual(acc.rejected.map((r) => [r.id, r.code]), [['bad', 'DEPENDENCY_UNKNOWN']]);
  assert.equal(acc.remaining, 5);
  h.executor(10, 10);
  const s1 = h.run(10);
  assert.deepEqual(s1.map((a) => a.spec.id), ['prep']);
  assert.match(h.info('A[2]').waiting!, /waits for the tasks it names in after/);
  h.done(10, s1[0]);
  const s2 = h.run(10);
  assert.equal(s2.length, 3);
  for (const a of s2) h.done(10, a);
  assert.deepEqual(h.run(10).map((a) => a.spec.id), ['merge']);
});

test('memoized results apply when a dependency releases a task, and per element with {index} in an array key', { timeout: 10_000 }, async () => {
  const h = new Harness();
  h.client(1);
  h.executor(10, 4);
  h.submit(1, [{ id: 'first', cmd: ['echo', 'x'], cacheKey: 'k' }]);
  const [a] = h.run(10);
  h.done(10, a);
  assert.deepEqual(h.results(1).map((r) => [r.result.id, r.result.cached ?? false]), [['first', false]]);
  // `later` has the same key and waits for `gate`: released, it takes the memoized result.
  h.submit(1, [{ id: 'gate', builtin: 'noop' }, { id: 'later', cmd: ['echo', 'x'], cacheKey: 'k', after: ['gate'] }]);
  const gate = h.run(10);
  assert.deepEqual(gate.map((x) => x.spec.builtin ?? x.spec.cmd), ['noop']);
  h.done(10, gate[0]);
  assert.deepEqual(h.run(10), [], 'the released task did not run');
  await new Promise((r) => setImmediate(r)); // a hit finishes in a later turn, after its accepted
  const got = h.results(1).map((r) => [r.result.id, r.result.cached ?? false]);
  assert.deepEqual(got, [['gate', false], ['later', true]]);
  assert.equal(elementSpec({ cmd: ['x'], cacheKey: 'step-{index}', array: { from: 1, to: 2 } }, 2).cacheKey, 'step-2');
});
