/**
 * State that survives: kill -9 of the dispatcher mid-run, client crashes and reattach, client
 * leases, idempotent resubmits, retention, retries, and stores that cannot be used.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, truncateSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { pack, unpack } from 'msgpackr';
import { connect, type TaskResult } from '../client/index.js';
import { Procs, exited, freePort, mulberry32, runCli, startDispatcher, startExecutor, status, testSeed, waitExecutors, waitFor, within, type Dispatcher } from './helpers.js';

/** Starts a dispatcher on a fixed port and data dir (so that it can be restarted in place). */
async function dispatcherAt(procs: Procs, port: number, dataDir: string, extra: string[] = []): Promise<Dispatcher> {
  return startDispatcher(procs, ['--port', String(port), '--data-dir', dataDir, ...extra]);
}

async function kill9(d: Dispatcher): Promise<void> {
  const exit = exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
}

function jsonLines(text: string): TaskResult[] {
  return text.trim() === '' ? [] : text.trim().split('\n').map((l) => JSON.parse(l) as TaskResult);
}

test('kill -9 of the dispatcher 5 times during a detached run of 20,000 tasks: every task finishes, watch shows each once', { timeout: 300_000 }, async (t) => {
  // The crash times are random, from a printed seed: FALCONET_TEST_SEED=<seed> replays them.
  const seed = testSeed();
  const random = mulberry32(seed);
  // Both: node:test can drop a diagnostic when several files report at once; stdout it keeps.
  t.diagnostic(`FALCONET_TEST_SEED=${seed}`);
  console.log(`durable.test.ts kill -9 run: FALCONET_TEST_SEED=${seed}`);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  let d = await dispatcherAt(procs, port, dataDir);
  startExecutor(procs, d.url, ['--slots', '40']);
  startExecutor(procs, d.url, ['--slots', '40']);
  await waitExecutors(d.url, 2);

  const ids = Array.from({ length: 20_000 }, (_, i) => `k${i}`);
  const input = ids.map((id) => JSON.stringify({ id, builtin: 'sleep', ms: 20 })).join('\n');
  const sub = await runCli(procs, ['submit', '--dispatcher', d.url, '--detach', '--file', '-'], { input });
  assert.equal(sub.code, 0, sub.stderr);
  const session = sub.stdout.trim();

  // watch runs through every crash: its SDK reconnects and resumes at its cursor.
  const watch = procs.spawn(['watch', '--dispatcher', d.url, session]);
  let watched = '';
  let watchErr = '';
  watch.stdout!.on('data', (b: Buffer) => (watched += b));
  watch.stderr!.on('data', (b: Buffer) => (watchErr += b));
  const watchDone = exited(watch, 180_000, 'watch to see every result and exit');
  // The crashes start once watch is attached: what is under test is its reconnects, not its first dial.
  await waitFor('watch attached', async () => (await status(d.url)).sessions.connected === 1);

  const delays: number[] = [];
  for (let k = 0; k < 5; k++) {
    // Not synchronisation: the crash points are meant to be arbitrary moments of the run.
    const delay = Math.round(300 + random() * 900);
    delays.push(delay);
    await sleep(delay);
    await kill9(d);
    d = await dispatcherAt(procs, port, dataDir);
  }
  await waitFor('every task to finish', async () => {
    const s = await status(d.url).catch(() => undefined);
    return s && s.tasks.queued === 0 && s.tasks.running === 0;
  }, 120_000);
  t.diagnostic(`crashes after ${delays.join(', ')} ms (seed ${seed})`);
  console.log(`durable.test.ts kill -9 run: crashes after ${delays.join(', ')} ms (FALCONET_TEST_SEED=${seed})`);
  const watchCode = (await watchDone).code;
  const results = jsonLines(watched);
  const unsuccessful = results.filter((r) => r.status !== 'succeeded').slice(0, 3);
  assert.equal(watchCode, 0, `watch exited ${watchCode}: ${watchErr.slice(-2000)} ${JSON.stringify(unsuccessful)}`);
  const seen = new Set(results.map((r) => r.id));
  assert.equal(results.length, 20_000, 'no result twice');
  assert.equal(seen.size, 20_000);
  for (const id of ids) assert.ok(seen.has(id), `result for ${id}`);
  assert.ok(results.every((r) => r.status === 'succeeded'));
});

