/**
 * The provisioner end to end: local executor processes that come and go with the queue, and the
 * whole EC2 path through the EC2 and IMDS doubles, where every instance is a real executor
 * process that reads its user-data over IMDSv2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type TaskSpec } from '../client/index.js';
import { EC2Client, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { Ec2Double } from './doubles/ec2-double.js';
import { NetnsLab, netnsAvailability } from './doubles/network-namespaces.js';
import { CLI, FAST, Procs, exited, freePort, runCli, startDispatcher, status, waitFor, waitForLine, type Dispatcher } from './helpers.js';
import type { ProvisionerStatus } from '../dispatcher/provisioner/provisioner.js';

const SCALE = ['--poll-ms', '100', '--cooldown', '0'];

async function provisioner(url: string): Promise<ProvisionerStatus> {
  return ((await status(url)) as unknown as { provisioner: ProvisionerStatus }).provisioner;
}

test('up --min 0 --max 4 --policy additive: grows under a burst, shrinks back to 0 when idle', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const up = procs.spawn(['up', '--port', '0', '--data-dir', procs.tmpDir(), '--min', '0', '--max', '4', '--policy', 'additive', '--idle-timeout', '1', '--slots', '2', ...SCALE, ...FAST]);
  const [, url] = await waitForLine(up, /listening on (ws:\/\/\S+)/);
  assert.equal((await status(url)).executors.length, 0, 'starts with no executor');
  const client = await connect(url);
  t.after(() => client.close());
  const burst = Date.now();
  // Enough work that the queue is still long when the 4th executor registers, however slowly
  // Node starts on a loaded host: 40 s of task time, 5 s on the full fleet of 4 × 2 slots.
  const tasks: TaskSpec[] = Array.from({ length: 40 }, () => ({ builtin: 'sleep', ms: 1000 }));
  const done = Promise.all(tasks.map((task) => client.submit(task)));
  const first = await waitFor('a first executor', async () => ((await status(url)).executors.length > 0 ? Date.now() : undefined));
  // Never beyond --max: sampled while the burst runs (a missed sample can only hide a breach).
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, (await status(url)).executors.length);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    const full = await waitFor('the fleet to grow to --max 4', async () => {
      const s = await status(url);
      return s.executors.filter((e) => e.state !== 'disconnected').length === 4 ? Date.now() : undefined;
    }, 30_000);
    t.diagnostic(`grew to 4 executors ${full - burst} ms after the burst`);
    const results = await done;
    assert.ok(results.every((r) => r.status === 'succeeded'));
  } finally {
    sampling = false;
    await sampler;
  }
  assert.equal(peak, 4, 'never beyond --max');
  t.diagnostic(`scale-up reaction: first executor registered ${first - burst} ms after the burst`);
  const p = await provisioner(url);
  assert.equal(p.policy, 'additive');
  // Idle past 1 s: drained and gone, down to --min 0.
  await waitFor('scale-down to 0', async () => (await status(url)).executors.length === 0, 20_000);
  await waitFor('every instance terminated', async () => (await provisioner(url)).instances.every((i) => i.state === 'terminated'));
});

/** An EC2 double whose instances run `falconet executor`, configured only by their user-data. */
async function ec2(t: { after(fn: () => unknown): void }, opts: Partial<Parameters<typeof Ec2Double.start>[0]> = {}): Promise<Ec2Double> {
  const double = await Ec2Double.start({
    command: [process.execPath, CLI, 'executor'],
    env: { FALCONET_LOG: 'info' },
    defaultShutdownBehavior: 'stop', // what EC2 does unless told: the backend must ask for terminate
    ...opts,
  });
  t.after(() => double.close());
  return double;
}

