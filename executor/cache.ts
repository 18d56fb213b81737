/**
 * The executor's content cache: downloaded input objects kept on local disk under a byte budget,
 * so a second task with the same inputs on the same executor reads them without a second GET.
 *
 * Layout under `dir`: `objects/<sha256(key)>` holds verified objects, `tmp/` holds downloads in
 * progress, `index.json` maps keys to entries. An object only enters `objects/` by an atomic
 * rename after its size and checksum were verified, so a partial or corrupted download is never
 * served, not even after a crash. One process owns a cache dir at a time.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { ErrorCode, FalconetError } from '../protocol/index.js';

/** A pinned cache entry: its file stays on disk (is never evicted) until `release()`. */
export interface CacheLease {
  /** Absolute path of the cached file; read-only, use {@link ContentCache.linkInto} for sandboxes. */
  readonly path: string;
  readonly size: number;
  /** True when the object was already cached; false when this acquire waited for a download. */
  readonly hit: boolean;
  /** Unpins the entry. Idempotent. */
  release(): void;
}

/** What a download must match before it is admitted. */
export interface CacheExpect {
  size?: number;
  /** Lowercase or uppercase hex. */
  sha256?: string;
}

/** Counters since open (entries/bytes are current). */
export interface CacheStats {
  entries: number;
  bytes: number;
  budgetBytes: number;
  /** Acquires served from the cache without waiting. */
  hits: number;
  /** Acquires that waited for a download, including those sharing another acquire's download. */
  misses: number;
  /** Bytes downloaded (once per shared download, counting rejected downloads too). */
  bytesFetched: number;
  evictions: number;
}

interface Entry {
  key: string;
  /** sha256(key) in hex: the name under objects/. */
  file: string;
  size: number;
  sha256?: string;
  lastUsed: number;
  /** Live leases; a pinned entry is never evicted. */
  pins: number;
}

/** A download in progress; `waiters` counts the acquires that will each get a lease from it. */
interface Flight {
  waiters: number;
  done: Promise<Entry>;
}
interface IndexFile {
  version: 1;
  entries: Record<string, { file: string; size: number; sha256?: string; lastUsed: number }>;
}

const INDEX = 'index.json';
const fileName = (key: string): string => createHash('sha256').update(key).digest('hex');
async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}
const mismatch = (key: string, got: string, want: string): FalconetError =>
  new FalconetError(ErrorCode.INPUT_CHECKSUM_MISMATCH, `download of ${key} has ${got}, expected ${want}; not used`);
const unlinkQuiet = (file: string): Promise<void> => fsp.rm(file, { force: true }).catch(() => {});

/** A content-addressed cache of downloaded objects with LRU eviction under a byte budget. */
export class ContentCache {
  /** In LRU order: the first entry is the least recently used (a bump re-inserts at the end). */
  private readonly entries = new Map<string, Entry>();
  private readonly flights = new Map<string, Flight>();
  private readonly live = new WeakSet<CacheLease>();
  private bytes = 0;
  /** Last `lastUsed` handed out; see tick(). */
  private clock = 0;
  private counters = { hits: 0, misses: 0, bytesFetched: 0, evictions: 0 };
  /** Admissions run one at a time, so eviction choices and renames into objects/ never interleave. */
  private admitLock: Promise<void> = Promise.resolve();
  private writing: Promise<void> | null = null;
  private dirty = false;
  private readonly objectsDir: string;
  private readonly tmpDir: string;

  private constructor(readonly dir: string, readonly budgetBytes: number) {
    this.objectsDir = path.join(dir, 'objects');
    this.tmpDir = path.join(dir, 'tmp');
  }

