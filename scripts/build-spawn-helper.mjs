#!/usr/bin/env node
/**
 * Builds the executor's spawn helper (executor/spawn-helper/spawn-helper.c) into
 * dist/executor/falconet-spawn-helper. Part of `npm run build` (and so of `npm ci`, via prepare).
 *
 * Without a C compiler (or when the compile fails) this warns and exits 0: the executor then
 * starts commands with Node's child_process, which works, only slower. `--strict` (or
 * FALCONET_STRICT_HELPER=1) makes a failure fatal, for CI. CC overrides the compiler (default cc).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'executor', 'spawn-helper', 'spawn-helper.c');
const out = join(root, 'dist', 'executor', 'falconet-spawn-helper');
const strict = process.argv.includes('--strict') || process.env.FALCONET_STRICT_HELPER === '1';
const cc = process.env.CC || 'cc';

mkdirSync(dirname(out), { recursive: true });
// Compile beside the target, then rename: a running executor keeps the binary it started.
const tmp = `${out}.${process.pid}.tmp`;
const r = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-o', tmp, src], { encoding: 'utf8' });
if (r.error || r.status !== 0) {
  rmSync(tmp, { force: true });
  rmSync(out, { force: true }); // an older build must not be used with this source
  const why = r.error ? `${cc}: ${r.error.code === 'ENOENT' ? 'no C compiler found' : r.error.message}` : `${cc} exited with ${r.status}:\n${r.stderr}`;
  process.stderr.write(
    `\nwarning: falconet spawn helper not built (${why.trim()}).\n` +
      `warning: executors will start commands with Node's child_process (several times slower per task).\n` +
      `warning: install a C compiler (e.g. apt-get install gcc) and run npm run build to fix.\n\n`,
  );
  process.exit(strict ? 1 : 0);
}
renameSync(tmp, out);
