/**
 * What a small commit of the SQLite store costs on disk (issue 13, durable latency): a one-task
 * commit writes the pages of its result and of its session, and no third page for the task
 * counters (they ride in the session row); the counters still come back exact after a restart,
 * wherever their newest copy went (a session row, or `meta` when the commit wrote no session,
 * also when the session holding the previous copy was collected). Real store file, real core;
 * no network needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';
import { newSession, newTask } from '../dispatcher/model.js';
import { SqliteStore } from '../dispatcher/store.js';
import type { TaskResult, TaskSpec } from '../protocol/index.js';
import { fromClient } from './wire.js';

/** The core's adapter side: this test sends nothing anywhere. */
const quiet: Outbox = { toClient() {}, toExecutor() {}, resultReceived() {}, close() {} };
const OPTIONS = { heartbeatMs: 100, leaseMs: 1000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 60_000 };
/** A WAL frame: its 24-byte header and one 4 KiB page (SQLite's default page size). */
const FRAME = 24 + 4096;

function submit(core: DispatcherCore, conn: number, tasks: TaskSpec[]): void {
  const m = fromClient({ t: 'submit', ref: 1, tasks });
  assert.equal(m.t, 'submit');
  if (m.t === 'submit') core.submit(conn, m);
}

test('a one-task commit writes two pages, not three; the counters come back exact from wherever their newest copy is', { timeout: 60_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'falconet-store-commit-'));
  const wal = join(dataDir, 'falconet.db-wal');
  // A failed assertion must not leave a writer thread holding the test process open.
  const opened: SqliteStore[] = [];
  const open = () => {
    const store = SqliteStore.open({ dataDir, sync: 'normal' });
    opened.push(store);
    return store;
  };
  try {
    const store = open();
    const core = new DispatcherCore(OPTIONS, quiet, { now: () => 1000 }, store);
    await store.recover(core);

    // Session A and 3 tasks through the core: the counters' copy goes in A's row.
    assert.equal(core.openSession(1, { id: 'A' }, true), null);
    submit(core, 1, [{ builtin: 'noop' }, { builtin: 'noop' }, { builtin: 'noop' }]);
    await store.commit();

    // A one-task commit as the latency bench makes them: the task's result and its session's
    // cursor (the client's ack). Pages: the result's and the session's.
    const s = newSession('S', 1000, null, null, null);
    const t = newTask(1_000_001, 'one', s, { builtin: 'noop' }, 1000);
    store.sessionChanged(s);
    store.taskAccepted(t);
    await store.commit();
    const before = statSync(wal).size;
    const result: TaskResult = {
      id: 'one', status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, attempts: 1, executor: 'e1',
      timings: { submitted: 1000, dispatched: 1001, started: 1002, finished: 1003 },
    };
    store.taskFinished(t, ++s.lastSeq, result);
    s.acked = s.lastSeq;
    store.sessionChanged(s);
    await store.commit();
    assert.equal((statSync(wal).size - before) / FRAME, 2, 'WAL frames of a one-task commit');

    // The newest copy now is in S's row; S is collected in a commit that writes no session row
    // (with 2 more tasks of A): the counters go to `meta`, newer than the copy left in A's row.
    store.sessionCollected(s);
    submit(core, 1, [{ builtin: 'noop' }, { builtin: 'noop' }]);
    await store.commit();
    const expected = core.view.counters();
    assert.equal(expected.submitted, 5);
    await store.close();

    const again = open();
    const restored = new DispatcherCore(OPTIONS, quiet, { now: () => 2000 }, again);
    const found = await again.recover(restored);
    assert.deepEqual(restored.view.counters(), expected);
    assert.equal(found.sessions, 1, 'S was collected');
    assert.equal(found.queued, 5);

    // A commit after the restart numbers its copy above every one in the file: the new session
    // C's row holds it, while `meta` keeps the older copy written before the restart.
    assert.equal(restored.openSession(2, { id: 'C' }, true), null);
    submit(restored, 2, [{ builtin: 'noop' }]);
    await again.commit();
    const newest = restored.view.counters();
    await again.close();
    const third = open();
    const last = new DispatcherCore(OPTIONS, quiet, { now: () => 3000 }, third);
    await third.recover(last);
    await third.close();
    assert.deepEqual(last.view.counters(), newest);
    assert.equal(newest.submitted, 6);
  } finally {
    for (const store of opened) await store.close().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  }
});
