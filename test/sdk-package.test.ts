/**
 * The SDK as its own package (clients/js, `falconet-client`): packed and installed into an empty
 * project the way an engine would, it brings ws, msgpackr and TypeBox and nothing else (no
 * better-sqlite3 to build, no AWS SDK), and it submits a task to a real dispatcher.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Procs, startDispatcher, startExecutor } from './helpers.js';

const PACKAGE = fileURLToPath(new URL('../../clients/js', import.meta.url));

test('falconet-client installs alone (no store, no cloud SDK) and submits a task', { timeout: 240_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const dir = procs.tmpDir();
  const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
  const tarball = join(dir, npm(['pack', PACKAGE, '--pack-destination', dir, '--silent'], dir).trim().split('\n').pop()!);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'an-engine', version: '1.0.0', type: 'module', private: true }));
  try {
    npm(['install', '--no-audit', '--no-fund', '--no-package-lock', tarball], dir);
  } catch (err) {
    return t.skip(`npm install from the registry failed here: ${String((err as { stderr?: string }).stderr ?? err).trim().split('\n').pop()}`);
  }
  const installed = readdirSync(join(dir, 'node_modules')).flatMap((n) => (n.startsWith('@') ? readdirSync(join(dir, 'node_modules', n)).map((m) => `${n}/${m}`) : [n]));
  assert.ok(installed.includes('falconet-client') && installed.includes('ws') && installed.includes('msgpackr'), installed.join(', '));
  for (const heavy of ['better-sqlite3', '@aws-sdk/client-ec2', 'pino', 'prom-client']) assert.ok(!installed.includes(heavy), `${heavy} came with the SDK`);
  assert.equal(existsSync(join(dir, 'node_modules', 'falconet-client', 'dist', 'dispatcher')), false);

  const d = await startDispatcher(procs);
  startExecutor(procs, d.url);
  writeFileSync(
    join(dir, 'engine.js'),
    `import { connect } from 'falconet-client';
const c = await connect(process.argv[2]);
const r = await c.submit({ cmd: ['/bin/echo', 'from an engine'] });
console.log(JSON.stringify({ status: r.status, stdout: r.stdout }));
await c.close();`,
  );
  const out = execFileSync(process.execPath, ['engine.js', d.url], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  assert.deepEqual(JSON.parse(out), { status: 'succeeded', stdout: 'from an engine\n' });
});
