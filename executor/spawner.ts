/**
 * The executor's side of the spawn helper (executor/spawn-helper/spawn-helper.c): a small C
 * process started once, lazily, that starts command tasks with posix_spawn and reports their
 * outcomes over a pipe. Node's child_process.spawn forks the whole executor (~80 MB of address
 * space) on the event loop for every task, which caps an executor at a fraction of what the
 * machine can start; the helper's spawns cost what a C loop's do and happen off our event loop.
 * See docs/architecture.md ("Starting processes").
 *
 * Requests are framed into one buffer per turn (a microtask), so that the tasks started by one
 * dispatcher message cost one write. Responses are parsed in place from the read chunks.
 *
 * Queue: the executor sets a limit on tasks running at once ({@link SpawnHelper.setLimit}) and
 * may hand the helper more `limited` tasks than that; the extra ones wait in the helper, which
 * starts the next one as soon as a running one is reaped, without a round trip through us. The
 * helper reports each start with its time ('P'); the task's `started` callback gets it (its
 * startedAt, and when its timeout begins). While tasks wait there, the helper may hold the results
 * of limited tasks for up to the hold given with the limit and send them in one batch (see
 * "Batches" in the C source): each result carries its own finish time.
 *
 * The helper is optional: when its binary is missing, stale (wrong hello) or keeps dying, tasks
 * fall back to Node's child_process (runner.ts) after one warning. A task running in a helper that
 * dies finishes failed with SPAWN_HELPER_LOST; the next task starts a new helper.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';

/** Must match VERSION in spawn-helper.c; a binary built from another version is not used. */
export const HELPER_PROTOCOL_VERSION = 4;
const MAGIC = 'falconet-spawn-helper';
/** Deaths after which we stop restarting the helper and use Node's spawn for good. */
const MAX_DEATHS = 3;

/** Where `npm run build` puts the helper (scripts/build-spawn-helper.mjs). */
export const DEFAULT_HELPER_PATH = fileURLToPath(new URL('./falconet-spawn-helper', import.meta.url));

/** What the helper reports for one task. */
export type HelperResult =
  | {
      kind: 'exited';
      exitCode: number | null;
      signal: NodeJS.Signals | null;
      stdout: string;
      stderr: string;
      truncated: boolean;
      /**
       * A kill ({@link SpawnHelper.kill}) reached the main process while it ran. False when it
       * ended on its own, even if a kill was asked after (its result may have been held).
       */
      killed: boolean;
      /** When the main process was reaped (ms since the epoch): the result may arrive later. */
      finishedAt: number;
    }
  /** The command did not start; `code` is the errno name (ENOENT), as Node's spawn errors carry. */
  | { kind: 'spawn-failed'; code: string; message: string }
  /**
   * The helper died while the task ran or waited in its queue; its process group was killed (if
   * the helper had told us its pid).
   */
  | { kind: 'lost'; message: string }
  /** The task was killed while it waited in the helper's queue: it never started. */
  | { kind: 'not-started' }
  /** The helper could not be used (stale or failed to start) before the task started: run it another way. */
  | { kind: 'unavailable' };

/** One task as the helper starts it. Strings must not contain NUL (the caller checks). */
export interface HelperSpawn {
  argv: readonly string[];
  /** The task's whole environment. Pass the same object again to reuse its encoding. */
  env: NodeJS.ProcessEnv;
  cwd?: string;
  stdin?: string;
  outputLimit: number;
  /**
   * Counted against the helper's limit ({@link SpawnHelper.setLimit}): waits in the helper's
   * queue while the limit is reached. Unlimited tasks start at once and are not counted.
   */
  limited?: boolean;
}

/** Called when the helper reports a task started: its real start time (ms since the epoch). */
export type HelperStarted = (startedAt: number) => void;

/**
 * Where a followed task's output goes ({@link SpawnHelper.tail}): `snapshot` begins what the helper
 * kept (then `data` of each stream), with the bytes written and not kept; then `data` as the task
 * writes; `lost` when the helper could not send some of it (we read it too slowly).
 */
export interface HelperOutputSink {
  snapshot(notKept: number): void;
  data(stream: 'stdout' | 'stderr', bytes: Buffer): void;
  lost(bytes: number): void;
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));
const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

let log: Logger | undefined;
/** Warnings go to stderr as the executor's own log lines do (FALCONET_LOG sets the level). */
function warn(obj: object, msg: string): void {
  log ??= pino({ name: 'executor', level: process.env.FALCONET_LOG ?? 'info' }, pino.destination(2));
  log.warn(obj, msg);
}

