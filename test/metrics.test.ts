/** /metrics through real processes: every family operators alert on, and counters across a restart. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type FalconetError, type TaskSpec } from '../client/index.js';
import { FAST, Procs, exited, startDispatcher, startExecutor, waitExecutors, waitFor, waitForLine } from './helpers.js';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (what prom-client writes: no escaped quotes in our labels). */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = line.match(/^# TYPE (\S+) (\S+)/);
    if (type) types.set(type[1], type[2]);
    if (line === '' || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    assert.ok(m, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[k] = v;
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { samples, types };
}

async function scrape(url: string, token?: string): Promise<{ text: string; get(name: string, labels?: Record<string, string>): number | undefined; all(name: string): Sample[]; type(name: string): string | undefined }> {
  const res = await fetch(url.replace(/^ws/, 'http') + '/metrics', { headers: token ? { authorization: `Bearer ${token}` } : {} });
  assert.equal(res.status, 200);
  const text = await res.text();
  const { samples, types } = parse(text);
  const matches = (s: Sample, labels: Record<string, string>) => Object.entries(labels).every(([k, v]) => s.labels[k] === v);
  return {
    text,
    get: (name, labels = {}) => samples.find((s) => s.name === name && matches(s, labels))?.value,
    all: (name) => samples.filter((s) => s.name === name),
    type: (name) => types.get(name),
  };
}

test('/metrics after tasks through `up`: every family, with values that add up', { timeout: 90_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const up = procs.spawn(['up', '--port', '0', '--executors', '2', '--slots', '2', '--data-dir', procs.tmpDir(), '--client-token', 'sekret', '--http-auth', ...FAST]);
  const [, url] = await waitForLine(up, /listening on (ws:\/\/\S+)/);
  await waitExecutors(url, 2, 'sekret');
  await assert.rejects(connect(url, { token: 'wrong' }), (e: FalconetError) => e.code === 'AUTH_FAILED');
  const unauthorized = await fetch(url.replace(/^ws/, 'http') + '/api/status', { headers: { authorization: 'Bearer nope' } });
  assert.equal(unauthorized.status, 401);

  const client = await connect(url, { token: 'sekret' });
  t.after(() => client.close());
  const tasks: TaskSpec[] = [];
  for (let i = 0; i < 40; i++) tasks.push({ id: `n${i}`, builtin: 'noop' });
  tasks.push({ id: 'sleepy', builtin: 'sleep', ms: 200 });
  tasks.push({ id: 'fails', cmd: ['false'] });
  tasks.push({ id: 'retried', cmd: ['false'], retryOnExit: [1], maxAttempts: 2 });
  const results = await Promise.all(tasks.map((task) => client.submit(task)));
  assert.equal(results.filter((r) => r.status === 'succeeded').length, 41);
  assert.equal(results.filter((r) => r.status === 'failed').length, 2);
  assert.equal(results.find((r) => r.id === 'retried')?.attempts, 2);

  const m = await scrape(url, 'sekret');
  const n = tasks.length;
  // Identity and the process.
  assert.equal(m.get('falconet_info', { version: PACKAGE_VERSION }), 1);
  assert.ok(m.get('process_cpu_user_seconds_total')! > 0, 'Node default metrics on the same registry');
  assert.ok(m.get('nodejs_heap_size_used_bytes')! > 0);
  assert.ok(m.get('nodejs_eventloop_lag_seconds') !== undefined);
  // Task counters.
  assert.equal(m.type('falconet_tasks_submitted_total'), 'counter');
  assert.equal(m.get('falconet_tasks_submitted_total'), n);
  assert.equal(m.get('falconet_tasks_dispatched_total'), n + 1, 'one attempt each, and the retry');
  assert.equal(m.get('falconet_tasks_retried_total'), 1);
  assert.equal(m.get('falconet_tasks_finished_total', { status: 'succeeded' }), 41);
  assert.equal(m.get('falconet_tasks_finished_total', { status: 'failed' }), 2);
  assert.equal(m.get('falconet_tasks_finished_total', { status: 'lost' }), 0);
  assert.equal(m.get('falconet_tasks_queued'), 0);
  assert.equal(m.get('falconet_tasks_running'), 0);
  // Latency histograms, fed as tasks finish.
  for (const h of ['falconet_task_queue_wait_seconds', 'falconet_task_dispatch_to_start_seconds', 'falconet_task_run_seconds']) {
    assert.equal(m.type(h), 'histogram', h);
    assert.equal(m.get(`${h}_count`), n, `${h}: one observation per finished task`);
    assert.equal(m.get(`${h}_bucket`, { le: '+Inf' }), n);
    const buckets = m.all(`${h}_bucket`).map((s) => s.value);
    assert.deepEqual([...buckets].sort((a, b) => a - b), buckets, `${h}: cumulative buckets`);
    assert.ok(m.get(`${h}_sum`)! >= 0 && m.get(`${h}_sum`)! < n * 10, `${h}: plausible sum ${m.get(`${h}_sum`)}`);
  }
  assert.ok(m.get('falconet_task_run_seconds_sum')! >= 0.2, 'the 200 ms sleep is in the run time');
  assert.ok(m.get('falconet_task_run_seconds_bucket', { le: '0.1' })! <= n - 1, 'the sleep is above 0.1 s');
  // Fleet.
  assert.equal(m.get('falconet_slots'), 4);
  assert.equal(m.get('falconet_slots_busy'), 0);
  assert.equal(m.get('falconet_executors'), 2);
  assert.equal(m.get('falconet_executors_by_state', { state: 'idle' }), 2);
  const running = m.all('falconet_executor_running_tasks');
  assert.equal(running.length, 2, 'one series per registered executor');
  assert.ok(running.every((s) => s.labels.executor.startsWith('local-') && s.value === 0));
  const ages = m.all('falconet_executor_last_seen_age_seconds');
  assert.equal(ages.length, 2);
  assert.ok(ages.every((s) => s.value >= 0 && s.value < 5), `heartbeats are recent: ${JSON.stringify(ages)}`);
  assert.ok(m.get('falconet_executors_last_seen_age_max_seconds')! < 5);
  // Store.
  assert.equal(m.type('falconet_store_commit_duration_seconds'), 'histogram');
  assert.ok(m.get('falconet_store_commit_duration_seconds_count')! >= 1);
  assert.ok(m.get('falconet_store_commit_duration_seconds_sum')! > 0);
  assert.equal(m.get('falconet_store_commit_batch_changes_count'), m.get('falconet_store_commit_duration_seconds_count'));
  assert.ok(m.get('falconet_store_commit_batch_changes_sum')! >= n, 'every accepted task and result went through a commit');
  // Sessions and the result backlog.
  assert.equal(m.get('falconet_sessions_connected'), 1);
  assert.ok(m.get('falconet_sessions')! >= 1);
  assert.ok(m.get('falconet_results_unacked')! >= 0 && m.get('falconet_results_unacked')! <= n);
  // Provisioner (it sees registrations at its next poll).
  const active = (p: typeof m) => ['idle', 'busy', 'registered'].reduce((sum, state) => sum + (p.get('falconet_provisioner_instances', { state }) ?? 0), 0);
  const p = await waitFor('the provisioner to see both registrations', async () => {
    const s = await scrape(url, 'sekret');
    return active(s) === 2 ? s : undefined;
  });
  assert.equal(p.get('falconet_provisioner_boot_seconds_count'), 2);
  assert.equal(m.get('falconet_provisioner_instances', { state: 'boot-failed' }), 0);
  assert.equal(m.get('falconet_provisioner_launches_total'), 2);
  assert.equal(m.get('falconet_provisioner_boot_failures_total'), 0);
  assert.equal(m.get('falconet_provisioner_breaker_open'), 0);
  assert.equal(m.get('falconet_provisioner_boot_failures_consecutive'), 0);
  // Connections and refusals.
  assert.equal(m.get('falconet_connections', { role: 'executor' }), 2);
  assert.equal(m.get('falconet_connections', { role: 'client' }), 1);
  assert.equal(m.get('falconet_slow_consumer_drops_total', { role: 'client' }), 0);
  assert.equal(m.get('falconet_auth_failures_total', { role: 'client' }), 1);
  assert.equal(m.get('falconet_auth_failures_total', { role: 'executor' }), 0);
  assert.equal(m.get('falconet_auth_failures_total', { role: 'http' }), 1);
  // Every family has HELP; units are in the names.
  for (const name of new Set(m.text.match(/^# TYPE falconet_\w+/gm)!.map((l) => l.slice(7)))) {
    assert.match(m.text, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has help`);
  }
});

test('task counters survive a restart (even kill -9); latency histograms start again', { timeout: 90_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dataDir = procs.tmpDir();
  const first = await startDispatcher(procs, ['--data-dir', dataDir]);
  const ex = startExecutor(procs, first.url, ['--id', 'ex1', '--slots', '2']);
  await waitExecutors(first.url, 1);
  const client = await connect(first.url);
  const before = await Promise.all([
    ...Array.from({ length: 6 }, () => client.submit({ builtin: 'noop' })),
    client.submit({ cmd: ['false'], retryOnExit: [1], maxAttempts: 2 }),
  ]);
  assert.equal(before.length, 7);
  await client.close();
  const a = await scrape(first.url);
  assert.equal(a.get('falconet_tasks_finished_total', { status: 'succeeded' }), 6);
  // Results reach the client only after their commit, so this is all on disk: kill -9.
  const gone = exited(first.proc, 10_000, 'the first dispatcher');
  first.proc.kill('SIGKILL');
  await gone;
  ex.kill('SIGKILL');

  const second = await startDispatcher(procs, ['--data-dir', dataDir]);
  const b = await scrape(second.url);
  assert.equal(b.get('falconet_tasks_submitted_total'), 7, 'restored from the store');
  assert.equal(b.get('falconet_tasks_dispatched_total'), 8);
  assert.equal(b.get('falconet_tasks_retried_total'), 1);
  assert.equal(b.get('falconet_tasks_finished_total', { status: 'succeeded' }), 6);
  assert.equal(b.get('falconet_tasks_finished_total', { status: 'failed' }), 1);
  assert.equal(b.get('falconet_task_queue_wait_seconds_count'), 0, 'histograms are per process (their HELP says so)');
  assert.match(b.text, /# HELP falconet_task_queue_wait_seconds .*since this dispatcher process started/);
  assert.match(b.text, /# HELP falconet_tasks_finished_total .*kept across restarts/);

  startExecutor(procs, second.url, ['--id', 'ex2']);
  await waitExecutors(second.url, 1);
  const again = await connect(second.url);
  t.after(() => again.close());
  await Promise.all(Array.from({ length: 3 }, () => again.submit({ builtin: 'noop' })));
  await waitFor('the counters to move on', async () => (await scrape(second.url)).get('falconet_tasks_finished_total', { status: 'succeeded' }) === 9);
  const c = await scrape(second.url);
  assert.equal(c.get('falconet_tasks_submitted_total'), 10);
  assert.equal(c.get('falconet_task_queue_wait_seconds_count'), 3);
  const st = (await (await fetch(second.url.replace(/^ws/, 'http') + '/api/status')).json()) as { tasks: { submitted: number }; rates: { submitted: number } };
  assert.equal(st.tasks.submitted, 10, 'status agrees');
  assert.ok(st.rates.submitted < 100, `the restored count is not a burst in the rate window (${st.rates.submitted}/s)`);
});