test('a client killed mid-run reattaches and gets the rest, in order, without duplicates', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '1']); // one slot: results come in submission order
  await waitExecutors(d.url, 1);
  const ids = Array.from({ length: 300 }, (_, i) => `o${i}`);
  const input = ids.map((id) => JSON.stringify({ id, builtin: 'sleep', ms: 5 })).join('\n');
  const client = procs.spawn(['submit', '--dispatcher', d.url, '--session', 'reattach-me', '--file', '-']);
  client.stdin!.end(input);
  const clientExit = exited(client, 60_000, 'the killed client');
  let first = '';
  client.stdout!.on('data', (b: Buffer) => (first += b));
  await waitFor('some results', () => first.split('\n').length > 100);
  client.kill('SIGKILL');
  await clientExit;
  const before = jsonLines(first.slice(0, first.lastIndexOf('\n') + 1)).map((r) => r.id);

  const w = await runCli(procs, ['watch', '--dispatcher', d.url, 'reattach-me']);
  assert.equal(w.code, 0, w.stderr);
  const after = jsonLines(w.stdout).map((r) => r.id);
  assert.equal(new Set(after).size, after.length, 'no duplicates in the reattached stream');
  // In order: the reattached stream is a contiguous tail of the submission order.
  const start = ids.indexOf(after[0]);
  assert.deepEqual(after, ids.slice(start));
  // Nothing missing; at most the unacknowledged window (acks are batched) is seen twice.
  assert.ok(start <= before.length, `gap: first reattached ${after[0]} after ${before.length} seen`);
  assert.ok(before.length - start < 100, `overlap ${before.length - start}`);
});

test('a client lease expires: the session’s queued and running tasks are cancelled, executors go idle', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '2', '--id', 'ex']);
  await waitExecutors(d.url, 1);
  const leased = await connect(d.url, { leaseMs: 500 });
  const kept = await connect(d.url); // no lease: its tasks outlive the client
  const leasedSession = leased.session.id;
  const keptSession = kept.session.id;
  await leased.submitMany(Array.from({ length: 4 }, (_, i) => ({ id: `l${i}`, cmd: ['sleep', '30'] })), { until: 'accepted' });
  await kept.submitMany([{ id: 'k0', builtin: 'sleep', ms: 1500 }], { until: 'accepted' });
  await waitFor('two running', async () => (await status(d.url)).tasks.running === 2);
  await leased.close();
  await kept.close();
  await waitFor('the leased tasks cancelled', async () => {
    const s = await status(d.url);
    return s.tasks.finished.cancelled === 4 ? s : undefined;
  }, 10_000);
  const back = await connect(d.url, { session: leasedSession });
  const results: TaskResult[] = [];
  for await (const r of back.results()) {
    results.push(r);
    if (back.outstanding === 0) break;
  }
  assert.equal(results.length, 4);
  assert.ok(results.every((r) => r.status === 'cancelled' && r.error?.code === 'TASK_CANCELLED'));
  await back.close();
  const keptBack = await connect(d.url, { session: keptSession });
  const [k] = await (async () => {
    const out: TaskResult[] = [];
    for await (const r of keptBack.results()) {
      out.push(r);
      if (keptBack.outstanding === 0) break;
    }
    return out;
  })();
  assert.equal(k.status, 'succeeded', 'a session without a lease keeps running for a later reattach');
  await keptBack.close();
  await waitFor('executors idle', async () => (await status(d.url)).executors[0]?.state === 'idle');
});

