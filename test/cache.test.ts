/**
 * The executor's content cache, on real files: single-flight downloads, verification before use,
 * LRU eviction under a budget that never touches pinned files, and survival across a reopen.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContentCache } from '../executor/cache.js';
import { ErrorCode, FalconetError } from '../protocol/index.js';

const roots: string[] = [];
after(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

function tmpRoot(): string {
  const r = fs.mkdtempSync(path.join(os.tmpdir(), 'falconet-cache-'));
  roots.push(r);
  return r;
}

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** A fetch that writes `body` (after an optional delay) and counts its calls. */
function fetcher(body: Buffer | string, delayMs = 0): { fetch: (p: string) => Promise<void>; calls: () => number } {
  let n = 0;
  return {
    fetch: async (p) => {
      n++;
      if (delayMs) await sleep(delayMs);
      await fs.promises.writeFile(p, body);
    },
    calls: () => n,
  };
}

function isCode(code: string): (e: unknown) => boolean {
  return (e) => e instanceof FalconetError && e.code === code;
}

const tmpFiles = (dir: string): string[] => fs.readdirSync(path.join(dir, 'tmp'));

test('miss then hit: the second acquire does not fetch', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1 << 20 });
  const f = fetcher('hello world');
  const a = await c.acquire('s3:b/k@e1', f.fetch, { size: 11, sha256: sha('hello world') });
  assert.equal(a.hit, false);
  assert.equal(a.size, 11);
  assert.equal(fs.readFileSync(a.path, 'utf8'), 'hello world');
  assert.equal(path.basename(a.path), sha('s3:b/k@e1'));
  a.release();
  const b = await c.acquire('s3:b/k@e1', f.fetch);
  assert.equal(b.hit, true);
  assert.equal(b.path, a.path);
  assert.equal(f.calls(), 1);
  b.release();
  b.release(); // idempotent
  const s = c.stats();
  assert.deepEqual(s, { entries: 1, bytes: 11, budgetBytes: 1 << 20, hits: 1, misses: 1, bytesFetched: 11, evictions: 0 });
  assert.deepEqual(c.keys(), ['s3:b/k@e1']);
  await c.flush();
});

test('concurrent acquires of one key share one fetch, each with its own lease', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1 << 20 });
  const f = fetcher(Buffer.alloc(4096, 7), 30);
  const leases = await Promise.all(Array.from({ length: 8 }, () => c.acquire('k', f.fetch, { size: 4096 })));
  assert.equal(f.calls(), 1);
  assert.equal(new Set(leases).size, 8);
  for (const l of leases) assert.equal(l.size, 4096);
  assert.equal(c.stats().bytesFetched, 4096);
  // All eight pin the entry: one release is not enough to make it evictable.
  for (const l of leases.slice(0, 7)) l.release();
  await assert.rejects(c.acquire('other', fetcher(Buffer.alloc((1 << 20) - 100)).fetch), isCode(ErrorCode.CACHE_FULL));
  leases[7].release();
  const o = await c.acquire('other', fetcher(Buffer.alloc((1 << 20) - 100)).fetch);
  assert.deepEqual(c.keys(), ['other']);
  o.release();
  await c.flush();
});

test('size and sha256 mismatches are rejected, nothing is served, and a later acquire fetches again', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1 << 20 });
  const bad = fetcher('corrupted!');
  await assert.rejects(c.acquire('k', bad.fetch, { size: 3 }), isCode(ErrorCode.INPUT_CHECKSUM_MISMATCH));
  await assert.rejects(c.acquire('k', bad.fetch, { sha256: sha('abc') }), isCode(ErrorCode.INPUT_CHECKSUM_MISMATCH));
  assert.equal(bad.calls(), 2);
  assert.equal(c.stats().entries, 0);
  assert.deepEqual(tmpFiles(dir), []);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'objects')), []);
  const good = fetcher('abc');
  const l = await c.acquire('k', good.fetch, { size: 3, sha256: sha('abc').toUpperCase() });
  assert.equal(l.hit, false);
  assert.equal(fs.readFileSync(l.path, 'utf8'), 'abc');
  assert.equal(good.calls(), 1);
  l.release();
  await c.flush();
});

test('a fetch that throws propagates its error and leaves no temp file', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1 << 20 });
  const boom = async (p: string): Promise<void> => {
    await fs.promises.writeFile(p, 'half a fil');
    throw new Error('connection reset');
  };
  // Two acquires share the failing download and both see its error.
  const both = await Promise.allSettled([c.acquire('k', boom), c.acquire('k', boom)]);
  for (const r of both) {
    assert.equal(r.status, 'rejected');
    assert.match(String((r as PromiseRejectedResult).reason), /connection reset/);
  }
  assert.deepEqual(tmpFiles(dir), []);
  assert.equal(c.stats().entries, 0);
  // A fetch that resolves without writing anything is an input failure, not a cached empty file.
  await assert.rejects(c.acquire('k', async () => {}), isCode(ErrorCode.INPUT_FAILED));
  const l = await c.acquire('k', fetcher('ok').fetch);
  assert.equal(fs.readFileSync(l.path, 'utf8'), 'ok');
  l.release();
  await c.flush();
});

