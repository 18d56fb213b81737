/**
 * The executor on an EC2 instance (issue 4, items 3–5): configuration from flags, environment,
 * an env file or the EC2 user-data read through IMDSv2 (the IMDS double, through the real
 * @aws-sdk/ec2-metadata-service); instance id and addresses at registration; boot phases; and
 * retirement (idle, drained, dispatcher unreachable) with a configurable exit status and shutdown
 * command. Real processes on loopback; each test stops what it started, by pid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImdsDouble, type ImdsView } from './doubles/imds-double.js';
import { Procs, alive, freePort, runCli, startDispatcher, status, waitFor, within, type CliResult } from './helpers.js';
import type { ExecutorStatus } from '../dispatcher/status.js';
import { parseEnvFile, parseUserData, resolveExecutorConfig, type ConfigDeps } from '../executor/config.js';
import { Imds, type ImdsReader, type InstanceIdentity } from '../executor/imds.js';
import { ErrorCode, FalconetError } from '../protocol/index.js';

const INSTANCE = 'i-0123456789abcdef0';

function view(userData: unknown, extra: Partial<ImdsView> = {}): ImdsView {
  return {
    instanceId: INSTANCE,
    imageId: 'ami-0123456789abcdef0',
    instanceType: 'c7i.large',
    availabilityZone: 'us-east-1a',
    region: 'us-east-1',
    accountId: '123456789012',
    localIpv4: '10.0.3.7',
    publicIpv4: '203.0.113.9',
    ...(userData === undefined ? {} : { userData: Buffer.from(typeof userData === 'string' ? userData : JSON.stringify(userData)) }),
    pendingTime: new Date(),
    lifecycle: 'on-demand',
    ...extra,
  };
}

/** No FALCONET_* / IMDS settings leak in from the test's own environment (empty counts as unset). */
function cleanEnv(procs: Procs, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const empty = join(procs.tmpDir(), 'empty.env');
  writeFileSync(empty, '# nothing\n');
  const env: NodeJS.ProcessEnv = { FALCONET_CONFIG: empty, AWS_EC2_METADATA_SERVICE_ENDPOINT: '', AWS_EC2_METADATA_DISABLED: '' };
  for (const k of ['URL', 'TOKEN', 'EXECUTOR_ID', 'SLOTS', 'LABELS', 'MODE', 'IDLE_EXIT', 'DISPATCHER_TIMEOUT', 'RETIRE_EXIT_CODE', 'SHUTDOWN_COMMAND', 'IMDS', 'OUTPUT_LIMIT']) {
    env[`FALCONET_${k}`] = '';
  }
  return { ...env, ...extra };
}

interface Exec {
  proc: ChildProcess;
  stderr: () => string;
  /** Its exit (with ms since it was started), or a rejection if it has not exited within `ms`. */
  exit(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

function executor(procs: Procs, args: string[], env: NodeJS.ProcessEnv): Exec {
  const t0 = Date.now();
  const proc = procs.spawn(['executor', ...args], env);
  proc.stdout!.resume();
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal, ms: Date.now() - t0 })),
  );
  return {
    proc,
    stderr: () => err,
    exit: (ms = 20_000) => within(exit, ms, `executor ${args.join(' ').slice(0, 120)} to exit; stderr: ${err.slice(-1000)}`),
  };
}

async function registered(url: string, pred: (e: ExecutorStatus) => boolean, what = 'the executor'): Promise<ExecutorStatus> {
  return waitFor(`${what} registered`, async () => {
    const s = await status(url).catch(() => undefined);
    return s?.executors.find((e) => e.state !== 'disconnected' && pred(e));
  });
}

function stopByPid(proc: ChildProcess): void {
  if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined && alive(proc.pid)) process.kill(proc.pid, 'SIGKILL');
}

// ---- configuration resolution (in-process, fake file and IMDS) -------------------------------

const IDENTITY: InstanceIdentity = { instanceId: INSTANCE, localIpv4: '10.0.3.7', publicIpv4: '203.0.113.9', instanceType: 'c7i.large', availabilityZone: 'us-east-1a' };

