/**
 * The executor's spawn helper through runner.ts, with real processes: every behaviour of a command
 * task (exit, signal, capture, stdin, env, cwd, shell, spawn failures, timeouts and cancels that
 * kill the whole group, leftovers), many at once, the helper dying mid-task, the helper's queue
 * (a limit on tasks at once, cancels, timeouts and the helper's death while tasks wait), and the
 * fallbacks to Node's child_process. Every process a test starts is killed by the end of it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, type TaskSpec } from '../protocol/index.js';
import { runAttempt, setHelperLimit, taskBaseEnv, type RunnerOptions } from '../executor/runner.js';
import { DEFAULT_HELPER_PATH } from '../executor/spawner.js';
import { alive, waitFor } from './helpers.js';

const base: RunnerOptions = { outputLimit: 64 * 1024, killGraceMs: 300, baseEnv: taskBaseEnv(), spawner: 'helper' };
const run = (spec: TaskSpec, o: Partial<RunnerOptions> = {}) => runAttempt(spec, { ...base, ...o }).done;

/** The parent of a task's process: the helper's pid when it ran through the helper. */
async function parentOf(o: Partial<RunnerOptions> = {}): Promise<number> {
  return Number((await run({ cmd: ['/bin/sh', '-c', 'echo $PPID'] }, o)).stdout.trim());
}

/** The pids listed in `file` (one a line), as the tasks wrote them so far. */
function listed(file: string): number[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number) : [];
}

/** Waits until every pid listed in `file` is dead (killing a group takes a moment), or fails naming the survivors. */
async function allDead(file: string, what: string): Promise<void> {
  await waitFor(what, () => listed(file).every((pid) => !alive(pid)), 10_000).catch((err: Error) => {
    throw new Error(`${err.message}: ${listed(file).filter(alive).join(', ')} still running`);
  });
}

