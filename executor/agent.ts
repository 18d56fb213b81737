/**
 * The executor agent: dials the dispatcher (retrying until it is there), registers with what
 * this host is (addresses, slots, memory, labels), then runs the tasks it is given or asks for.
 * Every result is kept (delivery.ts) until the dispatcher acknowledges it, sent again after each
 * welcome, and listed in the hello with the attempts still running, so the dispatcher keeps their
 * leases instead of re-queueing them: a result that finishes while the dispatcher is unreachable,
 * or whose frame is lost with a connection, is delivered after the next welcome.
 *
 * An attempt always ends in a result, whatever fails on the way (its sandbox, the cache, the spawn
 * helper, a bug that rejects its promise), and the executor goes on serving.
 *
 * Boot feedback: the hello carries the boot phases with their timestamps (`started`,
 * `config-loaded`, then `registered` once welcomed).
 *
 * Retirement (no orphaned cost): idle past `idleExitMs`, drained by the dispatcher, or no
 * dispatcher for `dispatcherTimeoutMs` ends the agent with `retireExitCode` (the AMI sets 75, which
 * its unit turns into a poweroff), after running `shutdownCommand` if one is set. A stop (SIGTERM)
 * is not a retirement: exit 0, no command.
 *
 * Heartbeats come from the link's own timer. Task work never runs on this event loop (commands
 * are child processes, builtins are timers), so no task can starve them.
 */
import { hostname, totalmem, availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  PROTOCOL_VERSION,
  RECORDS_CAP,
  STEAL_CAP,
  PEERS_CAP,
  WINDOW_CAP,
  ErrorCode,
  FalconetError,
  LIMITS,
  compileInbound,
  DispatcherToExecutorSchemas,
  type AttemptResult,
  type DispatcherToExecutor,
  type ExecutorInfo,
} from '../protocol/index.js';
import { Link } from '../protocol/link.js';
import { dispatcherUrls } from '../protocol/dispatchers.js';
import { helperPlacement, outcome, setHelperLimit, taskBaseEnv, type Outcome, type RunnerOptions, type RunningAttempt } from './runner.js';
import { AttemptContext, defaultDataOptions, startAttempt } from './attempt.js';
import { ResultOutbox } from './delivery.js';
import { LiveOutput } from './output-tail.js';
import { hostAddresses, runShutdownCommand } from './host.js';
import { AdaptiveWindow, worthAnnouncing } from './window.js';
import { LifetimeWatch } from './lifetime.js';
import { Imds } from './imds.js';

export { hostAddresses, runShutdownCommand };

export const EXECUTOR_VERSION = '0.1.0';

/**
 * How long the spawn helper may hold the results of commands while more wait in it, to send them
 * together (ms), and the work the window keeps waiting for short tasks so that it can. One result
 * at a time cost ~1 ms of CPU per `/bin/true` across the executor, the dispatcher, its store and
 * the client; batches of this length cut that to ~0.5 ms (10 ms: ~0.7), for a result up to 20 ms
 * late while more of the queue's tasks run, and ~40 ms of short tasks waiting per executor
 * (bench/RESULTS.md, "Spawn"). Results come at once when nothing waits behind them.
 */
const RESULT_BATCH_MS = 20;