function fakeDeps(files: Record<string, string>, userData: string | undefined | Error, identity: InstanceIdentity | Error = IDENTITY) {
  const calls = { imds: 0 };
  const reader: ImdsReader = {
    endpoint: 'http://imds.fake',
    readInstanceIdentity: async () => {
      if (identity instanceof Error) throw identity;
      return identity;
    },
    readUserData: async () => {
      if (userData instanceof Error) throw userData;
      return userData;
    },
  };
  const deps: ConfigDeps = {
    readFile: async (p) => files[p],
    imds: () => {
      calls.imds++;
      return reader;
    },
  };
  return { deps, calls };
}

const usageError = (re: RegExp) => (err: unknown) => err instanceof FalconetError && err.code === ErrorCode.USAGE && re.test(err.message);

test('config: flags > environment > env file > user-data, setting by setting', { timeout: 120_000 }, async () => {
  const file = ['# comment', '', 'export FALCONET_LABELS="src=file"', "FALCONET_SLOTS='2'", 'FALCONET_EXECUTOR_ID=file-id', 'FALCONET_POWEROFF=1', 'FALCONET_RETIRE_EXIT_CODE=75'].join('\n');
  const ud = JSON.stringify({ url: 'ws://ud:1', token: 'ud-token', labels: { src: 'ud' }, slots: 9, mode: 'pull', idleExitS: 600, dispatcherTimeoutS: 300, retireExitCode: 1, shutdownCommand: 'sudo shutdown -h now', id: 'ud-id' });
  const { deps, calls } = fakeDeps({ '/etc/falconet/executor.env': file }, ud);
  const cfg = await resolveExecutorConfig({ id: 'flag-id', imds: true }, { FALCONET_SLOTS: '5', FALCONET_URL: 'ws://env:2', FALCONET_TOKEN: '' }, deps);
  assert.equal(calls.imds, 1);
  assert.equal(cfg.file, '/etc/falconet/executor.env');
  const o = cfg.options;
  assert.equal(o.id, 'flag-id');
  assert.equal(o.url, 'ws://env:2');
  assert.equal(o.slots, 5);
  assert.deepEqual(o.labels, { src: 'file' });
  assert.equal(o.retireExitCode, 75);
  assert.equal(o.token, 'ud-token', 'an empty environment variable counts as unset');
  assert.equal(o.mode, 'pull');
  assert.equal(o.idleExitMs, 600_000);
  assert.equal(o.dispatcherTimeoutMs, 300_000);
  assert.equal(o.shutdownCommand, 'sudo shutdown -h now');
  assert.equal(o.instanceId, INSTANCE);
  assert.deepEqual(o.addresses, ['10.0.3.7', '203.0.113.9']);
  assert.deepEqual(cfg.sources, {
    url: 'env', token: 'user-data', id: 'flag', slots: 'env', labels: 'file', mode: 'user-data',
    idleExit: 'user-data', dispatcherTimeout: 'user-data', retireExitCode: 'file', shutdownCommand: 'user-data',
  });

  // Only user-data: everything from it; the id is the user-data's; defaults otherwise.
  const only = await resolveExecutorConfig({}, {}, fakeDeps({}, JSON.stringify({ url: 'ws://ud:1' })).deps);
  assert.equal(only.options.url, 'ws://ud:1');
  assert.equal(only.options.id, INSTANCE, 'the instance id is the executor id when none is given');
  assert.equal(only.options.retireExitCode, 0);
  assert.equal(only.options.dispatcherTimeoutMs, 0);
  assert.equal(only.options.idleExitMs, 0);
  assert.equal(only.options.mode, 'push');
  assert.equal(only.imds.userData, 'falconet');
  assert.equal(only.imds.reason, 'no dispatcher URL from flags, environment or env file');
});

