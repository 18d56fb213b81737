/**
 * TLS through real processes: a CA and server certificates made with `openssl` at test time; a
 * dispatcher serving wss:// and https:// (ws and uws transports), executors, the SDK and the CLI
 * trusting the CA; refusal without it (TLS_FAILED, fast, no redial loop); SIGHUP reload; the
 * local provisioner passing the CA; the cleartext warning off loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { get as httpGet } from 'node:http';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { connect } from '../client/index.js';
import { FalconetError } from '../protocol/index.js';
import { resolveExecutorConfig, type ConfigDeps } from '../executor/config.js';
import type { ImdsReader } from '../executor/imds.js';
import { FAST, Procs, exited, runCli, startExecutor, waitFor, waitForLine, noUwsBinary } from './helpers.js';

const T = { timeout: 240_000 };

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA (ca.pem, ca.key) in `dir`. */
function makeCa(dir: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=falconet test CA'], dir);
}

/** A server certificate for 127.0.0.1 and localhost signed by the CA in `dir`: `${name}.pem`, `${name}.key`. */
function makeServerCert(dir: string, name: string): { cert: string; key: string; fingerprint: string } {
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'ext.cnf'], dir);
  const cert = join(dir, `${name}.pem`);
  return { cert, key: join(dir, `${name}.key`), fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

interface Pki {
  dir: string;
  caFile: string;
  ca: string;
  server: { cert: string; key: string; fingerprint: string };
}

function makePki(procs: Procs): Pki {
  const dir = procs.tmpDir();
  makeCa(dir);
  return { dir, caFile: join(dir, 'ca.pem'), ca: readFileSync(join(dir, 'ca.pem'), 'utf8'), server: makeServerCert(dir, 'server') };
}

/** A dispatcher with these extra flags; resolves with the URL it prints (wss:// or ws://). */
async function dispatcher(procs: Procs, args: string[], cmd = 'dispatcher') {
  const proc = procs.spawn([cmd, '--port', '0', ...FAST, '--data-dir', procs.tmpDir(), ...args]);
  const [, url] = await waitForLine(proc, /listening on (wss?:\/\/\S+)/, 20_000);
  return { proc, url };
}

/** GET over https trusting `ca` (or http): status and JSON body. */
function getJson(url: string, ca?: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const done = (res: import('node:http').IncomingMessage) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    };
    const req = url.startsWith('https:') ? httpsGet(url, { ...(ca ? { ca } : {}) }, done) : httpGet(url, done);
    req.on('error', reject);
  });
}

/** The SHA-256 fingerprint of the certificate a new TLS connection to `url` is shown. */
function peerFingerprint(url: string, ca: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host: u.hostname, port: Number(u.port), ca }, () => {
      resolve(sock.getPeerCertificate().fingerprint256);
      sock.end();
    });
    sock.on('error', reject);
  });
}

const https = (url: string) => url.replace(/^wss:/, 'https:');


/** What each transport must do with TLS: wss for executors, the SDK and the CLI, https for the API. */
async function servesTls(procs: Procs, pki: Pki, transport: 'ws' | 'uws') {
  const d = await dispatcher(procs, ['--transport', transport, '--tls-cert', pki.server.cert, '--tls-key', pki.server.key]);
  assert.match(d.url, /^wss:\/\/127\.0\.0\.1:\d+$/, 'the printed URL is wss://');
  startExecutor(procs, d.url, ['--ca', pki.caFile, '--id', `tls-${transport}`]);
  const client = await connect(d.url, { ca: pki.ca, connectTimeoutMs: 20_000 });
  try {
    const r = await client.submit({ cmd: ['echo', `over wss (${transport})`] });
    assert.equal(r.status, 'succeeded');
    assert.equal(r.stdout, `over wss (${transport})\n`);
  } finally {
    await client.close();
  }
  const health = await getJson(https(d.url) + '/healthz', pki.ca);
  assert.equal(health.status, 200);
  const s = await getJson(https(d.url) + '/api/status', pki.ca);
  assert.equal(s.body.tls, true);
  assert.equal(s.body.tlsWarning, undefined);
  assert.equal(await peerFingerprint(d.url, pki.ca), pki.server.fingerprint);
  // The CLI: --ca for status (https), FALCONET_CA for run (wss).
  const st = await runCli(procs, ['status', '--dispatcher', d.url, '--ca', pki.caFile, '--connect-timeout', '10']);
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /^tls +on/m); // issue 11's status layout: aligned labels
  assert.match(st.stdout, new RegExp(`tls-${transport}`));
  const run = await runCli(procs, ['run', '--dispatcher', d.url, '--connect-timeout', '10', '--', 'echo', 'cli over wss'], { env: { FALCONET_CA: pki.caFile } });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, 'cli over wss\n');
  return d;
}

