/**
 * Placement that knows an executor's remaining life (issue 12 item 6): a spot interruption notice
 * posted to the IMDS double drains a real executor (pointed at the double as on EC2), which hands
 * its running tasks back; they finish on another executor without being charged as crashes. A
 * task whose timeoutMs exceeds an executor's `--lifetime` does not start there: it waits, saying
 * why, and runs on an executor with enough life. Real processes on loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImdsDouble, noticeTime, type ImdsView } from './doubles/imds-double.js';
import { Procs, exited, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';
import { connect, type TaskInfo, type TaskResult } from '../client/index.js';
import { parseScheduledEvents, parseSpotNotice } from '../executor/lifetime.js';

function spotView(): ImdsView {
  return {
    instanceId: 'i-0spot000000000001',
    imageId: 'ami-0123456789abcdef0',
    instanceType: 'c7i.large',
    availabilityZone: 'us-east-1a',
    region: 'us-east-1',
    accountId: '123456789012',
    localIpv4: '10.0.3.8',
    pendingTime: new Date(),
    lifecycle: 'spot',
  };
}

/** No FALCONET_* settings or env file leak in from the test's own environment. */
function cleanEnv(procs: Procs, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const empty = join(procs.tmpDir(), 'empty.env');
  writeFileSync(empty, '# nothing\n');
  return { FALCONET_CONFIG: empty, FALCONET_URL: '', FALCONET_IMDS: '', AWS_EC2_METADATA_DISABLED: '', ...extra };
}

async function api<T>(url: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(url.replace(/^ws/, 'http') + path, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
  assert.ok(res.ok, `${path}: ${res.status} ${await res.clone().text()}`);
  return (await res.json()) as T;
}

test('notices: spot instance-action and scheduled events are read as IMDS writes them', { timeout: 10_000 }, () => {
  assert.deepEqual(parseSpotNotice('{"action": "terminate", "time": "2017-09-18T08:22:00Z"}'), { action: 'terminate', at: Date.parse('2017-09-18T08:22:00Z') });
  assert.equal(parseSpotNotice('not json'), null);
  const events = [
    { Code: 'system-reboot', NotBefore: '21 Jan 2019 09:00:43 GMT', State: 'completed' },
    { Code: 'instance-retirement', NotBefore: '22 Jan 2019 09:00:43 GMT', State: 'active' },
    { Code: 'system-maintenance', NotBefore: '23 Jan 2019 09:00:43 GMT', State: 'active' },
  ];
  assert.deepEqual(parseScheduledEvents(JSON.stringify(events)), { code: 'instance-retirement', at: Date.UTC(2019, 0, 22, 9, 0, 43) });
  assert.equal(parseScheduledEvents('[]'), null);
});

test('a spot notice from IMDS drains the executor; its running tasks finish on another executor, not charged as crashes', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const imds = await ImdsDouble.start(spotView());
  t.after(() => imds.close());
  const d = await startDispatcher(procs);
  const spot = procs.spawn(['executor', '--dispatcher', d.url, '--id', 'spot-a', '--slots', '2', '--notice-poll', '0.1'], cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint, FALCONET_LOG: 'info' }));
  spot.stdout!.resume();
  let spotLog = '';
  spot.stderr!.on('data', (b: Buffer) => (spotLog += b));
  await waitExecutors(d.url, 1);

  // maxAttempts 1: an attempt counted as a crash would end the task lost.
  const client = await connect(d.url);
  t.after(() => client.close());
  // The first attempt of each marks that it started and runs until it is stopped; the next one ends at once.
  const dir = procs.tmpDir();
  const script = (i: number) => `if [ -e '${dir}/s${i}' ]; then echo done; else touch '${dir}/s${i}'; sleep 600; fi`;
  const tasks = [1, 2].map((i) => client.submit({ id: `s${i}`, cmd: ['sh', '-c', script(i)], maxAttempts: 1 }));
  await waitFor('both tasks running on the spot executor', async () => (await status(d.url)).executors.find((e) => e.id === 'spot-a')?.running === 2, 60_000);
  startExecutor(procs, d.url, ['--id', 'steady-b', '--slots', '2']);
  await waitExecutors(d.url, 2);

  const exit = exited(spot, 60_000, 'the spot executor to hand its tasks back and leave');
  imds.notice({ spotInstanceAction: { action: 'terminate', time: noticeTime(new Date(Date.now() + 120_000)) } });
  assert.equal((await exit).code, 0, spotLog.slice(-2000));
  assert.match(spotLog, /spot interruption: terminate/);

  const results: TaskResult[] = await Promise.all(tasks);
  for (const r of results) {
    assert.equal(r.status, 'succeeded', JSON.stringify(r));
    assert.equal(r.executor, 'steady-b');
    assert.equal(r.attempts, 2, 'the handed-back attempt and the one that finished');
    assert.equal(r.stdout, 'done\n');
  }
  const s = await status(d.url);
  assert.equal(s.tasks.finished.lost, 0);
});

test('a task whose timeoutMs exceeds an executor\'s remaining life does not start there: it waits, saying why, then runs on one with enough life', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--id', 'short', '--slots', '2', '--lifetime', '600', '--drain-margin', '1']);
  await waitExecutors(d.url, 1);
  const short = (await status(d.url)).executors.find((e) => e.id === 'short')!;
  assert.equal(short.endReason, 'lifetime');
  assert.ok(short.endsAt! > Date.now() + 500_000 && short.endsAt! <= Date.now() + 600_000, `endsAt ${short.endsAt}`);
  const shown = await runCli(procs, ['status', '--dispatcher', d.url]);
  assert.match(shown.stdout, /ENDS/);
  assert.match(shown.stdout, /in \d+m.*\(lifetime\)/);

  // Accepted before the short task below: the pass that starts that one passes over this one.
  await api(d.url, '/api/tasks', { session: 'long', tasks: [{ id: 'long-1', cmd: ['echo', 'long'], timeoutMs: 3_600_000 }] });
  const client = await connect(d.url);
  t.after(() => client.close());
  const quick = await client.submit({ id: 'quick-1', cmd: ['echo', 'quick'], timeoutMs: 60_000 });
  assert.equal(quick.executor, 'short');
  const waiting = await api<TaskInfo>(d.url, '/api/tasks/long-1');
  assert.equal(waiting.state, 'queued');
  assert.match(waiting.waiting ?? '', /no connected executor lives long enough for its timeoutMs 3600000/);

  startExecutor(procs, d.url, ['--id', 'long-lived', '--slots', '2']);
  const done = await waitFor('long-1 to finish', async () => {
    const info = await api<TaskInfo>(d.url, '/api/tasks/long-1');
    return info.result ? info : undefined;
  }, 60_000);
  assert.equal(done.result!.status, 'succeeded');
  assert.equal(done.result!.executor, 'long-lived');
});
