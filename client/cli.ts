#!/usr/bin/env node
/**
 * The `falconet` command line. Commands and flags come from one registry (registry.ts), which
 * also writes the help and docs/cli.md; an unknown flag or a bad value is a usage error (exit 2,
 * code USAGE), never a guess. Exit codes: 0 ok, 1 a task did not succeed, 2 usage or input,
 * 3 dispatcher unreachable or credential refused.
 */
import { availableParallelism } from 'node:os';
import { ErrorCode, FalconetError, LIMITS } from '../protocol/index.js';
import { DEFAULT_PORT } from '../dispatcher/config.js';
import { makeLogger, onShutdownSignal } from '../dispatcher/process-log.js';
import type { ProvisionerFlags } from '../dispatcher/provisioner/setup.js';
import { parseInstanceTypes } from '../dispatcher/provisioner/instance-types.js';
import { dispatcherUrls } from './url.js';
import { readCa } from '../protocol/tls.js';
import { cancelCommand, drainCommand, runCommand, submitCommand, watchCommand, dial, type SubmitArgs, type Target } from './commands.js';
import { statusCommand, topCommand } from './status-view.js';
import { command as commandSpec, COMMANDS as REGISTRY, closest, helpText, overviewText, version } from './registry.js';
import { InputError, parseCommand, usage, wantsHelp, type Parsed } from './args.js';
import { cancelIdsCommand, sessionsCommand, taskCommand, tasksCommand } from './query-commands.js';
import { logsCommand } from './logs-command.js';

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

/** The command being run: its flags come from the registry (client/registry.ts). */
let current = REGISTRY[0];

/** The current command's flags and positionals, checked (see args.ts). */
function parse(args: string[]): { values: Record<string, any>; positionals: string[] } {
  const p: Parsed = parseCommand(current, args);
  return p;
}

/**
 * The dispatchers a client command dials: --dispatcher, else FALCONET_URL, else the local default;
 * a comma-separated list, each `ws://`, `wss://` or `host:port` (USAGE naming a bad entry).
 */
export function clientUrls(flag: string | undefined): string[] {
  return dispatcherUrls(flag ?? process.env.FALCONET_URL ?? `ws://127.0.0.1:${DEFAULT_PORT}`);
}

/**
 * Where a client command dials. A dispatcher that restarts (and replays a large store) can take
 * a while to answer, so commands keep dialing for 30 s by default, `--connect-timeout S` to change.
 */
function target(values: { dispatcher?: string; token?: string; 'connect-timeout'?: string; ca?: string; 'session-key'?: string }): Target {
  const timeout = num('connect-timeout', values['connect-timeout'], { min: 0.001 }) ?? 30;
  const ca = readCa(values.ca ?? process.env.FALCONET_CA, values.ca !== undefined ? '--ca' : 'FALCONET_CA');
  const sessionKey = values['session-key'] ?? (process.env.FALCONET_SESSION_KEY || undefined);
  if (sessionKey !== undefined && (sessionKey.length < 16 || sessionKey.length > 256)) usage('--session-key must be 16 to 256 characters (the key a session was opened with)');
  const urls = clientUrls(values.dispatcher);
  return {
    url: urls.join(','),
    urls,
    token: values.token ?? process.env.FALCONET_TOKEN,
    connectTimeoutMs: Math.round(timeout * 1000),
    ...(ca ? { ca } : {}),
    ...(sessionKey ? { sessionKey } : {}),
  };
}

function dispatcherOptions(v: Record<string, string | boolean | undefined>) {
  return {
    host: v.host as string | undefined,
    port: num('port', v.port as string | undefined, { integer: true }),
    clientToken: v['client-token'] as string | undefined,
    clientTokenFile: v['client-token-file'] as string | undefined,
    adminToken: v['admin-token'] as string | undefined,
    adminTokenFile: v['admin-token-file'] as string | undefined,
    executorToken: v['executor-token'] as string | undefined,
    executorTokenFile: v['executor-token-file'] as string | undefined,
    insecure: v.insecure as boolean | undefined,
    httpAuth: v["http-auth"] as boolean | undefined,
    prefetch: v.prefetch === 'auto' ? ('auto' as const) : num('prefetch', v.prefetch as string | undefined, { integer: true }),
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
    reserveAfterS: num('reserve-after', v['reserve-after'] as string | undefined),
    transport: v.transport as string | undefined,
    tlsCert: v['tls-cert'] as string | undefined,
    tlsKey: v['tls-key'] as string | undefined,
    tlsCa: v['tls-ca'] as string | undefined,
    store: (v.store as string | undefined) ?? (process.env.FALCONET_STORE_URL || undefined),
    dataDir: v['data-dir'] as string | undefined,
    sync: v.sync as string | undefined,
    advertise: v.advertise as string | undefined,
    partitionLeaseMs: num('partition-lease-ms', v['partition-lease-ms'] as string | undefined, { min: 100, integer: true }),
    inboxPollMs: num('inbox-poll-ms', v['inbox-poll-ms'] as string | undefined, { min: 5, integer: true }),
  };
}

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
    ...instanceTypes(v, backend),
  };
}

