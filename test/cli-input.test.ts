/**
 * Input checked before anything runs, summaries and exit codes (issue 11, item 2), and `watch`
 * never exiting 0 with results missing (issue 14, F2).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../client/index.js';
import { Procs, exited, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

async function setup(t: { after(fn: () => Promise<void>): void }, executors = 1, dispatcherArgs: string[] = []) {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, dispatcherArgs);
  for (let i = 0; i < executors; i++) startExecutor(procs, d.url, ['--slots', '2', ...(dispatcherArgs.includes('--executor-token') ? ['--token', 'e-secret'] : [])]);
  if (executors > 0) await waitExecutors(d.url, executors, dispatcherArgs.includes('--client-token') ? 'c-secret' : undefined);
  return { procs, d, dir: procs.tmpDir() };
}

test('submit --file: every line is checked first; one bad line and nothing is submitted, exit 2, F:LINE for the first 20 and a count', { timeout: 120_000 }, async (t) => {
  const { procs, d, dir } = await setup(t, 0);
  const lines: string[] = [];
  for (let i = 1; i <= 10_000; i++) lines.push('{"builtin":"noop"}');
  lines[4999] = '{"builtin": "noop",, }'; // line 5000: not JSON
  lines[5999] = '{"cmd": "echo hi"}'; // line 6000: the schema says no
  lines[6999] = '{"bulitin": "noop"}'; // line 7000: a typo
  for (let i = 8000; i < 8023; i++) lines[i] = '[1]'; // lines 8001..8023: not objects
  const file = join(dir, 'tasks.jsonl');
  writeFileSync(file, lines.join('\n') + '\n');
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '--file', file]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, '');
  const err = r.stderr.split('\n');
  assert.match(err[0], new RegExp(`^${file}:5000: not JSON: `));
  assert.match(err[1], new RegExp(`^${file}:6000: /cmd: Expected array`));
  assert.match(err[2], new RegExp(`^${file}:7000: /bulitin: Unexpected property; did you mean "builtin"\\?`));
  assert.equal(err.filter((l) => l.startsWith(`${file}:`)).length, 20, 'the first 20 bad lines');
  assert.match(r.stderr, /… and 6 more bad line\(s\)\n/);
  assert.match(r.stderr, /26 bad line\(s\) of 10,000; nothing submitted/);
  const s = await status(d.url);
  assert.equal(s.tasks.submitted, 0, 'nothing reached the dispatcher');

  const missing = await runCli(procs, ['submit', '--dispatcher', d.url, '--file', join(dir, 'nope.jsonl')]);
  assert.deepEqual([missing.code, missing.stderr], [2, `falconet: cannot read ${join(dir, 'nope.jsonl')}: no such file\n`]);
  const directory = await runCli(procs, ['submit', '--dispatcher', d.url, '--file', dir]);
  assert.deepEqual([directory.code, directory.stderr], [2, `falconet: cannot read ${dir}: is a directory\n`]);
});

test('submit: results carry their input line; one summary line on stderr; exit 1 when a task failed', { timeout: 120_000 }, async (t) => {
  const { procs, d, dir } = await setup(t);
  const file = join(dir, 'tasks.jsonl');
  writeFileSync(file, ['{"cmd":["echo","one"]}', '', '{"cmd":["sh","-c","exit 4"]}', '{"id":"mine","builtin":"noop"}'].join('\n') + '\n');
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '--file', file]);
  assert.equal(r.code, 1, r.stderr);
  const results = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const byLine = Object.fromEntries(results.map((x) => [x.line, x]));
  assert.deepEqual(Object.keys(byLine).sort(), ['1', '3', '4']);
  assert.equal(byLine[1].stdout, 'one\n');
  assert.match(byLine[1].id, /-1$/, 'a generated id ends in its line number');
  assert.deepEqual([byLine[3].status, byLine[3].exitCode], ['failed', 4]);
  assert.equal(byLine[4].id, 'mine');
  assert.match(r.stderr, /^falconet: 2 succeeded, 1 failed \(exit 4\), in \d+\.\d s\n$/);

  const ok = await runCli(procs, ['submit', '--dispatcher', d.url, '-'], { input: '{"builtin":"noop"}\n' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /^falconet: 1 succeeded, in \d+\.\d s\n$/);
});

test('submit from stdin stops at the first bad line (exit 2) unless --skip-invalid', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t);
  const input = ['{"builtin":"noop","id":"a"}', '{not json', '{"builtin":"noop","id":"c"}'].join('\n') + '\n';
  const r = await runCli(procs, ['submit', '--dispatcher', d.url, '-'], { input });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^<stdin>:2: not JSON: /m);
  assert.match(r.stderr, /stopped reading at line 2/);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => [JSON.parse(l).id, JSON.parse(l).line]), [['a', 1]]);
  assert.match(r.stderr, /falconet: 1 succeeded, 1 bad line\(s\) \(reading stopped at the first\), in /);

  const skip = await runCli(procs, ['submit', '--dispatcher', d.url, '--skip-invalid'], { input: input.replace(/"a"/, '"a2"').replace(/"c"/, '"c2"') });
  assert.equal(skip.code, 0, skip.stderr);
  const got = skip.stdout.trim().split('\n').map((l) => JSON.parse(l)).map((x) => [x.id, x.line]).sort();
  assert.deepEqual(got, [['a2', 1], ['c2', 3]]);
  assert.match(skip.stderr, /2 succeeded, 1 bad line\(s\) skipped, in /);
});

test('exit 3: dispatcher unreachable, credential refused; errors name the thing at fault', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t, 1, ['--client-token', 'c-secret', '--executor-token', 'e-secret']);
  const unreachable = await runCli(procs, ['run', '--dispatcher', 'ws://127.0.0.1:1', '--connect-timeout', '0.5', '--', 'true']);
  assert.equal(unreachable.code, 3, unreachable.stderr);
  const wrong = await runCli(procs, ['submit', '--dispatcher', d.url, '--token', 'nope', '-'], { input: '{"builtin":"noop"}\n' });
  assert.equal(wrong.code, 3, wrong.stderr);
  assert.match(wrong.stderr, /AUTH_FAILED/);
  const role = await runCli(procs, ['run', '--dispatcher', d.url, '--token', 'e-secret', '--', 'true']);
  assert.equal(role.code, 3, role.stderr);
  assert.match(role.stderr, /AUTH_WRONG_ROLE/);
  const cwd = await runCli(procs, ['run', '--dispatcher', d.url, '--token', 'c-secret', '--cwd', '/no/such/dir', '--', 'pwd']);
  assert.equal(cwd.code, 127, cwd.stderr);
  assert.match(cwd.stderr, /SPAWN_FAILED: --cwd \/no\/such\/dir: no such directory on executor /);
  const cmd = await runCli(procs, ['run', '--dispatcher', d.url, '--token', 'c-secret', '--', 'no-such-command-xyz']);
  assert.match(cmd.stderr, /no-such-command-xyz: command not found on executor /);
});

test('a session has one reader: a second one is refused (SESSION_BUSY), the first watch gets everything (issue 14 F2)', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t);
  const input = Array.from({ length: 40 }, () => '{"cmd":["sleep","0.2"]}').join('\n') + '\n';
  const sub = await runCli(procs, ['submit', '--detach', '--dispatcher', d.url, '-'], { input });
  assert.equal(sub.code, 0, sub.stderr);
  const session = sub.stdout.trim();
  const watch = procs.spawn(['watch', '--dispatcher', d.url, session]);
  let out = '';
  let err = '';
  watch.stdout!.on('data', (b: Buffer) => (out += b));
  watch.stderr!.on('data', (b: Buffer) => (err += b));
  await waitFor('watch printed a result', () => out.includes('\n'), 30_000);
  // The SDK and a second watch are refused at once, with the code and why; nothing is taken over.
  await assert.rejects(connect(d.url, { session }), (e: { code?: string }) => e.code === 'SESSION_BUSY');
  const second = await runCli(procs, ['watch', '--dispatcher', d.url, session]);
  assert.equal(second.code, 3, second.stderr);
  assert.match(second.stderr, /SESSION_BUSY: session \S+ is being read by another connection/);
  const { code } = await exited(watch, 60_000, 'falconet watch');
  assert.equal(code, 0, `the first watch keeps its session; stderr: ${err}`);
  assert.equal(out.trim().split('\n').length, 40, 'every result printed, once');
});

test('watch: a summary line, and exit 0 when all succeeded', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t);
  const sub = await runCli(procs, ['submit', '--detach', '--dispatcher', d.url, '-'], { input: '{"builtin":"noop"}\n{"cmd":["sh","-c","exit 5"]}\n' });
  const w = await runCli(procs, ['watch', '--dispatcher', d.url, sub.stdout.trim()]);
  assert.equal(w.code, 1, w.stderr);
  assert.match(w.stderr, /^falconet: 1 succeeded, 1 failed \(exit 5\), in \d+\.\d s\n$/);
  assert.doesNotMatch(w.stderr, /\r/, 'no progress drawn when stderr is not a terminal');
});