test('config: IMDS is consulted only when needed, and optional when a URL is configured', { timeout: 120_000 }, async () => {
  let f = fakeDeps({}, undefined);
  let cfg = await resolveExecutorConfig({ dispatcher: 'ws://flag:1' }, {}, f.deps);
  assert.equal(f.calls.imds, 0, 'a URL and no reason to ask: IMDS is not consulted');
  assert.equal(cfg.imds.consulted, false);
  assert.equal(cfg.options.instanceId, undefined);

  f = fakeDeps({ '/etc/falconet/executor.env': 'FALCONET_URL=ws://file:1\nFALCONET_IMDS=1\n' }, undefined);
  cfg = await resolveExecutorConfig({}, {}, f.deps);
  assert.equal(f.calls.imds, 1, 'FALCONET_IMDS=1 in the file');
  assert.equal(cfg.options.instanceId, INSTANCE);
  assert.equal(cfg.imds.userData, 'none');

  f = fakeDeps({}, undefined, new Error('connect ECONNREFUSED'));
  cfg = await resolveExecutorConfig({ dispatcher: 'ws://flag:1' }, { AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:9' }, f.deps);
  assert.equal(f.calls.imds, 1, 'AWS_EC2_METADATA_SERVICE_ENDPOINT set');
  assert.equal(cfg.imds.reachable, false);
  assert.equal(cfg.options.instanceId, undefined, 'unreachable IMDS: going on without an instance id');
  assert.equal(cfg.options.id, undefined);

  f = fakeDeps({}, undefined, new Error('connect ECONNREFUSED'));
  await assert.rejects(resolveExecutorConfig({}, {}, f.deps), usageError(/no dispatcher URL.*did not answer \(connect ECONNREFUSED\)/));
  f = fakeDeps({}, JSON.stringify({ url: 'ws://ud:1' }));
  await assert.rejects(resolveExecutorConfig({}, { FALCONET_IMDS: '0' }, f.deps), usageError(/no dispatcher URL.*IMDS was not consulted \(FALCONET_IMDS=0\)/));
  assert.equal(f.calls.imds, 0);
});

test('config: user-data forms, bad values and env files are usage errors with clear messages', { timeout: 120_000 }, async () => {
  assert.deepEqual(parseUserData('#!falconet\n{"url":"ws://x:1"}\n'), { url: 'ws://x:1' });
  assert.equal(parseUserData('#cloud-config\nwrite_files: []\n'), null, 'cloud-config is not ours');
  assert.equal(parseUserData('   '), undefined);
  assert.throws(() => parseUserData('{"url": "ws://x:1", '), usageError(/EC2 user-data is not valid JSON/));
  assert.throws(() => parseUserData('#!falconet\n[1]'), usageError(/must be a JSON object/));

  const cloud = fakeDeps({}, '#cloud-config\nwrite_files: []\n');
  await assert.rejects(resolveExecutorConfig({}, {}, cloud.deps), usageError(/no dispatcher URL.*not a falconet JSON document/));
  const ok = await resolveExecutorConfig({ imds: true, dispatcher: 'ws://x:1' }, {}, fakeDeps({}, '#cloud-config\n').deps);
  assert.equal(ok.imds.userData, 'other');

  const unknown = await resolveExecutorConfig({}, {}, fakeDeps({}, '{"url":"ws://x:1","slotz":3}').deps);
  assert.match(unknown.warnings.join('\n'), /unknown key "slotz"/);

  const bad = (ud: unknown, re: RegExp, flags = {}, env = {}) => assert.rejects(resolveExecutorConfig(flags, env, fakeDeps({}, JSON.stringify(ud)).deps), usageError(re));
  await bad({ url: 'ws://x:1', slots: 'four' }, /"slots" in the EC2 user-data must be an integer between 1 and 1000000 \(got "four"\)/);
  await bad({ url: 'ws://x:1', labels: ['a'] }, /"labels" in the EC2 user-data must be an object/);
  await bad({ url: 'ws://x:1', mode: 'shove' }, /"mode" in the EC2 user-data must be push or pull/);
  await bad({ url: 'ws://x:1', retireExitCode: 300 }, /"retireExitCode" in the EC2 user-data must be an integer between 0 and 255/);
  await bad({ url: 42 }, /"url" in the EC2 user-data must be a non-empty string/);
  await bad({ url: 'http//nope' }, /"url" in the EC2 user-data must be a ws:\/\/ or wss:\/\/ URL/);
  await bad({ url: 'ws://x:1' }, /--slots must be an integer/, { slots: 'abc' });
  await bad({ url: 'ws://x:1' }, /FALCONET_DISPATCHER_TIMEOUT must be a number ≥ 0 \(got "soon"\)/, {}, { FALCONET_DISPATCHER_TIMEOUT: 'soon' });
  await bad({ url: 'ws://x:1' }, /--labels takes KEY=VALUE/, { labels: 'a=1,b' });

  assert.deepEqual(parseEnvFile('A=1\n  # c\n; c\nexport B = "x \\"y\\""\nC=\'$D\'\nE=a=b\n', 'f'), { A: '1', B: 'x "y"', C: '$D', E: 'a=b' });
  assert.throws(() => parseEnvFile('A=1\nnot a pair\n', '/etc/x.env'), usageError(/\/etc\/x\.env:2: expected KEY=VALUE/));
  await assert.rejects(
    resolveExecutorConfig({ config: '/nope.env', dispatcher: 'ws://x:1' }, {}, fakeDeps({}, undefined).deps),
    usageError(/the config file \/nope\.env does not exist/),
  );
  const fileErr = await resolveExecutorConfig({ dispatcher: 'ws://x:1' }, {}, {
    readFile: async () => {
      throw new Error('EACCES: permission denied');
    },
    imds: fakeDeps({}, undefined).deps.imds,
  });
  assert.match(fileErr.warnings.join('\n'), /cannot read \/etc\/falconet\/executor\.env \(EACCES/, 'an unreadable default file is a warning, not an error');
  await assert.rejects(
    resolveExecutorConfig({ config: 'f.env' }, {}, fakeDeps({ 'f.env': 'FALCONET_SLOTS=0\nFALCONET_URL=ws://x:1' }, undefined).deps),
    usageError(/FALCONET_SLOTS in f\.env must be an integer between 1 and 1000000 \(got "0"\)/),
  );
});

// ---- the IMDSv2 reader -----------------------------------------------------------------------

test('imds: reads identity and user-data with a token through the SDK; asks for /latest/..., not //latest/...', { timeout: 120_000 }, async (t) => {
  const imds = await ImdsDouble.start(view('{"url":"ws://x:1"}'));
  t.after(() => imds.close());
  const reader = new Imds({ endpoint: imds.endpoint });
  assert.deepEqual(await reader.readInstanceIdentity(), IDENTITY);
  assert.equal(await reader.readUserData(), '{"url":"ws://x:1"}');
  assert.ok(imds.stats.tokens >= 2);
  assert.equal(imds.stats.unauthorized, 0);

  const bare = await ImdsDouble.start(view(undefined, { publicIpv4: undefined }));
  t.after(() => bare.close());
  const r2 = new Imds({ env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: bare.endpoint } });
  assert.equal(r2.endpoint, bare.endpoint);
  assert.equal(await r2.readUserData(), undefined, 'no user-data: 404 is undefined');
  const id = await r2.readInstanceIdentity();
  assert.equal(id.publicIpv4, undefined);
  assert.equal(id.localIpv4, '10.0.3.7');

  // A recording server: the paths as sent on the wire.
  const paths: string[] = [];
  const rec = createHttpServer((req: IncomingMessage, res) => {
    paths.push(`${req.method} ${req.url}`);
    req.resume();
    if (req.method === 'PUT') return res.end('tok');
    res.writeHead(req.url === '/latest/user-data' ? 200 : 404).end(req.url === '/latest/user-data' ? 'ud' : '');
  });
  await new Promise<void>((r) => rec.listen(0, '127.0.0.1', r));
  t.after(() => {
    rec.closeAllConnections();
    rec.close();
  });
  const recUrl = `http://127.0.0.1:${(rec.address() as AddressInfo).port}`;
  assert.equal(await new Imds({ endpoint: recUrl }).readUserData(), 'ud');
  assert.equal(await new Imds({ endpoint: recUrl + '/' }).readUserData(), 'ud');
  assert.deepEqual(paths, ['PUT /latest/api/token', 'GET /latest/user-data', 'PUT /latest/api/token', 'GET /latest/user-data']);
});

test('imds: a host without a metadata service finds out in about a second', { timeout: 120_000 }, async (t) => {
  // Accepts connections and never answers: what a filtered 169.254.169.254 looks like.
  const sockets = new Set<Socket>();
  const hole = createNetServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    hole.close();
  });
  let t0 = Date.now();
  await assert.rejects(new Imds({ endpoint: `http://127.0.0.1:${(hole.address() as AddressInfo).port}` }).readInstanceIdentity(), /instance metadata service at/);
  const silent = Date.now() - t0;
  // About a second (the reader's timeout); the upper bound leaves room for a loaded host.
  assert.ok(silent >= 900 && silent < 4000, `a silent endpoint took ${silent} ms`);

  const closed = await freePort();
  t0 = Date.now();
  await assert.rejects(new Imds({ endpoint: `http://127.0.0.1:${closed}` }).readInstanceIdentity(), /instance metadata service at/);
  assert.ok(Date.now() - t0 < 3000, `a refused endpoint took ${Date.now() - t0} ms`);
});

