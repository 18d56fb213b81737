/**
 * docs/protocol.md's error table and protocol/errors.ts say the same: every code is listed, with
 * the retryability that goes on the wire (errors.ts is the one source; the table follows it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ErrorCode, isRetryable } from '../protocol/index.js';

test('every error code is in docs/protocol.md with the retryability errors.ts gives it', { timeout: 5000 }, () => {
  const doc = readFileSync(fileURLToPath(new URL('../../docs/protocol.md', import.meta.url)), 'utf8');
  const rows = new Map([...doc.matchAll(/^\| `([A-Z_]+)` \| (yes|no) \|/gm)].map((m) => [m[1], m[2]]));
  for (const code of Object.values(ErrorCode)) {
    assert.ok(rows.has(code), `${code} is missing from docs/protocol.md's error table`);
    assert.equal(rows.get(code), isRetryable(code) ? 'yes' : 'no', `${code}: the table and errors.ts disagree on retryable`);
  }
  for (const code of rows.keys()) assert.ok(code in ErrorCode, `docs/protocol.md lists ${code}, which errors.ts does not have`);
});
