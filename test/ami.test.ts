/**
 * ami/ checked offline as far as this machine allows (ami/check.sh): packer validate, shellcheck,
 * systemd-analyze verify, cloud-init schema, and install.sh against a throwaway root. The script
 * installs missing tools from Debian's apt when it runs as root and says which checks it skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CHECK = fileURLToPath(new URL('../../ami/check.sh', import.meta.url));

test('ami/: packer template, scripts, unit, cloud-init example and install script check out', (t) => {
  const r = spawnSync('bash', [CHECK], { encoding: 'utf8', timeout: 600_000 });
  const summary = r.stdout.slice(r.stdout.lastIndexOf('== summary'));
  for (const line of summary.trim().split('\n')) t.diagnostic(line);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(summary, /PASS\s+install\.sh ROOT\/DESTDIR/);
});