function ec2Env(double: Ec2Double): NodeJS.ProcessEnv {
  return { AWS_ENDPOINT_URL_EC2: double.endpoint, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret' };
}

async function ec2Dispatcher(procs: Procs, double: Ec2Double, extra: string[], port?: number, dataDir?: string): Promise<Dispatcher> {
  return startDispatcher(
    procs,
    [
      ...(port ? ['--port', String(port)] : []),
      ...(dataDir ? ['--data-dir', dataDir] : []),
      '--provisioner', 'ec2', '--ec2-image', 'ami-0123456789abcdef0', '--ec2-instance-type', 't3.micro',
      '--cluster', 'test', '--executor-slots', '2', '--dispatcher-timeout', '30', ...SCALE, ...extra,
    ],
    ec2Env(double),
  );
}

const alive = (double: Ec2Double) => double.instances().filter((i) => i.state === 'pending' || i.state === 'running');

test('EC2: queued tasks → RunInstances → user-data from IMDS → registers → runs → idles → terminates', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const double = await ec2(t);
  const d = await ec2Dispatcher(procs, double, ['--min', '0', '--max', '3', '--policy', 'exponential', '--idle-timeout', '1', '--boot-timeout', '30']);
  const client = await connect(d.url);
  t.after(() => client.close());
  const results = await Promise.all(Array.from({ length: 30 }, () => client.submit({ builtin: 'sleep', ms: 200 })));
  assert.ok(results.every((r) => r.status === 'succeeded'));
  const launched = double.instances();
  assert.ok(launched.length >= 1 && launched.length <= 3, `launched ${launched.length}`);
  const inst = launched[0];
  assert.equal(inst.tags['falconet:cluster'], 'test');
  assert.match(inst.userData ?? '', /"url":"ws:\/\/127\.0\.0\.1:\d+"/);
  const s = await status(d.url);
  // Every task ran on one of the launched instances (an EC2 executor's id is its instance id).
  for (const r of results) assert.ok(launched.some((i) => i.instanceId === r.executor), `${r.id} ran on ${r.executor}, not a launched instance`);
  for (const e of s.executors) assert.equal(e.id, e.instanceId, 'registered as its instance');
  // Idle past 1 s: drained; the executor retires; its instance is terminated (not just stopped).
  await waitFor('every instance terminated', () => launched.every((i) => double.instances().find((x) => x.instanceId === i.instanceId)?.state === 'terminated'), 30_000);
  assert.equal(alive(double).length, 0, 'nothing left running');
});

test('EC2: kill -9 of the dispatcher; the restarted one re-adopts its instances and leaves none orphaned', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const double = await ec2(t);
  const port = await freePort();
  const dataDir = procs.tmpDir();
  // A lease long enough for the executors to redial the restarted dispatcher on a loaded machine
  // (their backoff grows while it is down), and a boot timeout that still ends the stray soon.
  const flags = ['--min', '2', '--max', '2', '--policy', 'all-at-once', '--idle-timeout', '600', '--boot-timeout', '5', '--lease-ms', '15000', '--heartbeat-ms', '500'];
  let d = await ec2Dispatcher(procs, double, flags, port, dataDir);
  await waitFor('two executors', async () => (await status(d.url)).executors.filter((e) => e.state !== 'disconnected').length === 2, 30_000);
  const before = alive(double).map((i) => i.instanceId).sort();
  // An instance of our cluster this dispatcher never launched and nothing will register from.
  double.neverBoot('silent');
  const sdk = new EC2Client({ endpoint: double.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
  await sdk.send(new RunInstancesCommand({ ImageId: 'ami-0123456789abcdef0', MinCount: 1, MaxCount: 1, TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'falconet:cluster', Value: 'test' }] }] }));
  await waitFor('the stray running', () => alive(double).length === 3);
  d.proc.kill('SIGKILL');
  await exited(d.proc, 10_000, 'the dispatcher after kill -9');
  d = await ec2Dispatcher(procs, double, flags, port, dataDir);
  const p = await provisioner(d.url);
  assert.equal(p.instances.filter((i) => i.adopted).length, 3, 'all three tagged instances adopted');
  await waitFor('the two executors back', async () => (await status(d.url)).executors.filter((e) => e.state !== 'disconnected').length === 2, 30_000);
  await waitFor('the stray terminated', () => alive(double).length === 2, 30_000);
  assert.deepEqual(alive(double).map((i) => i.instanceId).sort(), before, 'the same two instances, none launched again');
});

