/**
 * The typed half of provisioning, pure: parsing instance types, ordering them, which type a
 * request gets (fit-plan.ts), and how the policy bounds typed launches (max, breaker).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FalconetError } from '../protocol/index.js';
import { requestOf, type ResourceRequest } from '../dispatcher/resources.js';
import { fitHint, parseInstanceTypes } from '../dispatcher/provisioner/instance-types.js';
import { planFit, type FitExecutor, type FitInput, type WaitingShape } from '../dispatcher/provisioner/fit-plan.js';
import { ProvisioningPolicy, POLICY_DEFAULTS, type PolicyConfig } from '../dispatcher/provisioner/policy.js';

const TYPES = parseInstanceTypes('g5.2xlarge:cpus=8,memoryMb=32768,gpus=1;c7g.xlarge:cpus=4,memoryMb=8192;c7g.large:cpus=2,memoryMb=4096;g5.xlarge:cpus=4,memoryMb=16384,gpus=1;f1:cpus=8,fpga=1', '--ec2-instance-types');

const req = (r: Record<string, number>): ResourceRequest => requestOf(r)!;
const shape = (r: Record<string, number>, tasks = 1, labels?: Record<string, string>): WaitingShape => ({ request: req(r), tasks, ...(labels ? { labels } : {}) });

function input(over: Partial<FitInput>): FitInput {
  return { types: TYPES, shapes: [], executors: [], pending: [], labels: {}, slotsPerExecutor: 2, ...over };
}

const live = (type: string | null, resources: Record<string, number>, freeSlots = 2, labels: Record<string, string> = {}): FitExecutor => ({ type, resources, labels, freeSlots });

test('instance types are ordered smallest first: fewest gpus, then cpus, then memory', { timeout: 10_000 }, () => {
  assert.deepEqual(TYPES.map((t) => t.name), ['c7g.large', 'c7g.xlarge', 'f1', 'g5.xlarge', 'g5.2xlarge']);
  assert.deepEqual(TYPES[0].resources, { cpus: 2, memoryMb: 4096 });
});

test('bad instance type lists are USAGE errors that name the flag', { timeout: 10_000 }, () => {
  const bad: Array<[string, RegExp]> = [
    ['', /takes TYPE:NAME=AMOUNT/],
    [' ; ', /takes TYPE:NAME=AMOUNT/],
    ['c7g.large', /needs its resources after a colon/],
    ['c7g.large:', /needs its resources after a colon/],
    ['a:cpus=1;a:cpus=2', /given twice/],
    ['a b:cpus=1', /not an instance type name/],
    ['a:cpus=x', /cpus must be a number/],
    ['a:gpus=0.5', /gpus must be a whole number/],
    ['a:cpus', /NAME=AMOUNT pairs/],
  ];
  for (const [text, re] of bad) {
    assert.throws(() => parseInstanceTypes(text, '--ec2-instance-types'), (err: unknown) => {
      assert.ok(err instanceof FalconetError, `${JSON.stringify(text)}: ${String(err)}`);
      assert.equal(err.code, 'USAGE');
      assert.match(err.message, /--ec2-instance-types/);
      assert.match(err.message, re, JSON.stringify(text));
      return true;
    });
  }
});

test('the smallest fitting type is launched for a request no executor can run, and its tasks leave queue depth', { timeout: 10_000 }, () => {
  // A default executor with no GPU runs plain and cpu requests; not the GPU one.
  const execs = [live(null, { cpus: 2, memoryMb: 4000, gpus: 0 })];
  const plan = planFit(input({ shapes: [shape({ gpus: 1 }, 3), shape({ cpus: 6 }), shape({ cpus: 1 }, 5)], executors: execs }));
  assert.deepEqual(plan.launch, [{ type: 'g5.xlarge', request: 'gpus=1' }, { type: 'f1', request: 'cpus=6' }]);
  assert.equal(plan.excluded, 4, 'the gpus=1 and cpus=6 tasks; the cpus=1 ones stay queue depth for the default type');
  assert.deepEqual(plan.unfit, []);
  // A cpu request never gets a GPU machine when a CPU one fits.
  assert.deepEqual(planFit(input({ shapes: [shape({ cpus: 3, memoryMb: 5000 })] })).launch, [{ type: 'c7g.xlarge', request: 'cpus=3,memoryMb=5000' }]);
});

test('a booting instance of a fitting type counts: one waiting task launches one instance, however many polls', { timeout: 10_000 }, () => {
  const pending: Array<{ type: string | null }> = [];
  let launched = 0;
  for (let poll = 0; poll < 10; poll++) {
    const plan = planFit(input({ shapes: [shape({ gpus: 1 })], pending: [...pending] }));
    for (const l of plan.launch) pending.push({ type: l.type });
    launched += plan.launch.length;
  }
  assert.equal(launched, 1);
  // A pending default instance does not count: its resources are not known to fit.
  assert.equal(planFit(input({ shapes: [shape({ gpus: 1 })], pending: [{ type: null }] })).launch.length, 1);
  // Nor does a pending instance of a type that does not fit.
  assert.equal(planFit(input({ shapes: [shape({ gpus: 1 })], pending: [{ type: 'c7g.large' }] })).launch.length, 1);
});

test('two shapes one type serves launch it once; a live typed executor with free slots covers its shape', { timeout: 10_000 }, () => {
  const plan = planFit(input({ shapes: [shape({ gpus: 1 }), shape({ gpus: 1, cpus: 2 })] }));
  assert.deepEqual(plan.launch.map((l) => l.type), ['g5.xlarge']);
  assert.equal(plan.excluded, 2);
  const gpuBox = live('g5.xlarge', { cpus: 4, memoryMb: 16384, gpus: 1 }, 2);
  assert.deepEqual(planFit(input({ shapes: [shape({ gpus: 1 }, 2)], executors: [gpuBox] })).launch, []);
  // More tasks than it has slots: one more instance, then none while it boots.
  const more = planFit(input({ shapes: [shape({ gpus: 1 }, 5)], executors: [gpuBox] }));
  assert.deepEqual(more.launch.map((l) => l.type), ['g5.xlarge']);
  assert.deepEqual(planFit(input({ shapes: [shape({ gpus: 1 }, 5)], executors: [gpuBox], pending: [{ type: 'g5.xlarge' }] })).launch, []);
  assert.equal(more.excluded, 5, 'typed-only tasks never count as default queue depth');
});

test('a request no type fits is reported, not launched for; labels launched executors lack are left alone', { timeout: 10_000 }, () => {
  const plan = planFit(input({ shapes: [shape({ gpus: 4 }, 2), shape({ fpga: 2 })] }));
  assert.deepEqual(plan.launch, []);
  assert.deepEqual(plan.unfit, ['gpus=4', 'fpga=2']);
  assert.equal(plan.excluded, 3);
  const labelled = planFit(input({ shapes: [shape({ gpus: 1 }, 1, { zone: 'b' })], labels: { zone: 'a' } }));
  assert.deepEqual(labelled, { launch: [], excluded: 0, unfit: [] });
  assert.equal(planFit(input({ shapes: [shape({ gpus: 1 }, 1, { zone: 'a' })], labels: { zone: 'a' } })).launch.length, 1);
});

test('the hint a waiting request gets names the type launched for it, or says none fits', { timeout: 10_000 }, () => {
  assert.equal(fitHint(TYPES, req({ gpus: 1 })), 'instance type g5.xlarge fits it (the provisioner launches one)');
  assert.match(fitHint(TYPES, req({ gpus: 2 })), /^no instance type fits it \(configured: c7g\.large cpus=2,memoryMb=4096; .*g5\.2xlarge cpus=8,gpus=1,memoryMb=32768\)$/);
});

function cfg(over: Partial<PolicyConfig> = {}): PolicyConfig {
  return { policy: 'one-at-a-time', min: 0, max: 3, slotsPerExecutor: 1, ...POLICY_DEFAULTS, ...over };
}

test('typed launches stay within --max, go before queue depth, and stop while the breaker is open', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ max: 3, policy: 'all-at-once' }));
  const pending = [{ instanceId: 'i-1', requestedAt: 1_000_000 }];
  let d = p.decide({ now: 1_000_000, queued: 5, executors: [], pending, typed: ['g5.xlarge', 'f1', 'c7g.large'] });
  assert.deepEqual(d.launchTypes, ['g5.xlarge', 'f1']);
  assert.equal(d.launch, 0, 'no room left for queue depth');
  assert.match(d.reason, /launch type g5\.xlarge, f1 for requests no executor can run/);
  assert.match(d.reason, /at max 3: type c7g\.large not launched/);
  // Without typed wants, the same view launches for queue depth as before.
  d = new ProvisioningPolicy(cfg({ max: 3, policy: 'all-at-once' })).decide({ now: 1_000_000, queued: 5, executors: [], pending });
  assert.equal(d.launch, 2);
  assert.equal(d.launchTypes, undefined);
  // Three failed boots open the breaker: typed launches stop too.
  for (let i = 0; i < 3; i++) p.recordBoot(false, 1_000_000, 'no console');
  d = p.decide({ now: 1_000_100, queued: 0, executors: [], pending: [], typed: ['g5.xlarge'] });
  assert.equal(d.launchTypes, undefined);
  assert.match(d.reason, /typed launches blocked: g5\.xlarge/);
});

test('a typed launch holds scale-down like any launch', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ max: 5, cooldownMs: 60_000, idleTimeoutMs: 1000 }));
  const idle = { id: 'a', slots: 1, running: 0, state: 'idle' as const, idleSinceMs: 0 };
  const d = p.decide({ now: 1_000_000, queued: 0, executors: [idle], pending: [], typed: ['f1'] });
  assert.deepEqual(d.launchTypes, ['f1']);
  assert.deepEqual(d.drain, [], 'no drain in the poll that launched');
  const next = p.decide({ now: 1_000_500, queued: 0, executors: [idle], pending: [{ instanceId: 'i-f1', requestedAt: 1_000_000 }] });
  assert.deepEqual(next.drain, []);
  assert.match(next.reason, /scale-down held after a launch/);
});
