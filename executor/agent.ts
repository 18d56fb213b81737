/**
 * The executor agent: dials the dispatcher (retrying until it is there), registers with what
 * this host is (addresses, slots, memory, labels), then runs the tasks it is given or asks for.
 * Results that finish while the dispatcher is unreachable are kept and delivered after the next
 * welcome; the attempts still running are reported in the hello so the dispatcher keeps their
 * leases instead of re-queueing them.
 *
 * Heartbeats come from the link's own timer. Task work never runs on this event loop (commands
 * are child processes, builtins are timers), so no task can starve them.
 */
import { hostname, networkInterfaces, totalmem, availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  PROTOCOL_VERSION,
  compileInbound,
  DispatcherToExecutorSchemas,
  type AttemptResult,
  type DispatcherToExecutor,
  type ExecutorInfo,
  type FalconetError,
} from '../protocol/index.js';
import { Link } from '../protocol/link.js';
import { runAttempt, taskBaseEnv, type RunnerOptions, type RunningAttempt } from './runner.js';

export const EXECUTOR_VERSION = '0.1.0';

export interface ExecutorOptions {
  url: string;
  token?: string;
  /** Stable id; generated once per process when absent. */
  id?: string;
  slots?: number;
  labels?: Record<string, string>;
  mode?: 'push' | 'pull';
  /** Exit after this long with nothing to run (0: never). */
  idleExitMs?: number;
  outputLimit?: number;
  killGraceMs?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  instanceId?: string;
}

/** Every non-internal address of this host, as its DHCP (or whoever) gave them. */
export function hostAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal) out.push(a.address);
  }
  return out;
}

interface Slot {
  attempt: number;
  run: RunningAttempt;
}

export class ExecutorAgent {
  readonly id: string;
  readonly slots: number;
  readonly #link: Link<DispatcherToExecutor>;
  readonly #running = new Map<number, Slot>();
  /** Results not yet handed to a live connection. */
  #undelivered: AttemptResult[] = [];
  #draining = false;
  #idleSince = Date.now();
  #idleTimer: NodeJS.Timeout | null = null;
  readonly #runner: RunnerOptions;
  readonly #boot: Array<{ phase: string; at: number }> = [{ phase: 'started', at: Date.now() }];
  #exited = false;
  readonly #incarnation = randomBytes(8).toString('hex');

  constructor(
    private readonly o: ExecutorOptions,
    private readonly log: Logger,
    /** Called once when the agent is done (drained, idle, or refused); the CLI exits with it. */
    private readonly onExit: (code: number, reason: string) => void,
  ) {
    this.id = o.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.slots = o.slots ?? availableParallelism();
    this.#runner = { outputLimit: o.outputLimit ?? 64 * 1024, killGraceMs: o.killGraceMs ?? 2000, baseEnv: taskBaseEnv() };
    this.#boot.push({ phase: 'configured', at: Date.now() });
    this.#link = new Link<DispatcherToExecutor>({
      url: o.url,
      validate: compileInbound<DispatcherToExecutor>(DispatcherToExecutorSchemas),
      hello: () => ({ t: 'hello', v: PROTOCOL_VERSION, role: 'executor', ...(o.token ? { token: o.token } : {}), caps: ['batch', 'push', 'pull'], executor: this.#info() }),
      onUp: () => this.#onUp(),
      onMessage: (msg) => this.#onMessage(msg),
      onDown: (reason) => log.warn({ reason }, 'dispatcher connection lost; redialing'),
      onFatal: (err: FalconetError) => {
        log.error({ code: err.code }, err.message);
        this.#exit(2, `${err.code}: ${err.message}`);
      },
      initialBackoffMs: o.initialBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
    });
  }

