/**
 * The provisioner's policy core: at each poll, from the queue depth and the fleet, decide how many
 * executors to launch and which to drain, and which pending instances failed to boot.
 *
 * Pure by design: no I/O, no timers, no clock (time arrives as `view.now`), so every scaling rule is
 * tested by feeding views and reading decisions. The only state it keeps is what the rules need
 * across polls: the launch streak (additive/exponential growth), the times of the last launch and
 * scale-down (cooldowns), and the consecutive boot failures (circuit breaker). The caller is
 * expected to carry out every decision it gets; `decide()` records a launch or drain as done.
 */

/** Falkon's four allocation policies: how many instances one poll may request. */
export type AllocationPolicy = 'one-at-a-time' | 'additive' | 'exponential' | 'all-at-once';

export const ALLOCATION_POLICIES: readonly AllocationPolicy[] = ['one-at-a-time', 'additive', 'exponential', 'all-at-once'];

/** Policy settings. Counts are executors (one per instance); pending instances count towards them. */
export interface PolicyConfig {
  policy: AllocationPolicy;
  /** Floor of executors kept up, pending ones included (launched even with nothing queued). */
  min: number;
  /** Ceiling of instances held: registered executors (draining ones too) plus pending ones. */
  max: number;
  /** Slots one new executor brings: what a pending instance is credited with. */
  slotsPerExecutor: number;
  /** An executor idle this long may be drained (Falkon and Reflow use 10 minutes). */
  idleTimeoutMs: number;
  /** Minimum gap between scale-down actions, and between the last launch and a scale-down. */
  cooldownMs: number;
  /** A pending instance not registered after this long is a failed boot. */
  bootTimeoutMs: number;
  /** This many failed boots in a row open the circuit breaker. */
  breakerThreshold: number;
  /** Told to the operator in the breaker's reason; defaults to `falconet provisioner reset`. */
  resetHint?: string;
}

/** Defaults for everything but the policy and the bounds. */
export const POLICY_DEFAULTS = {
  idleTimeoutMs: 10 * 60_000,
  cooldownMs: 60_000,
  bootTimeoutMs: 10 * 60_000,
  breakerThreshold: 3,
} as const;

/** One registered executor as the policy sees it. */
export interface ExecutorView {
  id: string;
  instanceId?: string;
  slots: number;
  running: number;
  state: 'idle' | 'busy' | 'draining' | 'disconnected';
  /** When it last became idle (ms, same clock as `now`); null while busy. */
  idleSinceMs: number | null;
}

/** What the policy is shown at each poll. */
export interface FleetView {
  now: number;
  /** Tasks waiting that this backend's executors can serve. */
  queued: number;
  executors: ExecutorView[];
  /** Instances launched that have not registered yet. */
  pending: Array<{ instanceId: string; requestedAt: number }>;
  /**
   * Instance types wanted for requests no executor can run, one entry per launch (fit-plan.ts).
   * They go before queue-depth launches, within max and the breaker; `queued` should then leave
   * out the tasks only they can serve.
   */
  typed?: string[];
}

/** What to do now. `reason` is one line for `falconet status`. */
export interface Decision {
  /** Instances to launch. */
  launch: number;
  /** Executor ids to drain: they exit, then the backend terminates their instances. */
  drain: string[];
  /** Pending instance ids past the boot timeout: terminate them and call `recordBoot(false)`. */
  bootFailed: string[];
  reason: string;
  /** Typed instances to launch (from `FleetView.typed`), besides the `launch` of the default type. */
  launchTypes?: string[];
}

/** The circuit breaker as shown to operators. */
export interface BreakerState {
  open: boolean;
  reason: string | null;
  failures: number;
}

