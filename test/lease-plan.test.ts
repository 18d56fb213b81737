/**
 * The partition lease plan (lease-plan.ts): pure, rows and time passed in. Three dispatchers
 * running it in turn over one table converge on fair shares, never both hold a partition, give
 * back only idle partitions, and take a dead dispatcher's partitions once its leases run out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planLeases, planMoves, shareOf, type PartitionRow } from '../dispatcher/lease-plan.js';

const P = 256;
const LEASE = 1000;
const fresh = (): PartitionRow[] => Array.from({ length: P }, (_, id) => ({ id, owner: null, epoch: 0, leaseUntil: null }));

/** What cluster.ts's SQL does with a plan: renew (fenced by epoch), give back, claim if still free. */
function apply(rows: PartitionRow[], me: string, now: number, live: string[], busy = new Set<number>()): void {
  const plan = planLeases({ me, now, rows, live, busy });
  for (const r of plan.renew) {
    const row = rows[r.id];
    assert.equal(row.owner, me);
    assert.equal(row.epoch, r.epoch);
    row.leaseUntil = now + LEASE;
  }
  for (const r of plan.release) Object.assign(rows[r.id], { owner: null, leaseUntil: null });
  for (const r of plan.claim) {
    const row = rows[r.id];
    if (row.owner !== null && row.leaseUntil !== null && row.leaseUntil > now) continue; // someone was first
    Object.assign(row, { owner: me, epoch: row.epoch + 1, leaseUntil: now + LEASE });
  }
}

const counts = (rows: PartitionRow[]): Record<string, number> => {
  const c: Record<string, number> = {};
  for (const r of rows) if (r.owner) c[r.owner] = (c[r.owner] ?? 0) + 1;
  return c;
};

test('lease plan: a lone dispatcher takes every partition; newcomers get fair shares', { timeout: 5000 }, () => {
  const rows = fresh();
  apply(rows, 'a', 0, ['a']);
  assert.deepEqual(counts(rows), { a: P });
  // b and c join: a gives back what is idle beyond its share, b and c take it.
  for (let now = 100; now < 1000; now += 100) for (const d of ['a', 'b', 'c']) apply(rows, d, now, ['a', 'b', 'c']);
  const c = counts(rows);
  assert.equal(c.a + c.b + c.c, P, 'every partition has an owner');
  for (const d of ['a', 'b', 'c']) assert.ok(c[d] >= Math.floor(P / 3) && c[d] <= shareOf(P, 3), `${d} holds ${c[d]}`);
});

test('lease plan: busy partitions are never given back', { timeout: 5000 }, () => {
  const rows = fresh();
  apply(rows, 'a', 0, ['a']);
  const busy = new Set(Array.from({ length: 200 }, (_, i) => i));
  for (let now = 100; now < 1000; now += 100) {
    apply(rows, 'a', now, ['a', 'b'], busy);
    apply(rows, 'b', now, ['a', 'b']);
  }
  for (const p of busy) assert.equal(rows[p].owner, 'a', `busy partition ${p} stayed`);
  assert.equal(counts(rows).b, P - 200, 'b took only the idle ones');
});

test("lease plan: a dead dispatcher's partitions move once its leases run out, with a new epoch", { timeout: 5000 }, () => {
  const rows = fresh();
  for (let now = 0; now < 1000; now += 100) for (const d of ['a', 'b', 'c']) apply(rows, d, now, ['a', 'b', 'c']);
  const ofC = rows.filter((r) => r.owner === 'c').map((r) => ({ ...r }));
  assert.ok(ofC.length > 0);
  // c stops renewing at 900; within its lease nobody takes its partitions.
  apply(rows, 'a', 1500, ['a', 'b']);
  apply(rows, 'b', 1500, ['a', 'b']);
  for (const r of ofC) assert.equal(rows[r.id].owner, 'c', 'not before the lease ran out');
  for (let now = 2000; now < 2600; now += 100) for (const d of ['a', 'b']) apply(rows, d, now, ['a', 'b']);
  for (const r of ofC) {
    assert.notEqual(rows[r.id].owner, 'c');
    assert.equal(rows[r.id].epoch, r.epoch + 1, 'the epoch that fences c moved on');
  }
  assert.equal(counts(rows).a + counts(rows).b, P);
});

test('idle executors go where tasks wait: only from a dispatcher with nothing queued, half at a time, to the neediest', { timeout: 5000 }, () => {
  const load = (id: string, queued: number, executors: number, idle: number) => ({ id, url: `ws://${id}`, queued, executors, idle });
  assert.equal(planMoves('a', [load('a', 5, 4, 2), load('b', 100, 0, 0)]), null, 'a has work of its own');
  assert.equal(planMoves('a', [load('a', 0, 4, 4), load('b', 0, 1, 0)]), null, 'nobody waits');
  assert.deepEqual(planMoves('a', [load('a', 0, 4, 4), load('b', 10, 4, 0), load('c', 10, 0, 0)]), { to: 'ws://c', n: 2 });
  assert.deepEqual(planMoves('a', [load('a', 0, 1, 1), load('b', 1, 0, 0)]), { to: 'ws://b', n: 1 }, 'a lone idle executor moves');
  // Never past an even split: 18,000 idle here do not go to a dispatcher that holds 18,000 already.
  assert.equal(planMoves('a', [load('a', 0, 18_000, 18_000), load('b', 1000, 18_000, 0)]), null);
  assert.deepEqual(planMoves('a', [load('a', 0, 18_000, 18_000), load('b', 1000, 12_000, 0)]), { to: 'ws://b', n: 3000 });
});
