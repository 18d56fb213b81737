/**
 * Provisioner configuration as the CLI gives it, compiled and checked, and the wiring of a
 * provisioner to a running dispatcher (backend choice, user-data for EC2 executors).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tlsFailure, trustedCas } from '../../protocol/tls.js';
import type { Logger } from 'pino';
import { ErrorCode, FalconetError } from '../../protocol/index.js';
import type { DispatcherServer } from '../server.js';
import type { DurableStore } from '../durable-store.js';
import { systemClock } from '../model.js';
import type { Backend } from './backend.js';
import { Ec2Backend, type Ec2Options } from './ec2.js';
import { LocalBackend } from './local.js';
import { fitHint, type InstanceType } from './instance-types.js';
import { ALLOCATION_POLICIES, POLICY_DEFAULTS, type AllocationPolicy } from './policy.js';
import { Provisioner } from './provisioner.js';
import { localFleet, type Fleet } from './fleet.js';

export interface ProvisionerFlags {
  backend: 'local' | 'ec2';
  min: number;
  max: number;
  policy?: string;
  /** Seconds. */
  idleTimeoutS?: number;
  bootTimeoutS?: number;
  cooldownS?: number;
  pollMs?: number;
  breakerThreshold?: number;
  /** Slots of each executor launched (local: passed to it; ec2: what the policy credits it with). */
  slots: number;
  /** Extra executor flags for local executors (labels, mode). */
  localArgs?: string[];
  /** The URL executors dial (default: the dispatcher's own). */
  executorUrl?: string;
  /** The other live dispatchers (several over PostgreSQL): where its executors go if this one dies. */
  otherDispatchers?: string[];
  /**
   * Several dispatchers: the whole cluster's queue and executors (fleet.ts), and how long an
   * executor may be missing from it while it moves (default: this dispatcher's core, 0).
   */
  fleet?: { fleet: Fleet; goneAfterMs: number };
  ec2?: Omit<Ec2Options, 'userData' | 'cluster'> & { cluster?: string; dispatcherTimeoutS?: number; labels?: Record<string, string> };
  /**
   * Instance types launched for resource requests no executor can run (`--ec2-instance-types`,
   * `--local-executor-types`), smallest first; queue depth keeps launching the default type.
   */
  types?: InstanceType[];
  /** Labels of the local executors started (`up --labels`): typed launches only serve tasks they fit. */
  localLabels?: Record<string, string>;
}

/**
 * Dials `url` as a local executor would, trusting `caFile`: a certificate they would refuse
 * (a CA-signed certificate given without its CA) is a USAGE error now, not executors that exit
 * TLS_FAILED one after another. Anything but a TLS failure (a timeout, say) passes.
 */
async function checkLocalTrust(url: string, caFile: string): Promise<void> {
  const u = new URL(url);
  if (u.protocol !== 'wss:') return;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const failure = await new Promise<Error | null>((resolve) => {
    const sock = tlsConnect({ host, port: Number(u.port || 443), ...(isIP(host) ? {} : { servername: host }), ca: trustedCas(readFileSync(caFile, 'utf8')) });
    const end = (result: Error | null) => {
      sock.destroy();
      resolve(result);
    };
    sock.once('secureConnect', () => end(null));
    sock.once('error', (err) => end(tlsFailure(err, url)));
    sock.setTimeout(5000, () => end(null));
  });
  if (failure) {
    const cause = (failure.cause as Error | undefined)?.message ?? failure.message;
    const code = (failure.cause as NodeJS.ErrnoException | undefined)?.code;
    throw new FalconetError(
      ErrorCode.USAGE,
      `the local executors would not trust this dispatcher at ${url} with the CA file ${caFile}: ${cause}${code ? ` (${code})` : ''}; give the CA that signed the certificate with --tls-ca FILE (or put the chain, CA included, in the --tls-cert file)`,
    );
  }
}