export interface ExecutorOptions {
  /**
   * The dispatcher(s): one ws(s):// URL, a comma-separated list, or an array. An executor dials
   * them in a random order of its own (a fleet spreads over them) and moves to the next when its
   * dispatcher is lost.
   */
  url: string | readonly string[];
  /** The order in which several URLs are tried: `random` (default: a fleet spreads) or `first` (the list's). */
  dispatcherOrder?: 'random' | 'first';
  token?: string;
  /** Stable id; generated once per process when absent. */
  id?: string;
  slots?: number;
  labels?: Record<string, string>;
  /**
   * Resources offered to tasks' requests (cpus, memoryMb, gpus, custom: executor/resources.ts).
   * Absent: none, and the dispatcher sends this executor only tasks without requests.
   */
  resources?: Record<string, number>;
  /** The indices of its GPUs (`nvidia-smi`); default 0 … gpus-1. */
  gpuIndices?: number[];
  mode?: 'push' | 'pull';
  /** Exit after this long with nothing to run (0: never). */
  idleExitMs?: number;
  outputLimit?: number;
  /** How commands start: the spawn helper (default, when built) or Node's child_process. */
  spawner?: 'helper' | 'node';
  killGraceMs?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** EC2 instance id (from IMDS), reported at registration. */
  instanceId?: string;
  /** Addresses reported besides this host's own (IMDS local and public IPv4). */
  addresses?: string[];
  /** Boot phases already passed (the CLI's `started`, `config-loaded`); default: both, now. */
  boot?: Array<{ phase: string; at: number }>;
  /** Retire when no dispatcher has welcomed us for this long, from boot or the last loss (0: never). */
  dispatcherTimeoutMs?: number;
  /** Exit status of every retirement (idle, drained, dispatcher unreachable); default 0. */
  retireExitCode?: number;
  /** Run with /bin/sh -c on retirement, before exiting. */
  shutdownCommand?: string;
  /** How long the shutdown command may run before we exit anyway (default 60 s). */
  shutdownCommandTimeoutMs?: number;
  /** wss://: PEM CA certificate(s) trusted besides the root CAs (a certificate that does not verify: exit 2, TLS_FAILED). */
  ca?: string | Buffer;
  /** `--lifetime`: this executor ends this long after it started (lifetime.ts). */
  lifetimeMs?: number;
  /** Drain when less than this is left of its life (default 120 s). */
  drainMarginMs?: number;
  /** After a spot interruption notice, hand running tasks back this much later (default 0), at the latest at the notice's time. */
  spotGraceMs?: number;
  /** The instance metadata service to poll for spot interruption notices and scheduled events (on EC2). */
  noticeEndpoint?: string;
  /** How often to poll it (default 5 s). */
  noticePollMs?: number;
}

type TaskMsg = Extract<DispatcherToExecutor, { t: 'task' }>;

interface Slot {
  attempt: number;
  run: RunningAttempt;
  /** A command handed to the spawn helper's queue (it runs or waits there), not run by us. */
  inHelper: boolean;
}

export class ExecutorAgent {
  readonly id: string;
  readonly slots: number;
  readonly #link: Link<DispatcherToExecutor>;
  /**
   * Attempts handed over: each occupies a slot, or is a plain command that waits in the spawn
   * helper's queue for one (the helper starts it the moment a slot frees: no hop through us).
   */
  readonly #running = new Map<number, Slot>();
  /** How many of #running are not in the helper's queue (builtins, data tasks): slots it must leave free. */
  #outsideHelper = 0;
  /**
   * Tasks assigned beyond our slots (the dispatcher's `--prefetch`) and not handed to the helper
   * (builtins, data tasks, what follows them, everything with `--spawner node` or before the helper
   * said hello), started in arrival order as slots free: a slot then turns to its next task without
   * waiting a round trip to the dispatcher.
   */
  readonly #queued = new Map<number, { attempt: number; msg: TaskMsg }>();
  /** Results the dispatcher has not acknowledged yet: sent again after every welcome. */
  readonly #outbox = new ResultOutbox();
  #draining = false;
  #idleSince = Date.now();
  #idleTimer: NodeJS.Timeout | null = null;
  #dispatcherTimer: NodeJS.Timeout | null = null;
  /** Since when no dispatcher has welcomed us (boot, or the last loss); null while connected. */
  #unwelcomedSince: number | null = Date.now();
  readonly #runner: RunnerOptions;
  /** #runner for the commands that go through the helper's queue. */
  readonly #queuedRunner: RunnerOptions;
  /** What this executor's attempts share: the content cache, environments, data counters. */
  readonly #ctx: AttemptContext;
  /** What the content cache holds, by locality key, and which version of it was last sent. */
  #holds: string[] = [];
  #holdsSig = '';
  #holdsVersion = 0;
  #holdsSent = 0;
  readonly #boot: Array<{ phase: string; at: number }>;
  /**
   * Push mode: how many tasks to keep beyond the slots, from observed run times and round trips
   * (window.ts); announced with `window` to a dispatcher that sizes windows so (`window` cap).
   */
  readonly #window: AdaptiveWindow;
  /** The dispatcher of this connection takes `window` messages. */
  #windowed = false;
  /** The extra last announced on this connection. */
  #announced = 0;
  #announceQueued = false;
  /** One result whose acknowledgement times the round trip (one at a time: no per-task cost). */
  #probe: { uid: number; attempt: number; at: number } | null = null;
  #exited = false;
  readonly #incarnation = randomBytes(8).toString('hex');
  /** Output of the attempts someone reads, streamed while they read (output-tail.ts). */
  readonly #live: LiveOutput;
  /** When this executor ends, if it knows (lifetime.ts); null without --lifetime or IMDS. */
  readonly #life: LifetimeWatch | null = null;
  /** The dispatcher's welcome listed `lifetime`: it understands the lifetime message. */
  #lifetimeCap = false;

