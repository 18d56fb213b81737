/**
 * Drives the EC2 and IMDS doubles through the real AWS SDK v3 clients, so the
 * doubles stay honest about the wire format the provisioner will meet.
 * Every instance is a real `node -e` process; each test closes its double,
 * which kills every process group it started, and then checks that by pid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  CreateTagsCommand, DescribeInstancesCommand, EC2Client, GetConsoleOutputCommand,
  RunInstancesCommand, TerminateInstancesCommand, type EC2ClientConfig, type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { MetadataService } from '@aws-sdk/ec2-metadata-service';
import { Ec2Double, type Ec2DoubleOptions } from './doubles/ec2-double.js';
import { ImdsDouble } from './doubles/imds-double.js';
import { NetnsLab, netnsAvailability } from './doubles/network-namespaces.js';
import { alive, waitFor } from './helpers.js';

/** What each instance runs: read user data through IMDSv2 with the SDK, report, then idle or exit. */
const INSTANCE_SCRIPT = `
const { MetadataService } = require('@aws-sdk/ec2-metadata-service');
const kid = require('node:child_process').spawn('sleep', ['1000'], { stdio: 'ignore' });
(async () => {
  const md = new MetadataService({ retries: 0 }); // endpoint from AWS_EC2_METADATA_SERVICE_ENDPOINT
  const ud = await md.request('/latest/user-data', {});
  const id = await md.request('/latest/meta-data/instance-id', {});
  console.log('user-data=' + ud);
  console.log('instance-id=' + id + ' env=' + process.env.INSTANCE_ID + ' grandchild=' + kid.pid);
  if (ud.startsWith('exit')) { kid.kill(); process.exit(0); }
  setInterval(() => {}, 1 << 30);
})().catch((e) => { console.error('imds error ' + e); process.exit(3); });
`;

const b64 = (s: string) => Buffer.from(s).toString('base64');


/** A double plus an SDK client on it; `done` closes both and checks no process survived. */
async function setup(opts: Ec2DoubleOptions = {}, cfg: Partial<EC2ClientConfig> = {}) {
  const ec2 = await Ec2Double.start({ command: [process.execPath, '-e', INSTANCE_SCRIPT], cwd: process.cwd(), ...opts });
  const client = new EC2Client({
    endpoint: ec2.endpoint, region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG' }, ...cfg,
  });
  const done = async () => {
    client.destroy();
    await ec2.close();
    for (const i of ec2.instances()) assert.equal(alive(i.pid), false, `pid ${i.pid} of ${i.instanceId} survived close()`);
  };
  return { ec2, client, done };
}

const run = (extra: Partial<RunInstancesCommandInput> = {}): RunInstancesCommandInput => ({
  ImageId: 'ami-0123456789abcdef0', InstanceType: 't3.micro', MinCount: 1, MaxCount: 1, ...extra,
});