test('EC2: a boot that never registers is terminated with its console output; three open the breaker', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const double = await ec2(t, { command: [process.execPath, '-e', 'console.log("cloud-init: cannot reach the dispatcher"); setInterval(() => {}, 1e9)'] });
  const d = await ec2Dispatcher(procs, double, ['--min', '1', '--max', '1', '--policy', 'one-at-a-time', '--boot-timeout', '1']);
  const p = await waitFor('the breaker open', async () => {
    const s = await provisioner(d.url);
    return s.breaker.open ? s : undefined;
  }, 30_000);
  assert.match(p.breaker.reason ?? '', /3 boots failed in a row/);
  const failed = p.instances.filter((i) => i.state === 'boot-failed');
  assert.equal(failed.length, 3);
  assert.match(failed[0].console ?? '', /cannot reach the dispatcher/);
  assert.match(failed[0].reason ?? '', /not registered within 1 s/);
  await waitFor('failed boots terminated', () => alive(double).length === 0, 10_000);
  const human = await runCli(procs, ['status', '--dispatcher', d.url]);
  assert.match(human.stdout, /breaker OPEN/);
  const reset = await runCli(procs, ['provisioner', 'reset', '--dispatcher', d.url]);
  assert.equal(reset.code, 0, reset.stderr);
  await waitFor('launches resumed', () => double.instances().length > 3, 10_000);
});

test('EC2: capacity errors are retried with backoff until capacity returns', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const double = await ec2(t);
  double.failNext('RunInstances', 'InsufficientInstanceCapacity', 7);
  const d = await ec2Dispatcher(procs, double, ['--min', '1', '--max', '1', '--boot-timeout', '30']);
  const sawError = await waitFor('the capacity error shown', async () => (await provisioner(d.url)).lastError?.includes('InsufficientInstanceCapacity') || undefined, 20_000);
  assert.ok(sawError);
  await waitFor('an executor at last', async () => (await status(d.url)).executors.length === 1, 30_000);
  assert.equal((await provisioner(d.url)).lastError, null);
});

const netns = await netnsAvailability();
test(`EC2 in network namespaces: each instance registers with its own address (mode: ${netns.mode}${netns.reason ? `: ${netns.reason}` : ''})`, { timeout: 120_000, skip: netns.mode !== 'netns' && `netns unavailable: ${netns.reason}` }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const lab = await NetnsLab.create();
  t.after(() => lab.destroy());
  const double = await ec2(t, { launch: lab.launcher([process.execPath, CLI, 'executor'], process.cwd()), imdsHost: lab.gateway, privateIp: (n) => lab.ipFor(n) });
  // The dispatcher listens on the test bridge only (not loopback): tokens are required there.
  const tokens = ['--client-token', 'c-tok', '--executor-token', 'e-tok'];
  const d = await ec2Dispatcher(procs, double, ['--host', lab.gateway, ...tokens, '--min', '2', '--max', '2', '--policy', 'all-at-once', '--boot-timeout', '30']);
  const s = await waitFor('two executors', async () => {
    const st = await status(d.url, 'c-tok');
    return st.executors.length === 2 ? st : undefined;
  }, 30_000);
  const addresses = s.executors.map((e) => e.addresses.find((a) => a.startsWith(lab.gateway.slice(0, -1))));
  assert.equal(new Set(addresses).size, 2, `distinct addresses: ${JSON.stringify(s.executors.map((e) => e.addresses))}`);
  const privateIps = double.instances().map((i) => i.privateIpAddress).sort();
  assert.deepEqual([...addresses].sort(), privateIps);
  const client = await connect(d.url, { token: 'c-tok' });
  t.after(() => client.close());
  const r = await client.submit({ cmd: ['hostname', '-I'] });
  assert.equal(r.status, 'succeeded');
  assert.ok(privateIps.includes(r.stdout.trim()), `the task ran inside an instance namespace: ${r.stdout}`);
});