// ---- real processes --------------------------------------------------------------------------

test('an executor with no --dispatcher reads its user-data from IMDS, registers as the instance, and runs tasks', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const imds = await ImdsDouble.start(view({ url: d.url, labels: { pool: 'batch', arch: 'x86_64' }, slots: 3, mode: 'pull' }));
  t.after(() => imds.close());
  const ex = executor(procs, [], cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint }));
  t.after(() => stopByPid(ex.proc));
  const e = await registered(d.url, (x) => x.instanceId === INSTANCE);
  assert.equal(e.id, INSTANCE, 'the instance id is the executor id');
  assert.deepEqual(e.labels, { pool: 'batch', arch: 'x86_64' });
  assert.equal(e.slots, 3);
  assert.equal(e.mode, 'pull');
  assert.ok(e.addresses.includes('10.0.3.7') && e.addresses.includes('203.0.113.9'), `addresses ${e.addresses}`);
  assert.equal(e.pid, ex.proc.pid);
  // The real boot phases, in order: started (the process start), config-loaded, and registered
  // once a dispatcher welcomed it (reported from the next hello on, so possibly not yet). Other
  // phases the executor may report between them are not required here.
  const boot = e.boot ?? [];
  const real = boot.filter((b) => ['started', 'config-loaded', 'registered'].includes(b.phase));
  const order = real.map((b) => b.phase);
  assert.deepEqual(order.slice(0, 2), ['started', 'config-loaded'], `boot phases ${JSON.stringify(boot)}`);
  assert.ok(order.length === 2 || (order.length === 3 && order[2] === 'registered'), `boot phases ${JSON.stringify(boot)}`);
  assert.ok(real[1].at > real[0].at, `config-loaded after the process start: ${JSON.stringify(boot)}`);
  if (real[2]) assert.ok(real[2].at >= real[1].at, `registered after config-loaded: ${JSON.stringify(boot)}`);
  const at = boot.map((b) => b.at);
  for (let i = 1; i < at.length; i++) assert.ok(at[i]! >= at[i - 1]!, `boot timestamps in order: ${JSON.stringify(boot)}`);
  assert.ok(at[0]! <= e.registeredAt && e.registeredAt - at[0]! < 30_000, `registered at ${e.registeredAt}: ${JSON.stringify(boot)}`);
  assert.ok(imds.stats.tokens >= 1, 'IMDSv2: a token was fetched');
  assert.equal(imds.stats.unauthorized, 0);

  const run = await runCli(procs, ['run', '--dispatcher', d.url, '--', 'echo', 'from the instance']);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, 'from the instance\n');
});

