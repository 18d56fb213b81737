/**
 * Tasks you can ask about: from any client, by id, across sessions and restarts; task handles and
 * AbortSignal in the SDK; the HTTP task API a shell script can drive with curl, with its errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, FalconetError } from '../client/index.js';
import { Procs, startDispatcher, startExecutor, waitExecutors } from './helpers.js';

const http = (url: string) => url.replace(/^ws/, 'http');

test('task queries: from another client, by id, with the result; after a restart the result comes from the store', { timeout: 90_000 }, async () => {
  const procs = new Procs();
  try {
    const dataDir = procs.tmpDir();
    let d = await startDispatcher(procs, ['--data-dir', dataDir]);
    startExecutor(procs, d.url, ['--slots', '2']);
    const a = await connect(d.url);
    const r = await a.submit({ id: 'job-1', cmd: ['/bin/echo', 'hello'] });
    assert.equal(r.status, 'succeeded');
    const slow = await a.start({ id: 'job-2', builtin: 'sleep', ms: 60_000 });
    const b = await connect(d.url); // another session
    const info = await b.task('job-1');
    assert.equal(info.state, 'succeeded');
    assert.equal(info.session, a.session.id);
    assert.equal(info.result?.stdout, 'hello\n');
    assert.equal((await b.task('job-2')).state, 'running');
    await assert.rejects(b.task('nope'), (e: FalconetError) => e.code === 'NOT_FOUND');
    const listed = await b.tasks({ session: a.session.id });
    assert.deepEqual(listed.map((t) => t.id).sort(), ['job-1', 'job-2']);
    assert.ok((await b.sessions()).some((s) => s.id === a.session.id && s.finished === 1 && s.unfinished === 1));
    assert.equal(await slow.cancel(), true);
    assert.equal((await slow.result()).status, 'cancelled');
    await a.close();
    await b.close();

    // A restart: the acknowledged result is only in the store now.
    d.proc.kill('SIGKILL');
    await new Promise((r) => d.proc.once('exit', r));
    d = await startDispatcher(procs, ['--data-dir', dataDir, '--port', String(d.port)]);
    const c = await connect(d.url);
    const again = await c.task('job-1');
    assert.equal(again.state, 'succeeded');
    assert.equal(again.result?.stdout, 'hello\n', 'read back from the store');
    await c.close();
  } finally {
    await procs.killAll();
  }
});

test('AbortSignal: connect, submit (which also cancels the task) and results stop when aborted', { timeout: 120_000 }, async () => {
  const procs = new Procs();
  try {
    const d = await startDispatcher(procs);
    startExecutor(procs, d.url, ['--slots', '1']);
    await waitExecutors(d.url, 1);
    const dead = new AbortController();
    const dialing = connect('127.0.0.1:1', { connectTimeoutMs: 60_000, signal: dead.signal });
    dead.abort(new Error('gave up'));
    await assert.rejects(dialing, /gave up/);
    const c = await connect(d.url);
    const stop = new AbortController();
    const waiting = c.submit({ id: 'long', builtin: 'sleep', ms: 60_000 }, { signal: stop.signal });
    await new Promise((r) => setTimeout(r, 200));
    stop.abort(new Error('engine stopped'));
    await assert.rejects(waiting, /engine stopped/);
    const ended = await (async () => {
      for (;;) {
        const t = await c.task('long');
        if (t.state !== 'queued' && t.state !== 'running') return t;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    assert.equal(ended.state, 'cancelled');
    const reading = new AbortController();
    const it = c.results({ signal: reading.signal });
    const next = it.next();
    reading.abort();
    assert.deepEqual(await next, { value: undefined, done: true });
    await c.close();
  } finally {
    await procs.killAll();
  }
});

test('HTTP task API: submit, get, list, cancel with curl-like requests; bad input gets codes', { timeout: 120_000 }, async () => {
  const procs = new Procs();
  try {
    const d = await startDispatcher(procs, ['--client-token', 'c-secret', '--executor-token', 'e-secret', '--http-auth']);
    startExecutor(procs, d.url, ['--slots', '1'], { FALCONET_TOKEN: 'e-secret' });
    const base = http(d.url);
    const auth = { authorization: 'Bearer c-secret', 'content-type': 'application/json' };
    const post = (path: string, body: string, headers: Record<string, string> = auth) => fetch(base + path, { method: 'POST', headers, body });
    // Credentials.
    assert.equal((await fetch(`${base}/api/tasks/x`)).status, 401);
    assert.equal((await fetch(`${base}/api/tasks/x`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    // Bad input: the same codes as the wire; nothing is accepted from a batch with a bad task.
    let res = await post('/api/tasks', '{not json');
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'INVALID_MESSAGE');
    res = await post('/api/tasks', JSON.stringify([{ id: 'ok', builtin: 'noop' }, { id: 'bad', cmd: [] }]));
    assert.equal(res.status, 400);
    const bad = (await res.json()) as { error: { code: string; problems: Array<{ index: number }> } };
    assert.equal(bad.error.code, 'TASK_INVALID');
    assert.deepEqual(bad.error.problems.map((p) => p.index), [1]);
    assert.equal((await fetch(`${base}/api/tasks/ok`, { headers: auth })).status, 404, 'all or nothing');
    // Submit, then ask until it is done.
    res = await post('/api/tasks', JSON.stringify([{ id: 'h1', cmd: ['/bin/echo', 'via http'] }, { id: 'h2', builtin: 'sleep', ms: 60_000 }]));
    assert.equal(res.status, 200);
    // A request that names no session gets a new one, with its key (docs/security.md).
    const opened = (await res.json()) as { session: string; key: string; ids: string[] };
    assert.deepEqual(opened.ids, ['h1', 'h2']);
    assert.ok(opened.session.length > 0 && opened.key.length >= 16, JSON.stringify(opened));
    let t: { state: string; result?: { stdout: string } };
    do {
      t = (await (await fetch(`${base}/api/tasks/h1`, { headers: auth })).json()) as typeof t;
    } while (t.state === 'queued' || t.state === 'running');
    assert.equal(t.state, 'succeeded');
    assert.equal(t.result?.stdout, 'via http\n');
    const list = (await (await fetch(`${base}/api/tasks?session=${opened.session}&state=finished`, { headers: auth })).json()) as { tasks: Array<{ id: string }> };
    assert.deepEqual(list.tasks.map((x) => x.id), ['h1']);
    // Across sessions needs the administrator; in the session, its key.
    res = await post('/api/tasks/cancel', JSON.stringify({ ids: ['h2', 'nope'] }));
    assert.equal(res.status, 403);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'ADMIN_REQUIRED');
    res = await post('/api/tasks/cancel', JSON.stringify({ ids: ['h2', 'nope'], session: opened.session }));
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SESSION_FORBIDDEN');
    res = await post('/api/tasks/cancel', JSON.stringify({ ids: ['h2', 'nope'], session: opened.session, key: opened.key }));
    assert.deepEqual(await res.json(), { cancelled: 1 });
    assert.equal((await fetch(`${base}/api/tasks?state=bogus`, { headers: auth })).status, 400);
    // The dispatcher is still serving.
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
  } finally {
    await procs.killAll();
  }
});
