#!/usr/bin/env node
/**
 * The `falconet` command line (PRODUCT.md §4). Each command parses its own flags strictly:
 * an unknown flag or a bad value is a usage error (exit 2, code USAGE), never a guess.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { availableParallelism } from 'node:os';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { DEFAULT_PORT } from '../dispatcher/config.js';
import { makeLogger, onShutdownSignal, startDispatcher } from '../dispatcher/main.js';
import { startExecutor } from '../executor/main.js';
import type { ProvisionerFlags } from '../dispatcher/provisioner/setup.js';
import { dispatcherUrl } from './url.js';
import { readCa } from '../protocol/tls.js';
import { cancelCommand, drainCommand, runCommand, statusCommand, submitCommand, watchCommand, dial, type Target } from './commands.js';
import { cancelIdsCommand, sessionsCommand, taskCommand, tasksCommand } from './query-commands.js';

const USAGE = `falconet: a fast, lightweight task dispatcher

usage:
  falconet up [--port 7878] [--host 127.0.0.1] [--executors N] [--slots N] [dispatcher flags]
  falconet dispatcher [--port 7878] [--host H] [--client-token T] [--executor-token T] [--insecure] [--http-auth]
                      [--store sqlite|memory] [--data-dir D] [--sync full|normal] [--retention S]
                      [--data-policy max-cache-hit|first-available] [--cache-wait-ms MS]
                      [--prefetch N] [--heartbeat-ms MS] [--lease-ms MS] [--max-attempts N] [--max-requeues N]
                      [--transport ws|uws] [--max-frame-bytes B] [--max-buffered-bytes B]
                      [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
  falconet executor [--dispatcher URL] [--token T] [--slots N] [--labels k=v,...] [--mode push|pull]
                    [--idle-exit S] [--id ID] [--config FILE] [--imds] [--dispatcher-timeout S]
                    [--retire-exit-code N] [--shutdown-command CMD] [--output-limit BYTES]
                    [--spawner helper|node] [--ca FILE]
  falconet run [--timeout S] [--env K=V]... [--cwd DIR] [--shell] [--input SRC=DST]... [--output SRC=DST]... -- CMD ARGS...
  falconet submit [--file F | -] [--session S] [--detach [--print-ids]] [--lease S] [--max-in-flight N] [--progress]
  falconet watch SESSION [--progress]
  falconet status [--json]
  falconet task ID [--json]
  falconet tasks [--session S] [--state STATE|finished] [--limit N] [--json]
  falconet sessions [--json]
  falconet cancel ID... [--session S] | --session S --all
  falconet drain EXECUTOR_ID
  falconet provisioner reset

Scaling (up, and dispatcher --provisioner local|ec2): --min A --max B --policy one-at-a-time|additive|
exponential|all-at-once --idle-timeout S --boot-timeout S --cooldown S --poll-ms MS; EC2: --ec2-image AMI |
--ec2-launch-template LT, --ec2-instance-type, --ec2-subnet, --ec2-security-groups a,b, --ec2-instance-profile,
--ec2-key-name, --ec2-spot, --ec2-region, --executor-slots N, --executor-labels k=v,..., --cluster NAME,
--executor-url URL, --dispatcher-timeout S (executors retire when their dispatcher is gone that long).

Client commands take --dispatcher URL (or FALCONET_URL; ws://HOST:PORT, wss://HOST:PORT or HOST:PORT),
--token T (or FALCONET_TOKEN), --ca FILE (or FALCONET_CA: a CA to trust for wss:// besides the root CAs)
and --connect-timeout S (how long to keep dialing a dispatcher that does not answer; default 30). \`run\` cancels its task on Ctrl-C or SIGTERM (exit 130 or 143).
`;

const DISPATCHER_FLAGS = {
  host: { type: 'string' },
  port: { type: 'string' },
  'client-token': { type: 'string' },
  'client-token-file': { type: 'string' },
  'executor-token': { type: 'string' },
  'executor-token-file': { type: 'string' },
  insecure: { type: 'boolean' },
  'http-auth': { type: 'boolean' },
  prefetch: { type: 'string' },
  'heartbeat-ms': { type: 'string' },
  'lease-ms': { type: 'string' },
  'max-attempts': { type: 'string' },
  'max-requeues': { type: 'string' },
  'max-frame-bytes': { type: 'string' },
  'max-buffered-bytes': { type: 'string' },
  'hello-timeout-ms': { type: 'string' },
  'hello-max-bytes': { type: 'string' },
  'max-pending-hellos': { type: 'string' },
  'max-pending-hellos-per-address': { type: 'string' },
  store: { type: 'string' },
  'data-dir': { type: 'string' },
  sync: { type: 'string' },
  retention: { type: 'string' },
  'data-policy': { type: 'string' },
  'cache-wait-ms': { type: 'string' },
  transport: { type: 'string' },
  'log-format': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  // provisioning
  min: { type: 'string' },
  max: { type: 'string' },
  policy: { type: 'string' },
  'idle-timeout': { type: 'string' },
  'boot-timeout': { type: 'string' },
  cooldown: { type: 'string' },
  'poll-ms': { type: 'string' },
  'executor-url': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const CLIENT_FLAGS = {
  dispatcher: { type: 'string' },
  token: { type: 'string' },
  'connect-timeout': { type: 'string' },
  ca: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

function usage(message: string): never {
  throw new FalconetError(ErrorCode.USAGE, message);
}

/** Parses a numeric flag; undefined when absent. */
export function num(name: string, value: string | undefined, opts: { min?: number; integer?: boolean } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || n < (opts.min ?? 0)) {
    usage(`--${name} must be ${opts.integer ? 'an integer' : 'a number'} ≥ ${opts.min ?? 0} (got ${JSON.stringify(value)})`);
  }
  return n;
}