test('flags and the environment override the user-data; the env file sits between them and the user-data', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const imds = await ImdsDouble.start(view({ url: 'ws://127.0.0.1:1', labels: { src: 'ud' }, slots: 9, id: 'ud-id', mode: 'pull' }));
  t.after(() => imds.close());

  // Flags over user-data (the URL too); the instance id is still reported.
  const a = executor(procs, ['--dispatcher', d.url, '--slots', '2', '--labels', 'src=flag', '--id', 'flagged'], cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint }));
  t.after(() => stopByPid(a.proc));
  const ea = await registered(d.url, (x) => x.id === 'flagged');
  assert.equal(ea.slots, 2);
  assert.deepEqual(ea.labels, { src: 'flag' });
  assert.equal(ea.instanceId, INSTANCE);
  assert.equal(ea.mode, 'pull', 'what no one else sets still comes from the user-data');

  // flag (id) > env (slots) > file (url, labels, slots) > user-data (mode).
  const file = join(procs.tmpDir(), 'executor.env');
  writeFileSync(file, `# test\nFALCONET_URL=${d.url}\nFALCONET_LABELS=src=file\nFALCONET_SLOTS=2\nFALCONET_EXECUTOR_ID=file-id\n`);
  const b = executor(procs, ['--config', file, '--id', 'layered'], cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint, FALCONET_SLOTS: '5' }));
  t.after(() => stopByPid(b.proc));
  const eb = await registered(d.url, (x) => x.id === 'layered');
  assert.equal(eb.slots, 5);
  assert.deepEqual(eb.labels, { src: 'file' });
  assert.equal(eb.mode, 'pull');
  assert.equal(eb.instanceId, INSTANCE);

  // The file alone, no IMDS (no endpoint set, a URL configured): no instance id, the default id.
  const c = executor(procs, [], cleanEnv(procs, { FALCONET_CONFIG: file }));
  t.after(() => stopByPid(c.proc));
  const ec = await registered(d.url, (x) => x.id === 'file-id');
  assert.equal(ec.instanceId, undefined);
  assert.equal(ec.slots, 2);
});

