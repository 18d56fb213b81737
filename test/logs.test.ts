/** Log lines: readable on a terminal, JSON for machines, and a normal stop said once at info. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { formatLogLine, resolveLogFormat } from '../dispatcher/log-format.js';
import { CLI, FAST, Procs, exited, startDispatcher, startExecutor, waitExecutors, waitFor, waitForLine, within } from './helpers.js';

const READABLE = /^\d\d:\d\d:\d\d\.\d{3} (INFO |WARN |ERROR|FATAL|DEBUG|TRACE) /;

test('the formatter: time, level, name, message, key fields; errors with their stack', { timeout: 10_000 }, () => {
  const at = new Date(2026, 0, 2, 3, 4, 5, 67).getTime();
  const line = JSON.stringify({ level: 30, time: at, pid: 1, hostname: 'h', name: 'dispatcher', msg: 'listening', url: 'ws://127.0.0.1:7878', store: 'sqlite', n: 3, tags: { a: 1 }, note: 'two words' });
  assert.equal(formatLogLine(line + '\n'), '03:04:05.067 INFO  dispatcher: listening url=ws://127.0.0.1:7878 store=sqlite n=3 tags={"a":1} note="two words"\n');
  const err = { type: 'Error', message: 'disk full', stack: 'Error: disk full\n    at commit (store.js:1:1)' };
  const fatal = formatLogLine(JSON.stringify({ level: 60, time: at, name: 'dispatcher', msg: 'store commit failed', err }));
  assert.equal(fatal, '03:04:05.067 FATAL dispatcher: store commit failed err="disk full"\n    Error: disk full\n        at commit (store.js:1:1)\n');
  assert.match(formatLogLine(JSON.stringify({ level: 40, time: at, msg: 'slow consumer dropped' }), true), /^03:04:05\.067 \x1b\[33mWARN \x1b\[0m slow consumer dropped\n$/);
  assert.equal(formatLogLine('not json'), 'not json\n', 'anything else goes through as it is');

  assert.equal(resolveLogFormat([], {}, true), 'pretty');
  assert.equal(resolveLogFormat([], {}, false), 'json');
  assert.equal(resolveLogFormat([], { FALCONET_LOG_FORMAT: 'json' }, true), 'json');
  assert.equal(resolveLogFormat(['--port', '0', '--log-format', 'pretty'], { FALCONET_LOG_FORMAT: 'json' }, false), 'pretty', 'the flag wins');
  assert.equal(resolveLogFormat(['--log-format=json'], {}, true), 'json');
  assert.equal(resolveLogFormat(['--', '--log-format', 'json'], {}, true), 'pretty', 'nothing after --');
  assert.throws(() => resolveLogFormat(['--log-format', 'xml'], {}, true), (e: Error & { code?: string }) => e.code === 'USAGE' && /pretty or json/.test(e.message));
  assert.throws(() => resolveLogFormat([], { FALCONET_LOG_FORMAT: 'yaml' }, true), (e: Error & { code?: string }) => e.code === 'USAGE' && /FALCONET_LOG_FORMAT/.test(e.message));
});

/** Runs `falconet ARGS` on a pseudo-terminal (util-linux `script`), returns what it printed once `until` matched, after SIGTERM. */
async function onTty(procs: Procs, args: string[], until: RegExp, env: NodeJS.ProcessEnv = {}): Promise<string> {
  const cmd = ['exec', process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const script = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, FALCONET_LOG: 'info', FALCONET_LOG_FORMAT: '', ...env } });
  procs.all.add(script);
  script.once('exit', () => procs.all.delete(script));
  let out = '';
  script.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await waitForLine(script, until, 20_000);
  const done = within(new Promise((resolve) => script.once('close', resolve)), 20_000, 'the dispatcher on a terminal to exit'); // 'close': all output read
  // `script` runs the command as its child: signal that, not the terminal.
  const { readFileSync } = await import('node:fs');
  const child = Number(readFileSync(`/proc/${script.pid}/task/${script.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  process.kill(child, 'SIGTERM');
  await done;
  return out.replace(/\r\n/g, '\n').replace(/\x1b\[\d+m/g, ''); // colours on a terminal; the formatter test checks them
}

test('on a terminal the dispatcher and `up` print readable lines', { timeout: 60_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const out = await onTty(procs, ['dispatcher', '--port', '0', '--store', 'memory', ...FAST], /listening on ws/);
  const logs = out.split('\n').filter((l) => l !== '' && !l.startsWith('falconet dispatcher listening'));
  assert.ok(logs.length >= 2, out);
  for (const l of logs) assert.match(l, READABLE, `a readable line: ${JSON.stringify(l)}`);
  assert.ok(!out.includes('{"level"'), 'no JSON on a terminal');
  assert.match(out, /INFO .*dispatcher: listening url=ws:\/\/\S+ transport=\w+/);
  assert.match(out, /WARN .*dispatcher: STORE IS MEMORY/);
  // What a process writes to a pty just before it exits can be lost with the pty (Linux), so the
  // stop line is checked here only when it arrived; the JSON test below checks it strictly.
  assert.ok((out.match(/shutting down/g)?.length ?? 0) <= 1, `the stop is said once at most: ${out}`);
  if (out.includes('shutting down')) assert.match(out, /INFO .*dispatcher: shutting down signal=SIGTERM/);

  // `up`: its executors' lines, forwarded through it, are readable too.
  const up = await onTty(procs, ['up', '--port', '0', '--executors', '1', '--slots', '1', '--store', 'memory', ...FAST], /executor: registered id=/);
  for (const l of up.split('\n').filter((l) => l !== '' && !l.startsWith('falconet dispatcher listening'))) assert.match(l, READABLE, `a readable line from up: ${JSON.stringify(l)}`);
  assert.match(up, /INFO .*falconet: launched requested=1/);
  if (up.includes('falconet: shutting down')) assert.match(up, /INFO .*falconet: shutting down signal=SIGTERM/);

  const json = await onTty(procs, ['dispatcher', '--port', '0', '--store', 'memory', '--log-format', 'json', ...FAST], /listening on ws/);
  assert.match(json, /^\{"level":30,.*"msg":"listening"/m, '--log-format json wins over the terminal');
});

test('not on a terminal (or --log-format json): JSON lines; a drain and a dispatcher stop are info on the executor', { timeout: 60_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs, ['--log-format', 'json'], { FALCONET_LOG: 'info' });
  let dlog = '';
  d.proc.stderr!.on('data', (b: Buffer) => (dlog += b.toString()));
  const ex = startExecutor(procs, d.url, ['--id', 'e1'], { FALCONET_LOG: 'info' });
  let elog = '';
  ex.stderr!.on('data', (b: Buffer) => (elog += b.toString()));
  await waitExecutors(d.url, 1);
  await waitFor('the registration line', () => dlog.includes('executor registered'));
  // A dispatcher stop the executor rides out: the executor says so at info and redials.
  const stopped = exited(d.proc, 20_000, 'the dispatcher');
  d.proc.kill('SIGTERM');
  await stopped;
  await waitFor('the executor to notice', () => elog.includes('dispatcher shut down'));
  const lines = (s: string) => s.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; name: string });
  const dl = lines(dlog);
  assert.ok(dl.every((l) => l.name === 'dispatcher'), 'every dispatcher line is JSON');
  assert.deepEqual(dl.filter((l) => /shutting down/.test(l.msg)).map((l) => l.level), [30], 'one info line for the stop');
  assert.deepEqual(dl.filter((l) => l.level >= 40), [], 'a normal stop warns about nothing');
  const el = lines(elog);
  assert.equal(el.find((l) => l.msg.startsWith('dispatcher shut down'))?.level, 30);
  assert.deepEqual(el.filter((l) => l.level >= 40), [], `nothing the executor logged was a warning: ${elog}`);

  // A drain, end to end: info on both sides.
  const d2 = await startDispatcher(procs, ['--log-format', 'json'], { FALCONET_LOG: 'info' });
  let d2log = '';
  d2.proc.stderr!.on('data', (b: Buffer) => (d2log += b.toString()));
  const ex2 = startExecutor(procs, d2.url, ['--id', 'e2'], { FALCONET_LOG: 'info' });
  let e2log = '';
  ex2.stderr!.on('data', (b: Buffer) => (e2log += b.toString()));
  await waitExecutors(d2.url, 1);
  const gone = exited(ex2, 20_000, 'the drained executor');
  const { connect } = await import('../client/index.js');
  const client = await connect(d2.url);
  await client.drain('e2');
  await client.close();
  assert.equal((await gone).code, 0);
  await waitFor('the dispatcher to see it leave', () => d2log.includes('executor leaving'));
  const e2 = lines(e2log);
  assert.equal(e2.find((l) => l.msg === 'draining')?.level, 30);
  assert.equal(e2.find((l) => l.msg === 'executor exiting')?.level, 30);
  assert.deepEqual(e2.filter((l) => l.level >= 40), [], `a drain warns about nothing: ${e2log}`);
  assert.deepEqual(lines(d2log).filter((l) => l.level >= 40), []);
});