/** Parses `k=v,k2=v2` (labels) or repeated `K=V` (env). */
export function pairs(name: string, items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) usage(`--${name} takes KEY=VALUE (got ${JSON.stringify(item)})`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

function parse<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, positionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals: positionals, strict: true });
  } catch (err) {
    usage((err as Error).message);
  }
}

/** The dispatcher a client command dials: --dispatcher, else FALCONET_URL, else the local default; `host:port` is understood. */
export function clientUrl(flag: string | undefined): string {
  return dispatcherUrl(flag ?? process.env.FALCONET_URL ?? `ws://127.0.0.1:${DEFAULT_PORT}`);
}

/**
 * Where a client command dials. A dispatcher that restarts (and replays a large store) can take
 * a while to answer, so commands keep dialing for 30 s by default, `--connect-timeout S` to change.
 */
function target(values: { dispatcher?: string; token?: string; 'connect-timeout'?: string; ca?: string }): Target {
  const timeout = num('connect-timeout', values['connect-timeout'], { min: 0.001 }) ?? 30;
  const ca = readCa(values.ca ?? process.env.FALCONET_CA, values.ca !== undefined ? '--ca' : 'FALCONET_CA');
  return { url: clientUrl(values.dispatcher), token: values.token ?? process.env.FALCONET_TOKEN, connectTimeoutMs: Math.round(timeout * 1000), ...(ca ? { ca } : {}) };
}