/** Kills the pids listed in `file` (one a line): what a test's tasks left, if anything. */
function killListed(file: string): void {
  if (!existsSync(file)) return;
  for (const pid of readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
}

test('the helper binary is built and used', { timeout: 120_000 }, async () => {
  assert.ok(existsSync(DEFAULT_HELPER_PATH), `npm run build should have built ${DEFAULT_HELPER_PATH}`);
  const ppid = await parentOf();
  assert.notEqual(ppid, process.pid);
  assert.match(readFileSync(`/proc/${ppid}/cmdline`, 'latin1'), /falconet-spawn-helper/);
});

test('exit codes and signals', { timeout: 120_000 }, async () => {
  const ok = await run({ cmd: ['/bin/true'] });
  assert.equal(ok.status, 'succeeded');
  assert.equal(ok.exitCode, 0);
  assert.equal(ok.error, undefined);
  const seven = await run({ cmd: ['/bin/sh', '-c', 'exit 7'] });
  assert.deepEqual([seven.status, seven.exitCode, seven.signal, seven.error?.code, seven.error?.message], ['failed', 7, null, ErrorCode.TASK_FAILED, 'exited with code 7']);
  const killed = await run({ cmd: ['/bin/sh', '-c', 'kill -TERM $$'] });
  assert.deepEqual([killed.status, killed.exitCode, killed.signal, killed.error?.message], ['failed', null, 'SIGTERM', 'killed by SIGTERM']);
  // SIGPIPE is ignored in the helper: the task must get it back at its default (death).
  const pipe = await run({ cmd: ['/bin/sh', '-c', 'yes | head -c 1 >/dev/null; exit 0'] });
  assert.equal(pipe.status, 'succeeded');
});

test('stdout and stderr are captured up to the limit, with a truncated flag', { timeout: 120_000 }, async () => {
  const exact = await run({ cmd: ['/bin/sh', '-c', 'printf 0123456789; printf abc >&2'] }, { outputLimit: 10 });
  assert.deepEqual([exact.stdout, exact.stderr, exact.truncated], ['0123456789', 'abc', false]);
  const over = await run({ cmd: ['/bin/sh', '-c', 'printf 0123456789X'] }, { outputLimit: 10 });
  assert.deepEqual([over.stdout, over.truncated], ['0123456789', true]);
  const errOver = await run({ cmd: ['/bin/sh', '-c', 'printf 0123456789X >&2'] }, { outputLimit: 10 });
  assert.deepEqual([errOver.stderr, errOver.truncated], ['0123456789', true]);
  // Far more than a pipe holds: the task must not block on its output, and we keep the limit.
  const big = await run({ cmd: ['/bin/sh', '-c', 'head -c 5000000 /dev/zero | tr "\\0" x; echo done >&2'] }, { outputLimit: 100_000 });
  assert.equal(big.status, 'succeeded');
  assert.equal(big.stdout.length, 100_000);
  assert.equal(big.stderr, 'done\n');
  assert.equal(big.truncated, true);
  const utf8 = await run({ cmd: ['/bin/echo', 'héllo ✓'] });
  assert.equal(utf8.stdout, 'héllo ✓\n');
});

test('stdin: given bytes, large input, input the task ignores, and /dev/null otherwise', { timeout: 120_000 }, async () => {
  assert.equal((await run({ cmd: ['/bin/cat'], stdin: 'a\tb\nc' })).stdout, 'a\tb\nc');
  assert.equal((await run({ cmd: ['/bin/cat'], stdin: '' })).stdout, '');
  const big = 'x'.repeat(1024 * 1024);
  assert.equal((await run({ cmd: ['/usr/bin/wc', '-c'], stdin: big })).stdout.trim(), String(big.length));
  const ignored = await run({ cmd: ['/bin/true'], stdin: big });
  assert.equal(ignored.status, 'succeeded');
  assert.equal((await run({ cmd: ['/bin/cat'] })).stdout, '');
});

test('env is the base environment plus the task’s, and PATH lookup uses the task’s PATH', { timeout: 120_000 }, async () => {
  const env = await run({ cmd: ['/bin/sh', '-c', 'printf "%s|%s|%s" "$FOO" "$BAR" "$HOME_BASE"'], env: { FOO: 'f o\to', BAR: '' } }, { baseEnv: { HOME_BASE: 'b', FOO: 'base', PATH: '/usr/bin:/bin' } });
  assert.equal(env.stdout, 'f o\to||b');
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  try {
    writeFileSync(join(dir, 'mytool'), '#!/bin/sh\necho found me\n');
    chmodSync(join(dir, 'mytool'), 0o755);
    const found = await run({ cmd: ['mytool'], env: { PATH: `/nonexistent:${dir}` } });
    assert.equal(found.stdout, 'found me\n');
    const notFound = await run({ cmd: ['mytool'] });
    assert.equal(notFound.error?.code, ErrorCode.SPAWN_FAILED);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cwd, shell tasks, and arguments with newlines, tabs, quotes and long values', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  try {
    assert.equal((await run({ cmd: ['/bin/pwd'], cwd: dir })).stdout, `${dir}\n`);
    writeFileSync(join(dir, 'here.sh'), '#!/bin/sh\necho relative\n');
    chmodSync(join(dir, 'here.sh'), 0o755);
    assert.equal((await run({ cmd: ['./here.sh'], cwd: dir })).stdout, 'relative\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const shell = await run({ cmd: ['echo', 'a', '&&', 'echo', '$((1+2))'], shell: true });
  assert.equal(shell.stdout, 'a\n3\n');
  const args = ['line1\nline2', 'tab\there', ' lead', '', "q'uo\"te", 'ünï ✓ \u{1F600}', '\r\x01\x7f', 'x'.repeat(100_000)];
  const echoed = await run({ cmd: [process.execPath, '-e', 'process.stdout.write(JSON.stringify(process.argv.slice(1)))', ...args] }, { outputLimit: 1 << 20 });
  assert.deepEqual(JSON.parse(echoed.stdout), args);
});

test('spawn failures: missing binary, not executable, bad cwd (same messages as Node)', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  const plain = join(dir, 'plain');
  writeFileSync(plain, 'not a program\n', { mode: 0o644 });
  for (const spawner of ['helper', 'node'] as const) {
    const missing = await run({ cmd: ['/no/such/binary', 'x'] }, { spawner });
    assert.deepEqual([missing.status, missing.error?.code, missing.error?.message], ['failed', ErrorCode.SPAWN_FAILED, '/no/such/binary: spawn /no/such/binary ENOENT'], spawner);
    const noexec = await run({ cmd: [plain] }, { spawner });
    assert.deepEqual([noexec.error?.code, noexec.error?.message], [ErrorCode.SPAWN_FAILED, `${plain}: spawn ${plain} EACCES`], spawner);
    const badCwd = await run({ cmd: ['/bin/true'], cwd: '/no/such/dir' }, { spawner });
    assert.deepEqual([badCwd.error?.code, badCwd.error?.message], [ErrorCode.SPAWN_FAILED, '/bin/true: spawn /bin/true ENOENT'], spawner);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('a timeout kills the whole process group, SIGKILL after the grace if SIGTERM is ignored', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  const pids = join(dir, 'pids');
  try {
    const t0 = Date.now();
    const r = await run({ cmd: ['/bin/sh', '-c', `sleep 60 & echo $! >> ${pids}; echo $$ >> ${pids}; wait`], timeoutMs: 1000 }); // time to write both pids, even on a loaded host
    assert.equal(r.status, 'timed_out');
    assert.equal(r.error?.code, ErrorCode.TASK_TIMEOUT);
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(listed(pids).length, 2);
    await allDead(pids, 'the timed-out task and its background sleep to die');

    const t1 = Date.now();
    const stubborn = await run({ cmd: ['/bin/sh', '-c', `trap "" TERM; echo $$ >> ${pids}; while :; do sleep 0.05; done`], timeoutMs: 200 }, { killGraceMs: 300 });
    assert.equal(stubborn.status, 'timed_out');
    assert.equal(stubborn.signal, 'SIGKILL');
    assert.ok(Date.now() - t1 >= 450, 'SIGKILL only after the grace');
  } finally {
    killListed(pids);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cancel stops the task; leftovers are killed once the main process exits', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  const pids = join(dir, 'pids');
  try {
    const started = join(dir, 'started');
    const running = runAttempt({ cmd: ['/bin/sh', '-c', `echo $$ > ${started}; exec /bin/sleep 60`] }, base);
    await waitFor('the task to start', () => listed(started).length === 1);
    running.cancel();
    const c = await running.done;
    assert.deepEqual([c.status, c.error?.code, c.signal], ['cancelled', ErrorCode.TASK_CANCELLED, 'SIGTERM']);

    const t0 = Date.now();
    const r = await run({ cmd: ['/bin/sh', '-c', `sleep 60 & echo $! >> ${pids}; echo main done`] });
    assert.deepEqual([r.status, r.stdout], ['succeeded', 'main done\n']);
    assert.ok(Date.now() - t0 < 5000, 'the background sleep did not hold the pipes open');
    assert.equal(listed(pids).length, 1);
    await allDead(pids, 'the leftover background sleep to be killed');
  } finally {
    killListed(pids);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('500 tasks at once', { timeout: 120_000 }, async () => {
  const results = await Promise.all(Array.from({ length: 500 }, (_, i) => run({ cmd: ['/bin/sh', '-c', `sleep 0.2; echo ${i}`] })));
  results.forEach((r, i) => assert.deepEqual([r.status, r.stdout], ['succeeded', `${i}\n`]));
});

test('the helper killed mid-task: its tasks fail with SPAWN_HELPER_LOST, the next ones start a new helper', { timeout: 120_000 }, async () => {
  // Another path string for the same binary: a helper of its own, so this test's deaths are its own.
  const helperPath = DEFAULT_HELPER_PATH.replace(/falconet-spawn-helper$/, './falconet-spawn-helper');
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  const pids = join(dir, 'pids');
  try {
    const helperPid = await parentOf({ helperPath });
    const running = [1, 2, 3].map(() => runAttempt({ cmd: ['/bin/sh', '-c', `echo $$ >> ${pids}; exec sleep 60`] }, { ...base, helperPath }));
    // All three running (each wrote its pid), and the helper has had time to tell us their groups.
    await waitFor('three tasks running', () => listed(pids).length === 3);
    await sleep(200); // the helper's start report (pgid) is lazy, up to 50 ms: not an event we can see
    process.kill(helperPid, 'SIGKILL');
    for (const r of await Promise.all(running.map((x) => x.done))) {
      assert.equal(r.status, 'failed');
      assert.equal(r.error?.code, ErrorCode.SPAWN_HELPER_LOST);
      assert.match(r.error!.message, /spawn helper killed by SIGKILL/);
    }
    // their groups were killed too
    await allDead(pids, 'the tasks of the dead helper to be killed');
    const next = await parentOf({ helperPath });
    assert.notEqual(next, helperPid);
    assert.notEqual(next, process.pid, 'a new helper, not the fallback');
  } finally {
    killListed(pids);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fallbacks to Node: spawner node, a missing binary, a stale binary', { timeout: 120_000 }, async () => {
  assert.equal(await parentOf({ spawner: 'node' }), process.pid);
  assert.equal(await parentOf({ helperPath: '/no/such/falconet-spawn-helper' }), process.pid);
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  try {
    // A helper of another protocol version: says hello with version 99, then waits for stdin to close.
    const stale = join(dir, 'stale-helper');
    writeFileSync(stale, `#!/bin/sh\nprintf '\\027\\000\\000\\000H\\143falconet-spawn-helper'\nexec cat >/dev/null\n`);
    chmodSync(stale, 0o755);
    const r = await run({ cmd: ['/bin/sh', '-c', 'echo $PPID; exit 3'] }, { helperPath: stale });
    assert.deepEqual([r.status, r.exitCode, Number(r.stdout.trim())], ['failed', 3, process.pid]);
    // and it stays on Node's spawn without another try
    assert.equal(await parentOf({ helperPath: stale }), process.pid);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the helper exits and kills its tasks when the executor dies', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  const pids = join(dir, 'pids');
  try {
    const script = `
      import { runAttempt, taskBaseEnv } from ${JSON.stringify(new URL('../executor/runner.js', import.meta.url).href)};
      runAttempt({ cmd: ['/bin/sh', '-c', 'echo $PPID >> ${pids}; echo $$ >> ${pids}; exec sleep 60'] }, { outputLimit: 1024, killGraceMs: 100, baseEnv: taskBaseEnv() });
      setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300);`;
    try {
      execFileSync(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore', timeout: 30_000 });
    } catch {}
    const [helper, task] = listed(pids);
    await waitFor('the helper and its task to die', () => !alive(helper) && !alive(task), 10_000).catch(() => {});
    assert.equal(alive(helper), false, 'helper exited');
    assert.equal(alive(task), false, 'its task was killed');
  } finally {
    killListed(pids);
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- the helper's queue -------------------------------------------------------------------------

/** Options for queued tasks in a helper of their own (a scope per test: its own limit and deaths). */
function queued(scope: string, limit: number): RunnerOptions {
  const o: RunnerOptions = { ...base, helperScope: scope, helperQueue: true };
  setHelperLimit(o, limit);
  return o;
}

/** A shell task that prints its real start and end (ms since the epoch) around `body`. */
const timed = (body: string): string[] => ['/bin/sh', '-c', `date +%s%3N; ${body}; date +%s%3N`];

test('queue: with limit 2, six 0.2 s tasks never run more than 2 at once and finish in 3 waves', { timeout: 120_000 }, async () => {
  const o = queued('limit-2', 2);
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: 6 }, () => runAttempt({ cmd: timed('sleep 0.2') }, o).done));
  const elapsed = Date.now() - t0;
  const spans = results.map((r) => {
    assert.equal(r.status, 'succeeded', r.stderr);
    const [start, end] = r.stdout.trim().split('\n').map(Number);
    // The helper stamps the start when posix_spawn returns: on a loaded host the shell may already
    // have run `date` by then (seen: 17 ms), or not yet. Either way, well before the task's end.
    assert.ok(r.startedAt < end, `startedAt ${r.startedAt} not before the end ${end} (real start ${start})`);
    return { start, end, startedAt: r.startedAt };
  });
  // The reported startedAt is the real start, not the request time (all six were requested at
  // once): with limit 2, when the k-th task starts, at least k-1 others have ended.
  const startedAts = spans.map((x) => x.startedAt).sort((a, b) => a - b);
  const ends = spans.map((x) => x.end).sort((a, b) => a - b);
  for (let k = 2; k < startedAts.length; k++) {
    assert.ok(startedAts[k] >= ends[k - 2] - 2, `start #${k} reported at ${startedAts[k]}, before ${k - 1} tasks had ended: ${JSON.stringify(spans)}`);
  }
  // at each task's start, at most 2 tasks (itself included) have started and not ended
  for (const s of spans) {
    const overlapping = spans.filter((x) => x.start <= s.start && x.end > s.start).length;
    assert.ok(overlapping <= 2, `${overlapping} running at ${s.start}: ${JSON.stringify(spans)}`);
  }
  const starts = spans.map((x) => x.start).sort((a, b) => a - b);
  assert.ok(starts[2] - starts[0] >= 190 && starts[4] - starts[2] >= 190, `three waves: ${starts}`);
  assert.ok(elapsed >= 590 && elapsed < 10_000, `3 waves of 0.2 s took ${elapsed} ms`);
  setHelperLimit(o, 6); // raising the limit lets them all start at once
  const one = await Promise.all(Array.from({ length: 6 }, () => runAttempt({ cmd: timed('sleep 0.2') }, o).done));
  // One wave: every task started (as the helper reports it) before the first one ended. Under
  // the old limit the last ones would start only after two waves had ended.
  const firstEnd = Math.min(...one.map((r) => Number(r.stdout.trim().split('\n')[1])));
  const lastStart = Math.max(...one.map((r) => r.startedAt));
  assert.ok(lastStart < firstEnd, `one wave with limit 6: last start ${lastStart}, first end ${firstEnd}`);
});

test('queue: a cancelled task that waits never starts; the next one takes the slot', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  try {
    const o = queued('cancel', 1);
    const aStarted = join(dir, 'a-started');
    const a = runAttempt({ cmd: ['/bin/sh', '-c', `date +%s%3N; touch ${aStarted}; sleep 0.4; date +%s%3N`] }, o);
    const b = runAttempt({ cmd: ['/bin/sh', '-c', `touch ${join(dir, 'b-ran')}`] }, o);
    const c = runAttempt({ cmd: timed('true') }, o);
    // a runs (the helper has the three requests, sent in order), b and c wait behind it
    await waitFor('a to start', () => existsSync(aStarted));
    b.cancel();
    const rb = await b.done;
    assert.deepEqual([rb.status, rb.error?.code, rb.error?.message, rb.exitCode, rb.signal], ['cancelled', ErrorCode.TASK_CANCELLED, 'cancelled before it started', null, null]);
    const ra = await a.done;
    const rc = await c.done;
    assert.equal(ra.status, 'succeeded');
    assert.ok(rb.finishedAt < Number(ra.stdout.trim().split('\n')[1]), 'b was dropped at once, not when a slot freed');
    assert.equal(rc.status, 'succeeded');
    assert.ok(Number(rc.stdout.split('\n')[0]) >= Number(ra.stdout.trim().split('\n')[1]), 'c started after a ended');
    assert.equal(existsSync(join(dir, 'b-ran')), false, 'b never ran');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('queue: a waiting task’s timeout counts from its real start', { timeout: 120_000 }, async () => {
  const o = queued('timeout', 1);
  const a = runAttempt({ cmd: timed('sleep 0.5') }, o);
  // waits ~0.5 s, longer than its timeout, then runs 0.1 s: within its timeout
  const b = runAttempt({ cmd: ['/bin/sleep', '0.1'], timeoutMs: 300 }, o);
  const c = runAttempt({ cmd: ['/bin/sleep', '5'], timeoutMs: 300 }, o);
  const [ra, rb, rc] = await Promise.all([a.done, b.done, c.done]);
  assert.equal(ra.status, 'succeeded');
  assert.equal(rb.status, 'succeeded', `b: ${rb.error?.message}`);
  const aEnd = Number(ra.stdout.trim().split('\n')[1]);
  assert.ok(rb.startedAt >= aEnd - 20, 'b started when a ended');
  assert.equal(rc.status, 'timed_out');
  assert.equal(rc.error?.code, ErrorCode.TASK_TIMEOUT);
  assert.ok(rc.startedAt >= rb.startedAt + 90, 'c started when b ended');
  const ran = rc.finishedAt - rc.startedAt;
  assert.ok(ran >= 290 && ran < 2000, `c ran ${ran} ms before its 300 ms timeout killed it`);
});

test('queue: the helper killed with tasks waiting: running and waiting tasks fail SPAWN_HELPER_LOST; the waiting ones never ran', { timeout: 120_000 }, async () => {
  const helperPath = DEFAULT_HELPER_PATH.replace(/falconet-spawn-helper$/, './falconet-spawn-helper');
  const dir = mkdtempSync(join(tmpdir(), 'falconet-spawner-'));
  const pids = join(dir, 'pids');
  try {
    const o = { ...queued('lost', 1), helperPath };
    setHelperLimit(o, 1);
    const helperPid = await parentOf(o);
    const running = runAttempt({ cmd: ['/bin/sh', '-c', `echo $$ >> ${pids}; exec sleep 60`] }, o);
    const waiting = [1, 2].map((i) => runAttempt({ cmd: ['/bin/sh', '-c', `touch ${join(dir, `ran-${i}`)}`] }, o));
    await waitFor('the first task running', () => listed(pids).length === 1);
    await sleep(200); // the helper's start report (pgid) is lazy, up to 50 ms: not an event we can see
    process.kill(helperPid, 'SIGKILL');
    for (const r of await Promise.all([running, ...waiting].map((x) => x.done))) {
      assert.deepEqual([r.status, r.error?.code], ['failed', ErrorCode.SPAWN_HELPER_LOST]);
      assert.match(r.error!.message, /spawn helper killed by SIGKILL/);
    }
    await allDead(pids, 'the running task of the dead helper to be killed');
    assert.equal(existsSync(join(dir, 'ran-1')) || existsSync(join(dir, 'ran-2')), false, 'the waiting tasks never ran');
    // a new helper, with the limit still in force
    const t0 = Date.now();
    const next = await Promise.all([1, 2].map(() => runAttempt({ cmd: ['/bin/sh', '-c', 'echo $PPID; sleep 0.2'] }, o).done));
    assert.ok(Date.now() - t0 >= 390, 'limit 1 re-sent to the new helper');
    for (const r of next) {
      assert.equal(r.status, 'succeeded');
      assert.notEqual(Number(r.stdout.trim()), helperPid);
      assert.notEqual(Number(r.stdout.trim()), process.pid, 'a new helper, not the fallback');
    }
  } finally {
    killListed(pids);
    rmSync(dir, { recursive: true, force: true });
  }
});