test('ws transport with TLS: executor (--ca), SDK (ca), CLI (--ca, FALCONET_CA) over wss://, the API over https://', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  await servesTls(procs, makePki(procs), 'ws');
});

test('without the CA: SDK, CLI and executor fail fast with TLS_FAILED and the cause, no redial loop', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const pki = makePki(procs);
  const d = await dispatcher(procs, ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key]);
  // SDK: a redial loop would end only at the connect timeout (120 s), as UNREACHABLE.
  const started = Date.now();
  const err = await connect(d.url, { connectTimeoutMs: 120_000 }).then(
    () => assert.fail('connected without trusting the CA'),
    (e: unknown) => e as FalconetError,
  );
  assert.equal(err.code, 'TLS_FAILED', err.message);
  assert.match(err.message, /certificate verify failed: unable to verify the first certificate \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
  assert.match(err.message, /--ca FILE or FALCONET_CA/);
  assert.ok(Date.now() - started < 60_000, `failed after ${Date.now() - started} ms`);
  // Another CA is no better than none.
  const other = procs.tmpDir();
  makeCa(other);
  const err2 = await connect(d.url, { ca: readFileSync(join(other, 'ca.pem')), connectTimeoutMs: 20_000 }).catch((e: FalconetError) => e);
  assert.equal((err2 as FalconetError).code, 'TLS_FAILED');
  // The CLI: run (wss) and status (https) exit 3 (issue 11: unreachable or refused) with the code, well before --connect-timeout.
  for (const args of [['run', '--', 'true'], ['status']]) {
    const t0 = Date.now();
    // A redial loop would last the whole --connect-timeout (120 s); failing fast ends far sooner
    // even on a loaded machine.
    const r = await runCli(procs, [...args.slice(0, 1), '--dispatcher', d.url, '--connect-timeout', '120', ...args.slice(1)], { timeoutMs: 150_000 });
    assert.equal(r.code, 3, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /^falconet: TLS_FAILED: TLS to \S+: certificate verify failed: unable to verify the first certificate/m, args[0]);
    assert.ok(Date.now() - t0 < 60_000, `${args[0]} took ${Date.now() - t0} ms`);
  }
  // An executor exits 2 at once, saying why, instead of redialing forever.
  const t1 = Date.now();
  const ex = startExecutor(procs, d.url, ['--id', 'untrusting']);
  let log = '';
  ex.stderr!.on('data', (b: Buffer) => (log += b));
  const exit = await exited(ex, 60_000, 'an executor that does not trust the dispatcher');
  assert.equal(exit.code, 2);
  t.diagnostic(`the executor exited after ${Date.now() - t1} ms`);
  await waitFor('the executor saying why', () => /"code":"TLS_FAILED".*certificate verify failed/.test(log), 5000);
  // wss:// to a dispatcher without TLS: TLS_FAILED saying it speaks no TLS.
  const plain = await dispatcher(procs, []);
  assert.match(plain.url, /^ws:\/\//);
  const err3 = await connect(plain.url.replace(/^ws:/, 'wss:'), { ca: pki.ca, connectTimeoutMs: 20_000 }).catch((e: FalconetError) => e);
  assert.equal((err3 as FalconetError).code, 'TLS_FAILED', (err3 as Error).message);
  assert.match((err3 as Error).message, /does not speak TLS/);
});