function dispatcherOptions(v: Record<string, string | boolean | undefined>) {
  return {
    host: v.host as string | undefined,
    port: num('port', v.port as string | undefined, { integer: true }),
    clientToken: v['client-token'] as string | undefined,
    clientTokenFile: v['client-token-file'] as string | undefined,
    executorToken: v['executor-token'] as string | undefined,
    executorTokenFile: v['executor-token-file'] as string | undefined,
    insecure: v.insecure as boolean | undefined,
    httpAuth: v["http-auth"] as boolean | undefined,
    prefetch: num('prefetch', v.prefetch as string | undefined, { integer: true }),
    heartbeatMs: num('heartbeat-ms', v['heartbeat-ms'] as string | undefined, { min: 10 }),
    leaseMs: num('lease-ms', v['lease-ms'] as string | undefined, { min: 10 }),
    maxAttempts: num('max-attempts', v['max-attempts'] as string | undefined, { min: 1, integer: true }),
    maxRequeues: num('max-requeues', v['max-requeues'] as string | undefined, { min: 0, integer: true }),
    maxFrameBytes: num('max-frame-bytes', v['max-frame-bytes'] as string | undefined, { min: 1024, integer: true }),
    maxBufferedBytes: num('max-buffered-bytes', v['max-buffered-bytes'] as string | undefined, { min: 65536, integer: true }),
    helloTimeoutMs: num('hello-timeout-ms', v['hello-timeout-ms'] as string | undefined, { min: 10 }),
    helloMaxBytes: num('hello-max-bytes', v['hello-max-bytes'] as string | undefined, { min: 1024, integer: true }),
    maxPendingHellos: num('max-pending-hellos', v['max-pending-hellos'] as string | undefined, { min: 1, integer: true }),
    maxPendingHellosPerAddress: num('max-pending-hellos-per-address', v['max-pending-hellos-per-address'] as string | undefined, { min: 1, integer: true }),
    retentionS: num('retention', v.retention as string | undefined),
    dataPolicy: v['data-policy'] as string | undefined,
    cacheWaitMs: num('cache-wait-ms', v['cache-wait-ms'] as string | undefined),
    transport: v.transport as string | undefined,
    tlsCert: v['tls-cert'] as string | undefined,
    tlsKey: v['tls-key'] as string | undefined,
    tlsCa: v['tls-ca'] as string | undefined,
    store: v.store as string | undefined,
    dataDir: v['data-dir'] as string | undefined,
    sync: v.sync as string | undefined,
  };
}

