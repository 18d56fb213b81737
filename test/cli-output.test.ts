/** What `submit` prints per result (client/output.ts): the same JSON as copying the result, made without the copy. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TaskResult } from '../protocol/index.js';
import { InputLines, resultLine } from '../client/output.js';

const base: TaskResult = {
  id: 't-abc-7',
  status: 'succeeded',
  exitCode: 0,
  signal: null,
  stdout: 'a "quoted" \u2028 line\n',
  stderr: '',
  truncated: false,
  attempts: 1,
  executor: 'e1',
  timings: { submitted: 1, dispatched: 2, started: 3, finished: 4 },
};

test('resultLine: `line` right after `id`, the rest as JSON.stringify writes it', { timeout: 10_000 }, () => {
  const copy = (r: TaskResult, line: number | null) => {
    const { id, ...rest } = r;
    return JSON.stringify({ id, line, ...rest });
  };
  for (const r of [base, { ...base, id: 'with "quotes" and \\ back' }, { ...base, error: { code: 'TASK_FAILED', message: 'x' } }] as TaskResult[]) {
    for (const line of [7, null]) assert.equal(resultLine(r, line), copy(r, line));
  }
  // A result whose first field is not its id (not what the dispatcher sends) still comes out right.
  const { id, ...rest } = base;
  const reordered = { ...rest, id } as TaskResult;
  assert.equal(resultLine(reordered, 3), copy(base, 3));
});

test('InputLines: generated ids carry their line, own ids are remembered', { timeout: 10_000 }, () => {
  const lines = new InputLines('t-abc');
  lines.note('t-abc-5', 5); // generated for line 5
  lines.note('mine', 6);
  lines.note('t-abc-99', 7); // an own id that looks generated but is on another line
  assert.equal(lines.of('t-abc-5'), 5);
  assert.equal(lines.of('mine'), 6);
  assert.equal(lines.of('t-abc-99'), 7);
  assert.equal(lines.of('other'), null);
  assert.equal(lines.of('t-abc-x'), null);
});