test('SIGHUP reloads the certificate: new connections see the new one, open ones keep working, bad files keep the old', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const pki = makePki(procs);
  const d = await dispatcher(procs, ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key]);
  startExecutor(procs, d.url, ['--ca', pki.caFile]);
  const client = await connect(d.url, { ca: pki.ca, connectTimeoutMs: 20_000 });
  t.after(() => client.close());
  assert.equal((await client.submit({ builtin: 'noop' })).status, 'succeeded');
  assert.equal(await peerFingerprint(d.url, pki.ca), pki.server.fingerprint);
  // A renewed certificate from the same CA replaces the files (by rename, as a renewal tool would).
  const next = makeServerCert(pki.dir, 'renewed');
  assert.notEqual(next.fingerprint, pki.server.fingerprint);
  renameSync(next.key, pki.server.key);
  renameSync(next.cert, pki.server.cert);
  d.proc.kill('SIGHUP');
  await waitFor('the renewed certificate on a new connection', async () => (await peerFingerprint(d.url, pki.ca)) === next.fingerprint, 10_000);
  // The open connection and the executor's still work, and new clients verify the new certificate.
  assert.equal((await client.submit({ builtin: 'noop' })).status, 'succeeded');
  const again = await connect(d.url, { ca: pki.ca, connectTimeoutMs: 20_000 });
  assert.equal((await again.submit({ cmd: ['echo', 'after reload'] })).stdout, 'after reload\n');
  await again.close();
  // Files that do not load: logged, and the certificate in use stays.
  writeFileSync(pki.server.cert, 'not a certificate\n');
  const refused = waitForLine(d.proc, /NOT reloaded/, 10_000, 'stderr');
  d.proc.kill('SIGHUP');
  await refused;
  assert.equal(d.proc.exitCode, null, 'the dispatcher keeps running');
  assert.equal(await peerFingerprint(d.url, pki.ca), next.fingerprint);
});

test('uws transport with TLS: SSLApp serves wss:// and https://; SIGHUP says it cannot reload and keeps serving', { ...T, skip: noUwsBinary }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const pki = makePki(procs);
  const d = await servesTls(procs, pki, 'uws');
  const next = makeServerCert(pki.dir, 'renewed');
  renameSync(next.key, pki.server.key);
  renameSync(next.cert, pki.server.cert);
  const refused = waitForLine(d.proc, /uws transport cannot reload.*NOT reloaded/, 10_000, 'stderr');
  d.proc.kill('SIGHUP');
  await refused;
  assert.equal(d.proc.exitCode, null);
  assert.equal(await peerFingerprint(d.url, pki.ca), pki.server.fingerprint, 'still the certificate it started with');
  assert.equal((await getJson(https(d.url) + '/healthz', pki.ca)).status, 200);
});

test('`up` with TLS passes the CA to its local executors (--tls-ca), and refuses a CA they would not trust', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const pki = makePki(procs);
  // The server certificate alone as the executors' CA (the default) cannot verify a CA-signed one.
  const bad = await runCli(procs, ['up', '--port', '0', '--executors', '1', '--data-dir', procs.tmpDir(), '--tls-cert', pki.server.cert, '--tls-key', pki.server.key], { timeoutMs: 30_000 });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /USAGE: the local executors would not trust this dispatcher .*--tls-ca FILE/);
  const up = await dispatcher(procs, ['--executors', '2', '--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--tls-ca', pki.caFile], 'up');
  assert.match(up.url, /^wss:\/\//);
  const client = await connect(up.url, { ca: pki.ca, connectTimeoutMs: 20_000 });
  t.after(() => client.close());
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.submit({ cmd: ['echo', String(i)] })));
  assert.ok(results.every((r) => r.status === 'succeeded'));
  assert.ok(results.every((r) => /^local-/.test(r.executor ?? '')), 'run by the local executors `up` started');
});

