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
import { LocalExecutors, startExecutor } from '../executor/main.js';
import { cancelCommand, drainCommand, runCommand, statusCommand, submitCommand, watchCommand } from './commands.js';

const USAGE = `falconet: a fast, lightweight task dispatcher

usage:
  falconet up [--port 7878] [--host 127.0.0.1] [--executors N] [--slots N] [dispatcher flags]
  falconet dispatcher [--port 7878] [--host H] [--client-token T] [--executor-token T] [--insecure]
                      [--store sqlite|memory] [--data-dir D] [--sync full|normal] [--retention S]
                      [--prefetch N] [--heartbeat-ms MS] [--lease-ms MS] [--max-attempts N]
  falconet executor [--dispatcher URL] [--token T] [--slots N] [--labels k=v,...] [--mode push|pull]
                    [--idle-exit S] [--id ID]
  falconet run [--timeout S] [--env K=V]... [--cwd DIR] [--shell] -- CMD ARGS...
  falconet submit [--file F | -] [--session S] [--detach] [--lease S] [--max-in-flight N] [--progress]
  falconet watch SESSION [--progress]
  falconet status [--json]
  falconet cancel ID... [--session S] | --session S --all
  falconet drain EXECUTOR_ID

Client commands take --dispatcher URL (or FALCONET_URL) and --token T (or FALCONET_TOKEN).
`;