test('a dispatcher that never existed: --dispatcher-timeout 1 --retire-exit-code 75 exits 75 and runs the shutdown command', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dir = procs.tmpDir();
  const marker = join(dir, 'retired');
  const port = await freePort();
  const ex = executor(
    procs,
    ['--dispatcher', `ws://127.0.0.1:${port}`, '--dispatcher-timeout', '1', '--retire-exit-code', '75', '--shutdown-command', `printf '%s %s' "$FALCONET_RETIRE_REASON" "$FALCONET_EXIT_CODE" > '${marker}'`],
    cleanEnv(procs),
  );
  const { code, ms } = await ex.exit();
  assert.equal(code, 75, ex.stderr());
  assert.ok(ms >= 900 && ms < 8000, `retired after ${ms} ms`);
  assert.match(readFileSync(marker, 'utf8'), /^dispatcher unreachable for 1000 ms 75$/);

  // A failing shutdown command is logged; the exit status is the retire code anyway. From the env.
  const fails = executor(procs, [], cleanEnv(procs, {
    FALCONET_URL: `ws://127.0.0.1:${port}`, FALCONET_DISPATCHER_TIMEOUT: '0.5', FALCONET_RETIRE_EXIT_CODE: '75', FALCONET_SHUTDOWN_COMMAND: 'echo cannot >&2; exit 3',
  }));
  const r = await fails.exit();
  assert.equal(r.code, 75, fails.stderr());
  assert.match(fails.stderr(), /shutdown command failed/);
});

test('a dispatcher lost after registration: retire once it has been gone for the timeout, not before', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const marker = join(procs.tmpDir(), 'orphan');
  const ex = executor(procs, ['--dispatcher', d.url, '--id', 'orphan', '--dispatcher-timeout', '1', '--retire-exit-code', '75', '--shutdown-command', `touch '${marker}'`], cleanEnv(procs));
  t.after(() => stopByPid(ex.proc));
  await registered(d.url, (x) => x.id === 'orphan');
  // A negative property (no retirement while connected) has no event to wait for: stay connected
  // half a second longer than the 1 s timeout, then check it still runs.
  await sleep(1500);
  assert.ok(alive(ex.proc.pid!) && ex.proc.exitCode === null, 'connected longer than the timeout: still running');
  const lostAt = Date.now();
  process.kill(d.proc.pid!, 'SIGKILL');
  const { code } = await ex.exit();
  const after = Date.now() - lostAt;
  assert.equal(code, 75, ex.stderr());
  assert.ok(after >= 900 && after < 8000, `retired ${after} ms after the loss`);
  assert.ok(existsSync(marker));
});