/** Encoded environments, by object: the base environment is the same object for every task. */
const envCache = new WeakMap<object, { count: number; bytes: Buffer }>();

function encodeEnv(env: NodeJS.ProcessEnv): { count: number; bytes: Buffer } {
  let cached = envCache.get(env);
  if (cached) return cached;
  const parts: string[] = [];
  for (const k in env) {
    const v = env[k];
    if (v !== undefined) parts.push(`${k}=${v}`);
  }
  let size = 0;
  for (const p of parts) size += 4 + Buffer.byteLength(p);
  const bytes = Buffer.allocUnsafe(size);
  let off = 0;
  for (const p of parts) {
    const n = bytes.write(p, off + 4);
    bytes.writeUInt32LE(n, off);
    off += 4 + n;
  }
  cached = { count: parts.length, bytes };
  envCache.set(env, cached);
  return cached;
}

/**
 * One helper process and the tasks it runs. Use {@link SpawnHelper.for}; `start` returns null
 * when the helper cannot be used at all (the caller then runs the task with Node's spawn).
 */
export class SpawnHelper {
  static #byPath = new Map<string, SpawnHelper>();

  /**
   * The helper for a binary path and a scope (one process per pair, started on first use). A
   * helper's limit is shared by everything that uses it: an executor that sets one uses a scope
   * of its own, so that another in the same process (tests) does not share its limit.
   */
  static for(path: string = DEFAULT_HELPER_PATH, scope = ''): SpawnHelper {
    const key = `${scope}\0${path}`;
    let h = SpawnHelper.#byPath.get(key);
    if (!h) SpawnHelper.#byPath.set(key, (h = new SpawnHelper(path)));
    return h;
  }

  #child: ChildProcess | null = null;
  #ready = false;
  #disabled: string | null = null;
  #deaths = 0;
  /** Callbacks of the tasks in the helper, by id; ids are reused (the helper indexes by them). */
  #tasks: Array<((r: HelperResult) => void) | undefined> = [];
  #freeIds: number[] = [];
  /** The start callbacks of the tasks in the helper, by id, until their start was reported. */
  #onStart: Array<HelperStarted | undefined> = [];
  /** The limit on limited tasks, or null for none. */
  #limit: number | null = null;
  /** How long the helper may hold limited tasks' results to send them together, ms. */
  #hold = 0;
  /**
   * The limit the current helper process has, and how many limited tasks it holds: the limit is
   * sent only while it matters (before a limited task, or while any is there), so that an
   * executor running builtins, whose slots change the limit with every task, costs the helper
   * no wakeups.
   */
  #limitSent: number | null = null;
  #holdSent = 0;
  #limitedIn = 0;
  #isLimited: boolean[] = [];
  /** Where each followed task's output goes, by id. */
  #tails: Array<HelperOutputSink | undefined> = [];
  /** The process group of each running task, once the helper told us (lazily: see 'P' in the C). */
  #pgids: Array<number | undefined> = [];
  #running = 0;
  #out = Buffer.allocUnsafe(64 * 1024);
  #outLen = 0;
  #flushQueued = false;
  #in: Buffer | null = null;

  private constructor(readonly path: string) {}

  /** Whether tasks may still be given to this helper (false once it fell back to Node for good). */
  get usable(): boolean {
    return this.#disabled === null && (this.#child !== null || existsSync(this.path) || this.#disable('binary not found'));
  }

  /**
   * Whether the helper runs and said hello: only then may an executor hand it more limited tasks
   * than its limit. Before the hello the helper may yet turn out stale, and its tasks would all
   * start at once with Node's spawn.
   */
  get ready(): boolean {
    return this.#ready && this.#child !== null && this.#disabled === null;
  }