const DISPATCHER_FLAGS = {
  host: { type: 'string' },
  port: { type: 'string' },
  'client-token': { type: 'string' },
  'client-token-file': { type: 'string' },
  'executor-token': { type: 'string' },
  'executor-token-file': { type: 'string' },
  insecure: { type: 'boolean' },
  prefetch: { type: 'string' },
  'heartbeat-ms': { type: 'string' },
  'lease-ms': { type: 'string' },
  'max-attempts': { type: 'string' },
  'max-frame-bytes': { type: 'string' },
  'hello-timeout-ms': { type: 'string' },
  store: { type: 'string' },
  'data-dir': { type: 'string' },
  sync: { type: 'string' },
  retention: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const CLIENT_FLAGS = {
  dispatcher: { type: 'string' },
  token: { type: 'string' },
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

export function clientUrl(flag: string | undefined): string {
  return flag ?? process.env.FALCONET_URL ?? `ws://127.0.0.1:${DEFAULT_PORT}`;
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
    prefetch: num('prefetch', v.prefetch as string | undefined, { integer: true }),
    heartbeatMs: num('heartbeat-ms', v['heartbeat-ms'] as string | undefined, { min: 10 }),
    leaseMs: num('lease-ms', v['lease-ms'] as string | undefined, { min: 10 }),
    maxAttempts: num('max-attempts', v['max-attempts'] as string | undefined, { min: 1, integer: true }),
    maxFrameBytes: num('max-frame-bytes', v['max-frame-bytes'] as string | undefined, { min: 1024, integer: true }),
    helloTimeoutMs: num('hello-timeout-ms', v['hello-timeout-ms'] as string | undefined, { min: 10 }),
    retentionS: num('retention', v.retention as string | undefined),
    store: v.store as string | undefined,
    dataDir: v['data-dir'] as string | undefined,
    sync: v.sync as string | undefined,
  };
}

async function dispatcherCommand(args: string[]): Promise<void> {
  const { values } = parse(args, DISPATCHER_FLAGS);
  const log = makeLogger('dispatcher');
  const { server, stop, storeSummary } = await startDispatcher(dispatcherOptions(values), log);
  process.stdout.write(`falconet dispatcher listening on ${server.url} (${storeSummary})\n`);
  onShutdownSignal(stop);
}

async function upCommand(args: string[]): Promise<void> {
  const { values } = parse(args, { ...DISPATCHER_FLAGS, executors: { type: 'string' }, slots: { type: 'string' }, mode: { type: 'string' } });
  const count = num('executors', values.executors, { integer: true }) ?? 2;
  const slots = num('slots', values.slots, { min: 1, integer: true }) ?? Math.max(1, Math.floor(availableParallelism() / Math.max(1, count)));
  if (values.mode !== undefined && values.mode !== 'push' && values.mode !== 'pull') usage('--mode must be push or pull');
  const log = makeLogger('falconet');
  const { server, stop, storeSummary } = await startDispatcher(dispatcherOptions(values), log);
  const executorEnv = { ...process.env };
  if (server.config.executorToken) executorEnv.FALCONET_TOKEN = server.config.executorToken;
  const localUrl = server.url.replace('://0.0.0.0:', '://127.0.0.1:').replace('://[::]:', '://[::1]:');
  const executors = new LocalExecutors(localUrl, ['--slots', String(slots), ...(values.mode ? ['--mode', values.mode] : [])], log, executorEnv);
  executors.start(count);
  process.stdout.write(`falconet dispatcher listening on ${server.url} with ${count} local executor(s) of ${slots} slot(s) (${storeSummary})\n`);
  onShutdownSignal(async () => {
    await executors.stop();
    await stop();
  });
}

async function executorCommand(args: string[]): Promise<void> {
  const { values } = parse(args, {
    dispatcher: { type: 'string' },
    token: { type: 'string' },
    id: { type: 'string' },
    slots: { type: 'string' },
    labels: { type: 'string' },
    mode: { type: 'string' },
    'idle-exit': { type: 'string' },
    'output-limit': { type: 'string' },
  });
  const mode = values.mode ?? process.env.FALCONET_MODE ?? 'push';
  if (mode !== 'push' && mode !== 'pull') usage('--mode must be push or pull');
  const labels = values.labels ?? process.env.FALCONET_LABELS;
  const log = makeLogger('executor');
  const agent = startExecutor(
    {
      url: clientUrl(values.dispatcher),
      token: values.token ?? process.env.FALCONET_TOKEN,
      id: values.id ?? process.env.FALCONET_EXECUTOR_ID,
      slots: num('slots', values.slots ?? process.env.FALCONET_SLOTS, { min: 1, integer: true }),
      labels: labels ? pairs('labels', labels.split(',').filter(Boolean)) : {},
      mode,
      idleExitMs: (num('idle-exit', values['idle-exit'] ?? process.env.FALCONET_IDLE_EXIT) ?? 0) * 1000,
      outputLimit: num('output-limit', values['output-limit'], { min: 0, integer: true }),
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
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, timeout: { type: 'string' }, env: { type: 'string', multiple: true }, cwd: { type: 'string' }, shell: { type: 'boolean' } }, true);
    if (positionals.length === 0) usage('run needs a command: falconet run -- CMD ARGS...');
    const timeout = num('timeout', values.timeout);
    return runCommand(clientUrl(values.dispatcher), values.token, {
      cmd: positionals,
      ...(values.env ? { env: pairs('env', values.env) } : {}),
      ...(values.cwd ? { cwd: values.cwd } : {}),
      ...(values.shell ? { shell: true } : {}),
      ...(timeout !== undefined ? { timeoutMs: timeout * 1000 } : {}),
    });
  },
  submit: (args) => {
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, file: { type: 'string' }, session: { type: 'string' }, detach: { type: 'boolean' }, lease: { type: 'string' }, 'max-in-flight': { type: 'string' }, progress: { type: 'boolean' } }, true);
    const lease = num('lease', values.lease, { min: 0.001 });
    const file = values.file ?? (positionals[0] === '-' ? '-' : undefined);
    if (positionals.length > (file === '-' && positionals[0] === '-' ? 1 : 0)) usage(`unexpected argument ${JSON.stringify(positionals[0])}`);
    return submitCommand(clientUrl(values.dispatcher), values.token, {
      file: file ?? '-',
      session: values.session,
      ...(lease !== undefined ? { leaseMs: Math.round(lease * 1000) } : {}),
      detach: values.detach ?? false,
      maxInFlight: num('max-in-flight', values['max-in-flight'], { min: 1, integer: true }),
      progress: values.progress ?? process.stderr.isTTY,
    });
  },
  watch: (args) => {
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, progress: { type: 'boolean' } }, true);
    if (positionals.length !== 1) usage('watch needs exactly one session id');
    return watchCommand(clientUrl(values.dispatcher), values.token, positionals[0], values.progress ?? process.stderr.isTTY);
  },
  status: (args) => {
    const { values } = parse(args, { ...CLIENT_FLAGS, json: { type: 'boolean' } });
    return statusCommand(clientUrl(values.dispatcher), values.token, values.json ?? false);
  },
  cancel: (args) => {
    const { values, positionals } = parse(args, { ...CLIENT_FLAGS, session: { type: 'string' }, all: { type: 'boolean' } }, true);
    if (positionals.length === 0 && !values.all) usage('cancel needs task ids, or --session S --all');
    if (values.all && !values.session) usage('--all needs --session S');
    return cancelCommand(clientUrl(values.dispatcher), values.token, positionals, values.session, values.all ?? false);
  },
  drain: (args) => {
    const { values, positionals } = parse(args, CLIENT_FLAGS, true);
    if (positionals.length !== 1) usage('drain needs exactly one executor id');
    return drainCommand(clientUrl(values.dispatcher), values.token, positionals[0]);
  },
};

async function main(argv: string[]): Promise<void> {
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
