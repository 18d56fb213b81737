/**
 * The soak (bench/soak.ts), two minutes of it (as issue 14 asks): steady mixed load through the SDK while executors
 * are killed -9, one is SIGSTOPped past its lease, a proxy cuts every connection, and the
 * dispatcher is killed -9 and restarted on its port and data dir. Every accepted task has
 * exactly one result; no process or file descriptor leaks; memory stays flat. Longer runs:
 * `npm run soak -- --minutes N`. FALCONET_TEST_SEED replays the chaos schedule.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak } from '../bench/soak.js';
import { testSeed } from './helpers.js';

test('soak: load through kill -9s, SIGSTOP, cut connections and dispatcher restarts; exactly once, no leaks', { timeout: 420_000 }, async (t) => {
  const seed = testSeed();
  t.diagnostic(`FALCONET_TEST_SEED=${seed}`);
  console.log(`soak.test.ts: FALCONET_TEST_SEED=${seed}`);
  const report = await runSoak({ ms: Number(process.env.FALCONET_SOAK_MS ?? 120_000), seed, dispatcherRestartMs: 25_000, executorKillMs: 8_000, stopMs: 20_000, cutMs: 12_000, log: (l) => console.log(l) });
  assert.deepEqual(report.failures, []);
  assert.ok(report.results > 1000 && report.results === report.submitted, `${report.results} results of ${report.submitted}`);
  assert.equal(report.duplicates, 0);
  assert.ok(report.events.dispatcherKill9 >= 1 && report.events.executorKill9 >= 3 && report.events.sigstop >= 1 && report.events.proxyCut >= 2, JSON.stringify(report.events));
  assert.deepEqual(report.leaked, []);
  // Flat: no dispatcher grew much over its life (a restarted one starts larger: it recovers the
  // finished tasks kept for --retention).
  assert.ok(report.rssGrowthMB < 40, `a dispatcher's RSS grew ${report.rssGrowthMB} MB`);
});