/** Throws a RangeError unless the configuration makes sense. */
export function validatePolicyConfig(cfg: PolicyConfig): void {
  const bad = (what: string): never => {
    throw new RangeError(`provisioner policy: ${what}`);
  };
  if (!ALLOCATION_POLICIES.includes(cfg.policy)) bad(`unknown policy ${JSON.stringify(cfg.policy)}; one of ${ALLOCATION_POLICIES.join(', ')}`);
  const ints: Array<[string, number, number]> = [
    ['min', cfg.min, 0], ['max', cfg.max, 0], ['slotsPerExecutor', cfg.slotsPerExecutor, 1], ['breakerThreshold', cfg.breakerThreshold, 1],
  ];
  for (const [name, v, lo] of ints) if (!Number.isInteger(v) || v < lo) bad(`${name} must be an integer >= ${lo}, got ${v}`);
  for (const name of ['idleTimeoutMs', 'cooldownMs', 'bootTimeoutMs'] as const) {
    if (!Number.isFinite(cfg[name]) || cfg[name] < 0) bad(`${name} must be >= 0, got ${cfg[name]}`);
  }
  if (cfg.min > cfg.max) bad(`min (${cfg.min}) exceeds max (${cfg.max})`);
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
const secs = (ms: number): string => `${Math.ceil(ms / 1000)}s`;

/**
 * The stateful-but-pure policy. One instance per backend; call `decide()` once per poll.
 */
export class ProvisioningPolicy {
  readonly cfg: Readonly<PolicyConfig>;
  /** Consecutive polls that launched for demand: drives additive and exponential growth. */
  private streak = 0;
  private lastLaunchAt = -Infinity;
  private lastScaleDownAt = -Infinity;
  private failures = 0;
  private lastFailure: string | null = null;
  private openReason: string | null = null;

  constructor(cfg: PolicyConfig) {
    validatePolicyConfig(cfg);
    this.cfg = { ...cfg };
  }

  /** The breaker: open means launches are paused until `resetBreaker()`. */
  get breaker(): BreakerState {
    return { open: this.openReason !== null, reason: this.openReason, failures: this.failures };
  }

  /**
   * Feeds back a boot outcome: `true` when a launched instance registered, `false` when it did not
   * (boot timeout, or died before registering). `detail` (e.g. the console output's last line) is
   * kept for the breaker's reason.
   */
  recordBoot(ok: boolean, now: number, detail?: string): void {
    // An open breaker stays open until the operator resets it: a late registration of one instance
    // does not prove the image or network is fixed, and the count stays as the reason states it.
    if (this.openReason !== null) return;
    if (ok) {
      this.failures = 0;
      this.lastFailure = null;
      return;
    }
    this.failures++;
    this.lastFailure = detail ?? null;
    if (this.failures >= this.cfg.breakerThreshold) {
      const last = this.lastFailure ? this.lastFailure.replace(/\s+/g, ' ').trim().slice(0, 200) : 'no detail';
      this.openReason = `provisioning paused: ${this.failures} boots failed in a row; last: ${last}; ` +
        `since ${Number.isFinite(now) ? new Date(now).toISOString() : now}; reset with \`${this.cfg.resetHint ?? 'falconet provisioner reset'}\``;
    }
  }

  /** Closes the breaker and forgets the failure count (the operator has fixed the cause). */
  resetBreaker(): void {
    this.failures = 0;
    this.lastFailure = null;
    this.openReason = null;
    this.streak = 0;
  }

  /** Decides this poll's launches, drains and failed boots. Records launches/drains as carried out. */
  decide(view: FleetView): Decision {
    const { cfg } = this;
    const { now } = view;
    const parts: string[] = [];
    // An open breaker leads the reason whatever else happens: it is what the operator must act on.
    if (this.openReason !== null) parts.push(this.openReason);

    // Failed boots first: they stop counting as capacity at once, so the demand they were meant to
    // serve is seen as uncovered again (and relaunched unless the breaker stops it).
    const bootFailed = view.pending.filter((p) => now - p.requestedAt > cfg.bootTimeoutMs).map((p) => p.instanceId);
    const pending = view.pending.length - bootFailed.length;
    if (bootFailed.length > 0) parts.push(`${plural(bootFailed.length, 'boot')} timed out (${bootFailed.join(', ')})`);

    // Three different counts, each for the question it answers:
    // - held: instances we pay for (draining ones until they exit) - bounded by max;
    // - fleet: executors that will still be here (not draining) - topped up to min;
    // - free: slots that can take a queued task now or soon. Disconnected executors offer none
    //   (their connection may never return); busy ones offer what they have left.
    const held = view.executors.length + pending;
    const active = view.executors.filter((e) => e.state !== 'draining');
    const fleet = active.length + pending;
    let free = pending * cfg.slotsPerExecutor;
    for (const e of active) if (e.state !== 'disconnected') free += Math.max(0, e.slots - e.running);
    const queued = Math.max(0, view.queued);
    const uncovered = Math.max(0, queued - free);

    const demandNeed = Math.ceil(uncovered / cfg.slotsPerExecutor);
    const minNeed = Math.max(0, cfg.min - fleet);
    let room = Math.max(0, cfg.max - held);

    // Launch sizing. The min top-up is a floor the operator asked for, so it is launched whole; the
    // policy only paces launches for demand. The streak grows on each poll that launches for demand
    // and resets on a poll with no demand to launch for; a poll that wants to but cannot (at max,
    // breaker open) neither grows nor resets it, so growth resumes where it stopped.
    let launch = 0;
    const projectedFailures = this.failures + bootFailed.length;
    const launchTypes = this.typedLaunches(view.typed ?? [], room, projectedFailures, parts);
    room -= launchTypes.length;
    if (minNeed === 0 && demandNeed === 0) {
      this.streak = 0;
    } else if (this.openReason !== null) {
      parts.push(`launches blocked: ${plural(uncovered, 'queued task')} uncovered, ${fleet} of min ${cfg.min} up`);
    } else if (this.failures < cfg.breakerThreshold && projectedFailures >= cfg.breakerThreshold) {
      // These timeouts are about to open the breaker (the caller reports them next): launching
      // replacements now would only add one more doomed batch.
      parts.push(`launches held: ${projectedFailures} boots failed in a row, breaker opening`);
    } else if (room === 0) {
      parts.push(`at max ${cfg.max}: ${plural(uncovered, 'queued task')} uncovered, ${held} instances held`);
    } else {
      const step = this.step();
      const forDemand = Math.min(step, demandNeed);
      launch = Math.min(room, Math.max(minNeed, forDemand));
      if (demandNeed > 0) this.streak++;
      else this.streak = 0;
      const why: string[] = [];
      if (demandNeed > 0) why.push(`${plural(queued, 'queued task')} vs ${free} free/pending slots`);
      if (minNeed > 0) why.push(`${fleet} below min ${cfg.min}`);
      const pace = demandNeed > 0 ? ` (${cfg.policy} step ${step})` : '';
      const capped = launch < Math.max(minNeed, forDemand) ? `, capped by max ${cfg.max}` : '';
      parts.push(`launch ${launch}${pace}: ${why.join(', ')}${capped}; fleet ${fleet + launch}/${cfg.max}`);
    }
    if (launch + launchTypes.length > 0) this.lastLaunchAt = now;

    // Scale-down. Only when nothing at all is queued (not merely covered: queued tasks are about to
    // take those idle slots), only executors idle past the timeout, never below min, and with
    // cooldowns after the last scale-down and the last launch so a fleet does not flap between
    // growing and shrinking (dask/distributed#1604, ray#2317). One action drains every executor
    // eligible at that moment, longest idle first: each one has already waited out the idle timeout
    // on its own, and the cooldown then spaces out the next action.
    const drain: string[] = [];
    if (launch === 0 && queued === 0 && launchTypes.length === 0) {
      const idle = active
        .filter((e) => e.state === 'idle' && e.running === 0 && e.idleSinceMs !== null && now - e.idleSinceMs >= cfg.idleTimeoutMs)
        .sort((a, b) => (a.idleSinceMs as number) - (b.idleSinceMs as number));
      // The floor counts registered executors only: a pending instance may still fail to boot.
      const spare = Math.max(0, active.length - cfg.min);
      const sinceDown = now - this.lastScaleDownAt;
      const sinceLaunch = now - this.lastLaunchAt;
      if (idle.length === 0) {
        parts.push(active.length > 0 ? `nothing queued; no executor idle ${secs(cfg.idleTimeoutMs)} yet` : 'nothing queued');
      } else if (spare === 0) {
        parts.push(`nothing queued; ${plural(idle.length, 'idle executor')} kept for min ${cfg.min}`);
      } else if (sinceDown < cfg.cooldownMs) {
        parts.push(`scale-down in cooldown (${secs(cfg.cooldownMs - sinceDown)} left)`);
      } else if (sinceLaunch < cfg.cooldownMs) {
        parts.push(`scale-down held after a launch (${secs(cfg.cooldownMs - sinceLaunch)} left)`);
      } else {
        for (const e of idle.slice(0, spare)) drain.push(e.id);
        this.lastScaleDownAt = now;
        parts.push(`drain ${drain.length} (idle >= ${secs(cfg.idleTimeoutMs)}): ${drain.join(', ')}; fleet ${active.length - drain.length + pending}/${cfg.max}, min ${cfg.min}`);
      }
    } else if (launch === 0 && uncovered === 0 && minNeed === 0) {
      parts.push(`${plural(queued, 'queued task')} covered by ${free} free/pending slots; fleet ${fleet}/${cfg.max}`);
    }

    return { launch, drain, bootFailed, reason: parts.join('; '), ...(launchTypes.length > 0 ? { launchTypes } : {}) };
  }

  /**
   * The typed launches this poll may make: none while the breaker is open or about to open (a
   * broken image or network fails every type alike), at most `room`, in the order wanted.
   */
  private typedLaunches(wanted: string[], room: number, projectedFailures: number, parts: string[]): string[] {
    if (wanted.length === 0) return [];
    const what = wanted.join(', ');
    if (this.openReason !== null) {
      parts.push(`typed launches blocked: ${what}`);
      return [];
    }
    if (projectedFailures >= this.cfg.breakerThreshold) {
      parts.push(`typed launches held: ${projectedFailures} boots failed in a row`);
      return [];
    }
    const out = wanted.slice(0, room);
    if (out.length > 0) parts.push(`launch type ${out.join(', ')} for requests no executor can run`);
    if (out.length < wanted.length) parts.push(`at max ${this.cfg.max}: type ${wanted.slice(out.length).join(', ')} not launched`);
    return out;
  }

  /** This poll's launch size for demand, by policy and streak. */
  private step(): number {
    switch (this.cfg.policy) {
      case 'one-at-a-time': return 1;
      case 'additive': return this.streak + 1;
      // Capped shift: a long streak must not overflow into a negative or infinite step.
      case 'exponential': return 2 ** Math.min(this.streak, 30);
      case 'all-at-once': return Number.MAX_SAFE_INTEGER;
    }
  }
}