test('off loopback without TLS: a warning at start and in /api/status; usage errors for half a TLS config', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const proc = procs.spawn(['dispatcher', '--host', '0.0.0.0', '--insecure', '--port', '0', ...FAST, '--data-dir', procs.tmpDir()]);
  const warned = waitForLine(proc, /without TLS: tokens and task specs travel in clear/, 20_000, 'stderr');
  const [, url] = await waitForLine(proc, /listening on (ws:\/\/\S+)/, 20_000);
  await warned;
  const http = url.replace(/^ws:/, 'http:').replace('0.0.0.0', '127.0.0.1');
  const s = await getJson(http + '/api/status');
  assert.equal(s.body.tls, false);
  assert.match(s.body.tlsWarning, /travel in clear/);
  const st = await runCli(procs, ['status', '--dispatcher', url.replace('0.0.0.0', '127.0.0.1')]);
  assert.match(st.stdout, /^tls +OFF: .*travel in clear/m); // issue 11's status layout: aligned labels
  // On loopback: no warning, tls false.
  const local = await dispatcher(procs, []);
  const ls = await getJson(local.url.replace(/^ws:/, 'http:') + '/api/status');
  assert.equal(ls.body.tls, false);
  assert.equal(ls.body.tlsWarning, undefined);
  // Half a TLS configuration, or files that are not a pair, are usage errors (exit 2).
  const pki = makePki(procs);
  const other = makeServerCert(pki.dir, 'other');
  for (const [args, re] of [
    [['--tls-cert', pki.server.cert], /both --tls-cert FILE and --tls-key FILE/],
    [['--tls-cert', pki.server.cert, '--tls-key', other.key], /do not load together/],
    [['--tls-cert', join(pki.dir, 'missing.pem'), '--tls-key', pki.server.key], /cannot read the TLS certificate file/],
  ] as const) {
    const r = await runCli(procs, ['dispatcher', '--port', '0', '--store', 'memory', ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, re);
  }
  // --ca that names no certificate: a usage error too.
  const r = await runCli(procs, ['status', '--ca', join(pki.dir, 'ext.cnf')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /USAGE: --ca: .* holds no PEM certificate/);
});

test('the executor\'s ca setting: PEM text in user-data, a file name in the env file, a usage error for no certificate', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const pki = makePki(procs);
  const identity = { instanceId: 'i-0tls', region: 'us-east-1', availabilityZone: 'us-east-1a', instanceType: 't3.micro', localIpv4: '10.0.0.9' };
  const deps = (files: Record<string, string>, userData?: string): ConfigDeps => ({
    readFile: async (p) => files[p],
    imds: () => ({ endpoint: 'http://imds.fake', readInstanceIdentity: async () => identity, readUserData: async () => userData }) as unknown as ImdsReader,
  });
  // User-data (what the EC2 backend sends): the PEM itself.
  const ud = await resolveExecutorConfig({}, {}, deps({}, JSON.stringify({ url: 'wss://d.example:7878', ca: pki.ca })));
  assert.equal(ud.options.ca, pki.ca);
  assert.equal(ud.sources.ca, 'user-data');
  assert.deepEqual(ud.warnings, [], 'ca is a known user-data key');
  // The env file: a file name, read.
  const file = await resolveExecutorConfig({}, {}, deps({ '/etc/falconet/executor.env': 'FALCONET_URL=wss://d.example:7878\nFALCONET_CA=/etc/falconet/ca.pem\n', '/etc/falconet/ca.pem': pki.ca }));
  assert.equal(file.options.ca, pki.ca);
  // A flag wins, and a file without a certificate (or missing) is USAGE naming the setting.
  await assert.rejects(resolveExecutorConfig({ dispatcher: 'wss://d:1', ca: '/nowhere.pem' }, {}, deps({})), /--ca: the CA file \/nowhere\.pem does not exist/);
  await assert.rejects(resolveExecutorConfig({ dispatcher: 'wss://d:1' }, { FALCONET_CA: '/x' }, deps({ '/x': 'junk' })), /FALCONET_CA holds no PEM certificate/);
});