/** A raw client: hello, then the given frames; resolves with every message until `until`. */
async function rawSession(url: string, session: string, frames: unknown[][], until: (m: Record<string, unknown>) => boolean): Promise<Array<Record<string, unknown>>> {
  const ws = new WebSocket(url);
  const seen: Array<Record<string, unknown>> = [];
  await within(new Promise((r) => ws.once('open', r)), 10_000, 'the raw session to connect');
  return within(new Promise<Array<Record<string, unknown>>>((resolve) => {
    ws.on('message', (data: Buffer) => {
      for (const m of unpack(data) as Array<Record<string, unknown>>) {
        seen.push(m);
        if (until(m)) {
          ws.terminate();
          resolve(seen);
        }
      }
    });
    ws.send(pack([{ t: 'hello', v: 1, role: 'client', caps: [], session }]));
    for (const f of frames) ws.send(pack(f));
  }), 15_000, `the awaited message; saw ${JSON.stringify(seen).slice(0, 500)}`).finally(() => ws.terminate());
}

test('idempotent resubmit after a client crash between submit and ack, across a dispatcher restart', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  let d = await dispatcherAt(procs, port, dataDir);
  const tasks = ['a', 'b', 'c'].map((id) => ({ id, builtin: 'noop' }));
  // Submit, and die the moment the dispatcher has it (before our ack is read).
  await rawSession(d.url, 'idem', [[{ t: 'submit', ref: 1, tasks }]], (m) => m.t === 'accepted');
  await kill9(d);
  d = await dispatcherAt(procs, port, dataDir);
  // The crashed client comes back and sends everything again, plus one new task.
  const again = await rawSession(d.url, 'idem', [[{ t: 'submit', ref: 1, tasks: [...tasks, { id: 'd', builtin: 'noop' }] }]], (m) => m.t === 'accepted');
  assert.equal(again.find((m) => m.t === 'welcome')?.resumed, true);
  assert.equal(again.find((m) => m.t === 'accepted')?.accepted, 4);
  startExecutor(procs, d.url);
  const w = await runCli(procs, ['watch', '--dispatcher', d.url, 'idem']);
  assert.deepEqual(jsonLines(w.stdout).map((r) => r.id).sort(), ['a', 'b', 'c', 'd']);
});

test('retention collects finished sessions; the store stops growing under a steady workload', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dataDir = procs.tmpDir();
  const d = await startDispatcher(procs, ['--data-dir', dataDir, '--retention', '0.5']);
  startExecutor(procs, d.url, ['--slots', '16']);
  await waitExecutors(d.url, 1);
  const file = join(dataDir, 'falconet.db');
  const size = () => statSync(file).size + (existsSync(file + '-wal') ? statSync(file + '-wal').size : 0);
  const sizes: number[] = [];
  const dbSizes: number[] = [];
  for (let round = 0; round < 24; round++) {
    const c = await connect(d.url);
    await c.submitMany(Array.from({ length: 400 }, (_, i) => ({ id: `r${i}`, cmd: ['echo', 'x'.repeat(200)] })), { until: 'finished' });
    await c.close();
    // Each sample in the same state: this round's session collected (0.5 s retention), so the
    // store holds no session's tasks, whatever the machine's speed.
    await waitFor(`round ${round}'s session collected`, async () => (await status(d.url)).sessions.total === 0, 15_000);
    sizes.push(size());
    dbSizes.push(statSync(file).size);
  }
  // The database file is what retention bounds: collected sessions free their pages for reuse.
  // The WAL is not compared between rounds: its size is a high-water mark set by the checkpoint
  // threshold (1000 pages) plus the largest group commit, which grows when a loaded machine
  // batches more per commit; it is only checked to stay far below the 64 MiB journal_size_limit.
  const early = Math.max(...dbSizes.slice(6, 12));
  const late = Math.max(...dbSizes.slice(18));
  const report = `db bytes per round: ${dbSizes.join(' ')}; db+wal: ${sizes.join(' ')}`;
  assert.ok(late <= early * 1.25, `store grew from ${early} to ${late} bytes: ${report}`);
  const wal = Math.max(...sizes.map((x, i) => x - dbSizes[i]));
  assert.ok(wal < 32 * 1024 * 1024, `the WAL reached ${wal} bytes: ${report}`);
  t.diagnostic(report);
});

