/**
 * ami/ checked offline as far as this machine allows (ami/check.sh): packer validate, shellcheck,
 * systemd-analyze verify, cloud-init schema, and install.sh against a throwaway root. The script
 * installs missing tools from Debian's apt when it runs as root (CHECK_APT_INSTALL=0 stops that)
 * and says which checks it skipped: each skipped check is reported here as a skipped subtest with
 * its reason, so that a check CI never runs does not look like one that passed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CHECK = fileURLToPath(new URL('../../ami/check.sh', import.meta.url));

test('ami/: packer template, scripts, unit, cloud-init example and install script check out', { timeout: 660_000 }, async (t) => {
  const r = spawnSync('bash', [CHECK], { encoding: 'utf8', timeout: 600_000 });
  const summary = r.stdout.slice(r.stdout.lastIndexOf('== summary'));
  for (const line of summary.trim().split('\n')) t.diagnostic(line);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(summary, /PASS\s+install\.sh ROOT\/DESTDIR/);
  for (const line of summary.split('\n')) {
    const skipped = line.match(/^SKIP\s+(.+?): (.*)$/);
    if (skipped) await t.test(`ami check: ${skipped[1]}`, (st) => st.skip(`check.sh skipped it: ${skipped[2]}`));
  }
});