  constructor(
    private readonly o: ExecutorOptions,
    private readonly log: Logger,
    /** Called once when the agent is done (drained, idle, or refused); the CLI exits with it. */
    private readonly onExit: (code: number, reason: string) => void,
  ) {
    this.id = o.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.slots = o.slots ?? availableParallelism();
    if (o.outputLimit !== undefined && o.outputLimit > LIMITS.outputBytes) {
      // A result carrying more would break the protocol's limit on stdout/stderr.
      throw new FalconetError(ErrorCode.USAGE, `the output limit is at most ${LIMITS.outputBytes} bytes (got ${o.outputLimit})`);
    }
    this.#runner = { outputLimit: o.outputLimit ?? 64 * 1024, killGraceMs: o.killGraceMs ?? 2000, baseEnv: taskBaseEnv(), helperScope: this.id, resultHoldMs: RESULT_BATCH_MS, ...(o.spawner ? { spawner: o.spawner } : {}) };
    this.#queuedRunner = { ...this.#runner, helperQueue: true };
    setHelperLimit(this.#runner, this.slots);
    this.#ctx = new AttemptContext(defaultDataOptions(this.id), this.#runner, log);
    this.#window = new AdaptiveWindow({ slots: this.slots, batchMs: RESULT_BATCH_MS });
    if (o.lifetimeMs !== undefined || o.noticeEndpoint !== undefined) {
      this.#life = new LifetimeWatch(
        {
          ...(o.lifetimeMs !== undefined ? { lifetimeMs: o.lifetimeMs } : {}),
          ...(o.drainMarginMs !== undefined ? { drainMarginMs: o.drainMarginMs } : {}),
          ...(o.spotGraceMs !== undefined ? { spotGraceMs: o.spotGraceMs } : {}),
          ...(o.noticePollMs !== undefined ? { pollMs: o.noticePollMs } : {}),
          ...(o.noticeEndpoint !== undefined ? { imds: new Imds({ endpoint: o.noticeEndpoint }) } : {}),
        },
        {
          onEnd: (endsAt, reason, draining) => this.#onEnd(endsAt, reason, draining),
          // A bye: the dispatcher re-queues what still runs here without counting it as crashes.
          onHandBack: (reason) => this.#retire(`${reason}: handing back ${this.#running.size + this.#queued.size} task(s)`),
          onPollError: (err) => log.debug({ err: err.message }, 'polling the metadata service for notices failed'),
        },
      );
    }
    const now = Date.now();
    this.#boot = o.boot?.length ? o.boot.map((b) => ({ ...b })) : [{ phase: 'started', at: now }, { phase: 'config-loaded', at: now }];
    this.#link = new Link<DispatcherToExecutor>({
      url: dispatcherUrls(o.url),
      order: o.dispatcherOrder ?? 'random',
      validate: compileInbound<DispatcherToExecutor>(DispatcherToExecutorSchemas),
      hello: () => ({ t: 'hello', v: PROTOCOL_VERSION, role: 'executor', ...(o.token ? { token: o.token } : {}), caps: ['batch', 'push', 'pull', RECORDS_CAP, PEERS_CAP, STEAL_CAP], executor: this.#info() }),
      onUp: (welcome) => {
        this.#lifetimeCap = welcome.t === 'welcome' && welcome.caps.includes('lifetime');
        this.#onUp(welcome.t === 'welcome' ? welcome.caps : []);
      },
      heartbeatExtra: () => this.#heartbeatExtra(),
      onMessage: (msg) => this.#onMessage(msg),
      onDown: (reason, where) => {
        this.#unwelcomedSince = Date.now();
        this.#live.reset();
        this.#probe = null;
        // Our own close on the way out (drain, idle, stop): the exit line says what happened.
        if (this.#exited) return;
        // A dispatcher that shuts down cleanly (restart, upgrade) closes with 1001: expected, so info.
        // The messages stay as they were (operators grep them); the fields name both dispatchers.
        const fields = { reason, lost: where.lost, next: where.next };
        if (reason.startsWith('1001')) log.info(fields, 'dispatcher shut down; redialing');
        else log.warn(fields, 'dispatcher connection lost; redialing');
      },
      // Each failed dial, for whoever debugs a fleet that does not come back; redirects at info.
      onRetry: (r) => {
        if (this.#exited) return;
        if (r.moved) log.info({ from: r.from, to: r.moved, delayMs: Math.round(r.delayMs) }, `dispatcher ${r.from} moved us to ${r.moved}`);
        else log.debug({ failed: r.from, next: r.next, delayMs: Math.round(r.delayMs), reason: r.reason }, `dial ${r.from} failed; dialing ${r.next}`);
      },
      onFatal: (err: FalconetError) => {
        log.error({ code: err.code }, err.message);
        this.#exit(2, `${err.code}: ${err.message}`);
      },
      onUnsendable: (msg, err) => this.#unsendable(msg, err),
      initialBackoffMs: o.initialBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
      ...(o.ca !== undefined ? { ca: o.ca } : {}),
    });
    const link = this.#link;
    this.#live = new LiveOutput({
      send: (msg) => void link.send(msg),
      get maxFrameBytes() {
        return link.maxFrameBytes;
      },
      get bufferedAmount() {
        return link.bufferedAmount;
      },
    });
  }

