/**
 * A test double of the EC2 Query API (version 2016-11-15) in which every
 * instance is a real local process with its own fake IMDSv2.
 *
 * Wire format as @aws-sdk/client-ec2 3.1169 (AwsEc2QueryProtocol) sends and
 * parses it: see ec2-query.ts. Errors become an `EC2ServiceException` whose
 * `name` is the EC2 code, since EC2 models no error shapes. @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { ImdsDouble } from './imds-double.js';
import * as api from './ec2-query.js';

export type { InstanceStateName, DoubleInstance } from './ec2-query.js';
import type { InstanceStateName, Inst, DoubleInstance } from './ec2-query.js';

/** Starts an instance's process. Spawn it `detached` so that its pid is a process-group id. */
export type LaunchHook = (instance: DoubleInstance, env: Record<string, string>) => ChildProcess | undefined;

/** How an instance fails to boot; see {@link Ec2Double.neverBoot}. */
export type NeverBootMode = 'pending' | 'silent';

/** Constructor options of {@link Ec2Double}. */
export interface Ec2DoubleOptions {
  /** argv of each instance's process (default launcher); a function may vary it by instance. */
  command?: string[] | ((instance: DoubleInstance) => string[]);
  /** Working directory of the default launcher. */
  cwd?: string;
  /** Extra environment for instance processes. */
  env?: Record<string, string>;
  /** Pass the test's whole environment to instances (default: only PATH, HOME, TMPDIR, LANG). */
  inheritEnv?: boolean;
  /** Replaces the default launcher (which spawns `command`). */
  launch?: LaunchHook;
  /** Most instances alive at once; more makes RunInstances fail with InsufficientInstanceCapacity. */
  capacity?: number;
  /** Launch templates RunInstances may name; their fields fill in what the request leaves out. */
  launchTemplates?: { id: string; name: string; imageId: string; instanceType?: string; userData?: string }[];
  /** Delay from RunInstances to running and process start (ms, default 20). */
  bootDelayMs?: number;
  /** Delay of the shutting-down→terminated and stopping→stopped steps after the process is gone (ms, default 20). */
  transitionMs?: number;
  /** SIGTERM→SIGKILL grace on terminate (ms, default 2000). */
  shutdownGraceMs?: number;
  /** Console bytes kept per instance (default 65536, what GetConsoleOutput returns on EC2). */
  consoleLimitBytes?: number;
  /** IMDS token mode for instances that do not set MetadataOptions.HttpTokens (default `required`). */
  httpTokens?: 'required' | 'optional';
  /** Give instances a public address (documentation range 203.0.113.0/24; never routed). */
  publicIp?: boolean;
  /** Private address of the n-th instance launched (default 10.0.x.y; nothing listens there). */
  privateIp?: (n: number) => string;
  /** Where instance IMDS servers listen (default 127.0.0.1; a netns bridge address for namespaced instances). */
  imdsHost?: string;
  /**
   * InstanceInitiatedShutdownBehavior when a request names none. EC2's default is
   * `stop`, so a provisioner that forgets to ask for `terminate` leaves stopped
   * instances behind here too.
   */
  defaultShutdownBehavior?: 'stop' | 'terminate';
  availabilityZone?: string;
  accountId?: string;
}

interface Fault { action: string; code: string; status: number; message: string; remaining: number }

const MIN_ENV = ['PATH', 'HOME', 'TMPDIR', 'LANG'];

/**
 * The EC2 double. `await Ec2Double.start(opts)`, then point an `EC2Client` at
 * {@link Ec2Double.endpoint}. Always `await double.close()`: it kills every
 * process group it started.
 */
