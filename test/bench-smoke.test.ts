/**
 * Every benchmark scenario at a tiny size (bench/run.ts --smoke): it must complete and write its
 * result file. Never a speed: figures live in bench/RESULTS.md, not in tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SCENARIOS } from '../bench/run.js';
import { exited } from './helpers.js';

test('bench smoke: every scenario completes and writes its result file', { timeout: 900_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-smoke-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const run = fileURLToPath(new URL('../bench/run.js', import.meta.url));
  // Its own process group: the scenarios start dispatchers and executors of their own, and all of
  // them go with it, even when this test process is killed first.
  const child = spawn(process.execPath, [run, '--smoke'], { env: { ...process.env, FALCONET_BENCH_RESULTS: dir }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killGroup = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {}
  };
  process.once('exit', killGroup);
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d));
  child.stderr!.on('data', (d: Buffer) => (log += d));
  t.after(killGroup);
  const { code } = await exited(child, 840_000, 'bench/run.js --smoke').catch((err: Error) => {
    throw new Error(`${err.message}; log: ${log.slice(-4000)}`);
  });
  for (const line of log.split('\n').filter((l) => l.startsWith('== '))) t.diagnostic(line);
  assert.equal(code, 0, log.slice(-4000));
  const day = new Date().toISOString().slice(0, 10);
  for (const [name, s] of Object.entries(SCENARIOS)) {
    for (const prefix of s.writes) {
      const today = join(dir, `${prefix}${day}.json`);
      // A run that crossed midnight names its file by the day it ended.
      assert.ok(existsSync(today) || existsSync(join(dir, `${prefix}${new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)}.json`)), `${name} wrote ${prefix}<date>.json`);
    }
  }
  // The BullMQ half of the comparison skips itself (no bullmq, no redis-server) and the scenario
  // still exits 0: say so in the report instead of passing silently.
  const bullSkip = log.split('\n').find((l) => /skipping BullMQ/.test(l));
  await t.test('bench smoke: the BullMQ half of the comparison', (st) => {
    if (bullSkip) st.skip(bullSkip.trim());
  });
});