  start(): void {
    this.#unwelcomedSince = Date.now();
    this.#life?.start();
    const idle = this.o.idleExitMs ?? 0;
    if (idle > 0) {
      this.#idleTimer = setInterval(() => {
        if (this.#running.size === 0 && Date.now() - this.#idleSince >= idle) this.#retire(`idle for ${idle} ms`);
      }, Math.max(10, Math.min(1000, idle / 4)));
    }
    const orphan = this.o.dispatcherTimeoutMs ?? 0;
    if (orphan > 0) {
      this.#dispatcherTimer = setInterval(() => {
        const since = this.#unwelcomedSince;
        if (since !== null && Date.now() - since >= orphan) {
          this.log.warn({ timeoutMs: orphan, url: this.o.url }, 'no dispatcher within the dispatcher timeout; retiring');
          this.#retire(`dispatcher unreachable for ${orphan} ms`);
        }
      }, Math.max(10, Math.min(1000, orphan / 4)));
    }
    // Named environments are prepared per task (environments.ts), so nothing stands between the
    // configuration and dialing.
    this.#link.start();
  }

  #info(): ExecutorInfo {
    return {
      id: this.id,
      hostname: hostname(),
      addresses: [...new Set([...hostAddresses(), ...(this.o.addresses ?? [])])],
      slots: this.slots,
      memory: totalmem(),
      labels: this.o.labels ?? {},
      version: EXECUTOR_VERSION,
      pid: process.pid,
      incarnation: this.#incarnation,
      ...(this.o.instanceId ? { instanceId: this.o.instanceId } : {}),
      mode: this.o.mode ?? 'push',
      // Attempts this executor holds: running, or finished with the result not yet acknowledged
      // (it follows the welcome). Either way the dispatcher must not re-queue them.
      running: [
        ...[...this.#running].map(([uid, s]) => ({ uid, attempt: s.attempt })),
        ...[...this.#queued].map(([uid, q]) => ({ uid, attempt: q.attempt })),
        ...this.#outbox.refs(),
      ],
      boot: this.#boot,
      ...(this.o.resources ? { resources: this.o.resources } : {}),
      ...(this.o.gpuIndices ? { gpuIndices: this.o.gpuIndices } : {}),
      ...(this.#life?.endsAt != null ? { endsAt: this.#life.endsAt, endReason: this.#life.reason, draining: this.#life.draining } : {}),
    };
  }

  /** An end learned (or its drain begun): the dispatcher hears of it; draining takes no new task. */
  #onEnd(endsAt: number, reason: string, draining: boolean): void {
    this.log.info({ endsAt: new Date(endsAt).toISOString(), reason, draining, running: this.#running.size }, draining ? 'draining: the end of this executor is near' : 'this executor ends at a known time');
    if (this.#lifetimeCap) this.#link.send({ t: 'lifetime', endsAt, reason, draining });
    if (draining && !this.#draining) {
      this.#draining = true;
      if (this.#running.size === 0 && this.#queued.size === 0) this.#retire(`drained: ${reason}`);
    }
  }

  /** Data counters once there are any; the cache's holdings when they changed since last sent. */
  #heartbeatExtra(): Record<string, unknown> {
    const extra: Record<string, unknown> = {};
    const counters = this.#ctx.counters;
    if (counters.cacheHits + counters.cacheMisses + counters.bytesOut > 0) extra.data = { ...counters };
    if (this.#holdsVersion !== this.#holdsSent) {
      extra.holds = this.#holds;
      this.#holdsSent = this.#holdsVersion;
    }
    return extra;
  }

  #refreshHolds(): void {
    this.#ctx.heldLocalityKeys().then(
      (keys) => {
        if (!keys) return;
        const sig = keys.join(',');
        if (sig === this.#holdsSig) return;
        this.#holds = keys;
        this.#holdsSig = sig;
        this.#holdsVersion++;
      },
      // It does not reject today; if it ever does, the holdings stay as last sent.
      (err: unknown) => this.log.warn({ err: (err as Error)?.message }, 'cache holdings not refreshed'),
    );
  }

  #onUp(caps: readonly string[]): void {
    this.#holdsSent = -1; // a new connection (maybe a new dispatcher) learns the holdings again
    // A welcome starts the window at the slots on the dispatcher's side: say ours again.
    this.#windowed = (this.o.mode ?? 'push') === 'push' && caps.includes(WINDOW_CAP);
    this.#window.setStealing(caps.includes(STEAL_CAP));
    this.#announced = 0;
    this.#probe = null;
    if (this.#window.extra > 0) this.#announce();
    this.#unwelcomedSince = null;
    if (!this.#boot.some((b) => b.phase === 'registered')) this.#boot.push({ phase: 'registered', at: Date.now() });
    this.log.info({ id: this.id, slots: this.slots, url: this.#link.dispatcher }, 'registered');
    // Everything not acknowledged, whether or not it was sent before: a frame sent just before
    // the last loss may never have arrived, and the dispatcher drops (and acks) duplicates.
    for (const result of this.#outbox.pending()) this.#link.send({ t: 'done', result });
    if ((this.o.mode ?? 'push') === 'pull' && !this.#draining) {
      const free = this.slots - this.#running.size;
      if (free > 0) this.#link.send({ t: 'pull', n: free });
    }
    if (this.#draining && this.#running.size === 0) this.#retire('drained');
  }

  #onMessage(msg: DispatcherToExecutor): void {
    switch (msg.t) {
      case 'task':
        // The GPUs the dispatcher handed this attempt are the only ones it sees.
        if (msg.gpus !== undefined) msg = { ...msg, spec: { ...msg.spec, env: { ...msg.spec.env, CUDA_VISIBLE_DEVICES: msg.gpus.join(',') } } };
        return this.#start(msg.uid, msg.attempt, msg);
      case 'cancel': {
        const slot = this.#running.get(msg.uid);
        if (slot && slot.attempt === msg.attempt) slot.run.cancel();
        const queued = this.#queued.get(msg.uid);
        if (queued && queued.attempt === msg.attempt) {
          this.#queued.delete(msg.uid);
          this.#live.ended(msg.uid, msg.attempt);
          const error = { code: ErrorCode.TASK_CANCELLED, message: 'cancelled before it started' };
          this.#deliver({ uid: msg.uid, attempt: msg.attempt, ...outcome('cancelled', Date.now(), { error }) });
        }
        return;
      }
      case 'ack':
        this.#outbox.ack(msg.done);
        if (this.#probe && !this.#outbox.holds(this.#probe)) {
          this.#window.roundTrip(performance.now() - this.#probe.at);
          this.#probe = null;
          this.#announce();
        }
        return;
      case 'tail': {
        const slot = this.#running.get(msg.uid);
        const run = slot?.attempt === msg.attempt ? slot.run : undefined;
        const held = run !== undefined || this.#queued.get(msg.uid)?.attempt === msg.attempt;
        return this.#live.order(msg.uid, msg.attempt, msg.on, run, held);
      }
      case 'steal':
        return this.#giveBack(msg.n);
      case 'peers':
        this.#link.learn(msg.urls);
        this.log.info({ dispatchers: msg.urls }, 'live dispatchers');
        return;
      case 'drain':
        this.#draining = true;
        this.log.info({ running: this.#running.size }, 'draining');
        if (this.#running.size === 0) this.#retire('drained');
        return;
      case 'error':
        this.log.warn({ code: msg.code }, msg.message);
        return;
    }
  }

  /**
   * Work stealing: gives back up to `n` tasks of the local queue, newest first (they would start
   * last), and names them. Only tasks that have not started are in that queue (a command handed to
   * the spawn helper's queue counts as started), so nothing given back has run or will run here.
   */
  #giveBack(n: number): void {
    const tasks: Array<{ uid: number; attempt: number }> = [];
    if (this.#queued.size > 0) {
      const uids = [...this.#queued.keys()];
      for (let i = uids.length - 1; i >= 0 && tasks.length < n; i--) {
        const q = this.#queued.get(uids[i])!;
        this.#queued.delete(uids[i]);
        this.#live.ended(uids[i], q.attempt);
        tasks.push({ uid: uids[i], attempt: q.attempt });
      }
    }
    this.#link.send({ t: 'returned', tasks });
  }

  #start(uid: number, attempt: number, msg: TaskMsg): void {
    if (this.#running.has(uid) || this.#queued.has(uid)) return; // a duplicate assignment of what we hold
    const place = helperPlacement(msg.spec, this.#runner);
    // Beyond our slots only a plain command goes on, to wait in the helper, and only behind no
    // task of our own queue (arrival order).
    if (this.#running.size >= this.slots && !(place.helper && place.ready && this.#queued.size === 0)) {
      this.#queued.set(uid, { attempt, msg });
      return;
    }
    this.#run(uid, attempt, msg, place.helper);
  }

  /**
   * Hands an attempt over. A command for the helper counts against its limit (slots minus what
   * runs outside it), which keeps slots exact however many wait in the helper; anything else
   * occupies a slot here and lowers that limit while it runs.
   */
  #run(uid: number, attempt: number, msg: TaskMsg, inHelper: boolean): void {
    if (!inHelper) this.#outside(+1);
    const startedAt = Date.now();
    // A bug that throws or rejects must still end the attempt with a result and free its slot:
    // otherwise the task stays `dispatched` for as long as our heartbeats keep its lease.
    const internal = (err: unknown): Outcome =>
      outcome('failed', startedAt, { error: { code: ErrorCode.INTERNAL, message: `the executor failed to run the attempt: ${(err as Error)?.message ?? String(err)}` } });
    let run: RunningAttempt;
    try {
      run = startAttempt(msg.spec, `${uid}-${attempt}`, inHelper ? this.#queuedRunner : this.#runner, this.#ctx);
    } catch (err) {
      run = { done: Promise.resolve(internal(err)), cancel() {} };
    }
    this.#running.set(uid, { attempt, run, inHelper });
    this.#live.started(uid, attempt, run);
    run.done.then(
      (o) => this.#finished(uid, attempt, msg, inHelper, o),
      (err: unknown) => {
        this.log.error({ uid, attempt, err: (err as Error)?.stack ?? String(err) }, 'attempt failed inside the executor');
        this.#finished(uid, attempt, msg, inHelper, internal(err));
      },
    );
  }

  /** An attempt ended: free its slot, deliver its result, take the next task. */
  #finished(uid: number, attempt: number, msg: TaskMsg, inHelper: boolean, o: Outcome): void {
    if (msg.spec.inputs?.length) this.#refreshHolds();
    if (!inHelper) this.#outside(-1);
    this.#window.taskRan(o.finishedAt - o.startedAt);
    const slot = this.#running.get(uid);
    if (slot?.attempt === attempt) this.#running.delete(uid);
    this.#live.ended(uid, attempt);
    this.#startQueued();
    if (this.#running.size === 0) this.#idleSince = Date.now();
    this.#deliver({ uid, attempt, ...o });
    if ((this.o.mode ?? 'push') === 'pull' && !this.#draining) this.#owePull();
    else this.#announce();
    if (this.#draining && this.#running.size === 0) this.#retire('drained');
  }

  #outside(delta: number): void {
    this.#outsideHelper += delta;
    // Never below 0; it cannot be, as a task outside starts only when a slot is free.
    setHelperLimit(this.#runner, Math.max(0, this.slots - this.#outsideHelper));
  }

  /**
   * Fills free slots from the local queue, oldest first; plain commands at its head go on to wait
   * in the helper (once it said hello) even when no slot is free.
   */
  #startQueued(): void {
    for (const [uid, q] of this.#queued) {
      if (this.#exited) return;
      const place = helperPlacement(q.msg.spec, this.#runner);
      if (this.#running.size >= this.slots && !(place.helper && place.ready)) return;
      this.#queued.delete(uid);
      this.#run(uid, q.attempt, q.msg, place.helper);
    }
  }

  /** Slots freed this turn, asked for again in one `pull` at the end of it. */
  #pullOwed = 0;
  #owePull(): void {
    if (this.#pullOwed++ > 0) return;
    setImmediate(() => {
      const n = this.#pullOwed;
      this.#pullOwed = 0;
      if (!this.#draining) this.#link.send({ t: 'pull', n });
    });
  }

  /** Keeps the result until acknowledged and sends it now if a connection is up (else after the next welcome). */
  #deliver(result: AttemptResult): void {
    if (this.#exited) return; // stopping: the dispatcher re-queues what we did not finish
    const sent = this.#link.send({ t: 'done', result: this.#outbox.add(result) });
    if (sent && this.#windowed && this.#probe === null) this.#probe = { uid: result.uid, attempt: result.attempt, at: performance.now() };
  }

  /**
   * Tells the dispatcher our window once it moved enough (window.ts), at the end of this turn: a
   * turn that finishes many tasks sends one `window`, and a steady window sends none.
   */
  #announce(): void {
    if (!this.#windowed || this.#announceQueued || !worthAnnouncing(this.#announced, this.#window.extra)) return;
    this.#announceQueued = true;
    const fire = () => {
      this.#announceQueued = false;
      if (!this.#windowed || this.#draining || this.#exited) return;
      const extra = this.#window.extra;
      if (extra === this.#announced) return;
      this.#announced = extra;
      this.#link.send({ t: 'window', extra });
    };
    // A window growing for long tasks opens half a task later, out of the burst (window.ts).
    const later = this.#window.openDelayMs(this.#announced);
    if (later > 0) setTimeout(fire, later).unref();
    else setImmediate(fire);
  }

  /**
   * A result no frame of this dispatcher can carry (its --max-frame-bytes is below what the output
   * limit allows) would wait forever in the outbox while heartbeats keep its lease: it goes
   * instead as a failed result without its output, saying why.
   */
  #unsendable(msg: unknown, err: FalconetError): void {
    const m = msg as { t?: string; result?: AttemptResult };
    if (m.t !== 'done' || !m.result) return this.log.error({ t: m.t, err: err.message }, 'a message could not be sent');
    const r = m.result;
    this.log.error({ uid: r.uid, attempt: r.attempt, err: err.message }, 'result too large for the dispatcher; sending it as RESULT_INVALID');
    const error = { code: ErrorCode.RESULT_INVALID, message: `the result (output included) is larger than the dispatcher's frame limit: ${err.message}` };
    this.#deliver({ ...r, status: 'failed', stdout: '', stderr: '', truncated: true, error });
  }

  /** Says goodbye (so the dispatcher does not count us lost) and exits. */
  #leave(code: number, reason: string, retire = false): void {
    if (this.#exited) return;
    this.#link.send({ t: 'bye', reason });
    this.#exit(code, reason, retire);
  }

  /** This executor is no longer needed (idle, drained, orphaned): exit with `retireExitCode`. */
  #retire(reason: string): void {
    this.#leave(this.o.retireExitCode ?? 0, reason, true);
  }

  #exit(code: number, reason: string, retire = false): void {
    if (this.#exited) return;
    this.#exited = true;
    if (this.#idleTimer) clearInterval(this.#idleTimer);
    if (this.#dispatcherTimer) clearInterval(this.#dispatcherTimer);
    this.#life?.stop();
    for (const slot of this.#running.values()) slot.run.cancel();
    void this.#link
      .close()
      .then(async () => {
        const command = retire ? this.o.shutdownCommand : undefined;
        if (command) {
          const env = { ...process.env, FALCONET_RETIRE_REASON: reason, FALCONET_EXECUTOR_ID: this.id, FALCONET_EXIT_CODE: String(code) };
          await runShutdownCommand(command, env, this.log, this.o.shutdownCommandTimeoutMs);
        }
      })
      .catch((err: unknown) => this.log.error({ err: (err as Error)?.message }, 'closing the dispatcher connection failed'))
      .finally(() => this.onExit(code, reason));
  }

  /**
   * Stops the agent now (SIGTERM): running attempts are killed and the dispatcher, told by `bye`,
   * re-queues them at once without counting them as crashes.
   */
  async stop(): Promise<void> {
    this.#leave(0, 'stopped');
  }
}
