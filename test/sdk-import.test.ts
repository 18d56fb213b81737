/**
 * An engine that only submits imports the SDK and nothing of the dispatcher or the executor: the
 * module graph of `falconet` (client/index.js) holds no dispatcher/ or executor/ file, and none of
 * better-sqlite3, the AWS SDK, pino or prom-client. Read from the compiled files' imports,
 * static and dynamic.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

test('the SDK entry point loads no dispatcher, executor, store or cloud code', { timeout: 10_000 }, () => {
  const entry = fileURLToPath(new URL('../client/index.js', import.meta.url));
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = m[1] ?? m[2];
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec));
      else packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
    }
  };
  visit(entry);
  const root = resolve(dirname(entry), '..');
  const local = [...seen].map((f) => f.slice(root.length + 1));
  assert.ok(local.includes('client/client.js') && local.includes('protocol/link.js'), `the walk found the SDK: ${local.join(', ')}`);
  assert.deepEqual(local.filter((f) => f.startsWith('dispatcher/') || f.startsWith('executor/')), []);
  for (const heavy of ['better-sqlite3', '@aws-sdk', 'pino', 'prom-client']) assert.ok(!packages.has(heavy), `${heavy} is loaded by the SDK`);
});