export class Ec2Double extends EventEmitter {
  /** `http://127.0.0.1:PORT`. */
  readonly endpoint: string;
  /** Every request received, in order (after fault injection, before handling). */
  readonly calls: { action: string; params: Record<string, string> }[] = [];
  private readonly insts = new Map<string, Inst>();
  private readonly tokens = new Map<string, { fingerprint: string; ids: string[] }>();
  private readonly faults: Fault[] = [];
  private readonly boots: { mode: NeverBootMode; remaining: number }[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private nextIp = 0;
  private closed = false;

  private constructor(private readonly server: Server, readonly options: Ec2DoubleOptions) {
    super();
    this.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** Starts the double on 127.0.0.1, on a free port. */
  static async start(options: Ec2DoubleOptions = {}): Promise<Ec2Double> {
    let self: Ec2Double | undefined;
    const server = createServer((req, res) => void self!.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return (self = new Ec2Double(server, options));
  }

  /**
   * Makes the next `count` calls of `action` (`'*'` for any) fail with `code`.
   * The status defaults to EC2's: 503 for RequestLimitExceeded/Unavailable, 500
   * for InsufficientInstanceCapacity/InternalError, else 400. Note that the SDK
   * retries 500/502/503/504 and throttling codes (3 attempts by default).
   */
  failNext(action: string, code: string, count = 1, opts: { status?: number; message?: string } = {}): void {
    const status = opts.status ?? api.defaultStatus(code);
    this.faults.push({ action, code, status, message: opts.message ?? `Injected ${code}`, remaining: count });
  }

  /**
   * Makes the next `count` launched instances fail to boot: `'pending'` stays
   * pending with no process; `'silent'` goes running but runs a process that
   * prints nothing and never exits (an executor that never registers).
   */
  neverBoot(mode: NeverBootMode = 'pending', count = 1): void {
    this.boots.push({ mode, remaining: count });
  }

  /**
   * The instance dies: its process group gets SIGKILL. By default EC2 then
   * reports it terminated (`Server.SpotInstanceTermination` for spot, else
   * `Server.InternalError`); `{ state: 'running' }` models a hung machine that
   * EC2 still reports running.
   */
  kill(instanceId: string, opts: { state?: 'terminated' | 'running' } = {}): void {
    const inst = this.get(instanceId);
    if (opts.state === 'running') {
      inst.zombie = true;
      this.signal(inst, 'SIGKILL');
    } else {
      this.shutdown(inst, 'terminated', inst.spot ? 'Server.SpotInstanceTermination' : 'Server.InternalError', 'SIGKILL');
    }
  }

  /** Posts a spot interruption notice in the instance's IMDS, then terminates it after `noticeMs`. */
  interruptSpot(instanceId: string, noticeMs = 2000): void {
    const inst = this.get(instanceId);
    inst.spotAction = { action: 'terminate', time: new Date(Date.now() + noticeMs).toISOString().replace(/\.\d+Z$/, 'Z') };
    this.later(noticeMs, () => this.shutdown(inst, 'terminated', 'Server.SpotInstanceTermination'));
  }

  /** Snapshots of every instance ever launched (terminated ones stay, as they do for a while on EC2). */
  instances(): DoubleInstance[] {
    return [...this.insts.values()].map((i) => api.snapshot(i));
  }

  /** Resolves once the instance is in `state`; rejects after `timeoutMs`. */
  async waitForState(instanceId: string, state: InstanceStateName, timeoutMs = 10_000): Promise<DoubleInstance> {
    const inst = this.get(instanceId);
    if (inst.state === state) return api.snapshot(inst);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('state', on);
        reject(new Error(`${instanceId} still ${inst.state} after ${timeoutMs} ms, wanted ${state}`));
      }, timeoutMs);
      const on = (i: Inst) => {
        if (i !== inst || i.state !== state) return;
        clearTimeout(timer);
        this.off('state', on);
        resolve(api.snapshot(i));
      };
      this.on('state', on);
    });
  }

  /** Kills every process group it started (SIGKILL), waits for them, and stops all servers. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    const exits = [...this.insts.values()].filter((i) => i.child).map((i) => {
      const child = i.child!;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      this.signal(i, 'SIGKILL');
      return Promise.race([gone, new Promise<void>((r) => setTimeout(r, 2000).unref())]);
    });
    await Promise.all(exits);
    await Promise.all([...this.insts.values()].map((i) => i.imds?.close()));
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const reply = (status: number, xml: string) => {
      res.writeHead(status, { 'content-type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': requestId });
      res.end(xml);
    };
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (req.method !== 'POST') throw new api.Ec2Error('InvalidAction', 'Only POST is supported by this double', 400);
      // SigV4 is not verified (no shared secret), but an unsigned request is what EC2 refuses outright.
      if (!/^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/[^/]+\/ec2\/aws4_request/.test(req.headers.authorization ?? '')) {
        throw new api.Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials', 401);
      }
      const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
      const action = params.Action ?? '';
      if (params.Version !== '2016-11-15') {
        throw new api.Ec2Error('NoSuchVersion', `The requested version (${params.Version}) of service AmazonEC2 does not exist`, 400);
      }
      const fault = this.faults.find((f) => f.remaining > 0 && (f.action === action || f.action === '*'));
      if (fault) {
        fault.remaining--;
        throw new api.Ec2Error(fault.code, fault.message, fault.status);
      }
      this.calls.push({ action, params });
      if (params.DryRun === 'true') throw new api.Ec2Error('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412);
      reply(200, api.envelope(action, requestId, await this.dispatch(action, params)));
    } catch (err) {
      const e = err instanceof api.Ec2Error ? err : new api.Ec2Error('InternalError', String(err), 500);
      reply(e.status, api.errorXml(e, requestId));
    }
  }

  private async dispatch(action: string, p: Record<string, string>): Promise<string> {
    switch (action) {
      case 'RunInstances': return this.runInstances(p);
      case 'DescribeInstances': return api.describeXml(api.describe(this.insts, p), this.owner);
      case 'TerminateInstances': {
        const targets = api.lookup(this.insts, api.list(p, 'InstanceId'));
        return api.stateChangesXml(targets.map((i) => {
          const previous = i.state;
          if (i.state !== 'terminated') this.shutdown(i, 'terminated', 'Client.UserInitiatedShutdown');
          return { id: i.id, previous, current: i.state };
        }));
      }
      case 'GetConsoleOutput': {
        const [inst] = api.lookup(this.insts, [p.InstanceId ?? '']);
        return api.consoleXml(inst!);
      }
      case 'CreateTags': {
        const tags = api.tagsFrom(p, 'Tag');
        const ids = api.list(p, 'ResourceId');
        const targets = api.lookup(this.insts, ids.filter((r) => r.startsWith('i-')));
        for (const i of targets) api.applyTags(i.tags, tags);
        return '<return>true</return>';
      }
      default:
        throw new api.Ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`, 400);
    }
  }

  private async runInstances(p: Record<string, string>): Promise<string> {
    const req = api.parseRun(p, this.options.launchTemplates ?? [], this.options.defaultShutdownBehavior ?? 'stop');
    const token = req.spec.clientToken;
    if (token) {
      const prior = this.tokens.get(token);
      if (prior && prior.fingerprint !== req.fingerprint) {
        throw new api.Ec2Error('IdempotentParameterMismatch', 'The client token you have provided is associated with a resource that is already deleted or was created with different parameters.', 400);
      }
      if (prior) return api.reservationXml(prior.ids.map((id) => this.insts.get(id)!), this.owner);
    }
    const alive = [...this.insts.values()].filter((i) => i.state !== 'terminated' && i.state !== 'stopped').length;
    const room = (this.options.capacity ?? Infinity) - alive;
    if (room < req.minCount) {
      throw new api.Ec2Error('InsufficientInstanceCapacity', `We currently do not have sufficient ${req.spec.instanceType} capacity in the Availability Zone you requested (${this.az}). Our system will be working on provisioning additional capacity.`, 500);
    }
    const reservationId = 'r-' + randomBytes(9).toString('hex').slice(0, 17);
    const made: Inst[] = [];
    for (let n = 0; n < Math.min(req.maxCount, room); n++) {
      const ip = this.nextIp++;
      const inst: Inst = {
        ...req.spec, id: 'i-' + randomBytes(9).toString('hex').slice(0, 17), reservationId, launchIndex: n,
        tags: { ...req.spec.tags }, state: 'pending', launchTime: new Date(), console: [], consoleBytes: 0,
        privateIp: this.options.privateIp?.(ip) ?? `10.0.${Math.floor(ip / 250)}.${(ip % 250) + 4}`,
        publicIp: this.options.publicIp ? `203.0.113.${(ip % 250) + 1}` : undefined,
        az: this.az, boot: this.takeBootMode(),
      };
      this.insts.set(inst.id, inst);
      made.push(inst);
    }
    // Recorded before any await, so a concurrent retry with the same token sees this reservation.
    if (token) this.tokens.set(token, { fingerprint: req.fingerprint, ids: made.map((i) => i.id) });
    const httpTokens = req.spec.httpTokens ?? this.options.httpTokens ?? 'required';
    await Promise.all(made.map(async (inst) => {
      inst.imds = await ImdsDouble.start(() => api.imdsView(inst, this.owner), { httpTokens, host: this.options.imdsHost });
      this.later(this.options.bootDelayMs ?? 20, () => this.boot(inst));
    }));
    return api.reservationXml(made, this.owner);
  }

  private boot(inst: Inst): void {
    if (inst.state !== 'pending' || inst.boot === 'pending' || this.closed) return;
    const env: Record<string, string> = {};
    const base = this.options.inheritEnv ? Object.keys(process.env) : MIN_ENV;
    for (const k of base) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    Object.assign(env, this.options.env, { AWS_EC2_METADATA_SERVICE_ENDPOINT: inst.imds!.endpoint, INSTANCE_ID: inst.id });
    let child: ChildProcess | undefined;
    try {
      child = inst.boot === 'silent' || !this.options.launch ? this.spawnDefault(inst, env) : this.options.launch(api.snapshot(inst), env);
    } catch (err) {
      this.capture(inst, Buffer.from(`launch failed: ${String(err)}\n`));
    }
    inst.child = child;
    inst.pid = child?.pid;
    this.setState(inst, 'running');
    if (!child) return this.shutdown(inst, 'terminated', 'Server.InternalError');
    child.stdout?.on('data', (b: Buffer) => this.capture(inst, b));
    child.stderr?.on('data', (b: Buffer) => this.capture(inst, b));
    child.on('error', (err) => this.capture(inst, Buffer.from(`launch failed: ${err.message}\n`)));
    child.once('exit', (code, signal) => {
      // A real shutdown takes every process with it: reap what the main process left behind,
      // which also closes pipes they inherited. 'close' then fires once the console has drained;
      // the timer covers a straggler that escaped the group and still holds a pipe.
      this.signal(inst, 'SIGKILL', true);
      this.later(500, () => this.exited(inst, child, code, signal));
    });
    child.once('close', (code, signal) => this.exited(inst, child, code, signal));
  }

  private spawnDefault(inst: Inst, env: Record<string, string>): ChildProcess {
    const cmd = inst.boot === 'silent' ? [process.execPath, '-e', 'setInterval(() => {}, 1 << 30)']
      : typeof this.options.command === 'function' ? this.options.command(api.snapshot(inst)) : this.options.command;
    if (!cmd || cmd.length === 0) throw new Error('Ec2Double: no command and no launch hook');
    // detached: the child leads a new process group, so terminate can kill everything it started.
    return spawn(cmd[0]!, cmd.slice(1), { env, cwd: this.options.cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  private exited(inst: Inst, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (inst.child !== child) return;
    inst.child = undefined;
    inst.exitCode = code;
    inst.exitSignal = signal;
    if (inst.state === 'running' && !inst.zombie) {
      this.shutdown(inst, inst.shutdownBehavior === 'stop' ? 'stopped' : 'terminated', 'Client.InstanceInitiatedShutdown');
    } else if (inst.state === 'shutting-down' || inst.state === 'stopping') {
      this.later(this.options.transitionMs ?? 20, () => this.finish(inst));
    }
  }

  /** Moves toward `final`; the last step happens once the process is gone. */
  private shutdown(inst: Inst, final: 'terminated' | 'stopped', reason: string, sig: NodeJS.Signals = 'SIGTERM'): void {
    if (inst.state === 'terminated' || inst.state === 'shutting-down' || (final === 'stopped' && inst.state === 'stopping')) return;
    inst.final = final;
    inst.reason = reason;
    this.setState(inst, final === 'stopped' ? 'stopping' : 'shutting-down');
    if (inst.child && inst.child.exitCode === null && inst.child.signalCode === null) {
      this.signal(inst, sig);
      if (sig !== 'SIGKILL') this.later(this.options.shutdownGraceMs ?? 2000, () => this.signal(inst, 'SIGKILL'));
    } else {
      this.later(this.options.transitionMs ?? 20, () => this.finish(inst));
    }
  }

  private finish(inst: Inst): void {
    if (inst.state !== 'shutting-down' && inst.state !== 'stopping') return;
    const final = inst.final ?? 'terminated';
    this.setState(inst, final);
    // A terminated instance has no metadata service any more; a stopped one may start again.
    if (final === 'terminated') void inst.imds?.close();
  }

  /** Signals the instance's process group; once its process is reaped, only if `afterExit` (pids get reused). */
  private signal(inst: Inst, sig: NodeJS.Signals, afterExit = false): void {
    if (inst.pid === undefined || (!inst.child && !afterExit)) return;
    try { process.kill(-inst.pid, sig); } catch { /* group already gone */ }
    try { if (inst.child) process.kill(inst.pid, sig); } catch { /* not detached by a custom hook, or gone */ }
  }

  private setState(inst: Inst, state: InstanceStateName): void {
    inst.state = state;
    if (state === 'running' || state === 'pending') inst.reason = undefined;
    this.emit('state', inst);
  }

  private capture(inst: Inst, b: Buffer): void {
    inst.console.push(b);
    inst.consoleBytes += b.length;
    inst.consoleAt = new Date();
    const limit = this.options.consoleLimitBytes ?? 65536;
    while (inst.consoleBytes - inst.console[0]!.length >= limit) inst.consoleBytes -= inst.console.shift()!.length;
  }

  private takeBootMode(): NeverBootMode | undefined {
    const b = this.boots.find((x) => x.remaining > 0);
    if (b) b.remaining--;
    return b?.mode;
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => { this.timers.delete(t); if (!this.closed) fn(); }, ms);
    this.timers.add(t);
  }

  private get az(): string { return this.options.availabilityZone ?? 'us-east-1a'; }
  private get owner(): string { return this.options.accountId ?? '123456789012'; }

  private get(id: string): Inst {
    return this.insts.get(id) ?? (() => { throw new Error(`Ec2Double: no instance ${id}`); })();
  }
}
