/**
 * The provisioner: every poll it shows the policy (policy.ts) the queue and the fleet, and
 * carries out what it decides through a backend: launch, drain idle executors, terminate boots
 * that never registered (keeping their console output). It tracks each instance through its
 * lifecycle and records it in the store, so a restarted dispatcher adopts its instances again
 * and terminates those it cannot account for.
 */
import type { Logger } from 'pino';
import type { Clock } from '../model.js';
import type { Fleet, FleetMember } from './fleet.js';
import { executorState } from '../status.js';
import { isTransientLaunchError, type Backend, type CloudState } from './backend.js';
import { ProvisioningPolicy, type PolicyConfig } from './policy.js';
import { planFit, type FitPlan } from './fit-plan.js';
import type { InstanceType } from './instance-types.js';
import { Buckets } from '../histogram.js';

/** An instance's lifecycle as `falconet status` shows it. */
export type InstanceState = 'requested' | 'pending' | 'booting' | 'registered' | 'idle' | 'busy' | 'draining' | 'terminated' | 'boot-failed';

export interface InstanceRecord {
  id: string;
  state: InstanceState;
  requestedAt: number;
  registeredAt?: number;
  executorId?: string;
  endedAt?: number;
  /** Why it ended, or why its boot failed. */
  reason?: string;
  /** The tail of its console output, kept for a failed boot. */
  console?: string;
  /** Found at start (a previous dispatcher launched it), not launched by this one. */
  adopted?: boolean;
  /** The instance type it was launched with for a resource request; absent: the default type. */
  type?: string;
}

export interface ProvisionerOptions extends PolicyConfig {
  pollMs: number;
  /** Ended instances stay visible in status this long. */
  keepEndedMs?: number;
  /**
   * How long an instance's executor may be missing from the fleet before the instance counts as
   * gone (and is terminated). 0 alone: the core keeps a lost executor's record through its lease.
   * Over several dispatchers, an executor moving between them is missing from every report for
   * a moment (cluster.ts sets about two partition leases).
   */
  goneAfterMs?: number;
  /** Types launched for requests no executor can run, smallest first (instance-types.ts). */
  types?: InstanceType[];
  /** Labels every executor launched carries (a request needing others gets no typed launch). */
  labels?: Record<string, string>;
}

/** Where instance records persist (the durable store), if anywhere. */
export interface InstanceStore {
  putInstance(id: string, record: unknown): void;
  dropInstance(id: string): void;
}

export interface ProvisionerStatus {
  backend: string;
  policy: string;
  min: number;
  max: number;
  breaker: { open: boolean; reason: string | null; failures: number };
  lastDecision: string;
  lastError: string | null;
  instances: InstanceRecord[];
}

const ACTIVE: ReadonlySet<InstanceState> = new Set(['requested', 'pending', 'booting', 'registered', 'idle', 'busy', 'draining']);
const WAITING: ReadonlySet<InstanceState> = new Set(['requested', 'pending', 'booting']);

export class Provisioner {
  readonly policy: ProvisioningPolicy;
  readonly #records = new Map<string, InstanceRecord>();
  /** Instances whose executor is missing from the fleet, since when (see `goneAfterMs`). */
  readonly #missing = new Map<string, number>();
  #timer: NodeJS.Timeout | null = null;
  #polling: Promise<void> | null = null;
  #lastDecision = 'not polled yet';
  #lastError: string | null = null;
  #backoffUntil = 0;
  #backoffMs = 0;
  /** For /metrics, since this process started: instances launched, boots failed, seconds from launch to registration. */
  readonly counters = { launched: 0, bootFailed: 0, bootSeconds: new Buckets([1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200]) };

  constructor(
    /** What it scales: one dispatcher's queue and executors, or the whole cluster's (fleet.ts). */
    private readonly fleet: Fleet,
    private readonly backend: Backend,
    private readonly o: ProvisionerOptions,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly store: InstanceStore | null = null,
  ) {
    this.policy = new ProvisioningPolicy(o);
  }