  /**
   * Opens (or creates) the cache in `dir`. Loads the index, drops entries whose file is missing
   * or has another size, deletes leftover temp files and object files the index does not know,
   * then evicts down to the budget (which may have shrunk since the last run).
   */
  static async open(dir: string, opts: { budgetBytes: number }): Promise<ContentCache> {
    const c = new ContentCache(path.resolve(dir), opts.budgetBytes);
    await fsp.mkdir(c.objectsDir, { recursive: true });
    // A download interrupted by a crash left its temp file behind; it is never trusted.
    await fsp.rm(c.tmpDir, { recursive: true, force: true });
    await fsp.mkdir(c.tmpDir, { recursive: true });
    await unlinkQuiet(path.join(c.dir, INDEX + '.tmp'));

    // A missing or unreadable index means starting empty; the object sweep below reclaims the disk.
    const idx = (await fsp.readFile(path.join(c.dir, INDEX), 'utf8').then(JSON.parse).catch(() => null)) as IndexFile | null;
    const loaded = idx?.version === 1 && idx.entries && typeof idx.entries === 'object' ? idx.entries : {};
    const rows = Object.entries(loaded).sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [key, e] of rows) {
      if (typeof e?.size !== 'number' || typeof e.lastUsed !== 'number' || e.file !== fileName(key)) continue;
      const st = await fsp.stat(c.objPath(e.file)).catch(() => null);
      // A size mismatch means the file was truncated (e.g. power loss before writeback): drop it.
      if (!st?.isFile() || st.size !== e.size) continue;
      c.entries.set(key, { key, file: e.file, size: e.size, sha256: e.sha256, lastUsed: e.lastUsed, pins: 0 });
      c.bytes += e.size;
      c.clock = Math.max(c.clock, e.lastUsed);
    }
    const known = new Set([...c.entries.values()].map((e) => e.file));
    for (const name of await fsp.readdir(c.objectsDir)) {
      if (!known.has(name)) await unlinkQuiet(c.objPath(name));
    }
    await c.evictFor(0);
    c.persist();
    await c.flush();
    return c;
  }

  private readonly objPath = (file: string): string => path.join(this.objectsDir, file);

  /** Strictly increasing, so LRU order is total even within one millisecond and across restarts. */
  private tick(): number {
    this.clock = Math.max(Date.now(), this.clock + 1);
    return this.clock;
  }

  /**
   * Returns a lease on the object named `key`. On a miss, `fetch` must write the whole object to
   * `tmpPath`; it is then checked against `expect` (size; sha256, hashed from disk) and admitted.
   * Concurrent acquires of one key share one fetch, checked against the first caller's `expect`
   * (a key names one content, so callers agree); a hit is not re-checked. Rejects with
   * INPUT_CHECKSUM_MISMATCH, CACHE_FULL, INPUT_FAILED (fetch wrote no file) or fetch's own error.
   */
  async acquire(key: string, fetch: (tmpPath: string) => Promise<void>, expect: CacheExpect = {}): Promise<CacheLease> {
    for (;;) {
      const flight = this.flights.get(key);
      if (flight) {
        // Counted before awaiting: the admission pins the entry once per waiter, atomically, so
        // no other admission can evict it between the download finishing and this lease.
        flight.waiters++;
        this.counters.misses++;
        return this.lease(await flight.done, false);
      }
      const e = this.entries.get(key);
      if (!e) break;
      e.pins++;
      const st = await fsp.stat(this.objPath(e.file)).catch(() => null);
      if (st?.isFile() && st.size === e.size) {
        this.counters.hits++;
        this.touch(e);
        return this.lease(e, true);
      }
      // Someone removed or altered the file behind our back: forget it and download again.
      e.pins--;
      if (this.entries.get(key) === e) this.drop(e);
      this.persist();
    }
    if (expect.size !== undefined && expect.size > this.budgetBytes) {
      // Fail before downloading: it could never be admitted.
      throw new FalconetError(ErrorCode.CACHE_FULL, `object ${key} (${expect.size} bytes) exceeds the cache budget of ${this.budgetBytes} bytes`);
    }
    const flight: Flight = { waiters: 1, done: null as unknown as Promise<Entry> };
    this.flights.set(key, flight);
    this.counters.misses++;
    flight.done = this.download(key, fetch, expect, flight);
    return this.lease(await flight.done, false);
  }

  private async download(key: string, fetch: (tmpPath: string) => Promise<void>, expect: CacheExpect, flight: Flight): Promise<Entry> {
    const tmp = path.join(this.tmpDir, `${randomBytes(12).toString('hex')}.part`);
    try {
      await fetch(tmp);
      const st = await fsp.stat(tmp).catch(() => null);
      if (!st?.isFile()) throw new FalconetError(ErrorCode.INPUT_FAILED, `download of ${key} produced no file`);
      this.counters.bytesFetched += st.size;
      if (expect.size !== undefined && st.size !== expect.size) throw mismatch(key, `${st.size} bytes`, `${expect.size}`);
      let sha256: string | undefined;
      if (expect.sha256 !== undefined) {
        sha256 = await hashFile(tmp);
        if (sha256 !== expect.sha256.toLowerCase()) throw mismatch(key, `sha256 ${sha256}`, expect.sha256.toLowerCase());
      }
      // Read-only, because sandboxes get hard links to this very inode: a task writing its input
      // must not corrupt the cached copy (root ignores this; see linkInto).
      await fsp.chmod(tmp, 0o444);
      return await this.admit(key, tmp, st.size, sha256, flight);
    } catch (err) {
      // End the flight at once, so a later acquire downloads afresh instead of sharing this error.
      if (this.flights.get(key) === flight) this.flights.delete(key);
      throw err;
    } finally {
      await unlinkQuiet(tmp); // a no-op after a successful rename
    }
  }

  private async admit(key: string, tmp: string, size: number, sha256: string | undefined, flight: Flight): Promise<Entry> {
    const prev = this.admitLock;
    let unlock!: () => void;
    this.admitLock = new Promise((r) => (unlock = r));
    await prev;
    try {
      if (!(await this.evictFor(size))) {
        throw new FalconetError(ErrorCode.CACHE_FULL, `cannot fit ${key} (${size} bytes): budget ${this.budgetBytes}, ${this.bytes} bytes cached, in use files cannot be evicted`);
      }
      const file = fileName(key);
      await fsp.rename(tmp, this.objPath(file)); // atomic: objects/ never holds a partial file
      // Synchronous from here on: the entry appears pinned once per waiter, and the flight ends,
      // in one step, so no acquire can slip between them.
      const e: Entry = { key, file, size, sha256, lastUsed: this.tick(), pins: flight.waiters };
      this.entries.set(key, e);
      this.bytes += size;
      this.flights.delete(key);
      this.persist();
      return e;
    } finally {
      unlock();
    }
  }

  /**
   * Evicts least recently used unpinned entries until `size` more bytes fit in the budget.
   * Returns false, evicting nothing, when even evicting every unpinned entry would not suffice.
   */
  private async evictFor(size: number): Promise<boolean> {
    let need = this.bytes + size - this.budgetBytes;
    if (need <= 0) return true;
    const victims: Entry[] = [];
    for (const e of this.entries.values()) {
      if (need <= 0) break;
      if (e.pins > 0) continue;
      victims.push(e);
      need -= e.size;
    }
    if (need > 0) return false;
    for (const e of victims) this.drop(e);
    this.counters.evictions += victims.length;
    // Removed from the index before the unlinks: no acquire can take a lease on a dying file.
    await Promise.all(victims.map((e) => unlinkQuiet(this.objPath(e.file))));
    this.persist();
    return true;
  }

  private drop(e: Entry): void {
    this.entries.delete(e.key);
    this.bytes -= e.size;
  }

  private touch(e: Entry): void {
    e.lastUsed = this.tick();
    this.entries.delete(e.key);
    this.entries.set(e.key, e);
    // No write per hit (hits are the hot path): the new time goes out with the next write or flush.
    this.dirty = true;
  }

  private lease(e: Entry, hit: boolean): CacheLease {
    const lease: CacheLease = {
      path: this.objPath(e.file),
      size: e.size,
      hit,
      // Idempotent: a second release must not unpin the entry under another holder's lease.
      release: () => void (this.live.delete(lease) && e.pins--),
    };
    this.live.add(lease);
    return lease;
  }

  /**
   * Makes the leased file appear at `dst` (parent dirs created; an existing `dst` replaced): a
   * hard link, so no second copy on the same filesystem; a copy across filesystems or where links
   * are refused. The link shares the cached inode, which is read-only; a task running as root
   * could still write through it, so tasks must treat inputs as read-only.
   */
  async linkInto(lease: CacheLease, dst: string): Promise<void> {
    if (!this.live.has(lease)) throw new Error('linkInto: lease was released or is not from this cache');
    await fsp.mkdir(path.dirname(dst), { recursive: true });
    await unlinkQuiet(dst);
    try {
      await fsp.link(lease.path, dst);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EMLINK') throw err;
      await fsp.copyFile(lease.path, dst);
    }
  }

  /** Current size and counters since open. */
  stats(): CacheStats {
    return { entries: this.entries.size, bytes: this.bytes, budgetBytes: this.budgetBytes, ...this.counters };
  }

  /** Keys of the cached objects, least recently used first (what this executor holds). */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Waits until the index on disk reflects every change so far (call before exiting). */
  async flush(): Promise<void> {
    if (this.dirty) this.persist();
    while (this.writing) await this.writing;
  }

  /**
   * Schedules an index write. Writes coalesce: while one is in flight, later changes only mark
   * the index dirty and are written once it finishes. The write is atomic (temp file + rename),
   * so a crash leaves the old or the new index, never a torn one.
   */
  private persist(): void {
    this.dirty = true;
    this.writing ??= this.writeLoop();
  }

  private indexFailing = false;

  private async writeLoop(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      // A failed write loses recent entries or LRU times at worst; open() reconciles with the disk.
      // Said once per failure streak (a full disk fails every write), not once per write.
      await this.writeIndex().then(
        () => (this.indexFailing = false),
        (err: unknown) => {
          if (!this.indexFailing) process.emitWarning(`falconet cache: writing ${this.dir}'s index failed: ${(err as Error).message}`);
          this.indexFailing = true;
        },
      );
    }
    this.writing = null;
  }

  private async writeIndex(): Promise<void> {
    const out: IndexFile = { version: 1, entries: {} };
    for (const e of this.entries.values()) {
      out.entries[e.key] = { file: e.file, size: e.size, lastUsed: e.lastUsed, ...(e.sha256 ? { sha256: e.sha256 } : {}) };
    }
    const tmp = path.join(this.dir, INDEX + '.tmp');
    const fh = await fsp.open(tmp, 'w');
    await fh.writeFile(JSON.stringify(out)).then(() => fh.sync()).finally(() => fh.close());
    await fsp.rename(tmp, path.join(this.dir, INDEX));
  }
}