test('idle and drained executors retire with the retire code; SIGTERM is a plain stop (exit 0, no command)', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const dir = procs.tmpDir();
  const retire = (name: string) => ['--retire-exit-code', '75', '--shutdown-command', `echo "$FALCONET_RETIRE_REASON" > '${join(dir, name)}'`];

  const idle = executor(procs, ['--dispatcher', d.url, '--id', 'idler', '--idle-exit', '0.3', ...retire('idle')], cleanEnv(procs));
  const drained = executor(procs, ['--dispatcher', d.url, '--id', 'drainee', ...retire('drained')], cleanEnv(procs));
  const termed = executor(procs, ['--dispatcher', d.url, '--id', 'termed', ...retire('termed')], cleanEnv(procs));
  for (const e of [idle, drained, termed]) t.after(() => stopByPid(e.proc));

  const i = await idle.exit();
  assert.equal(i.code, 75, idle.stderr());
  assert.match(readFileSync(join(dir, 'idle'), 'utf8'), /^idle for 300 ms$/m);

  await registered(d.url, (x) => x.id === 'drainee');
  const dr: CliResult = await runCli(procs, ['drain', '--dispatcher', d.url, 'drainee']);
  assert.equal(dr.code, 0, dr.stderr);
  assert.equal((await drained.exit()).code, 75, drained.stderr());
  assert.match(readFileSync(join(dir, 'drained'), 'utf8'), /^drained$/m);

  await registered(d.url, (x) => x.id === 'termed');
  termed.proc.kill('SIGTERM');
  const tm = await termed.exit();
  assert.equal(tm.code, 0);
  // A shutdown command would have run before the exit (agent.ts awaits it): no wait needed.
  assert.equal(existsSync(join(dir, 'termed')), false, 'SIGTERM runs no shutdown command');
});

test('bad configuration exits 2 with USAGE: malformed user-data, a non-numeric slots, no URL anywhere', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const bad = await ImdsDouble.start(view('{"url": "ws://127.0.0.1:1", "slots": '));
  t.after(() => bad.close());
  let r = await runCli(procs, ['executor'], { env: cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: bad.endpoint }) });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /falconet: USAGE: the EC2 user-data is not valid JSON/);

  const slots = await ImdsDouble.start(view({ url: 'ws://127.0.0.1:1', slots: 'four' }));
  t.after(() => slots.close());
  r = await runCli(procs, ['executor'], { env: cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: slots.endpoint }) });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /USAGE: "slots" in the EC2 user-data must be an integer/);

  r = await runCli(procs, ['executor', '--dispatcher', 'ws://127.0.0.1:1', '--slots', 'many'], { env: cleanEnv(procs) });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /USAGE: --slots must be an integer/);

  r = await runCli(procs, ['executor', '--dispatcher', 'ws://127.0.0.1:1', '--retire-exit-code', '256'], { env: cleanEnv(procs) });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /USAGE: --retire-exit-code must be an integer between 0 and 255/);

  // Not on EC2 (nothing listens at the metadata endpoint) and nothing configured.
  const t0 = Date.now();
  r = await runCli(procs, ['executor'], { env: cleanEnv(procs, { AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${await freePort()}` }) });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /USAGE: no dispatcher URL: give --dispatcher URL, FALCONET_URL .*did not answer/);
  assert.ok(Date.now() - t0 < 5000);

  r = await runCli(procs, ['executor', '--config', join(procs.tmpDir(), 'missing.env')], { env: cleanEnv(procs) });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /USAGE: the config file .*missing\.env does not exist/);
});