  /**
   * Sets how many limited tasks may run at once (a whole number ≥ 0); the others wait in the
   * helper, oldest first. Lowering it stops nothing that runs: it holds back the next starts.
   * `holdMs` (default 0: none): while tasks wait, the results of limited tasks may wait in the
   * helper up to this long, to come in one batch (a whole number of ms).
   */
  setLimit(n: number, holdMs = 0): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`spawn helper limit must be a whole number ≥ 0, not ${n}`);
    if (!Number.isInteger(holdMs) || holdMs < 0) throw new RangeError(`spawn helper hold must be a whole number of ms ≥ 0, not ${holdMs}`);
    this.#limit = n;
    this.#hold = holdMs;
    if (this.#limitedIn > 0) this.#syncLimit();
  }

  #syncLimit(): void {
    if (this.#limit === null || (this.#limit === this.#limitSent && this.#hold === this.#holdSent)) return;
    this.#limitSent = this.#limit;
    this.#holdSent = this.#hold;
    this.#reserve(13);
    const o = this.#outLen;
    this.#out.writeUInt32LE(9, o);
    this.#out[o + 4] = 0x4c; // 'L'
    this.#out.writeUInt32LE(this.#limit, o + 5);
    this.#out.writeUInt32LE(this.#hold, o + 9);
    this.#outLen += 13;
    this.#queueFlush();
  }

  /**
   * Starts a task; `done` is called once, `started` (if given) once when the helper reports the
   * task's start, before `done` (never for a task that did not start). Returns the task's id, or
   * null if the helper is unusable.
   */
  start(task: HelperSpawn, done: (r: HelperResult) => void, started?: HelperStarted): number | null {
    if (!this.usable) return null;
    if (!this.#child) this.#launch();
    const id = this.#freeIds.pop() ?? this.#tasks.length;
    this.#tasks[id] = done;
    this.#onStart[id] = started;
    this.#isLimited[id] = task.limited === true;
    if (task.limited) {
      this.#syncLimit(); // framed before the spawn request: the helper reads them in order
      this.#limitedIn++;
    }
    if (this.#running++ === 0) this.#ref(true);
    this.#frameSpawn(id, task);
    return id;
  }

  /** Sends `signal` to the task's process group (nothing once the task has finished). */
  kill(id: number, signal: NodeJS.Signals): void {
    if (!this.#tasks[id]) return;
    this.#reserve(13);
    const o = this.#outLen;
    this.#out.writeUInt32LE(9, o);
    this.#out[o + 4] = 0x4b; // 'K'
    this.#out.writeUInt32LE(id, o + 5);
    this.#out.writeInt32LE(constants.signals[signal], o + 9);
    this.#outLen += 13;
    this.#queueFlush();
  }

  /**
   * Follows a task's output (`sink`: a snapshot of what the helper kept, then each read as it
   * comes) or stops (null). Nothing once the task has finished.
   */
  tail(id: number, sink: HelperOutputSink | null): void {
    if (!this.#tasks[id]) return;
    this.#tails[id] = sink ?? undefined;
    this.#reserve(10);
    const o = this.#outLen;
    this.#out.writeUInt32LE(6, o);
    this.#out[o + 4] = 0x54; // 'T'
    this.#out.writeUInt32LE(id, o + 5);
    this.#out[o + 9] = sink ? 1 : 0;
    this.#outLen += 10;
    this.#queueFlush();
  }

  #disable(why: string, extra: object = {}): false {
    if (this.#disabled === null) {
      this.#disabled = why;
      warn({ path: this.path, ...extra }, `spawn helper not used (${why}); starting commands with Node's child_process instead, which is slower`);
    }
    return false;
  }

  #launch(): void {
    this.#ready = false;
    this.#in = null;
    this.#limitSent = null; // a new process: no limit and no hold until told
    this.#holdSent = 0;
    const child = spawn(this.path, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#child = child;
    child.stdin!.on('error', () => {}); // EPIPE when it died: 'close' below handles that
    child.stdout!.on('data', (chunk: Buffer) => {
      if (this.#child === child) this.#onData(chunk); // not a helper we already gave up on
    });
    child.once('error', (err) => this.#onDeath(child, `could not start: ${err.message}`));
    child.once('close', (code, signal) => this.#onDeath(child, signal ? `killed by ${signal}` : `exited with code ${code}`));
  }

  /** Keeps the event loop alive while tasks run, as their child processes would. */
  #ref(on: boolean): void {
    const c = this.#child;
    if (!c) return;
    for (const h of [c, c.stdin, c.stdout] as Array<{ ref?(): void; unref?(): void } | null>) {
      if (on) h?.ref?.();
      else h?.unref?.();
    }
  }

  #onDeath(child: ChildProcess, why: string): void {
    if (this.#child !== child) return;
    this.#child = null;
    const wasReady = this.#ready;
    const tasks = this.#tasks;
    // Its tasks are orphans now: kill the groups we know of (all but those started in the last
    // few ms, whose 'P' had not been sent yet).
    for (let id = 0; id < tasks.length; id++) {
      const pgid = this.#pgids[id];
      if (tasks[id] && pgid) {
        try {
          process.kill(-pgid, 'SIGKILL');
        } catch {
          // ESRCH: gone already
        }
      }
    }
    const pgids = this.#pgids; // a task's pid reached us with its start report
    this.#tasks = [];
    this.#onStart = [];
    this.#tails = [];
    this.#pgids = [];
    this.#isLimited = [];
    this.#limitedIn = 0;
    this.#freeIds = [];
    this.#running = 0;
    this.#outLen = 0;
    this.#in = null;
    if (!wasReady) this.#disable(`it ${why} before its hello`);
    else if (++this.#deaths >= MAX_DEATHS) this.#disable(`it died ${this.#deaths} times, last ${why}`);
    else warn({ path: this.path, deaths: this.#deaths }, `spawn helper ${why}; its running and waiting tasks fail, the next ones start a new helper`);
    // Tasks that waited in its queue fail too (rather than being started again here): they may
    // have started in its last few ms without our knowing. SPAWN_HELPER_LOST is retryable, so the
    // dispatcher runs such a task again while it has attempts left (its maxAttempts).
    const ran: HelperResult = { kind: 'lost', message: `the executor's spawn helper ${why} while the task ran; its process group was killed` };
    const waited: HelperResult = { kind: 'lost', message: `the executor's spawn helper ${why} before it reported the task's start; the task's process group, if it started, was killed` };
    for (let id = 0; id < tasks.length; id++) tasks[id]?.(wasReady ? (pgids[id] !== undefined ? ran : waited) : { kind: 'unavailable' });
  }

  /** The helper said something we cannot read: kill it and fail its tasks as if it had died. */
  #broken(why: string): void {
    const child = this.#child;
    if (!child) return;
    this.#onDeath(child, why);
    child.kill('SIGKILL');
  }

  #reserve(n: number): void {
    if (this.#out.length - this.#outLen >= n) return;
    let size = this.#out.length * 2;
    while (size - this.#outLen < n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#out.copy(next, 0, 0, this.#outLen);
    this.#out = next;
  }

  #putString(s: string): void {
    this.#reserve(4 + s.length * 3);
    const n = this.#out.write(s, this.#outLen + 4);
    this.#out.writeUInt32LE(n, this.#outLen);
    this.#outLen += 4 + n;
  }

  #frameSpawn(id: number, t: HelperSpawn): void {
    const env = encodeEnv(t.env);
    this.#reserve(25 + env.bytes.length);
    const start = this.#outLen;
    const o = this.#out;
    o[start + 4] = 0x53; // 'S'
    o.writeUInt32LE(id, start + 5);
    o.writeUInt32LE((t.stdin !== undefined ? 1 : 0) | (t.cwd !== undefined ? 2 : 0) | (t.limited ? 4 : 0), start + 9);
    o.writeUInt32LE(Math.min(t.outputLimit, 0xffffffff), start + 13);
    o.writeUInt32LE(t.argv.length, start + 17);
    o.writeUInt32LE(env.count, start + 21);
    this.#outLen += 25;
    if (t.cwd !== undefined) this.#putString(t.cwd);
    for (const a of t.argv) this.#putString(a);
    this.#reserve(env.bytes.length);
    env.bytes.copy(this.#out, this.#outLen);
    this.#outLen += env.bytes.length;
    if (t.stdin !== undefined) this.#putString(t.stdin);
    this.#out.writeUInt32LE(this.#outLen - start - 4, start);
    this.#queueFlush();
  }

  #queueFlush(): void {
    if (this.#flushQueued || !this.#ready) return; // before the hello, frames wait in the buffer
    this.#flushQueued = true;
    queueMicrotask(() => this.#flush());
  }

  #flush(): void {
    this.#flushQueued = false;
    if (!this.#child || this.#outLen === 0) return;
    // The stream keeps the buffer until written: hand it a copy and keep ours for the next turn.
    this.#child.stdin!.write(Buffer.from(this.#out.subarray(0, this.#outLen)));
    this.#outLen = 0;
  }

  #onData(chunk: Buffer): void {
    let buf = chunk;
    if (this.#in) {
      buf = Buffer.concat([this.#in, chunk]);
      this.#in = null;
    }
    let off = 0;
    while (buf.length - off >= 5) {
      const len = buf.readUInt32LE(off);
      if (buf.length - off - 4 < len) break;
      try {
        this.#onFrame(buf, off + 4, off + 4 + len);
      } catch (err) {
        // A frame too short for its type (reads past the buffer): out of step, as below.
        this.#broken(`sent a frame that cannot be read (${(err as Error)?.message})`);
        return;
      }
      off += 4 + len;
      if (!this.#child) return; // a bad hello killed it
    }
    if (off < buf.length) this.#in = buf.subarray(off);
  }

  /** 'O': live output of a followed task (copied out: the read buffer is reused). */
  #onOutput(b: Buffer, start: number, end: number): void {
    const sink = this.#tails[b.readUInt32LE(start + 1)];
    if (!sink) return; // stopped following meanwhile, or finished
    const what = b[start + 5];
    if (what === 0 || what === 1) sink.data(what === 0 ? 'stdout' : 'stderr', Buffer.from(b.subarray(start + 6, end)));
    else if (what === 2) sink.snapshot(b.readUInt32LE(start + 6));
    else if (what === 3) sink.lost(b.readUInt32LE(start + 6));
  }

  #onFrame(b: Buffer, start: number, end: number): void {
    const type = b[start];
    if (type === 0x48 /* H */) {
      const version = b[start + 1];
      const magic = b.toString('latin1', start + 2, end);
      if (version !== HELPER_PROTOCOL_VERSION || magic !== MAGIC) {
        const child = this.#child!;
        this.#onDeath(child, `speaks version ${version} (${JSON.stringify(magic)}), not ${HELPER_PROTOCOL_VERSION}: a stale build`);
        child.kill('SIGKILL');
        return;
      }
      this.#ready = true;
      this.#queueFlush();
      return;
    }
    if (type === 0x4f /* O */) return this.#onOutput(b, start, end);
    if (type !== 0x50 /* P */ && type !== 0x52 /* R */ && type !== 0x46 /* F */ && type !== 0x4e /* N */) {
      // A frame we cannot read means we are out of step with the helper (a build of another
      // layout, a corrupted pipe): no later frame can be trusted either. Treat it as dead, so
      // that each of its tasks ends SPAWN_HELPER_LOST (retried by the dispatcher) rather than
      // waiting for an outcome that will never be read.
      this.#broken(`sent a frame of unknown type 0x${type.toString(16).padStart(2, '0')} (out of step with this executor)`);
      return;
    }
    const id = b.readUInt32LE(start + 1);
    const done = this.#tasks[id];
    if (!done) return;
    if (type === 0x50 /* P */) {
      this.#pgids[id] = b.readInt32LE(start + 5);
      const started = this.#onStart[id];
      this.#onStart[id] = undefined;
      started?.(b.readUInt32LE(start + 9) + b.readUInt32LE(start + 13) * 2 ** 32);
      return;
    }
    this.#tasks[id] = undefined;
    this.#onStart[id] = undefined;
    this.#tails[id] = undefined;
    this.#pgids[id] = undefined;
    if (this.#isLimited[id]) this.#limitedIn--;
    this.#freeIds.push(id);
    if (--this.#running === 0) this.#ref(false);
    if (type === 0x52 /* R */) {
      const exit = b.readInt32LE(start + 5);
      const sig = b.readInt32LE(start + 9);
      const truncated = b[start + 13] !== 0;
      const killed = b[start + 14] !== 0;
      const finishedAt = b.readUInt32LE(start + 15) + b.readUInt32LE(start + 19) * 2 ** 32;
      const outLen = b.readUInt32LE(start + 23);
      const outStart = start + 27;
      const errLen = b.readUInt32LE(outStart + outLen);
      const errStart = outStart + outLen + 4;
      done({
        kind: 'exited',
        exitCode: exit < 0 ? null : exit,
        signal: sig === 0 ? null : (SIGNAL_NAMES.get(sig) ?? (`SIG${sig}` as NodeJS.Signals)),
        stdout: outLen === 0 ? '' : b.toString('utf8', outStart, outStart + outLen),
        stderr: errLen === 0 ? '' : b.toString('utf8', errStart, errStart + errLen),
        truncated,
        killed,
        finishedAt,
      });
    } else if (type === 0x46 /* F */) {
      const errno = b.readInt32LE(start + 5);
      const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
      done({ kind: 'spawn-failed', code, message: b.toString('utf8', start + 9, end) });
    } else if (type === 0x4e /* N */) {
      done({ kind: 'not-started' });
    }
  }
}
