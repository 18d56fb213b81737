/** `falconet task`, `tasks`, `sessions`, `submit --detach --print-ids` and `cancel ID...` against a real dispatcher. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Procs, runCli, startDispatcher, startExecutor, waitExecutors, waitFor } from './helpers.js';

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--slots', '2']);
  await waitExecutors(d.url, 1);
  return { procs, d };
}

test('submit --detach --print-ids prints each id in input order; task, tasks and sessions show them', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t);
  const input = [
    JSON.stringify({ cmd: ['sh', '-c', 'echo hello; echo oops >&2; exit 3'] }),
    JSON.stringify({ id: 'mine-1', cmd: ['echo', 'hi'] }),
    JSON.stringify({ builtin: 'noop' }),
  ].join('\n');
  const sub = await runCli(procs, ['submit', '--detach', '--print-ids', '--session', 'cli-s', '--dispatcher', d.url], { input });
  assert.equal(sub.code, 0, sub.stderr);
  const ids = sub.stdout.trim().split('\n');
  assert.equal(ids.length, 3);
  assert.equal(ids[1], 'mine-1');
  assert.equal(new Set(ids).size, 3);

  // FALCONET_URL in host:port form, as people type it.
  const env = { FALCONET_URL: `127.0.0.1:${d.port}` };
  const finished = await waitFor('the three tasks finished', async () => {
    const r = await runCli(procs, ['tasks', '--session', 'cli-s', '--json'], { env });
    const tasks = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    return tasks.length === 3 && tasks.every((x) => x.state !== 'queued' && x.state !== 'running') ? tasks : undefined;
  }, 60_000);
  assert.deepEqual(finished.map((x) => x.id).sort(), [...ids].sort());

  const failed = await runCli(procs, ['task', ids[0]], { env });
  assert.equal(failed.code, 0, failed.stderr);
  assert.match(failed.stdout, new RegExp(`^task ${ids[0]}\\n`));
  assert.match(failed.stdout, /session +cli-s/);
  assert.match(failed.stdout, /state +failed/);
  assert.match(failed.stdout, /attempt +1/);
  assert.match(failed.stdout, /executor +\S+/);
  assert.match(failed.stdout, /result +failed \(exit 3, /);
  assert.match(failed.stdout, /stdout \(6 bytes\):\n +hello\n/);
  assert.match(failed.stdout, /stderr \(5 bytes\):\n +oops\n/);

  const json = await runCli(procs, ['task', 'mine-1', '--json'], { env });
  assert.equal(json.code, 0);
  const info = JSON.parse(json.stdout);
  assert.equal(info.id, 'mine-1');
  assert.equal(info.session, 'cli-s');
  assert.equal(info.state, 'succeeded');
  assert.equal(info.result.stdout, 'hi\n');

  const table = await runCli(procs, ['tasks', '--session', 'cli-s'], { env });
  assert.equal(table.code, 0);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[0], /^ID +SESSION +STATE +ATTEMPT +EXECUTOR +SUBMITTED +INFO$/);
  assert.equal(lines.length, 4);
  assert.ok(lines.some((l) => /^mine-1 +cli-s +succeeded /.test(l)));

  const onlyFailed = await runCli(procs, ['tasks', '--state', 'failed', '--json'], { env });
  assert.deepEqual(onlyFailed.stdout.trim().split('\n').map((l) => JSON.parse(l).id), [ids[0]]);
  const limited = await runCli(procs, ['tasks', '--limit', '2', '--json'], { env });
  assert.equal(limited.stdout.trim().split('\n').length, 2);

  const sessions = await runCli(procs, ['sessions', '--json'], { env });
  assert.equal(sessions.code, 0, sessions.stderr);
  const list = sessions.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const s = list.find((x) => x.id === 'cli-s');
  assert.ok(s, sessions.stdout);
  assert.equal(s.submitted, 3);
  assert.equal(s.finished, 3);
  assert.equal(s.unfinished, 0);
  assert.equal(list.length, 1, 'asking opened no session');
  const sessionsTable = await runCli(procs, ['sessions'], { env });
  assert.match(sessionsTable.stdout, /^SESSION +CREATED +CONNECTED +SUBMITTED +FINISHED +UNFINISHED +UNACKED\ncli-s +/);
});

test('task of an unknown id: exit 1 with NOT_FOUND; usage errors exit 2', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t);
  const r = await runCli(procs, ['task', 'no-such-task', '--dispatcher', d.url]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^falconet: NOT_FOUND: /);
  assert.equal(r.stdout, '');
  for (const args of [['task'], ['task', 'a', 'b'], ['task', 'a', '--bogus'], ['tasks', '--state', 'sleeping'], ['tasks', '--limit', '0'], ['submit', '--print-ids'], ['sessions', 'x']]) {
    const u = await runCli(procs, [...args, '--dispatcher', d.url]);
    assert.equal(u.code, 2, `${args.join(' ')}: ${u.stderr}`);
    assert.match(u.stderr, /^falconet: USAGE: /);
  }
});

test('cancel takes 200 ids in one call; tasks --state cancelled shows them', { timeout: 120_000 }, async (t) => {
  const { procs, d } = await setup(t);
  const input = Array.from({ length: 200 }, () => JSON.stringify({ builtin: 'sleep', ms: 120_000 })).join('\n');
  const sub = await runCli(procs, ['submit', '--detach', '--print-ids', '--session', 'to-cancel', '--dispatcher', d.url], { input });
  assert.equal(sub.code, 0, sub.stderr);
  const ids = sub.stdout.trim().split('\n');
  assert.equal(ids.length, 200);
  await waitFor('two running', async () => {
    const r = await runCli(procs, ['tasks', '--state', 'running', '--json', '--dispatcher', d.url]);
    return r.stdout.trim().split('\n').filter(Boolean).length === 2;
  });
  const start = Date.now();
  const c = await runCli(procs, ['cancel', ...ids, 'unknown-id', '--dispatcher', d.url]);
  const ms = Date.now() - start;
  assert.equal(c.code, 0, c.stderr);
  assert.equal(c.stdout, 'cancelled 200\n');
  // Snakemake gives --cluster-cancel 2 s: a figure to watch, not a timed assertion (this machine
  // may be loaded); bench/ is where targets live.
  t.diagnostic(`falconet cancel of 200 ids: ${ms} ms (a Node process start included)`);
  const cancelled = await waitFor('200 cancelled', async () => {
    const r = await runCli(procs, ['tasks', '--session', 'to-cancel', '--state', 'cancelled', '--json', '--dispatcher', d.url]);
    const n = r.stdout.trim().split('\n').filter(Boolean).length;
    return n === 200 ? n : undefined;
  });
  assert.equal(cancelled, 200);
  // Nothing left to cancel: exit 1, NOT_FOUND.
  const again = await runCli(procs, ['cancel', ids[0], '--dispatcher', d.url]);
  assert.equal(again.code, 1);
  assert.equal(again.stdout, 'cancelled 0\n');
  assert.match(again.stderr, /NOT_FOUND/);
});
