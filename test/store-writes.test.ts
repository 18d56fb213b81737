/**
 * What the SQLite store writes per commit (issue 13, CPU per durable task): a task finished
 * before the next commit writes no change of its task row (its result row decides), and rows
 * and results in numbers that are not multiples of the multi-row statement size are all
 * written. Real store file, real core for the recovery; no network needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';
import { newSession, newTask } from '../dispatcher/model.js';
import { SqliteStore } from '../dispatcher/store.js';
import { TASK_STATE } from '../dispatcher/sqlite.js';
import type { TaskResult } from '../protocol/index.js';

/** The core's adapter side: this test sends nothing anywhere. */
const quiet: Outbox = { toClient() {}, toExecutor() {}, resultReceived() {}, close() {} };
const OPTIONS = { heartbeatMs: 100, leaseMs: 1000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 60_000 };

function resultOf(id: string): TaskResult {
  return {
    id, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, attempts: 1, executor: 'e1',
    timings: { submitted: 1000, dispatched: 2000, started: 2001, finished: 2002 },
  };
}

test('a task dispatched and finished within one commit writes only its result; all rows of odd-sized batches are stored and recovered', { timeout: 60_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'falconet-store-writes-'));
  try {
    const store = SqliteStore.open({ dataDir, sync: 'normal' });
    await store.recover(new DispatcherCore(OPTIONS, quiet, { now: () => 1000 }, store));
    const session = newSession('s1', 1000, null, null, null);
    store.sessionChanged(session);
    // 133 = 2 × 64 + 5 and 100 = 64 + 36: neither a multiple of the statement size.
    const tasks = Array.from({ length: 133 }, (_, i) => newTask(i + 1, `t${i}`, session, { builtin: 'noop', id: `t${i}` }, 1000));
    for (const t of tasks) store.taskAccepted(t);
    await store.commit();
    for (const t of tasks) {
      t.state = 'dispatched';
      t.attempt = 1;
      t.dispatchedAt = 2000;
      store.taskDispatched(t);
    }
    for (const t of tasks.slice(0, 100)) store.taskFinished(t, ++session.lastSeq, resultOf(t.id));
    await store.commit();
    await store.close();

    const db = new Database(join(dataDir, 'falconet.db'), { readonly: true });
    const byState = Object.fromEntries(db.prepare('SELECT state, count(*) FROM tasks GROUP BY state').raw().all() as Array<[number, number]>);
    const results = db.prepare('SELECT count(*) FROM results').pluck().get() as number;
    db.close();
    // The finished ones keep the row of their first commit (queued); only the others' dispatch is written.
    assert.deepEqual(byState, { [TASK_STATE.queued]: 100, [TASK_STATE.dispatched]: 33 });
    assert.equal(results, 100);

    const again = SqliteStore.open({ dataDir, sync: 'normal' });
    const found = await again.recover(new DispatcherCore(OPTIONS, quiet, { now: () => 3000 }, again));
    await again.close();
    assert.equal(found.finished, 100);
    assert.equal(found.queued + found.dispatched, 33);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
