/**
 * The executor's result outbox and the one function that fits results to the protocol's limits
 * (executor/delivery.ts), on their own: no sockets, no processes. Every fitted result is checked
 * against the real `done` validator, the one the dispatcher runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AttemptResultSchema, ErrorCode, LIMITS, compileInbound, ExecutorMessageSchemas, type AttemptResult, type ExecutorMessage } from '../protocol/index.js';
import { ATTEMPT_RESULT_KEYS, ResultOutbox, fitResult } from '../executor/delivery.js';

const validate = compileInbound<ExecutorMessage>(ExecutorMessageSchemas);

function result(uid: number, attempt = 1, extra: Partial<AttemptResult> = {}): AttemptResult {
  return { uid, attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, startedAt: 1, finishedAt: 2, ...extra };
}

/** Whether the dispatcher would accept `r` in a `done`. */
function acceptable(r: AttemptResult): boolean {
  return validate({ t: 'done', result: r }).ok;
}

test('results are kept, in order, until acknowledged; acks of unknown attempts are ignored', { timeout: 60_000 }, () => {
  const box = new ResultOutbox();
  box.add(result(1));
  box.add(result(2));
  box.add(result(3));
  assert.equal(box.size, 3);
  assert.deepEqual(box.refs(), [{ uid: 1, attempt: 1 }, { uid: 2, attempt: 1 }, { uid: 3, attempt: 1 }]);
  assert.equal(box.ack([{ uid: 2, attempt: 1 }, { uid: 9, attempt: 1 }, { uid: 1, attempt: 7 }]), 1);
  assert.deepEqual(box.pending().map((r) => r.uid), [1, 3]);
  assert.equal(box.holds({ uid: 2, attempt: 1 }), false);
  assert.equal(box.holds({ uid: 3, attempt: 1 }), true);
  // Acknowledged twice (the dispatcher acks duplicates too): nothing more to forget.
  assert.equal(box.ack([{ uid: 2, attempt: 1 }]), 0);
  assert.equal(box.ack([{ uid: 1, attempt: 1 }, { uid: 3, attempt: 1 }]), 2);
  assert.equal(box.size, 0);
  assert.deepEqual(box.pending(), []);
  assert.deepEqual(box.refs(), []);
});

test('pending() is what to send after each welcome: the same results again until acked', { timeout: 60_000 }, () => {
  const box = new ResultOutbox();
  box.add(result(1));
  const first = box.pending();
  const second = box.pending();
  assert.deepEqual(second, first, 'sending does not consume: a frame may be lost with its connection');
  box.add(result(2));
  assert.deepEqual(box.pending().map((r) => r.uid), [1, 2]);
  box.ack([{ uid: 1, attempt: 1 }]);
  assert.deepEqual(box.pending().map((r) => r.uid), [2]);
});

test('an outbox is keyed by attempt: two attempts of one task are kept and acked apart', { timeout: 60_000 }, () => {
  const box = new ResultOutbox();
  box.add(result(5, 1, { status: 'failed', exitCode: 3, error: { code: ErrorCode.TASK_FAILED, message: 'exited with code 3' } }));
  box.add(result(5, 2));
  assert.deepEqual(box.refs(), [{ uid: 5, attempt: 1 }, { uid: 5, attempt: 2 }]);
  box.ack([{ uid: 5, attempt: 2 }]);
  assert.deepEqual(box.refs(), [{ uid: 5, attempt: 1 }]);
  assert.equal(box.pending()[0].status, 'failed');
});

test('a second result for the same attempt replaces the first and moves to the end', { timeout: 60_000 }, () => {
  const box = new ResultOutbox();
  box.add(result(1, 1, { stdout: 'old' }));
  box.add(result(2));
  box.add(result(1, 1, { stdout: 'new' }));
  assert.equal(box.size, 2);
  assert.deepEqual(box.pending().map((r) => [r.uid, r.stdout]), [[2, ''], [1, 'new']]);
});

test('add() fits what it keeps: an oversized error message and output come back within the limits', { timeout: 60_000 }, () => {
  const box = new ResultOutbox();
  const huge = result(1, 1, {
    status: 'failed',
    exitCode: null,
    stdout: 'o'.repeat(LIMITS.outputChars + 10),
    stderr: 'e'.repeat(LIMITS.outputChars * 2),
    error: { code: ErrorCode.ENVIRONMENT_FAILED, message: 'x'.repeat(1024 * 1024) },
  });
  assert.equal(acceptable(huge), false, 'the raw result would be refused by the dispatcher');
  const sent = box.add(huge);
  assert.ok(acceptable(sent), 'what is sent passes the dispatcher\'s validator');
  assert.deepEqual(box.pending(), [sent], 'what is kept is what was sent');
  assert.ok(sent.stdout.length <= LIMITS.outputChars && sent.stderr.length <= LIMITS.outputChars);
  assert.ok(sent.error!.message.length <= LIMITS.errorChars);
  assert.equal(sent.error!.code, ErrorCode.ENVIRONMENT_FAILED, 'the code is kept');
  assert.equal(sent.truncated, true, 'cut output is flagged');
  assert.match(sent.error!.message, /more characters cut\]$/);
});