const EC2_FLAGS = {
  provisioner: { type: 'string' },
  'executor-slots': { type: 'string' },
  cluster: { type: 'string' },
  'ec2-image': { type: 'string' },
  'ec2-launch-template': { type: 'string' },
  'ec2-instance-type': { type: 'string' },
  'ec2-subnet': { type: 'string' },
  'ec2-security-groups': { type: 'string' },
  'ec2-instance-profile': { type: 'string' },
  'ec2-key-name': { type: 'string' },
  'ec2-spot': { type: 'boolean' },
  'ec2-region': { type: 'string' },
  'dispatcher-timeout': { type: 'string' },
  'executor-labels': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

/** The scaling flags shared by `up` (local executors) and `dispatcher --provisioner`. */
function scaling(v: Record<string, string | boolean | undefined>, backend: 'local' | 'ec2', slots: number, fixed?: number): ProvisionerFlags {
  const s = (k: string) => v[k] as string | undefined;
  const min = num('min', s('min'), { integer: true }) ?? fixed ?? 0;
  const max = num('max', s('max'), { min: 1, integer: true }) ?? fixed ?? Math.max(1, min);
  return {
    backend,
    min,
    max,
    policy: s('policy') ?? (fixed !== undefined ? 'all-at-once' : 'additive'),
    slots,
    ...(s('idle-timeout') !== undefined ? { idleTimeoutS: num('idle-timeout', s('idle-timeout')) } : {}),
    ...(s('boot-timeout') !== undefined ? { bootTimeoutS: num('boot-timeout', s('boot-timeout'), { min: 0.01 }) } : {}),
    ...(s('cooldown') !== undefined ? { cooldownS: num('cooldown', s('cooldown')) } : {}),
    ...(s('poll-ms') !== undefined ? { pollMs: num('poll-ms', s('poll-ms'), { min: 10 }) } : {}),
    ...(s('executor-url') !== undefined ? { executorUrl: s('executor-url') } : {}),
  };
}

/** The default transport goes unsaid; another one is named on the listening line. */
const transportNote = (kind: string) => (kind === 'ws' ? '' : `; transport: ${kind}`);

async function dispatcherCommand(args: string[]): Promise<void> {
  const { values } = parse(args, { ...DISPATCHER_FLAGS, ...EC2_FLAGS });
  const log = makeLogger('dispatcher');
  const backend = values.provisioner;
  if (backend !== undefined && backend !== 'local' && backend !== 'ec2') usage('--provisioner must be local or ec2');
  const slots = num('executor-slots', values['executor-slots'], { min: 1, integer: true }) ?? 2;
  const provisioner = backend
    ? {
        ...scaling(values, backend, slots),
        ...(backend === 'ec2'
          ? {
              ec2: {
                ...(values.cluster ? { cluster: values.cluster } : {}),
                ...(values['ec2-image'] ? { imageId: values['ec2-image'] } : {}),
                ...(values['ec2-launch-template'] ? { launchTemplate: values['ec2-launch-template'] } : {}),
                ...(values['ec2-instance-type'] ? { instanceType: values['ec2-instance-type'] } : {}),
                ...(values['ec2-subnet'] ? { subnetId: values['ec2-subnet'] } : {}),
                ...(values['ec2-security-groups'] ? { securityGroupIds: values['ec2-security-groups'].split(',').filter(Boolean) } : {}),
                ...(values['ec2-instance-profile'] ? { instanceProfile: values['ec2-instance-profile'] } : {}),
                ...(values['ec2-key-name'] ? { keyName: values['ec2-key-name'] } : {}),
                ...(values['ec2-spot'] ? { spot: true } : {}),
                ...(values['ec2-region'] ? { region: values['ec2-region'] } : {}),
                ...(values['dispatcher-timeout'] ? { dispatcherTimeoutS: num('dispatcher-timeout', values['dispatcher-timeout']) } : {}),
                ...(values['executor-labels'] ? { labels: pairs('executor-labels', values['executor-labels'].split(',').filter(Boolean)) } : {}),
              },
            }
          : {}),
      }
    : undefined;
  const { server, stop, storeSummary } = await startDispatcher({ ...dispatcherOptions(values), ...(provisioner ? { provisioner } : {}) }, log);
  process.stdout.write(`falconet dispatcher listening on ${server.url} (${storeSummary}${transportNote(server.transport)})\n`);
  onShutdownSignal(stop);
}

async function upCommand(args: string[]): Promise<void> {
  const { values } = parse(args, { ...DISPATCHER_FLAGS, executors: { type: 'string' }, slots: { type: 'string' }, mode: { type: 'string' }, labels: { type: 'string' } });
  const elastic = values.min !== undefined || values.max !== undefined;
  if (elastic && values.executors !== undefined) usage('give either --executors N or --min/--max, not both');
  const count = num('executors', values.executors, { integer: true }) ?? 2;
  const slots = num('slots', values.slots, { min: 1, integer: true }) ?? Math.max(1, Math.floor(availableParallelism() / Math.max(1, elastic ? 1 : count)));
  if (values.mode !== undefined && values.mode !== 'push' && values.mode !== 'pull') usage('--mode must be push or pull');
  const provisioner = {
    ...scaling(values, 'local', slots, elastic ? undefined : count),
    localArgs: [...(values.mode ? ['--mode', values.mode] : []), ...(values.labels ? ['--labels', values.labels] : [])],
  };
  const log = makeLogger('falconet');
  const { server, stop, storeSummary } = await startDispatcher({ ...dispatcherOptions(values), provisioner }, log);
  const fleet = elastic ? `${provisioner.min}–${provisioner.max} local executors (${provisioner.policy})` : `${count} local executor(s)`;
  process.stdout.write(`falconet dispatcher listening on ${server.url} with ${fleet} of ${slots} slot(s) (${storeSummary}${transportNote(server.transport)})\n`);
  onShutdownSignal(stop);
}

async function executorCommand(args: string[]): Promise<void> {
  // The process start, not this line: boot feedback should show the time Node took to load.
  const startedAt = Math.round(performance.timeOrigin);
  const { values } = parse(args, {
    dispatcher: { type: 'string' },
    token: { type: 'string' },
    id: { type: 'string' },
    slots: { type: 'string' },
    labels: { type: 'string' },
    mode: { type: 'string' },
    'idle-exit': { type: 'string' },
    'output-limit': { type: 'string' },
    spawner: { type: 'string' },
    'dispatcher-timeout': { type: 'string' },
    'retire-exit-code': { type: 'string' },
    'shutdown-command': { type: 'string' },
    config: { type: 'string' },
    imds: { type: 'boolean' },
    ca: { type: 'string' },
  });
  // flags > environment > env file (--config, /etc/falconet/executor.env) > EC2 user-data (IMDSv2).
  const { resolveExecutorConfig, defaultConfigDeps } = await import('../executor/config.js');
  const cfg = await resolveExecutorConfig(values, process.env, defaultConfigDeps(process.env));
  const configLoadedAt = Date.now();
  const log = makeLogger('executor');
  for (const warning of cfg.warnings) log.warn(warning);
  if (cfg.imds.consulted && !cfg.imds.reachable) log.warn({ reason: cfg.imds.reason, err: cfg.imds.error }, 'instance metadata service not reachable; going on without it');
  log.info(
    { sources: cfg.sources, file: cfg.file, imds: { consulted: cfg.imds.consulted, reason: cfg.imds.reason, instanceId: cfg.imds.identity?.instanceId, userData: cfg.imds.userData } },
    'configuration loaded',
  );
  const agent = startExecutor(
    {
      ...cfg.options,
      boot: [
        { phase: 'started', at: Math.min(startedAt, configLoadedAt) },
        { phase: 'config-loaded', at: configLoadedAt },
      ],
    },
    log,
  );
  onShutdownSignal(() => agent.stop());
}

const COMMANDS: Record<string, (args: string[]) => Promise<void | number>> = {
  up: upCommand,
  dispatcher: dispatcherCommand,
  executor: executorCommand,
  run: (args) => {
    const { values, positionals } = parse(
      args,
      { ...CLIENT_FLAGS, timeout: { type: 'string' }, env: { type: 'string', multiple: true }, cwd: { type: 'string' }, shell: { type: 'boolean' }, input: { type: 'string', multiple: true }, output: { type: 'string', multiple: true } },
      true,
    );
    if (positionals.length === 0) usage('run needs a command: falconet run -- CMD ARGS...');
    const timeout = num('timeout', values.timeout);
    // --input SRC=DST splits at the last '=' (a URL may hold one), --output SRC=DST at the first.
    const split = (name: string, item: string, last: boolean) => {
      const at = last ? item.lastIndexOf('=') : item.indexOf('=');
      if (at <= 0 || at === item.length - 1) usage(`--${name} takes SRC=DST (got ${JSON.stringify(item)})`);
      return { src: item.slice(0, at), dst: item.slice(at + 1) };
    };
    return runCommand(target(values), {
      cmd: positionals,
      ...(values.input ? { inputs: values.input.map((i) => split('input', i, true)) } : {}),
      ...(values.output ? { outputs: values.output.map((o) => split('output', o, false)) } : {}),
      ...(values.env ? { env: pairs('env', values.env) } : {}),
      ...(values.cwd ? { cwd: values.cwd } : {}),
      ...(values.shell ? { shell: true } : {}),
      ...(timeout !== undefined ? { timeoutMs: timeout * 1000 } : {}),
    });
  },
  submit: (args) => {
    const { values, positionals } = parse(
      args,
      { ...CLIENT_FLAGS, file: { type: 'string' }, session: { type: 'string' }, detach: { type: 'boolean' }, 'print-ids': { type: 'boolean' }, lease: { type: 'string' }, 'max-in-flight': { type: 'string' }, progress: { type: 'boolean' } },
      true,
    );
    const lease = num('lease', values.lease, { min: 0.001 });
    if (values['print-ids'] && !values.detach) usage('--print-ids goes with --detach (without it, submit prints the results)');
    const file = values.file ?? (positionals[0] === '-' ? '-' : undefined);
    if (positionals.length > (file === '-' && positionals[0] === '-' ? 1 : 0)) usage(`unexpected argument ${JSON.stringify(positionals[0])}`);
    return submitCommand(target(values), {
      file: file ?? '-',
      session: values.session,
      ...(lease !== undefined ? { leaseMs: Math.round(lease * 1000) } : {}),
      detach: values.detach ?? false,
      printIds: values['print-ids'] ?? false,
      maxInFlight: num('max-in-flight', values['max-in-flight'], { min: 1, integer: true }),
      progress: values.progress ?? process.stderr.isTTY,
    });
  },
  watch: (args) => {
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, progress: { type: 'boolean' } }, true);
    if (positionals.length !== 1) usage('watch needs exactly one session id');
    return watchCommand(target(values), positionals[0], values.progress ?? process.stderr.isTTY);
  },
  status: (args) => {
    const { values } = parse(args, { ...CLIENT_FLAGS, json: { type: 'boolean' } });
    return statusCommand(target(values), values.json ?? false);
  },
  cancel: (args) => {
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, session: { type: 'string' }, all: { type: 'boolean' } }, true);
    if (positionals.length === 0 && !values.all) usage('cancel needs task ids, or --session S --all');
    if (values.all && !values.session) usage('--all needs --session S');
    if (values.all && positionals.length > 0) usage('give task ids or --all, not both');
    // By ids in any session: one HTTP request, no session opened. In one session, or --all: the SDK.
    if (values.session === undefined) return cancelIdsCommand(target(values), positionals);
    return cancelCommand(target(values), positionals, values.session, values.all ?? false);
  },
  task: (args) => {
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, json: { type: 'boolean' } }, true);
    if (positionals.length !== 1) usage('task needs exactly one task id: falconet task ID [--json]');
    return taskCommand(target(values), positionals[0], values.json ?? false);
  },
  tasks: (args) => {
    const { values } = parse(args, { ...CLIENT_FLAGS, session: { type: 'string' }, state: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } });
    const states = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'finished'];
    if (values.state !== undefined && !states.includes(values.state)) usage(`--state must be one of ${states.join(', ')} (got ${JSON.stringify(values.state)})`);
    const limit = num('limit', values.limit, { min: 1, integer: true });
    if (limit !== undefined && limit > 10_000) usage(`--limit must be at most 10000 (got ${limit})`);
    return tasksCommand(target(values), { session: values.session, state: values.state, limit }, values.json ?? false);
  },
  sessions: (args) => {
    const { values } = parse(args, { ...CLIENT_FLAGS, json: { type: 'boolean' } });
    return sessionsCommand(target(values), values.json ?? false);
  },
  provisioner: async (args) => {
    const { values, positionals } = parse(args, CLIENT_FLAGS, true);
    if (positionals.length !== 1 || positionals[0] !== 'reset') usage('usage: falconet provisioner reset');
    const client = await dial(target(values));
    try {
      await client.resetProvisioner();
      process.stdout.write('provisioner reset: launches resume\n');
    } finally {
      await client.close();
    }
  },
  drain: (args) => {
    const { values, positionals } = parse(args, CLIENT_FLAGS, true);
    if (positionals.length !== 1) usage('drain needs exactly one executor id');
    return drainCommand(target(values), positionals[0]);
  },
};

async function main(argv: string[]): Promise<void> {
  // A reader that goes away (`falconet status | head -1`) ends the command quietly, as it ends
  // other Unix tools, instead of an unhandled EPIPE.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    process.stderr.write(`falconet: cannot write to stdout: ${err.message}\n`);
    process.exit(1);
  });
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    process.exitCode = command === undefined ? 2 : 0;
    return;
  }
  const run = COMMANDS[command];
  if (!run) usage(`unknown command ${JSON.stringify(command)}; see falconet --help`);
  const code = await run(rest);
  if (typeof code === 'number') process.exitCode = code;
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof FalconetError) {
    process.stderr.write(`falconet: ${err.code}: ${err.message}\n`);
    process.exit(err.code === ErrorCode.USAGE ? 2 : 1);
  }
  process.stderr.write(`falconet: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