test('retry on chosen exit codes only, and a crash counter that survives restarts', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  let d = await dispatcherAt(procs, port, dataDir);
  startExecutor(procs, d.url);
  await waitExecutors(d.url, 1);
  const c = await connect(d.url);
  const [retried, notAsked] = await Promise.all([
    c.submit({ cmd: ['sh', '-c', 'exit 7'], retryOnExit: [7], maxAttempts: 3 }),
    c.submit({ cmd: ['sh', '-c', 'exit 7'] }),
  ]);
  assert.deepEqual([retried.status, retried.attempts, retried.exitCode], ['failed', 3, 7]);
  assert.deepEqual([notAsked.status, notAsked.attempts], ['failed', 1]);
  const session = c.session.id;
  await c.close();
  await waitFor('executor gone', async () => {
    for (const p of procs.all) if (p !== d.proc) p.kill('SIGKILL');
    return (await status(d.url)).executors.length === 0;
  });

  // A task that kills its executor, three times, with dispatcher crashes in between.
  const k = await connect(d.url, { session });
  await k.submitMany([{ id: 'killer', cmd: ['sh', '-c', 'kill -9 $PPID; sleep 5'] }], { until: 'accepted' });
  await k.close();
  for (let i = 0; i < 3; i++) {
    // Node's spawn, so that the task's parent ($PPID) is the executor itself (through the spawn
    // helper it would be the helper, whose death the executor survives: test/spawner.test.ts).
    const e = startExecutor(procs, d.url, ['--spawner', 'node']);
    await exited(e, 20_000, 'the task to kill its executor');
    await waitFor('the lease to expire', async () => (await status(d.url)).executors.length === 0);
    await kill9(d);
    d = await dispatcherAt(procs, port, dataDir);
  }
  const w = await runCli(procs, ['watch', '--dispatcher', d.url, session]);
  const killer = jsonLines(w.stdout).find((r) => r.id === 'killer')!;
  assert.equal(killer.status, 'lost');
  assert.equal(killer.error?.code, 'TASK_EXECUTOR_LOST');
  assert.equal(killer.attempts, 3);
});

test('a corrupted or truncated store, an unusable data dir, a store in use: clear errors, no start', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const start = (dir: string) => runCli(procs, ['dispatcher', '--port', '0', '--data-dir', dir]);

  const garbage = procs.tmpDir();
  writeFileSync(join(garbage, 'falconet.db'), Buffer.alloc(8192, 0x5a));
  let r = await start(garbage);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /STORE_CORRUPT/);

  const truncated = procs.tmpDir();
  const d = await startDispatcher(procs, ['--data-dir', truncated]);
  const c = await connect(d.url);
  await c.submitMany(Array.from({ length: 5000 }, (_, i) => ({ id: `t${i}`, cmd: ['echo', String(i).repeat(50)] })), { until: 'accepted' });
  await c.close();
  d.proc.kill('SIGTERM');
  await exited(d.proc, 15_000, 'the dispatcher after SIGTERM');
  const db = join(truncated, 'falconet.db');
  truncateSync(db, Math.floor(statSync(db).size / 2));
  r = await start(truncated);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /STORE_CORRUPT/);

  const file = join(procs.tmpDir(), 'a-file');
  writeFileSync(file, 'not a directory');
  r = await start(join(file, 'data'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /STORE_UNAVAILABLE.*not writable/);

  const shared = procs.tmpDir();
  await startDispatcher(procs, ['--data-dir', shared]);
  r = await start(shared);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /STORE_UNAVAILABLE.*another dispatcher/);
});

