/**
 * A submit's tasks go to idle slots as soon as that submit is accepted, not at the end of the
 * turn (dispatcher/server.ts): a large submit arrives as many frames, often read in one turn, and
 * accepting them all first held the first tasks back (Falkon's first-wave ramp). Seen through one
 * frame holding a submit and then a cancel of its task: the task reaches the idle executor before
 * the cancel is read (without the change it was cancelled while still queued, never sent).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pack } from 'msgpackr';
import { PROTOCOL_VERSION } from '../protocol/index.js';
import { Procs, raw, startDispatcher, waitExecutors } from './helpers.js';

test('a task submitted to an idle executor is sent to it before the next message of the same frame is read', { timeout: 60_000 }, async () => {
  const procs = new Procs();
  try {
    // The default lease (the raw executor sends no heartbeats): only the order of events matters here.
    const d = await startDispatcher(procs);
    const ex = await raw(d.url);
    const info = { id: 'x1', hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: 'i', mode: 'push', running: [] };
    ex.ws.send(pack([{ t: 'hello', v: PROTOCOL_VERSION, role: 'executor', caps: [], executor: info }]));
    await ex.next((m) => m.t === 'welcome');
    await waitExecutors(d.url, 1);
    const client = await raw(d.url);
    client.ws.send(pack([{ t: 'hello', v: PROTOCOL_VERSION, role: 'client', caps: [] }]));
    await client.next((m) => m.t === 'welcome');
    client.ws.send(pack([
      { t: 'submit', ref: 1, tasks: [{ id: 'a', builtin: 'sleep', ms: 60_000 }] },
      { t: 'cancel', ref: 2, ids: ['a'] },
    ]));
    const task = (await ex.next((m) => m.t === 'task', 10_000)) as { uid: number; attempt: number };
    assert.deepEqual(await ex.next((m) => m.t === 'cancel', 10_000), { t: 'cancel', uid: task.uid, attempt: task.attempt }, 'then cancelled where it runs');
    const now = Date.now();
    ex.ws.send(pack([{ t: 'done', result: { uid: task.uid, attempt: task.attempt, status: 'cancelled', exitCode: null, signal: 'SIGTERM', stdout: '', stderr: '', truncated: false, startedAt: now, finishedAt: now } }]));
    const r = (await client.next((m) => m.t === 'result', 10_000)).result as { id: string; status: string; attempts: number };
    assert.deepEqual([r.id, r.status, r.attempts], ['a', 'cancelled', 1], 'it ran (one attempt) before it was cancelled');
    ex.ws.close();
    client.ws.close();
  } finally {
    await procs.killAll();
  }
});