/** `--ec2-instance-types` / `--local-executor-types`, each for its own backend only. */
function instanceTypes(v: Record<string, string | boolean | undefined>, backend: 'local' | 'ec2'): Pick<ProvisionerFlags, 'types'> {
  const flag = backend === 'ec2' ? 'ec2-instance-types' : 'local-executor-types';
  const other = backend === 'ec2' ? 'local-executor-types' : 'ec2-instance-types';
  if (v[other] !== undefined) usage(`--${other} needs --provisioner ${backend === 'ec2' ? 'local' : 'ec2'}; this dispatcher provisions ${backend} executors (use --${flag})`);
  const text = v[flag];
  if (text === undefined) return {};
  if (typeof text !== 'string') usage(`--${flag} takes a value`);
  return { types: parseInstanceTypes(text, `--${flag}`) };
}

/** The default transport goes unsaid; another one is named on the listening line. */
const transportNote = (kind: string) => (kind === 'ws' ? '' : `; transport: ${kind}`);

async function dispatcherCommand(args: string[]): Promise<void> {
  const { values } = parse(args);
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
  // Loaded here, not at the CLI's start: every other command (submit, status…) and the executor
  // would otherwise pay for the dispatcher, its store and their dependencies (~0.3 s of CPU).
  const { startDispatcher } = await import('../dispatcher/main.js');
  const { server, stop, storeSummary } = await startDispatcher({ ...dispatcherOptions(values), ...(provisioner ? { provisioner } : {}) }, log);
  process.stdout.write(`falconet dispatcher listening on ${server.url} (${storeSummary}${transportNote(server.transport)})\n`);
  onShutdownSignal(stop);
}

async function upCommand(args: string[]): Promise<void> {
  const { values } = parse(args);
  const elastic = values.min !== undefined || values.max !== undefined;
  if (elastic && values.executors !== undefined) usage('give either --executors N or --min/--max, not both');
  const count = num('executors', values.executors, { integer: true }) ?? 2;
  const slots = num('slots', values.slots, { min: 1, integer: true }) ?? Math.max(1, Math.floor(availableParallelism() / Math.max(1, elastic ? 1 : count)));
  if (values.mode !== undefined && values.mode !== 'push' && values.mode !== 'pull') usage('--mode must be push or pull');
  const provisioner = {
    ...scaling(values, 'local', slots, elastic ? undefined : count),
    localArgs: [...(values.mode ? ['--mode', values.mode] : []), ...(values.labels ? ['--labels', values.labels] : [])],
    ...(values.labels ? { localLabels: pairs('labels', values.labels.split(',').filter(Boolean)) } : {}),
  };
  const log = makeLogger('falconet');
  const { startDispatcher } = await import('../dispatcher/main.js');
  const { server, stop, storeSummary } = await startDispatcher({ ...dispatcherOptions(values), provisioner }, log);
  const fleet = elastic ? `${provisioner.min}–${provisioner.max} local executors (${provisioner.policy})` : `${count} local executor(s)`;
  process.stdout.write(`falconet dispatcher listening on ${server.url} with ${fleet} of ${slots} slot(s) (${storeSummary}${transportNote(server.transport)})\n`);
  onShutdownSignal(stop);
}

async function executorCommand(args: string[]): Promise<void> {
  // The process start, not this line: boot feedback should show the time Node took to load.
  const startedAt = Math.round(performance.timeOrigin);
  const { values } = parse(args);
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
  const [{ detectResources }, { startExecutor }] = await Promise.all([import('../executor/resources.js'), import('../executor/main.js')]);
  const advertised = await detectResources(cfg.options.resources);
  const agent = startExecutor(
    {
      ...cfg.options,
      ...advertised,
      boot: [
        { phase: 'started', at: Math.min(startedAt, configLoadedAt) },
        { phase: 'config-loaded', at: configLoadedAt },
      ],
    },
    log,
  );
  onShutdownSignal(() => agent.stop());
}

