/**
 * Optional per-instance network namespaces for the EC2 double: a Linux bridge
 * on the host plus one netns per "instance", joined by a veth pair, each with
 * its own 10.N.0.K address. Needs root and iproute2; {@link netnsAvailability}
 * says whether this machine can, so tests can fall back to plain loopback.
 *
 * Traffic stays on this machine: the only addresses are the bridge's and the
 * namespaces' own, all created (and deleted) here.
 *
 * @module
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import type { LaunchHook } from './ec2-double.js';

const run = promisify(execFile);
const ip = async (...args: string[]) => (await run('ip', args)).stdout;

/** Which mode a test can run in, and why not netns if not. */
export interface NetnsAvailability { mode: 'netns' | 'loopback'; reason?: string }

/** Probes root + `ip netns` by creating and deleting a throwaway namespace. */
export async function netnsAvailability(): Promise<NetnsAvailability> {
  if (process.platform !== 'linux') return { mode: 'loopback', reason: 'not Linux' };
  if (process.getuid?.() !== 0) return { mode: 'loopback', reason: 'not root' };
  const probe = `fnprobe${randomBytes(3).toString('hex')}`;
  try {
    await ip('netns', 'add', probe);
    await ip('netns', 'del', probe);
    return { mode: 'netns' };
  } catch (err) {
    return { mode: 'loopback', reason: `ip netns failed: ${String(err).split('\n')[0]}` };
  }
}

/** One namespace with its address. */
export interface NetnsHost { name: string; ip: string; veth: string }

/**
 * A bridge with namespaces hanging off it. Create with {@link NetnsLab.create},
 * always {@link NetnsLab.destroy} (in `finally`): links and namespaces outlive
 * the process otherwise.
 */
export class NetnsLab {
  private readonly hosts: NetnsHost[] = [];

  private constructor(readonly bridge: string, readonly subnet: number, readonly tag: string) {}

  /** Address of the host side (the bridge): bind servers the namespaces must reach here. */
  get gateway(): string { return `10.${this.subnet}.0.1`; }

  /** Creates the bridge on a 10.N.0.0/24 not used by any address on this machine. */
  static async create(): Promise<NetnsLab> {
    const used = await ip('-o', '-4', 'addr', 'show');
    let subnet = 0;
    for (let tries = 0; tries < 50 && subnet === 0; tries++) {
      const n = 100 + Math.floor(Math.random() * 150);
      if (!used.includes(` 10.${n}.`)) subnet = n;
    }
    if (subnet === 0) throw new Error('NetnsLab: no free 10.N.0.0/24');
    const tag = randomBytes(3).toString('hex');
    const lab = new NetnsLab(`fnbr${tag}`, subnet, tag);
    await ip('link', 'add', lab.bridge, 'type', 'bridge');
    try {
      await ip('addr', 'add', `${lab.gateway}/24`, 'dev', lab.bridge);
      await ip('link', 'set', lab.bridge, 'up');
    } catch (err) {
      await ip('link', 'del', lab.bridge).catch(() => undefined);
      throw err;
    }
    return lab;
  }

  /** The address of the `n`th instance (0-based): pass as Ec2Double's `privateIp` so EC2 and the netns agree. */
  ipFor(n: number): string {
    if (n + 2 > 254) throw new Error('NetnsLab: subnet full');
    return `10.${this.subnet}.0.${n + 2}`;
  }

  /**
   * Adds a namespace holding `addr` (default: the next free one) on a veth into
   * the bridge, with a default route via the bridge. Synchronous, because
   * {@link LaunchHook}s are.
   */
  addHost(addr = this.ipFor(this.hosts.length)): NetnsHost {
    const k = addr.split('.').pop()!;
    const host: NetnsHost = { name: `fn${this.tag}h${k}`, ip: addr, veth: `fv${this.tag}${k}` };
    const peer = `fp${this.tag}${k}`;
    const sh = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    sh('netns', 'add', host.name);
    this.hosts.push(host); // recorded first so destroy() cleans up a half-built host
    sh('link', 'add', host.veth, 'type', 'veth', 'peer', 'name', peer);
    sh('link', 'set', peer, 'netns', host.name);
    sh('link', 'set', host.veth, 'master', this.bridge);
    sh('link', 'set', host.veth, 'up');
    sh('-n', host.name, 'link', 'set', peer, 'name', 'eth0');
    sh('-n', host.name, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0');
    sh('-n', host.name, 'link', 'set', 'eth0', 'up');
    sh('-n', host.name, 'link', 'set', 'lo', 'up');
    sh('-n', host.name, 'route', 'add', 'default', 'via', this.gateway);
    return host;
  }

  /**
   * Spawns `argv` inside a namespace. `ip netns exec` execs the command, so the
   * returned pid is the command's own; `detached` makes it a process-group leader.
   */
  spawnIn(host: NetnsHost, argv: string[], env: Record<string, string>, cwd?: string): ChildProcess {
    return spawn('ip', ['netns', 'exec', host.name, ...argv], { env, cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /**
   * A launch hook for {@link Ec2Double}: each instance runs in a namespace of
   * its own holding its EC2 private address. Start the double with
   * `imdsHost: lab.gateway` (127.0.0.1 inside is the namespace's own loopback)
   * and `privateIp: (n) => lab.ipFor(n)`.
   */
  launcher(argv: string[], cwd?: string): LaunchHook {
    return (instance, env) => this.spawnIn(this.addHost(instance.privateIpAddress), argv, env, cwd);
  }

  /** Kills whatever still runs in the namespaces, then deletes them and the bridge. */
  async destroy(): Promise<void> {
    for (const h of this.hosts) {
      const pids = await ip('netns', 'pids', h.name).catch(() => '');
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ }
      }
      await ip('netns', 'del', h.name).catch(() => undefined); // takes the veth pair with it
      await ip('link', 'del', h.veth).catch(() => undefined);
    }
    this.hosts.length = 0;
    await ip('link', 'del', this.bridge).catch(() => undefined);
  }
}
