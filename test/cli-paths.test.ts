/** The CLI behaves like the tools people know: Ctrl-C on `run` cancels the task; a busy port or a bad data dir is one line. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Procs, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

test('Ctrl-C on `falconet run -- sleep 30` cancels the task within 2 s and the CLI exits 130', { timeout: 60_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '1']);
  await waitExecutors(d.url, 1);
  // host:port, as people type it
  const run = procs.spawn(['run', '--', 'sleep', '30'], { FALCONET_URL: `127.0.0.1:${d.port}` });
  let stderr = '';
  run.stderr!.on('data', (b: Buffer) => (stderr += b));
  run.stdout!.resume();
  const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)));
  await waitFor('the task running', async () => (await status(d.url)).tasks.running === 1);
  run.kill('SIGINT');
  const at = Date.now();
  await waitFor('the task cancelled', async () => (await status(d.url)).tasks.finished.cancelled === 1, 2000);
  assert.ok(Date.now() - at <= 2000, 'cancelled within 2 s');
  assert.equal(await exited, 130);
  assert.match(stderr, /SIGINT: cancelling task run-/);
  assert.equal((await status(d.url)).tasks.running, 0);
});

test('a second dispatcher on a busy port prints one line ADDRESS_IN_USE and exits 1', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--host', '127.0.0.1']);
  // FALCONET_LOG=info: the store's "opened" log line would show up if the store were opened first.
  const second = await runCli(procs, ['dispatcher', '--host', '127.0.0.1', '--port', String(d.port), '--data-dir', procs.tmpDir()], { env: { FALCONET_LOG: 'info' } });
  assert.equal(second.code, 1);
  assert.equal(second.stderr, `falconet: ADDRESS_IN_USE: port ${d.port} on 127.0.0.1 is in use; pick another with --port\n`);
  assert.equal(second.stdout, '');
});

test('an unusable --data-dir (a path under a regular file) fails at once: one line STORE_UNAVAILABLE, exit 1', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const file = join(procs.tmpDir(), 'file');
  writeFileSync(file, 'not a directory');
  const r = await runCli(procs, ['dispatcher', '--port', '0', '--data-dir', join(file, 'data')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^falconet: STORE_UNAVAILABLE: [^\n]*ENOTDIR[^\n]*\n$/);
});

test('a client command that cannot reach its dispatcher says so after ~2 s and gives up at --connect-timeout', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const r = await runCli(procs, ['run', '--dispatcher', '127.0.0.1:1', '--connect-timeout', '3', '--', 'true']);
  assert.equal(r.code, 3); // issue 11: 3 is "dispatcher unreachable or credential refused"
  assert.match(r.stderr, /dialing ws:\/\/127\.0\.0\.1:1: is a dispatcher running\?/);
  assert.match(r.stderr, /UNREACHABLE: no dispatcher answered at ws:\/\/127\.0\.0\.1:1 within 3000 ms \(last error: [^)]*ECONNREFUSED/);
  const s = await runCli(procs, ['status', '--dispatcher', '127.0.0.1:1', '--connect-timeout', '1']);
  assert.equal(s.code, 3);
  assert.match(s.stderr, /UNREACHABLE: no dispatcher answered at http:\/\/127\.0\.0\.1:1\/api\/status within 1000 ms/);
  const bad = await runCli(procs, ['status', '--dispatcher', 'http://127.0.0.1:1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /USAGE/);
});

test('a task that waits names itself and what it waits for (no executors)', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const run = procs.spawn(['run', '--dispatcher', `127.0.0.1:${d.port}`, '--', 'true']);
  run.stdout!.resume();
  let stderr = '';
  const said = new Promise<void>((resolve) =>
    run.stderr!.on('data', (b: Buffer) => {
      stderr += b;
      if (/queued: 0 executors connected/.test(stderr)) resolve();
    }),
  );
  await said;
  assert.match(stderr, /task run-[0-9a-f]+ \(session [^;]+; Ctrl-C cancels it\) is not finished/);
  const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)));
  run.kill('SIGTERM');
  assert.equal(await exited, 143);
});