export async function startProvisioner(
  server: DispatcherServer,
  store: DurableStore | null,
  recovered: Array<{ id: string; record: unknown }>,
  f: ProvisionerFlags,
  log: Logger,
): Promise<Provisioner> {
  const policy = (f.policy ?? 'additive') as AllocationPolicy;
  if (!ALLOCATION_POLICIES.includes(policy)) throw new FalconetError(ErrorCode.USAGE, `--policy must be one of ${ALLOCATION_POLICIES.join(', ')} (got ${JSON.stringify(f.policy)})`);
  if (!Number.isInteger(f.min) || !Number.isInteger(f.max) || f.min < 0 || f.max < f.min || f.max < 1) {
    throw new FalconetError(ErrorCode.USAGE, `--min and --max must be integers with 0 ≤ min ≤ max and max ≥ 1 (got ${f.min}, ${f.max})`);
  }
  const own = f.executorUrl ?? server.url.replace('://0.0.0.0:', '://127.0.0.1:').replace('://[::]:', '://[::1]:');
  // Several dispatchers: the executors it starts dial this one first and the others if it dies
  // (order `first`: they stay with the provisioner that watches them).
  const others = (f.otherDispatchers ?? []).filter((u) => u !== own);
  const url = [own, ...others].join(',');
  const token = server.config.executorToken;
  // With TLS, the executors it starts trust the dispatcher with --tls-ca (default: its own
  // certificate file, right for a self-signed one): local ones get the file's name (read at each
  // start, so a certificate reloaded on SIGHUP reaches new executors), EC2 ones its PEM text.
  const tls = server.config.tls;
  let backend: Backend;
  if (f.backend === 'local') {
    if (tls) await checkLocalTrust(url, tls.caFile);
    const env = { ...process.env, ...(token ? { FALCONET_TOKEN: token } : {}), ...(tls ? { FALCONET_CA: tls.caFile } : {}) };
    backend = new LocalBackend({ url, slots: f.slots, args: f.localArgs ?? [], env });
  } else {
    const e = f.ec2 ?? {};
    if (!e.imageId && !e.launchTemplate) throw new FalconetError(ErrorCode.USAGE, 'the ec2 provisioner needs --ec2-image or --ec2-launch-template');
    backend = new Ec2Backend({
      ...e,
      cluster: e.cluster ?? 'falconet',
      userData: {
        urls: [own, ...others],
        ...(others.length ? { dispatcherOrder: 'first' } : {}),
        ...(token ? { token } : {}),
        ...(e.labels ? { labels: e.labels } : {}),
        slots: f.slots,
        // The executor retires (and powers its instance off) when idle or orphaned; the
        // provisioner's own idle scale-down normally comes first.
        idleExitS: Math.round((f.idleTimeoutS ?? POLICY_DEFAULTS.idleTimeoutMs / 1000) * 2),
        dispatcherTimeoutS: e.dispatcherTimeoutS ?? 600,
        retireExitCode: 75,
        ...(tls ? { ca: readFileSync(tls.caFile, 'utf8') } : {}),
      },
    });
  }
  const provisioner = new Provisioner(
    f.fleet?.fleet ?? localFleet(server.core),
    backend,
    {
      policy,
      min: f.min,
      max: f.max,
      slotsPerExecutor: f.slots,
      idleTimeoutMs: (f.idleTimeoutS ?? POLICY_DEFAULTS.idleTimeoutMs / 1000) * 1000,
      cooldownMs: (f.cooldownS ?? Math.min(POLICY_DEFAULTS.cooldownMs / 1000, f.idleTimeoutS ?? Infinity)) * 1000,
      bootTimeoutMs: (f.bootTimeoutS ?? POLICY_DEFAULTS.bootTimeoutMs / 1000) * 1000,
      breakerThreshold: f.breakerThreshold ?? POLICY_DEFAULTS.breakerThreshold,
      resetHint: 'falconet provisioner reset',
      pollMs: f.pollMs ?? 1000,
      ...(f.fleet ? { goneAfterMs: f.fleet.goneAfterMs } : {}),
      ...(f.types?.length ? { types: f.types, labels: (f.backend === 'ec2' ? f.ec2?.labels : f.localLabels) ?? {} } : {}),
    },
    log,
    systemClock,
    store,
  );
  const types = f.types;
  if (types?.length) server.core.view.setWaitHint((req) => fitHint(types, req));
  await provisioner.start(recovered);
  server.extension = {
    status: () => ({ provisioner: provisioner.status() }),
    resetProvisioner: () => provisioner.reset(),
  };
  return provisioner;
}
