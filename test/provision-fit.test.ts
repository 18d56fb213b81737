/**
 * The provisioner launches an instance type that fits a waiting resource request, with real
 * processes: local executor types (`up --local-executor-types`), and EC2 instance types through
 * the EC2 and IMDS doubles, whose instances are executor processes configured by their user-data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../client/index.js';
import { Ec2Double } from './doubles/ec2-double.js';
import { CLI, FAST, Procs, runCli, startDispatcher, status, waitFor, waitForLine, within } from './helpers.js';
import type { ProvisionerStatus } from '../dispatcher/provisioner/provisioner.js';

const SCALE = ['--poll-ms', '100', '--cooldown', '0'];

async function provisioner(url: string): Promise<ProvisionerStatus> {
  return ((await status(url)) as unknown as { provisioner: ProvisionerStatus }).provisioner;
}

/** A PATH whose `nvidia-smi` fails, as on a machine without a driver: detection finds no GPU. */
function noGpuPath(procs: Procs): string {
  const dir = procs.tmpDir();
  writeFileSync(join(dir, 'nvidia-smi'), '#!/bin/sh\necho "NVIDIA-SMI has failed" >&2\nexit 9\n');
  chmodSync(join(dir, 'nvidia-smi'), 0o755);
  return `${dir}:${process.env.PATH}`;
}

test('local types: a request no executor can run launches one executor of the smallest fitting type, and runs there; one no type fits waits with its reason', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const up = procs.spawn(
    ['up', '--port', '0', '--data-dir', procs.tmpDir(), '--min', '0', '--max', '3', '--slots', '1', '--idle-timeout', '600',
      '--local-executor-types', 'fpga-big:cpus=2,fpga=2;fpga:cpus=1,fpga=1;small:cpus=1', ...SCALE, ...FAST],
    { PATH: noGpuPath(procs) },
  );
  const [, url] = await waitForLine(up, /listening on (ws:\/\/\S+)/);
  const client = await connect(url);
  t.after(() => client.close());
  // Never runs: no type has 4 fpga. Its promise settles (or not) when the client closes.
  client.submit({ id: 'huge', cmd: ['true'], resources: { fpga: 4 } }).catch(() => {});
  const r = await within(client.submit({ id: 'accel', cmd: ['sh', '-c', 'echo ran'], resources: { fpga: 1 } }), 90_000, 'the fpga=1 task to run');
  assert.equal(r.status, 'succeeded', r.stderr);
  assert.equal(r.stdout, 'ran\n');

  const why = /^needs fpga=4, the largest executor has 1; no instance type fits it \(configured: small cpus=1; fpga cpus=1,fpga=1; fpga-big cpus=2,fpga=2\)$/;
  await waitFor('the huge task to say no type fits', async () => why.test((await client.task('huge')).waiting ?? ''));
  const p = await provisioner(url);
  // Many polls ran while it booted: the booting instance counted, so exactly one was launched,
  // of the smallest type that fits (not fpga-big), and no default executor for typed-only tasks.
  assert.deepEqual(p.instances.map((i) => i.type), ['fpga'], JSON.stringify(p.instances));
  assert.equal(r.executor, p.instances[0].id, 'ran on the launched instance (a local executor\'s id is its instance id)');
  const s = await status(url);
  assert.equal(s.executors.length, 1);
  assert.equal(s.executors[0].resources?.fpga, 1, 'advertises the type\'s resources');
  assert.equal(s.executors[0].resources?.cpus, 1);
  assert.match(s.requests?.[0]?.reason ?? '', /no instance type fits it/);
  const task = await runCli(procs, ['task', 'huge'], { env: { FALCONET_URL: url } });
  assert.match(task.stdout, /waiting +needs fpga=4, the largest executor has 1; no instance type fits it/, task.stdout);
  assert.equal((await client.task('huge')).state, 'queued');
  const human = await runCli(procs, ['status', 'instances'], { env: { FALCONET_URL: url } });
  assert.match(human.stdout, new RegExp(`${p.instances[0].id} +\\S+ +.*type fpga`), human.stdout);
});