/** --progress forces it (a line every 5 s when stderr is not a terminal), --no-progress stops it; by default: on a terminal. */
function progressMode(values: Record<string, any>): 'tty' | 'lines' | 'off' {
  if (values['no-progress']) return 'off';
  if (process.stderr.isTTY) return 'tty';
  return values.progress ? 'lines' : 'off';
}

const COMMANDS: Record<string, (args: string[]) => Promise<void | number>> = {
  up: upCommand,
  dispatcher: dispatcherCommand,
  executor: executorCommand,
  run: (args) => {
    const { values, positionals } = parse(args);
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
      ...(values.input ? { inputs: values.input.map((i: string) => split('input', i, true)) } : {}),
      ...(values.output ? { outputs: values.output.map((o: string) => split('output', o, false)) } : {}),
      ...(values.env ? { env: pairs('env', values.env) } : {}),
      ...(values.cwd ? { cwd: values.cwd } : {}),
      ...(values.shell ? { shell: true } : {}),
      ...(timeout !== undefined ? { timeoutMs: timeout * 1000 } : {}),
    });
  },
  submit: (args) => {
    const { values, positionals } = parse(args);
    const lease = num('lease', values.lease, { min: 0.001 });
    if (values['print-ids'] && !values.detach) usage('--print-ids goes with --detach (without it, submit prints the results)');
    let array: SubmitArgs['array'];
    if (values.array !== undefined) {
      const m = /^(\d{1,10})-(\d{1,10})$/.exec(values.array);
      if (!m) usage(`--array takes FROM-TO, such as 1-10000 (got ${JSON.stringify(values.array)})`);
      const [from, to] = [Number(m![1]), Number(m![2])];
      if (to < from) usage(`--array ${values.array}: TO is below FROM`);
      if (to - from + 1 > LIMITS.arrayElements) usage(`--array ${values.array}: ${to - from + 1} elements; at most ${LIMITS.arrayElements.toLocaleString('en-US')}`);
      if (positionals.length === 0) usage('--array needs a command: falconet submit --array 1-100 -- CMD ARGS... ({} becomes the index)');
      if (values.file !== undefined) usage('give tasks as --file or as --array with a command, not both');
      array = { from, to, cmd: positionals.map((p: string) => p.replaceAll('{}', '{index}')) };
    } else if (positionals.length > 1) usage(`unexpected argument ${JSON.stringify(positionals[1])} for submit (a command after -- goes with --array)`);
    if (values.file !== undefined && positionals.length > 0 && !array) usage(`give the tasks as --file F or as one argument, not both (got ${JSON.stringify(positionals[0])})`);
    const file = array ? undefined : (values.file ?? positionals[0]);
    return submitCommand(target(values), {
      ...(array ? { array } : {}),
      file: file ?? '-',
      session: values.session,
      ...(lease !== undefined ? { leaseMs: Math.round(lease * 1000) } : {}),
      detach: values.detach ?? false,
      printIds: values['print-ids'] ?? false,
      maxInFlight: num('max-in-flight', values['max-in-flight'], { min: 1, integer: true }),
      progress: progressMode(values),
      skipInvalid: values['skip-invalid'] ?? false,
      noCache: values['no-cache'] ?? false,
    });
  },
  watch: (args) => {
    const { values, positionals } = parse(args);
    if (positionals.length !== 1) usage('watch needs exactly one session id');
    return watchCommand(target(values), positionals[0], progressMode(values));
  },
  status: (args) => {
    const { values, positionals } = parse(args);
    const output = values.json ? 'json' : (values.output ?? 'text');
    if (!['text', 'wide', 'json'].includes(output)) usage(`-o must be text, wide or json (got ${JSON.stringify(output)})`);
    const view = positionals[0];
    if (view !== undefined && view !== 'executors' && view !== 'instances') usage(`status takes executors or instances (got ${JSON.stringify(view)})`);
    const interval = num('interval', values.interval, { min: 0.1 }) ?? 1;
    if (values.watch) {
      if (output === 'json') usage('--watch draws a screen; -o json prints once');
      return topCommand(target(values), { intervalMs: interval * 1000, wide: output === 'wide' });
    }
    return statusCommand(target(values), { output: output as 'text' | 'wide' | 'json', view: view as 'executors' | 'instances' | undefined });
  },
  top: (args) => {
    const { values } = parse(args);
    const interval = num('interval', values.interval, { min: 0.1 }) ?? 1;
    return topCommand(target(values), { intervalMs: interval * 1000, wide: false });
  },
  cancel: (args) => {
    const { values, positionals } = parse(args);
    if (positionals.length === 0 && !values.all) usage('cancel needs task ids, or --session S --all');
    if (values.all && !values.session) usage('--all needs --session S');
    if (values.all && positionals.length > 0) usage('give task ids or --all, not both');
    // By ids in any session: one HTTP request, no session opened. In one session, or --all: the SDK.
    if (values.session === undefined) return cancelIdsCommand(target(values), positionals);
    return cancelCommand(target(values), positionals, values.session, values.all ?? false);
  },
  task: (args) => {
    const { values, positionals } = parse(args);
    if (positionals.length !== 1) usage('task needs exactly one task id: falconet task ID [--json]');
    return taskCommand(target(values), positionals[0], values.json ?? false);
  },
  logs: (args) => {
    const { values, positionals } = parse(args);
    if (positionals.length !== 1) usage('logs needs exactly one task id: falconet logs ID [-f]');
    return logsCommand(target(values), positionals[0], { follow: values.follow ?? false, ...(values.session ? { session: values.session } : {}) });
  },
  tasks: (args) => {
    const { values } = parse(args);
    const states = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'finished'];
    if (values.state !== undefined && !states.includes(values.state)) usage(`--state must be one of ${states.join(', ')} (got ${JSON.stringify(values.state)})`);
    const limit = num('limit', values.limit, { min: 1, integer: true });
    if (limit !== undefined && limit > 10_000) usage(`--limit must be at most 10000 (got ${limit})`);
    return tasksCommand(target(values), { session: values.session, state: values.state, limit }, values.json ?? false);
  },
  sessions: (args) => {
    const { values } = parse(args);
    return sessionsCommand(target(values), values.json ?? false);
  },
  provisioner: async (args) => {
    const { values, positionals } = parse(args);
    if (positionals.length !== 1 || positionals[0] !== 'reset') usage(`provisioner takes one action, reset (got ${JSON.stringify(positionals[0])})`);
    const client = await dial(target(values));
    try {
      await client.resetProvisioner();
      process.stdout.write('provisioner reset: launches resume\n');
    } finally {
      await client.close();
    }
  },
  drain: (args) => {
    const { values, positionals } = parse(args);
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
  if (command === undefined) {
    // Usage on stderr: nothing was asked, so it is not output.
    process.stderr.write(overviewText());
    process.exitCode = 2;
    return;
  }
  if (command === '--help' || command === '-h') return void process.stdout.write(overviewText());
  if ((command === 'help' || command === 'version') && wantsHelp(rest)) return void process.stdout.write(helpText(commandSpec(command)!));
  if (command === '--version' || command === '-V' || command === 'version') return void process.stdout.write(`falconet ${version()}\n`);
  if (command === 'help') {
    if (rest.length === 0) return void process.stdout.write(overviewText());
    const spec = commandSpec(rest[0]);
    if (!spec) unknownCommand(rest[0]);
    return void process.stdout.write(helpText(spec));
  }
  const spec = commandSpec(command);
  const run = COMMANDS[command];
  if (!spec || !run) unknownCommand(command);
  current = spec;
  if (wantsHelp(rest)) return void process.stdout.write(helpText(spec));
  const code = await run(rest);
  if (typeof code === 'number') process.exitCode = code;
}

function unknownCommand(word: string): never {
  const names = REGISTRY.map((c) => c.name);
  const guess = closest(word, names);
  if (word.startsWith('-')) usage(`unknown flag ${word}: flags go after the command (falconet COMMAND ${word}); see falconet --help`);
  usage(`unknown command ${JSON.stringify(word)}${guess ? `; did you mean ${guess}?` : ''}; see falconet --help`);
}

/** The exit code of an error: 2 usage or input, 3 dispatcher unreachable or credential refused, else 1. */
export function exitCodeOfError(code: string): number {
  if (code === ErrorCode.USAGE || code === 'INPUT') return 2;
  if (['UNREACHABLE', 'AUTH_FAILED', 'AUTH_WRONG_ROLE', 'TLS_FAILED', 'VERSION_MISMATCH', 'SESSION_FORBIDDEN', 'SESSION_BUSY', 'ADMIN_REQUIRED'].includes(code)) return 3;
  return 1;
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof InputError) {
    process.stderr.write(`falconet: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof FalconetError) {
    process.stderr.write(`falconet: ${err.code}: ${err.message}\n`);
    process.exit(exitCodeOfError(err.code));
  }
  process.stderr.write(`falconet: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