test('over budget, the least recently used unpinned entries are evicted and pinned ones are not', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 300 });
  const body = Buffer.alloc(100, 1);
  const get = (k: string) => c.acquire(k, fetcher(body).fetch);
  const a = await get('a'); // pinned throughout, and the oldest
  (await get('b')).release();
  (await get('c')).release();
  const bHit = await get('b'); // b is now more recent than c
  assert.equal(bHit.hit, true);
  bHit.release();
  (await get('d')).release(); // needs 100 bytes: c goes (a is older but pinned)
  assert.deepEqual(c.keys().sort(), ['a', 'b', 'd']);
  assert.equal(c.stats().evictions, 1);
  const big = await c.acquire('e', fetcher(Buffer.alloc(200, 2)).fetch); // b and d go, a stays
  assert.deepEqual(c.keys().sort(), ['a', 'e']);
  assert.equal(c.stats().bytes, 300);
  assert.equal(c.stats().evictions, 3);
  assert.equal(fs.readFileSync(a.path).length, 100);
  assert.equal(fs.readdirSync(path.join(dir, 'objects')).length, 2);
  a.release();
  big.release();
  await c.flush();
});

test('CACHE_FULL when everything is pinned, and for an object larger than the budget', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 200 });
  const a = await c.acquire('a', fetcher(Buffer.alloc(100)).fetch);
  const b = await c.acquire('b', fetcher(Buffer.alloc(100)).fetch);
  await assert.rejects(c.acquire('c', fetcher(Buffer.alloc(50)).fetch), isCode(ErrorCode.CACHE_FULL));
  assert.deepEqual(tmpFiles(dir), []);
  assert.deepEqual(c.keys().sort(), ['a', 'b']);
  assert.ok(fs.existsSync(a.path) && fs.existsSync(b.path));
  // Known too large up front: rejected without downloading.
  const huge = fetcher(Buffer.alloc(300));
  await assert.rejects(c.acquire('h', huge.fetch, { size: 300 }), isCode(ErrorCode.CACHE_FULL));
  assert.equal(huge.calls(), 0);
  a.release();
  const c2 = await c.acquire('c', fetcher(Buffer.alloc(50)).fetch);
  assert.deepEqual(c.keys().sort(), ['b', 'c']);
  b.release();
  c2.release();
  await c.flush();
});

test('the cache and its index survive a reopen; leftovers are cleaned at open', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1000 });
  (await c.acquire('s3:b/x@1', fetcher('xxxx').fetch, { sha256: sha('xxxx') })).release();
  (await c.acquire('s3:b/y@1', fetcher('yyyyyy').fetch)).release();
  (await c.acquire('s3:b/z@1', fetcher('zz').fetch)).release();
  await c.flush();

  // Simulate a crash mid-download, a stray object, and a truncated object.
  fs.writeFileSync(path.join(dir, 'tmp', 'deadbeef.part'), 'partial');
  fs.writeFileSync(path.join(dir, 'objects', 'f'.repeat(64)), 'stray');
  fs.writeFileSync(path.join(dir, 'objects', sha('s3:b/z@1')), 'z');
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
  assert.equal(index.entries['s3:b/x@1'].sha256, sha('xxxx'));
  assert.equal(index.entries['s3:b/y@1'].size, 6);

  const r = await ContentCache.open(dir, { budgetBytes: 1000 });
  assert.deepEqual(tmpFiles(dir), []);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'objects')).sort(), [sha('s3:b/x@1'), sha('s3:b/y@1')].sort());
  assert.deepEqual(r.keys(), ['s3:b/x@1', 's3:b/y@1']); // LRU order kept
  assert.equal(r.stats().bytes, 10);
  const f = fetcher('never');
  const x = await r.acquire('s3:b/x@1', f.fetch);
  assert.equal(x.hit, true);
  assert.equal(fs.readFileSync(x.path, 'utf8'), 'xxxx');
  assert.equal(f.calls(), 0);
  x.release();
  const z = await r.acquire('s3:b/z@1', fetcher('zz').fetch);
  assert.equal(z.hit, false);
  z.release();
  await r.flush();

  // A smaller budget on reopen evicts down to it, oldest first.
  const s = await ContentCache.open(dir, { budgetBytes: 7 });
  assert.deepEqual(s.keys(), ['s3:b/x@1', 's3:b/z@1']);
  await s.flush();
});

test('a cached file deleted behind the cache is fetched again, not served', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1000 });
  const f = fetcher('data');
  const l = await c.acquire('k', f.fetch);
  l.release();
  fs.rmSync(l.path, { force: true });
  const again = await c.acquire('k', f.fetch);
  assert.equal(again.hit, false);
  assert.equal(f.calls(), 2);
  assert.equal(fs.readFileSync(again.path, 'utf8'), 'data');
  again.release();
  await c.flush();
});

test('linkInto puts the same content at dst, as a hard link, and refuses a released lease', { timeout: 120_000 }, async () => {
  const dir = tmpRoot();
  const c = await ContentCache.open(dir, { budgetBytes: 1000 });
  const l = await c.acquire('k', fetcher('payload').fetch);
  const dst = path.join(tmpRoot(), 'sandbox', 'in', 'data.txt');
  await c.linkInto(l, dst);
  assert.equal(fs.readFileSync(dst, 'utf8'), 'payload');
  assert.equal(fs.statSync(dst).ino, fs.statSync(l.path).ino);
  await c.linkInto(l, dst); // replacing an existing dst is fine
  assert.equal(fs.readFileSync(dst, 'utf8'), 'payload');
  l.release();
  await assert.rejects(c.linkInto(l, dst + '2'));
  await c.flush();
});