test('a full disk: the dispatcher refuses to acknowledge and exits with STORE_FAILED', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  const dir = mkdtempSync(join(tmpdir(), 'falconet-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    // The real cause: not root, no mount binary, or a container without CAP_SYS_ADMIN.
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    const why = e.code === 'ENOENT' ? 'no mount binary' : (e.stderr?.toString().trim() || e.message);
    t.skip(`cannot mount a 1 MiB tmpfs (uid ${process.getuid?.()}): ${why}`);
    return;
  }
  t.after(async () => {
    await procs.killAll();
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  const port = await freePort();
  const d = await dispatcherAt(procs, port, dir);
  let stderr = '';
  d.proc.stderr!.on('data', (b: Buffer) => (stderr += b));
  const exit = exited(d.proc, 60_000, 'the dispatcher to fail on the full store');
  // A raw client, so that every `accepted` the dispatcher sends is seen, by ref: first 5 small
  // submits that fit (the session and some work are in the store), then 200 submits of one 60 KB
  // task each, 12 MB against a 1 MiB disk.
  const ws = new WebSocket(d.url);
  const accepted = new Map<number, number>();
  ws.on('message', (data: Buffer) => {
    for (const m of unpack(data) as Array<Record<string, unknown>>) if (m.t === 'accepted') accepted.set(m.ref as number, m.accepted as number);
  });
  ws.on('error', () => {});
  await within(new Promise((r) => ws.once('open', r)), 10_000, 'the raw client to connect');
  ws.send(pack([{ t: 'hello', v: 1, role: 'client', caps: [], session: 'full' }]));
  for (let ref = 1; ref <= 5; ref++) ws.send(pack([{ t: 'submit', ref, tasks: [{ id: `f${ref}`, builtin: 'noop' }] }]));
  await waitFor('the small submits acknowledged', () => accepted.size === 5, 15_000);
  const big = 'z'.repeat(60_000);
  for (let ref = 6; ref <= 205; ref++) ws.send(pack([{ t: 'submit', ref, tasks: [{ id: `f${ref}`, builtin: 'noop', env: { BIG: big } }] }]));
  assert.equal((await exit).code, 1);
  assert.match(stderr, /STORE_FAILED/);
  ws.terminate();
  // Some work was refused: the submits the store could not commit got no `accepted`.
  assert.ok(accepted.size < 205, `all 205 submits acknowledged on a 1 MiB disk`);
  // Every `accepted` that did arrive is for work that is in the store: with room on the disk
  // again, a restarted dispatcher runs exactly those tasks (and maybe some never acknowledged,
  // whose commit landed before the failure), never fewer.
  execFileSync('mount', ['-o', 'remount,size=64m', dir]);
  const again = await dispatcherAt(procs, port, dir);
  startExecutor(procs, again.url);
  const w = await runCli(procs, ['watch', '--dispatcher', again.url, 'full']);
  assert.equal(w.code, 0, w.stderr);
  const ran = new Set(jsonLines(w.stdout).map((r) => r.id));
  const lost = [...accepted.keys()].filter((ref) => !ran.has(`f${ref}`));
  assert.deepEqual(lost, [], `acknowledged but not in the store (${accepted.size} acknowledged, ${ran.size} in the store)`);
  t.diagnostic(`${accepted.size} of 205 submits acknowledged before STORE_FAILED; ${ran.size} tasks in the store`);
});

test('watch of an unknown session is an error, not an empty stream', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const r = await runCli(procs, ['watch', '--dispatcher', d.url, 'no-such-session']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /NOT_FOUND/);
});

test('an HTTP submit is answered only once its tasks are on disk: kill -9 right after the answer loses none', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  // A long lease makes the periodic tick slow (a quarter of it, at most 250 ms): a commit that
  // waited for it would come well after the answer.
  const flags = ['--lease-ms', '30000'];
  let d = await dispatcherAt(procs, port, dataDir, flags);
  const http = d.url.replace(/^ws/, 'http');
  for (let round = 0; round < 3; round++) {
    const ids = Array.from({ length: 20 }, (_, i) => `h${round}-${i}`);
    const res = await fetch(`${http}/api/tasks`, { method: 'POST', body: JSON.stringify(ids.map((id) => ({ id, builtin: 'noop' }))) });
    assert.equal(res.status, 200, await res.clone().text());
    const { session } = (await res.json()) as { session: string };
    await kill9(d);
    d = await dispatcherAt(procs, port, dataDir, flags);
    for (const id of [ids[0], ids[19]]) {
      const found = await fetch(`${d.url.replace(/^ws/, 'http')}/api/tasks/${id}?session=${session}`);
      assert.equal(found.status, 200, `${id} was acknowledged, so it survives kill -9: ${await found.text()}`);
    }
  }
});
