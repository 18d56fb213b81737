import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ProvisioningPolicy, POLICY_DEFAULTS, type AllocationPolicy, type ExecutorView, type FleetView, type PolicyConfig,
} from '../dispatcher/provisioner/policy.js';

const MIN = 60_000;

function cfg(over: Partial<PolicyConfig> = {}): PolicyConfig {
  return { policy: 'one-at-a-time', min: 0, max: 20, slotsPerExecutor: 1, ...POLICY_DEFAULTS, ...over };
}

function exec(id: string, over: Partial<ExecutorView> = {}): ExecutorView {
  return { id, instanceId: `i-${id}`, slots: 1, running: 0, state: 'idle', idleSinceMs: 0, ...over };
}

function view(over: Partial<FleetView> = {}): FleetView {
  return { now: 1_000_000, queued: 0, executors: [], pending: [], ...over };
}

/**
 * Runs successive polls under a constant backlog, as a real provisioner would: every launch becomes
 * pending instances (none registers), and returns the launch sizes poll by poll.
 */
function burst(policy: AllocationPolicy, queued: number, polls: number, over: Partial<PolicyConfig> = {}): number[] {
  const p = new ProvisioningPolicy(cfg({ policy, ...over }));
  const pending: FleetView['pending'] = [];
  const sizes: number[] = [];
  for (let i = 0; i < polls; i++) {
    const now = 1_000_000 + i * 100;
    const d = p.decide(view({ now, queued, pending: [...pending] }));
    assert.deepEqual(d.drain, []);
    assert.ok(d.reason.length > 0 && !d.reason.includes('\n'), 'one-line reason');
    for (let k = 0; k < d.launch; k++) pending.push({ instanceId: `i-${i}-${k}`, requestedAt: now });
    sizes.push(d.launch);
  }
  return sizes;
}

test('burst from 0, one-at-a-time: one instance per poll up to max', { timeout: 10_000 }, () => {
  const sizes = burst('one-at-a-time', 100, 22, { max: 20 });
  assert.deepEqual(sizes, [...Array(20).fill(1), 0, 0]);
});

test('burst from 0, additive: 1, 2, 3, ... capped by max', { timeout: 10_000 }, () => {
  assert.deepEqual(burst('additive', 100, 8, { max: 20 }), [1, 2, 3, 4, 5, 5, 0, 0]);
});

test('burst from 0, exponential: 1, 2, 4, 8, ... capped by max', { timeout: 10_000 }, () => {
  assert.deepEqual(burst('exponential', 100, 7, { max: 20 }), [1, 2, 4, 8, 5, 0, 0]);
});

test('burst from 0, all-at-once: everything needed in one poll', { timeout: 10_000 }, () => {
  assert.deepEqual(burst('all-at-once', 100, 3, { max: 20 }), [20, 0, 0]);
  assert.deepEqual(burst('all-at-once', 7, 3, { max: 20 }), [7, 0, 0]);
});

test('launch sizes are capped by demand, in executors of slotsPerExecutor slots', { timeout: 10_000 }, () => {
  assert.deepEqual(burst('exponential', 10, 6, { max: 100 }), [1, 2, 4, 3, 0, 0]);
  assert.deepEqual(burst('additive', 10, 5, { max: 100 }), [1, 2, 3, 4, 0]);
  // 10 tasks over 4-slot executors: 3 executors in all.
  assert.deepEqual(burst('all-at-once', 10, 3, { max: 100, slotsPerExecutor: 4 }), [3, 0, 0]);
  assert.deepEqual(burst('exponential', 10, 4, { max: 100, slotsPerExecutor: 4 }), [1, 2, 0, 0]);
});

test('growth resets after a poll that needs no launch', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'exponential', max: 100 }));
  assert.equal(p.decide(view({ queued: 50 })).launch, 1);
  assert.equal(p.decide(view({ queued: 50, pending: [{ instanceId: 'a', requestedAt: 1_000_000 }] })).launch, 2);
  // Demand met: nothing queued.
  assert.equal(p.decide(view({ queued: 0 })).launch, 0);
  // A new burst starts the sequence again from 1.
  assert.equal(p.decide(view({ queued: 50 })).launch, 1);
});

test('pending instances count as capacity', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'all-at-once', slotsPerExecutor: 2 }));
  const pending = [1, 2, 3].map((i) => ({ instanceId: `i-${i}`, requestedAt: 1_000_000 }));
  let d = p.decide(view({ queued: 6, pending }));
  assert.equal(d.launch, 0);
  assert.match(d.reason, /6 queued tasks covered by 6 free\/pending slots/);
  // One more task than pending slots cover: one more executor.
  d = p.decide(view({ queued: 7, pending }));
  assert.equal(d.launch, 1);
  // Free slots on busy executors count too; disconnected ones do not.
  d = p.decide(view({
    queued: 3,
    executors: [exec('a', { slots: 4, running: 1, state: 'busy', idleSinceMs: null }), exec('b', { slots: 4, state: 'disconnected' })],
  }));
  assert.equal(d.launch, 0);
});