test('EC2 types: a GPU request launches the GPU type with its resources in user-data; the executor advertises them though it detects none', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const double = await Ec2Double.start({ command: [process.execPath, CLI, 'executor'], env: { FALCONET_LOG: 'info', PATH: noGpuPath(procs) } });
  t.after(() => double.close());
  const env = { AWS_ENDPOINT_URL_EC2: double.endpoint, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret' };
  const d = await startDispatcher(procs, [
    '--provisioner', 'ec2', '--ec2-image', 'ami-0123456789abcdef0', '--ec2-instance-type', 't3.micro',
    '--ec2-instance-types', 'g5.xlarge:cpus=4,memoryMb=16384,gpus=1;c7g.large:cpus=2,memoryMb=4096',
    '--cluster', 'fit', '--executor-slots', '2', '--dispatcher-timeout', '30', '--min', '0', '--max', '2', '--idle-timeout', '600', '--boot-timeout', '60', ...SCALE,
  ], env);
  const client = await connect(d.url);
  t.after(() => client.close());
  // Plain tasks first, more than a pending instance is credited with: whenever the provisioner
  // polls, queue depth wants the default type, while the GPU task wants the GPU type.
  const plain = Array.from({ length: 5 }, () => client.submit({ builtin: 'sleep', ms: 100 }));
  const r = await within(client.submit({ cmd: ['sh', '-c', 'echo gpus=$CUDA_VISIBLE_DEVICES'], resources: { gpus: 1 } }), 90_000, 'the GPU task to run');
  assert.equal(r.status, 'succeeded', r.stderr);
  assert.equal(r.stdout, 'gpus=0\n', 'the type\'s GPU, by index');
  assert.ok((await within(Promise.all(plain), 90_000, 'the plain tasks')).every((x) => x.status === 'succeeded'));
  const launched = double.instances();
  const gpu = launched.filter((i) => i.instanceType === 'g5.xlarge');
  const plainTypes = launched.filter((i) => i.instanceType === 't3.micro');
  assert.equal(gpu.length, 1, `one GPU instance: ${launched.map((i) => i.instanceType).join(', ')}`);
  assert.equal(plainTypes.length, launched.length - 1, `the others of the default type: ${launched.map((i) => i.instanceType).join(', ')}`);
  assert.ok(plainTypes.length >= 1, 'queue depth launched the default type');
  assert.equal(r.executor, gpu[0].instanceId);
  assert.deepEqual((JSON.parse(gpu[0].userData) as { resources?: unknown }).resources, { cpus: 4, memoryMb: 16384, gpus: 1 });
  assert.equal((JSON.parse(plainTypes[0].userData) as { resources?: unknown }).resources, undefined, 'the default type detects its own');
  const s = await status(d.url);
  assert.deepEqual(s.executors.find((e) => e.id === gpu[0].instanceId)?.resources, { cpus: 4, memoryMb: 16384, gpus: 1 }, 'what the type says, not what the host has');
  assert.equal((await provisioner(d.url)).instances.find((i) => i.id === gpu[0].instanceId)?.type, 'g5.xlarge');
});

test('instance type flags: bad lists and the wrong backend are usage errors (exit 2)', { timeout: 120_000 }, async () => {
  const procs = new Procs();
  try {
    const bad = await runCli(procs, ['up', '--port', '0', '--min', '0', '--max', '1', '--local-executor-types', 'small:cpus=x']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--local-executor-types \(type small\): cpus must be a number/);
    const wrong = await runCli(procs, ['dispatcher', '--port', '0', '--provisioner', 'local', '--ec2-instance-types', 'c7g.large:cpus=2']);
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.match(wrong.stderr, /--ec2-instance-types needs --provisioner ec2/);
  } finally {
    await procs.killAll();
  }
});