  /**
   * Adopts what a previous dispatcher left: every instance of ours the backend still lists is
   * watched as pending; one that does not register within the boot timeout is terminated.
   * Records of instances that no longer exist are dropped. Then polls every `pollMs`.
   */
  async start(recovered: Array<{ id: string; record: unknown }> = []): Promise<void> {
    const known = new Map(recovered.map((r) => [r.id, r.record as InstanceRecord]));
    const now = this.clock.now();
    let cloud = new Map<string, CloudState>();
    try {
      await this.backend.adopt?.([...known.keys()]);
      cloud = await this.backend.list();
    } catch (err) {
      this.#lastError = `listing instances failed: ${(err as Error).message}`;
      this.log.error({ err }, this.#lastError);
    }
    for (const [id, state] of cloud) {
      if (state === 'gone') continue;
      const rec: InstanceRecord = { ...(known.get(id) ?? { id }), id, state: 'pending', requestedAt: now, adopted: true };
      this.#records.set(id, rec);
      this.store?.putInstance(id, rec);
    }
    for (const id of known.keys()) if (!this.#records.has(id)) this.store?.dropInstance(id);
    if (this.#records.size > 0) this.log.info({ adopted: this.#records.size }, 'adopted instances of a previous dispatcher');
    this.#timer = setInterval(() => void this.poll(), this.o.pollMs);
  }

  /** One step. Never overlaps itself; errors are logged and shown, never thrown. */
  poll(): Promise<void> {
    this.#polling ??= this.#step()
      .catch((err) => {
        this.#lastError = String((err as Error).message);
        this.log.error({ err }, 'provisioner poll failed');
      })
      .finally(() => (this.#polling = null));
    return this.#polling;
  }

  async #step(): Promise<void> {
    const now = this.clock.now();
    this.#observe(now);
    await this.#refreshCloudStates();
    const all = this.fleet.executors();
    const managed = all.filter((e) => this.#recordOf(e));
    const fit = this.#planFit(all);
    const decision = this.policy.decide({
      now,
      queued: Math.max(0, this.fleet.demand((e) => this.#recordOf(e) !== undefined) - (fit?.excluded ?? 0)),
      executors: managed.map((e) => {
        return {
          id: e.info.id,
          ...(e.info.instanceId ? { instanceId: e.info.instanceId } : {}),
          slots: e.info.slots,
          running: e.running,
          state: executorState(e),
          idleSinceMs: e.idleSince,
        };
      }),
      pending: [...this.#records.values()].filter((r) => WAITING.has(r.state)).map((r) => ({ instanceId: r.id, requestedAt: r.requestedAt })),
      ...(fit && fit.launch.length > 0 ? { typed: fit.launch.map((l) => l.type) } : {}),
    });
    this.#lastDecision = decision.reason;
    for (const id of decision.bootFailed) await this.#bootFailed(id, now);
    this.#drainStrays(all);
    for (const id of decision.drain) {
      this.fleet.drain(id);
      const rec = [...this.#records.values()].find((r) => r.executorId === id);
      if (rec) this.#set(rec, 'draining');
    }
    for (const name of decision.launchTypes ?? []) await this.#launch(1, now, this.o.types?.find((t) => t.name === name));
    if (decision.launch > 0) await this.#launch(decision.launch, now);
    this.#prune(now);
  }

  /**
   * The typed half of this poll (fit-plan.ts), or null when no instance types are configured:
   * then nothing here runs and the provisioner is exactly the queue-depth one.
   */
  #planFit(all: FleetMember[]): FitPlan | null {
    const types = this.o.types;
    if (!types?.length) return null;
    const shapes = this.fleet.queuedRequests();
    if (shapes.length === 0) return null;
    const typeOf = (e: FleetMember) => this.#recordOf(e)?.type ?? null;
    return planFit({
      types,
      shapes,
      executors: all
        .filter((e) => e.connected && !e.draining && !e.leaving)
        .map((e) => ({ type: typeOf(e), resources: e.info.resources, labels: e.info.labels, freeSlots: e.info.slots - e.running })),
      pending: [...this.#records.values()].filter((r) => WAITING.has(r.state)).map((r) => ({ type: r.type ?? null })),
      labels: this.o.labels ?? {},
      slotsPerExecutor: this.o.slotsPerExecutor,
    });
  }

  /**
   * Executors this backend started for a dispatcher that kept no record of them (an in-memory
   * store, or records lost): nobody counts them, so they are drained rather than left beside the
   * fleet this dispatcher launches.
   */
  #drainStrays(executors: FleetMember[]): void {
    for (const e of executors) {
      if (!e.connected || e.draining || e.leaving || this.#recordOf(e) || !this.backend.isStray?.(e.info.id)) continue;
      this.log.warn({ executor: e.info.id }, 'draining an executor of a previous dispatcher that this one cannot account for');
      this.fleet.drain(e.info.id);
    }
  }

  /** True when the executor runs on an instance this provisioner started (it watches it: it stays here). */
  manages(info: { id: string; instanceId?: string }): boolean {
    return this.#records.has(info.instanceId ?? '') || this.#records.has(info.id);
  }

  #recordOf(e: FleetMember): InstanceRecord | undefined {
    return this.#records.get(e.info.instanceId ?? '') ?? this.#records.get(e.info.id);
  }

  /** Registrations, state changes and departures of the executors on our instances. */
  #observe(now: number): void {
    const present = this.fleet.executors();
    for (const e of present) {
      const rec = this.#recordOf(e);
      if (!rec || !ACTIVE.has(rec.state)) continue;
      if (WAITING.has(rec.state)) {
        rec.registeredAt = now;
        rec.executorId = e.info.id;
        if (!rec.adopted) {
          this.policy.recordBoot(true, now);
          this.counters.bootSeconds.observe((now - rec.requestedAt) / 1000);
        }
        this.log.info({ instance: rec.id, executor: e.info.id, bootMs: now - rec.requestedAt }, 'instance registered');
      }
      const s = executorState(e);
      this.#set(rec, s === 'draining' ? 'draining' : s === 'busy' ? 'busy' : s === 'disconnected' ? rec.state === 'draining' ? 'draining' : 'registered' : 'idle');
    }
    // An executor that left (drained, idle, lost): its instance is done; make sure it is gone.
    const ids = new Set(present.map((e) => e.info.id));
    for (const rec of this.#records.values()) {
      if (!ACTIVE.has(rec.state) || WAITING.has(rec.state) || rec.executorId === undefined) continue;
      if (ids.has(rec.executorId)) {
        this.#missing.delete(rec.id);
        continue;
      }
      const since = this.#missing.get(rec.id) ?? now;
      this.#missing.set(rec.id, since);
      if (now - since >= (this.o.goneAfterMs ?? 0)) {
        this.#missing.delete(rec.id);
        this.#end(rec, 'terminated', 'its executor left');
        void this.backend.terminate([rec.id]).catch((err) => this.log.warn({ err, instance: rec.id }, 'terminate failed'));
      }
    }
  }

  /** Pending instances that started running are booting; ones that vanished are over. */
  async #refreshCloudStates(): Promise<void> {
    if (![...this.#records.values()].some((r) => WAITING.has(r.state))) return;
    const cloud = await this.backend.list();
    for (const rec of this.#records.values()) {
      if (!WAITING.has(rec.state)) continue;
      const s = cloud.get(rec.id);
      if (s === 'running' && rec.state !== 'booting') this.#set(rec, 'booting');
      else if (s === 'pending' && rec.state === 'requested') this.#set(rec, 'pending');
      else if ((s === undefined || s === 'gone') && rec.state !== 'requested') {
        await this.#bootFailed(rec.id, this.clock.now(), 'the instance ended before its executor registered');
      }
    }
  }

  async #bootFailed(id: string, now: number, why?: string): Promise<void> {
    const rec = this.#records.get(id);
    if (!rec || !WAITING.has(rec.state)) return;
    let console = '';
    try {
      console = await this.backend.consoleOutput(id);
    } catch (err) {
      console = `(console output unavailable: ${(err as Error).message})`;
    }
    await this.backend.terminate([id]).catch((err) => this.log.warn({ err, instance: id }, 'terminate failed'));
    rec.console = console.slice(-4096);
    const lastLine = console.trim().split('\n').pop() ?? '';
    const reason = why ?? `not registered within ${Math.round(this.o.bootTimeoutMs / 1000)} s`;
    this.#end(rec, 'boot-failed', lastLine ? `${reason}; console: ${lastLine}` : reason);
    if (!rec.adopted) this.policy.recordBoot(false, now, `instance ${id}: ${rec.reason}`);
    this.counters.bootFailed++;
    this.log.warn({ instance: id, reason: rec.reason }, 'boot failed; instance terminated');
  }

  async #launch(n: number, now: number, type?: InstanceType): Promise<void> {
    if (now < this.#backoffUntil) return;
    try {
      const ids = await this.backend.launch(n, type);
      this.#backoffMs = 0;
      this.#lastError = null;
      this.counters.launched += ids.length;
      for (const id of ids) {
        const rec: InstanceRecord = { id, state: 'requested', requestedAt: now, ...(type ? { type: type.name } : {}) };
        this.#records.set(id, rec);
        this.store?.putInstance(id, rec);
      }
      this.log.info({ requested: n, launched: ids.length, ...(type ? { type: type.name } : {}) }, 'launched');
    } catch (err) {
      this.#lastError = `launch of ${n}${type ? ` ${type.name}` : ''} failed: ${(err as Error).name}: ${(err as Error).message}`;
      // Capacity and throttling clear on their own: back off (doubling, up to 5 minutes).
      if (isTransientLaunchError(err)) {
        this.#backoffMs = Math.min(300_000, Math.max(this.o.pollMs, this.#backoffMs * 2 || this.o.pollMs));
        this.#backoffUntil = now + this.#backoffMs;
        this.#lastError += `; retrying in ${Math.round(this.#backoffMs / 1000)} s`;
      }
      this.log.warn({ err }, this.#lastError);
    }
  }

  #set(rec: InstanceRecord, state: InstanceState): void {
    if (rec.state === state) return;
    rec.state = state;
    this.store?.putInstance(rec.id, rec);
  }

  #end(rec: InstanceRecord, state: 'terminated' | 'boot-failed', reason: string): void {
    rec.endedAt = this.clock.now();
    rec.reason = reason;
    this.#set(rec, state);
  }

  #prune(now: number): void {
    const keep = this.o.keepEndedMs ?? 10 * 60_000;
    for (const rec of [...this.#records.values()]) {
      if (rec.endedAt !== undefined && now - rec.endedAt > keep) {
        this.#records.delete(rec.id);
        this.store?.dropInstance(rec.id);
      }
    }
  }

  /** Closes the circuit breaker after the operator fixed what made boots fail. */
  reset(): void {
    this.policy.resetBreaker();
    this.#backoffUntil = 0;
    this.log.info('provisioner reset by the operator');
  }

  status(): ProvisionerStatus {
    return {
      backend: this.backend.kind,
      policy: this.o.policy,
      min: this.o.min,
      max: this.o.max,
      breaker: this.policy.breaker,
      lastDecision: this.#lastDecision,
      lastError: this.#lastError,
      instances: [...this.#records.values()],
    };
  }

  /** Stops polling; local executor processes stop with it, cloud instances keep running. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#polling;
    await this.backend.close();
  }
}