test('min is topped up in full, whatever the policy, with nothing queued', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'one-at-a-time', min: 3 }));
  let d = p.decide(view());
  assert.equal(d.launch, 3);
  assert.match(d.reason, /below min 3/);
  d = p.decide(view({ executors: [exec('a')], pending: [{ instanceId: 'i-p', requestedAt: 1_000_000 }] }));
  assert.equal(d.launch, 1);
  // Draining executors are on their way out: they do not count towards min.
  d = p.decide(view({ executors: [exec('a'), exec('b'), exec('c', { state: 'draining' })] }));
  assert.equal(d.launch, 1);
  d = p.decide(view({ executors: [exec('a'), exec('b'), exec('c')] }));
  assert.equal(d.launch, 0);
});

test('max bounds executors plus pending, draining executors included', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'all-at-once', max: 4 }));
  const d = p.decide(view({
    queued: 50,
    executors: [exec('a', { state: 'draining' }), exec('b', { state: 'busy', running: 1, idleSinceMs: null })],
    pending: [{ instanceId: 'i-p', requestedAt: 1_000_000 }],
  }));
  assert.equal(d.launch, 1);
  assert.match(d.reason, /capped by max 4/);
  const full = p.decide(view({
    queued: 50,
    executors: [exec('a', { state: 'draining' }), exec('b', { state: 'busy', running: 1, idleSinceMs: null })],
    pending: [{ instanceId: 'i-p', requestedAt: 1_000_000 }, { instanceId: 'i-q', requestedAt: 1_000_000 }],
  }));
  assert.equal(full.launch, 0);
  assert.match(full.reason, /at max 4/);
});

test('scale-down drains only executors idle past the idle timeout, longest idle first', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ idleTimeoutMs: 10 * MIN, cooldownMs: MIN }));
  const now = 100 * MIN;
  const d = p.decide(view({
    now,
    executors: [
      exec('young', { idleSinceMs: now - 9 * MIN }),
      exec('old', { idleSinceMs: now - 30 * MIN }),
      exec('busy', { state: 'busy', running: 1, idleSinceMs: null }),
      exec('older', { idleSinceMs: now - 40 * MIN }),
      exec('leaving', { state: 'draining', idleSinceMs: now - 50 * MIN }),
      exec('gone', { state: 'disconnected', idleSinceMs: now - 50 * MIN }),
    ],
  }));
  assert.equal(d.launch, 0);
  assert.deepEqual(d.drain, ['older', 'old']);
  assert.match(d.reason, /^drain 2/);
});

test('no scale-down while anything is queued', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ idleTimeoutMs: MIN, cooldownMs: 0 }));
  const now = 100 * MIN;
  const execs = [exec('a', { slots: 4, idleSinceMs: now - 10 * MIN }), exec('b', { slots: 4, idleSinceMs: now - 10 * MIN })];
  // Covered by idle slots, yet queued: those slots are about to be used.
  const d = p.decide(view({ now, queued: 2, executors: execs }));
  assert.deepEqual(d.drain, []);
  assert.equal(d.launch, 0);
  assert.deepEqual(p.decide(view({ now, queued: 0, executors: execs })).drain, ['a', 'b']);
});

test('scale-down respects the cooldown between actions and after a launch', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ idleTimeoutMs: MIN, cooldownMs: 5 * MIN }));
  let now = 100 * MIN;
  assert.deepEqual(p.decide(view({ now, executors: [exec('a', { idleSinceMs: now - 2 * MIN })] })).drain, ['a']);
  now += MIN;
  let d = p.decide(view({ now, executors: [exec('b', { idleSinceMs: now - 2 * MIN })] }));
  assert.deepEqual(d.drain, []);
  assert.match(d.reason, /scale-down in cooldown \(240s left\)/);
  now += 4 * MIN;
  assert.deepEqual(p.decide(view({ now, executors: [exec('b', { idleSinceMs: now - 6 * MIN })] })).drain, ['b']);

  // After a launch: no scale-down for cooldownMs, even of executors long idle.
  const q = new ProvisioningPolicy(cfg({ idleTimeoutMs: MIN, cooldownMs: 5 * MIN }));
  now = 200 * MIN;
  assert.equal(q.decide(view({ now, queued: 1 })).launch, 1);
  now += 2 * MIN;
  d = q.decide(view({ now, executors: [exec('c', { idleSinceMs: now - 10 * MIN })] }));
  assert.deepEqual(d.drain, []);
  assert.match(d.reason, /scale-down held after a launch \(180s left\)/);
  now += 3 * MIN;
  assert.deepEqual(q.decide(view({ now, executors: [exec('c', { idleSinceMs: now - 10 * MIN })] })).drain, ['c']);
});