test('RunInstances starts a process that reads its user data via IMDSv2; Describe finds it; Terminate kills it', { timeout: 120_000 }, async () => {
  const { ec2, client, done } = await setup();
  try {
    const out = await client.send(new RunInstancesCommand(run({
      UserData: b64('role=executor'), SubnetId: 'subnet-0abc1234', SecurityGroupIds: ['sg-0abc1234'],
      KeyName: 'ops', IamInstanceProfile: { Name: 'falconet-executor' }, InstanceInitiatedShutdownBehavior: 'terminate',
      InstanceMarketOptions: { MarketType: 'spot' },
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'role', Value: 'executor' }, { Key: 'pool', Value: 'p1' }] }],
    })));
    const inst = out.Instances?.[0];
    assert.match(inst?.InstanceId ?? '', /^i-[0-9a-f]{17}$/);
    assert.equal(inst?.State?.Name, 'pending');
    assert.equal(inst?.State?.Code, 0);
    assert.equal(inst?.InstanceLifecycle, 'spot');
    assert.ok(inst?.LaunchTime instanceof Date);
    assert.deepEqual(inst?.SecurityGroups, [{ GroupId: 'sg-0abc1234' }]);
    assert.deepEqual(inst?.Tags, [{ Key: 'role', Value: 'executor' }, { Key: 'pool', Value: 'p1' }]);
    assert.match(out.ReservationId ?? '', /^r-/);
    const id = inst!.InstanceId!;
    // The SDK fills in an idempotency token on its own.
    assert.ok(ec2.calls[0]?.params.ClientToken);

    const running = await ec2.waitForState(id, 'running');
    assert.ok(alive(running.pid));
    const booted = await waitFor('boot output', () => { const c = ec2.instances()[0]!.console; return c.includes('grandchild=') ? c : undefined; }, 10_000);
    assert.match(booted, /user-data=role=executor/);
    assert.match(booted, new RegExp(`instance-id=${id} env=${id}`));
    const grandchild = Number(/grandchild=(\d+)/.exec(booted)![1]);

    const found = await client.send(new DescribeInstancesCommand({
      Filters: [{ Name: 'tag:role', Values: ['exec*'] }, { Name: 'instance-state-name', Values: ['pending', 'running'] }, { Name: 'tag-key', Values: ['pool'] }],
    }));
    assert.equal(found.Reservations?.length, 1);
    const d = found.Reservations![0]!.Instances![0]!;
    assert.equal(d.InstanceId, id);
    assert.equal(d.State?.Name, 'running');
    assert.equal(d.IamInstanceProfile?.Arn, 'arn:aws:iam::123456789012:instance-profile/falconet-executor');
    assert.match(d.PrivateIpAddress ?? '', /^10\.0\.\d+\.\d+$/);
    const none = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:role', Values: ['web'] }] }));
    assert.deepEqual(none.Reservations ?? [], []);

    const con = await client.send(new GetConsoleOutputCommand({ InstanceId: id }));
    assert.match(Buffer.from(con.Output ?? '', 'base64').toString(), /user-data=role=executor/);

    const term = await client.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    assert.equal(term.TerminatingInstances?.[0]?.PreviousState?.Name, 'running');
    assert.equal(term.TerminatingInstances?.[0]?.CurrentState?.Name, 'shutting-down');
    const gone = await ec2.waitForState(id, 'terminated');
    assert.equal(alive(gone.pid), false);
    assert.equal(alive(grandchild), false, 'terminate kills the whole process group');
    const after = await client.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
    const t = after.Reservations![0]!.Instances![0]!;
    assert.equal(t.State?.Name, 'terminated');
    assert.equal(t.StateReason?.Code, 'Client.UserInitiatedShutdown');
  } finally { await done(); }
});

test('an instance whose process exits shuts down per InstanceInitiatedShutdownBehavior (EC2 default: stop)', { timeout: 120_000 }, async () => {
  const { ec2, client, done } = await setup();
  try {
    const a = await client.send(new RunInstancesCommand(run({ UserData: b64('exit'), InstanceInitiatedShutdownBehavior: 'terminate' })));
    const b = await client.send(new RunInstancesCommand(run({ UserData: b64('exit') })));
    const ta = await ec2.waitForState(a.Instances![0]!.InstanceId!, 'terminated');
    const sb = await ec2.waitForState(b.Instances![0]!.InstanceId!, 'stopped');
    assert.equal(ta.stateReason, 'Client.InstanceInitiatedShutdown');
    assert.equal(ta.exitCode, 0);
    assert.match(sb.console, /user-data=exit/);
    const d = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'instance-state-name', Values: ['stopped'] }] }));
    assert.equal(d.Reservations?.[0]?.Instances?.[0]?.StateReason?.Code, 'Client.InstanceInitiatedShutdown');
  } finally { await done(); }
});

test('InsufficientInstanceCapacity surfaces under its name; RequestLimitExceeded is retried by the SDK', { timeout: 120_000 }, async () => {
  const { ec2, client, done } = await setup({}, { maxAttempts: 1 });
  const retrying = new EC2Client({ endpoint: ec2.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'x' } });
  try {
    ec2.failNext('RunInstances', 'InsufficientInstanceCapacity');
    await assert.rejects(client.send(new RunInstancesCommand(run())), (e: Error & { $metadata?: { httpStatusCode?: number } }) => {
      assert.equal(e.name, 'InsufficientInstanceCapacity');
      assert.equal(e.$metadata?.httpStatusCode, 500);
      return true;
    });
    // 500 is transient to the SDK: with its default 3 attempts, it takes 3 injected failures to surface.
    ec2.failNext('RunInstances', 'InsufficientInstanceCapacity', 3);
    await assert.rejects(retrying.send(new RunInstancesCommand(run())), (e: Error & { $metadata?: { attempts?: number } }) =>
      e.name === 'InsufficientInstanceCapacity' && e.$metadata?.attempts === 3);

    ec2.failNext('DescribeInstances', 'RequestLimitExceeded', 1);
    const ok = await retrying.send(new DescribeInstancesCommand({}));
    assert.equal(ok.$metadata.attempts, 2);
    assert.equal(ok.$metadata.httpStatusCode, 200);

    await assert.rejects(client.send(new TerminateInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] })), { name: 'InvalidInstanceID.NotFound' });
    await assert.rejects(client.send(new TerminateInstancesCommand({ InstanceIds: ['bogus'] })), { name: 'InvalidInstanceID.Malformed' });
    await assert.rejects(client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'nope', Values: ['x'] }] })), { name: 'InvalidParameterValue' });
    await assert.rejects(client.send(new RunInstancesCommand(run({ UserData: 'not base64!' }))), { name: 'InvalidParameterValue' });
    assert.equal(ec2.instances().length, 0, 'no failed call launched anything');
  } finally { retrying.destroy(); await done(); }
});