  start(): void {
    this.#link.start();
    const idle = this.o.idleExitMs ?? 0;
    if (idle > 0) {
      this.#idleTimer = setInterval(() => {
        if (this.#running.size === 0 && Date.now() - this.#idleSince >= idle) void this.#leave(0, `idle for ${idle} ms`);
      }, Math.max(10, Math.min(1000, idle / 4)));
    }
  }

  #info(): ExecutorInfo {
    return {
      id: this.id,
      hostname: hostname(),
      addresses: hostAddresses(),
      slots: this.slots,
      memory: totalmem(),
      labels: this.o.labels ?? {},
      version: EXECUTOR_VERSION,
      pid: process.pid,
      incarnation: this.#incarnation,
      ...(this.o.instanceId ? { instanceId: this.o.instanceId } : {}),
      mode: this.o.mode ?? 'push',
      // Attempts this executor holds: running, or finished with the result not yet delivered
      // (it follows the welcome). Either way the dispatcher must not re-queue them.
      running: [
        ...[...this.#running].map(([uid, s]) => ({ uid, attempt: s.attempt })),
        ...this.#undelivered.map((r) => ({ uid: r.uid, attempt: r.attempt })),
      ],
      boot: this.#boot,
    };
  }

  #onUp(): void {
    if (!this.#boot.some((b) => b.phase === 'registered')) this.#boot.push({ phase: 'registered', at: Date.now() });
    this.log.info({ id: this.id, slots: this.slots, url: this.o.url }, 'registered');
    const pending = this.#undelivered;
    this.#undelivered = [];
    for (const result of pending) this.#deliver(result);
    if ((this.o.mode ?? 'push') === 'pull' && !this.#draining) {
      const free = this.slots - this.#running.size;
      if (free > 0) this.#link.send({ t: 'pull', n: free });
    }
    if (this.#draining && this.#running.size === 0) void this.#leave(0, 'drained');
  }

  #onMessage(msg: DispatcherToExecutor): void {
    switch (msg.t) {
      case 'task':
        return this.#start(msg.uid, msg.attempt, msg);
      case 'cancel': {
        const slot = this.#running.get(msg.uid);
        if (slot && slot.attempt === msg.attempt) slot.run.cancel();
        return;
      }
      case 'drain':
        this.#draining = true;
        this.log.info({ running: this.#running.size }, 'draining');
        if (this.#running.size === 0) void this.#leave(0, 'drained');
        return;
      case 'error':
        this.log.warn({ code: msg.code }, msg.message);
        return;
    }
  }

  #start(uid: number, attempt: number, msg: Extract<DispatcherToExecutor, { t: 'task' }>): void {
    if (this.#running.has(uid)) return; // a duplicate assignment of what already runs here
    const run = runAttempt(msg.spec, this.#runner);
    this.#running.set(uid, { attempt, run });
    run.done.then((outcome) => {
      const slot = this.#running.get(uid);
      if (slot?.attempt === attempt) this.#running.delete(uid);
      if (this.#running.size === 0) this.#idleSince = Date.now();
      this.#deliver({ uid, attempt, ...outcome });
      if ((this.o.mode ?? 'push') === 'pull' && !this.#draining) this.#link.send({ t: 'pull', n: 1 });
      if (this.#draining && this.#running.size === 0) void this.#leave(0, 'drained');
    });
  }

  #deliver(result: AttemptResult): void {
    if (this.#exited) return; // stopping: the dispatcher re-queues what we did not finish
    if (!this.#link.send({ t: 'done', result })) this.#undelivered.push(result);
  }

  /** Says goodbye (so the dispatcher does not count us lost) and exits. */
  async #leave(code: number, reason: string): Promise<void> {
    if (this.#exited) return;
    this.#link.send({ t: 'bye', reason });
    this.#exit(code, reason);
  }

  #exit(code: number, reason: string): void {
    if (this.#exited) return;
    this.#exited = true;
    if (this.#idleTimer) clearInterval(this.#idleTimer);
    for (const slot of this.#running.values()) slot.run.cancel();
    void this.#link.close().then(() => this.onExit(code, reason));
  }

  /**
   * Stops the agent now (SIGTERM): running attempts are killed and the dispatcher, told by `bye`,
   * re-queues them at once without counting them as crashes.
   */
  async stop(): Promise<void> {
    await this.#leave(0, 'stopped');
  }
}