test('scale-down never goes below min', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ min: 2, idleTimeoutMs: MIN, cooldownMs: 0 }));
  const now = 100 * MIN;
  const execs = ['a', 'b', 'c', 'd'].map((id, i) => exec(id, { idleSinceMs: now - (10 + i) * MIN }));
  assert.deepEqual(p.decide(view({ now, executors: execs })).drain, ['d', 'c']);
  const d = p.decide(view({ now: now + MIN, executors: execs.slice(0, 2) }));
  assert.deepEqual(d.drain, []);
  assert.match(d.reason, /kept for min 2/);
});

test('pending instances past the boot timeout are reported as failed boots, and replaced', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'all-at-once', bootTimeoutMs: 5 * MIN }));
  const now = 100 * MIN;
  const d = p.decide(view({
    now,
    queued: 2,
    pending: [{ instanceId: 'i-late', requestedAt: now - 6 * MIN }, { instanceId: 'i-fresh', requestedAt: now - MIN }],
  }));
  assert.deepEqual(d.bootFailed, ['i-late']);
  // i-late no longer counts as capacity: one task is uncovered again.
  assert.equal(d.launch, 1);
  assert.match(d.reason, /1 boot timed out \(i-late\)/);
});

test('circuit breaker: k failed boots in a row pause launches with a visible reason until reset', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'all-at-once', breakerThreshold: 3, idleTimeoutMs: MIN, cooldownMs: 0 }));
  const now = 100 * MIN;
  p.recordBoot(false, now, 'boot 1');
  p.recordBoot(false, now, 'boot 2');
  p.recordBoot(true, now);
  assert.equal(p.breaker.failures, 0, 'a registration resets the count');
  p.recordBoot(false, now, 'x');
  p.recordBoot(false, now, 'y');
  assert.deepEqual(p.breaker, { open: false, reason: null, failures: 2 });
  p.recordBoot(false, now, 'cloud-init: \n  no route to dispatcher');
  const b = p.breaker;
  assert.equal(b.open, true);
  assert.equal(b.failures, 3);
  assert.match(b.reason ?? '', /^provisioning paused: 3 boots failed in a row; last: cloud-init: no route to dispatcher; .*reset with/);

  // Open: nothing launched, not even for min; reason says why; draining still happens.
  let d = p.decide(view({ now, queued: 10, executors: [] }));
  assert.equal(d.launch, 0);
  assert.match(d.reason, /provisioning paused: 3 boots failed in a row/);
  assert.match(d.reason, /launches blocked: 10 queued tasks uncovered/);
  assert.ok(!d.reason.includes('\n'));
  d = p.decide(view({ now, executors: [exec('a', { idleSinceMs: now - 2 * MIN })], pending: [{ instanceId: 'i-x', requestedAt: 0 }] }));
  assert.deepEqual(d.drain, ['a']);
  assert.deepEqual(d.bootFailed, ['i-x']);
  assert.match(d.reason, /provisioning paused/);
  // A late registration does not close it: only the operator does.
  p.recordBoot(true, now);
  assert.equal(p.breaker.open, true);

  p.resetBreaker();
  assert.deepEqual(p.breaker, { open: false, reason: null, failures: 0 });
  assert.equal(p.decide(view({ now, queued: 10 })).launch, 10);
});

test('boot timeouts about to open the breaker hold launches in the same poll', { timeout: 10_000 }, () => {
  const p = new ProvisioningPolicy(cfg({ policy: 'all-at-once', breakerThreshold: 2, bootTimeoutMs: MIN }));
  const now = 100 * MIN;
  p.recordBoot(false, now, 'first');
  const d = p.decide(view({ now, queued: 5, pending: [{ instanceId: 'i-b', requestedAt: now - 2 * MIN }] }));
  assert.deepEqual(d.bootFailed, ['i-b']);
  assert.equal(d.launch, 0);
  assert.match(d.reason, /launches held: 2 boots failed in a row, breaker opening/);
  p.recordBoot(false, now, 'second');
  assert.equal(p.breaker.open, true);
});

test('configuration is validated', { timeout: 10_000 }, () => {
  assert.throws(() => new ProvisioningPolicy(cfg({ min: 5, max: 2 })), /min \(5\) exceeds max \(2\)/);
  assert.throws(() => new ProvisioningPolicy(cfg({ slotsPerExecutor: 0 })), RangeError);
  assert.throws(() => new ProvisioningPolicy(cfg({ policy: 'greedy' as AllocationPolicy })), /unknown policy/);
  assert.throws(() => new ProvisioningPolicy(cfg({ breakerThreshold: 0 })), RangeError);
  assert.throws(() => new ProvisioningPolicy(cfg({ idleTimeoutMs: -1 })), RangeError);
});