/** An instance process that just idles until killed: it holds its capacity slot whatever IMDS says. */
const IDLE = [process.execPath, '-e', 'setInterval(() => {}, 1 << 30)'];

test('ClientToken idempotency, capacity, launch templates and CreateTags', { timeout: 120_000 }, async () => {
  // Capacity counts instances that are neither stopped nor terminated, so the slots must stay taken
  // for the whole test. INSTANCE_SCRIPT would not hold them: with no user data it gets a 404 from
  // IMDS, exits 3 and is stopped (the default shutdown behaviour), which frees its slot about 100 ms
  // after launch, or later under load. Hence IDLE instances, and maxAttempts 1: the SDK retries the
  // 500 of InsufficientInstanceCapacity with backoff, and a retry could otherwise land after a slot
  // was freed and launch what the first attempt was refused.
  const { ec2, client, done } = await setup({
    command: IDLE, capacity: 2,
    launchTemplates: [{ id: 'lt-0123456789abcdef0', name: 'exec', imageId: 'ami-0123456789abcdef0', instanceType: 'c7g.large' }],
  }, { maxAttempts: 1 });
  try {
    const first = await client.send(new RunInstancesCommand(run({ ClientToken: 'tok-1' })));
    const again = await client.send(new RunInstancesCommand(run({ ClientToken: 'tok-1' })));
    assert.equal(again.Instances?.[0]?.InstanceId, first.Instances?.[0]?.InstanceId);
    await assert.rejects(client.send(new RunInstancesCommand(run({ ClientToken: 'tok-1', InstanceType: 'm5.large' }))), { name: 'IdempotentParameterMismatch' });
    // One slot is left: MaxCount 5 gets 1, MinCount 2 fails.
    await assert.rejects(client.send(new RunInstancesCommand(run({ MinCount: 2, MaxCount: 2 }))), { name: 'InsufficientInstanceCapacity' });
    const lt = await client.send(new RunInstancesCommand({ LaunchTemplate: { LaunchTemplateName: 'exec' }, MinCount: 1, MaxCount: 5 }));
    assert.equal(lt.Instances?.length, 1);
    assert.equal(lt.Instances?.[0]?.InstanceType, 'c7g.large');
    await assert.rejects(client.send(new RunInstancesCommand({ LaunchTemplate: { LaunchTemplateId: 'lt-0000000000000000f' }, MinCount: 1, MaxCount: 1 })), { name: 'InvalidLaunchTemplateId.NotFound' });

    const id = lt.Instances![0]!.InstanceId!;
    await client.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'falconet:job', Value: 'j-42' }] }));
    const d = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:falconet:job', Values: ['j-42'] }] }));
    assert.deepEqual(d.Reservations?.flatMap((r) => r.Instances ?? []).map((i) => i.InstanceId), [id]);
    assert.equal(ec2.instances().length, 2, 'the replayed token and the failed calls launched nothing');
    assert.equal(ec2.instances().find((i) => i.instanceId === id)?.launchTemplateId, 'lt-0123456789abcdef0');
    assert.deepEqual(ec2.instances().map((i) => i.state === 'pending' || i.state === 'running'), [true, true], 'both slots still held');
  } finally { await done(); }
});

test('fault injection: neverBoot pending/silent and kill()', { timeout: 120_000 }, async () => {
  const { ec2, client, done } = await setup();
  try {
    ec2.neverBoot('pending');
    ec2.neverBoot('silent');
    const [p, s, k] = await Promise.all([1, 2, 3].map(() => client.send(new RunInstancesCommand(run()))))
      .then((rs) => rs.map((r) => r.Instances![0]!.InstanceId!));
    const silent = await ec2.waitForState(s!, 'running');
    const victim = await ec2.waitForState(k!, 'running');
    // A negative property (the 'pending' one never starts) has no event to wait for: the other two
    // are running, so a start it was going to make has had as long; 200 ms more to be sure.
    await new Promise((r) => setTimeout(r, 200));
    const stuck = ec2.instances().find((i) => i.instanceId === p)!;
    assert.equal(stuck.state, 'pending');
    assert.equal(stuck.pid, undefined);
    assert.ok(alive(silent.pid));
    const con = await client.send(new GetConsoleOutputCommand({ InstanceId: s }));
    assert.equal(con.Output, undefined, 'a silent instance has no console output');

    ec2.kill(k!);
    const dead = await ec2.waitForState(k!, 'terminated');
    assert.equal(dead.stateReason, 'Server.InternalError');
    assert.equal(alive(victim.pid), false);
    await client.send(new TerminateInstancesCommand({ InstanceIds: [p!] }));
    await ec2.waitForState(p!, 'terminated');
  } finally { await done(); }
});

