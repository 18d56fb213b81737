/**
 * The executor's result outbox and the one function that fits results to the protocol's limits
 * (executor/delivery.ts), on their own: no sockets, no processes. Every fitted result is checked
 * against the real `done` validator, the one the dispatcher runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, LIMITS, compileInbound, ExecutorMessageSchemas, type AttemptResult, type ExecutorMessage } from '../protocol/index.js';
import { ResultOutbox, fitResult } from '../executor/delivery.js';

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