test('fitResult leaves a result within the limits untouched, and sets truncated only when output was cut', { timeout: 60_000 }, () => {
  const small = result(1, 1, { stdout: 'hello\n', error: { code: ErrorCode.TASK_FAILED, message: 'exited with code 1' }, status: 'failed', exitCode: 1 });
  assert.equal(fitResult(small), small, 'the same object: nothing to copy');
  const atLimit = result(2, 1, { stdout: 'a'.repeat(LIMITS.outputChars), error: { code: ErrorCode.TASK_FAILED, message: 'm'.repeat(LIMITS.errorChars) } });
  assert.equal(fitResult(atLimit), atLimit, 'exactly at the limits fits');
  const longError = fitResult(result(3, 1, { error: { code: ErrorCode.INTERNAL, message: 'm'.repeat(LIMITS.errorChars + 1) } }));
  assert.equal(longError.truncated, false, 'a cut error message is not cut output');
  assert.equal(longError.error!.message.length, LIMITS.errorChars);
  const alreadyCut = fitResult(result(4, 1, { stdout: 'x', truncated: true }));
  assert.equal(alreadyCut.truncated, true, 'the runner\'s own truncation is kept');
});

test('held results follow a model of the outbox through growth, compaction, replacements and acks, plain and not', { timeout: 60_000 }, () => {
  // The reference: what the outbox promises (insertion order, replace moves to the end), as a Map.
  const model = new Map<string, AttemptResult>();
  const box = new ResultOutbox();
  let seed = 7;
  const random = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  const kinds: Array<Partial<AttemptResult>> = [
    {},
    { status: 'failed', exitCode: 3 },
    { status: 'cancelled', exitCode: null },
    { stdout: 'out' },
    { signal: 'SIGTERM', exitCode: null, status: 'failed' },
    { error: { code: ErrorCode.TASK_TIMEOUT, message: 'slow' }, status: 'timed_out' },
    { startedAt: 1764740000123.25, finishedAt: 1764740000999 },
  ];
  for (let step = 0; step < 20_000; step++) {
    const uid = random(400) + 2 ** 40; // past 2^31: numbers a small integer cannot hold
    const attempt = 1 + random(3);
    if (random(3) === 0) {
      const acked = box.ack([{ uid, attempt }]);
      assert.equal(acked, model.delete(`${uid}:${attempt}`) ? 1 : 0);
    } else {
      const r = result(uid, attempt, kinds[random(kinds.length)]);
      box.add(r);
      model.delete(`${uid}:${attempt}`);
      model.set(`${uid}:${attempt}`, r);
    }
    if (step % 997 === 0 || step > 19_990) {
      assert.deepStrictEqual(box.pending(), [...model.values()]);
      assert.deepStrictEqual(box.refs(), [...model.values()].map((r) => ({ uid: r.uid, attempt: r.attempt })));
    }
    assert.equal(box.size, model.size);
  }
  // One result never acknowledged while many come and go: the ring compacts, it does not grow.
  const old = new ResultOutbox();
  old.add(result(1));
  for (let i = 2; i < 100_000; i++) {
    old.add(result(i));
    old.ack([{ uid: i, attempt: 1 }]);
  }
  assert.deepStrictEqual(old.pending(), [result(1)]);
});

test('a plain result is held as numbers, not as the object it came in; every key of the protocol is known', { timeout: 60_000 }, async () => {
  // A key added to AttemptResult must be known here, or a plain result would lose it.
  assert.deepStrictEqual([...ATTEMPT_RESULT_KEYS].sort(), Object.keys(AttemptResultSchema.properties).sort());
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const box = new ResultOutbox();
  const refs: Array<WeakRef<AttemptResult>> = [];
  (() => {
    for (let i = 0; i < 100; i++) refs.push(new WeakRef(box.add(result(i))));
    refs.push(new WeakRef(box.add(result(100, 1, { stdout: 'kept as it is' }))));
  })();
  // A WeakRef keeps its target for the rest of the job that made it: collect after this turn.
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  assert.equal(box.size, 101);
  assert.equal(refs.slice(0, 100).filter((r) => r.deref() !== undefined).length, 0, 'no plain result object survives while held');
  assert.ok(refs[100].deref(), 'a result with output is held as its object');
  assert.deepStrictEqual(box.pending().slice(0, 2), [result(0), result(1)]);
});

test('plain results held for an ack keep nothing on the JS heap that grows with them', { timeout: 60_000 }, async () => {
  // On the durable store an executor holds the results of the last commits (thousands). Anything
  // per held result on the JS heap (objects, or the tables of a Map that finds them) outlives the
  // young generation's collections and is promoted: a Map here doubled the executors' CPU per task.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const held = 50_000;
  const fill = (box: ResultOutbox, from: number): void => {
    for (let i = from; i < from + held; i++) box.add(result(i, 1, { startedAt: i, finishedAt: i + 1 }));
  };
  fill(new ResultOutbox(), 0); // the same code paths compiled before the heap is measured
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  const before = getHeapStatistics().used_heap_size;
  const box = new ResultOutbox();
  fill(box, 1e9);
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  const perResult = (getHeapStatistics().used_heap_size - before) / held;
  assert.equal(box.size, held);
  assert.ok(perResult < 2, `${perResult.toFixed(1)} bytes of JS heap per held result`);
  assert.equal(box.ack(box.refs()), held);
});