test('IMDS double: tokens, paths, 404s, identity document, double slash', { timeout: 120_000 }, async () => {
  const imds = await ImdsDouble.start({
    instanceId: 'i-0123456789abcdef0', imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro',
    availabilityZone: 'us-east-1b', region: 'us-east-1', accountId: '123456789012', localIpv4: '10.0.0.9',
    pendingTime: new Date('2024-05-01T12:00:00Z'), lifecycle: 'on-demand', iamRole: 'exec',
  });
  try {
    const md = new MetadataService({ endpoint: imds.endpoint, retries: 0 });
    assert.equal(await md.request('/latest/meta-data/instance-id', {}), 'i-0123456789abcdef0');
    assert.equal(await md.request('/latest/meta-data/placement/availability-zone', {}), 'us-east-1b');
    assert.equal(await md.request('/latest/meta-data/iam/security-credentials/', {}), 'exec');
    const doc = JSON.parse(await md.request('/latest/dynamic/instance-identity/document', {}));
    assert.equal(doc.privateIp, '10.0.0.9');
    assert.equal(doc.pendingTime, '2024-05-01T12:00:00Z');
    await assert.rejects(md.request('/latest/meta-data/public-ipv4', {}), /404/);
    await assert.rejects(md.request('/latest/user-data', {}), /404/);
    assert.ok(imds.stats.tokens >= 1);

    assert.equal((await fetch(`${imds.endpoint}/latest/meta-data/instance-id`)).status, 401);
    assert.equal((await fetch(`${imds.endpoint}/latest/api/token`, { method: 'PUT' })).status, 400, 'TTL header is required');
    const tok = await (await fetch(`${imds.endpoint}/latest/api/token`, { method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' } })).text();
    const r = await fetch(`${imds.endpoint}//latest/meta-data/local-ipv4`, { headers: { 'x-aws-ec2-metadata-token': tok } });
    assert.equal(await r.text(), '10.0.0.9');
    const bad = await fetch(`${imds.endpoint}/latest/meta-data/local-ipv4`, { headers: { 'x-aws-ec2-metadata-token': 'forged' } });
    assert.equal(bad.status, 401);
  } finally { await imds.close(); }
});

const netns = await netnsAvailability();
test(`network namespaces: each instance has its own address (mode: ${netns.mode}${netns.reason ? `, ${netns.reason}` : ''})`,
  { timeout: 120_000, skip: netns.mode !== 'netns' && `netns unavailable: ${netns.reason}` }, async () => {
    const lab = await NetnsLab.create();
    const script = `${INSTANCE_SCRIPT.replace("console.log('user-data=' + ud);",
      "console.log('user-data=' + ud); console.log('addr=' + require('os').networkInterfaces().eth0?.[0]?.address);")}`;
    const { ec2, client, done } = await setup({ launch: lab.launcher([process.execPath, '-e', script], process.cwd()), imdsHost: lab.gateway, privateIp: (n) => lab.ipFor(n) });
    try {
      const r = await client.send(new RunInstancesCommand(run({ MinCount: 2, MaxCount: 2, UserData: b64('netns') })));
      for (const i of r.Instances ?? []) {
        await ec2.waitForState(i.InstanceId!, 'running');
        const c = await waitFor('netns boot', () => ec2.instances().find((x) => x.instanceId === i.InstanceId)!.console.match(/addr=.*/)?.[0], 10_000);
        assert.equal(c, `addr=${i.PrivateIpAddress}`);
      }
      assert.notEqual(r.Instances?.[0]?.PrivateIpAddress, r.Instances?.[1]?.PrivateIpAddress);
      assert.match(ec2.instances()[0]!.console, /user-data=netns/);
    } finally {
      await done();
      await lab.destroy();
      const left = execFileSync('ip', ['-o', 'link', 'show']).toString() + execFileSync('ip', ['netns', 'list']).toString();
      assert.equal(left.includes(lab.tag), false, 'every link and namespace is deleted');
    }
  });
