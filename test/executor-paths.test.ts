/**
 * "Every path ends", on the executor: each failure of its own (a setup log too long for the
 * protocol, a sandbox or cache directory that cannot be made, a spawn helper that speaks nonsense)
 * ends the attempt with a result the dispatcher accepts, and the executor goes on serving; its
 * results are kept until the dispatcher acknowledges them. Real processes, except the spawn helper
 * case (in-process, with a fake helper binary) and a fake dispatcher where only one can send acks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { connect, type Client, type TaskResult, type TaskSpec } from '../client/index.js';
import { Codec, ErrorCode, LIMITS, PROTOCOL_VERSION } from '../protocol/index.js';
import { runAttempt, taskBaseEnv } from '../executor/runner.js';
import { HELPER_PROTOCOL_VERSION } from '../executor/spawner.js';
import { Procs, runCli, startDispatcher, startExecutor, waitExecutors } from './helpers.js';

const T = { timeout: 120_000 };

/** Rejects as soon as `proc` exits: a task whose executor died will not end, so fail at once. */
function orExit<V>(proc: ChildProcess, p: Promise<V>): Promise<V> {
  return new Promise<V>((resolve, reject) => {
    const onExit = (code: number | null, signal: string | null) => reject(new Error(`the executor exited (${code ?? signal}) before the task ended`));
    if (proc.exitCode !== null || proc.signalCode !== null) return onExit(proc.exitCode, proc.signalCode);
    proc.once('exit', onExit);
    p.then(resolve, reject).finally(() => proc.off('exit', onExit));
  });
}

/** A dispatcher with one executor started with `env` and `args`, and a client. */
async function setup(procs: Procs, t: { after(fn: () => unknown): void }, env: NodeJS.ProcessEnv, args: string[] = []): Promise<{ client: Client; ex: ChildProcess; run(spec: TaskSpec): Promise<TaskResult> }> {
  const d = await startDispatcher(procs);
  const ex = startExecutor(procs, d.url, ['--id', 'solo', '--slots', '2', ...args], env);
  await orExit(ex, waitExecutors(d.url, 1));
  const client = await connect(d.url);
  t.after(() => client.close());
  return { client, ex, run: (spec) => orExit(ex, client.submit(spec)) };
}

test('a named environment whose setup prints 1 MiB and fails ends ENVIRONMENT_FAILED, its message within LIMITS.errorChars', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const { run } = await setup(procs, t, { FALCONET_CACHE_DIR: join(procs.tmpDir(), 'cache') });
  // One line of 1 MiB, then the line that says why: the tail must be the end of the log, bounded.
  const environment = { name: 'loud', setup: ['sh', '-c', 'head -c 1048576 /dev/zero | tr "\\0" x; echo; echo the-last-line >&2; exit 3'] };
  const r = await run({ cmd: ['true'], environment });
  assert.equal(r.status, 'failed');
  assert.equal(r.error?.code, ErrorCode.ENVIRONMENT_FAILED);
  assert.ok(r.error!.message.length <= LIMITS.errorChars, `message of ${r.error!.message.length} characters`);
  assert.match(r.error!.message, /setup failed: exited with code 3; log tail:\n\[\.\.\.\]x+the-last-line$/);
  // The failure is remembered: the next task fails at once, just as bounded.
  const again = await run({ cmd: ['true'], environment });
  assert.equal(again.error?.code, ErrorCode.ENVIRONMENT_FAILED);
  assert.ok(again.error!.message.length <= LIMITS.errorChars);
});

test('--output-limit above LIMITS.outputBytes is a USAGE error; at 1 MiB a 5 MiB print comes back truncated', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  // --dispatcher-timeout: an executor that wrongly starts retires (exit 0) instead of dialing forever.
  const base = ['executor', '--dispatcher', 'ws://127.0.0.1:9', '--dispatcher-timeout', '2'];
  const flag = await runCli(procs, [...base, '--output-limit', '5000000']);
  assert.equal(flag.code, 2, flag.stderr);
  assert.match(flag.stderr, /USAGE: --output-limit must be at most 1048576 bytes/);
  const env = await runCli(procs, base, { env: { FALCONET_OUTPUT_LIMIT: String(LIMITS.outputBytes + 1) } });
  assert.equal(env.code, 2, env.stderr);
  assert.match(env.stderr, /USAGE: FALCONET_OUTPUT_LIMIT must be at most 1048576 bytes/);

  const { run } = await setup(procs, t, {}, ['--output-limit', String(LIMITS.outputBytes)]);
  const r = await run({ cmd: ['sh', '-c', 'head -c 5242880 /dev/zero | tr "\\0" a'] });
  assert.equal(r.status, 'succeeded', JSON.stringify(r.error));
  assert.equal(r.truncated, true);
  assert.equal(r.stdout.length, LIMITS.outputBytes);
});

test('a work dir that cannot be made (under a regular file): the task fails SANDBOX_FAILED and the executor keeps serving', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const tmp = procs.tmpDir();
  // A regular file where a directory should be: ENOTDIR, which stops root too (permission bits would not).
  writeFileSync(join(tmp, 'file'), 'not a directory');
  writeFileSync(join(tmp, 'in.txt'), 'input\n');
  const { ex, run } = await setup(procs, t, { FALCONET_WORK_DIR: join(tmp, 'file', 'work'), FALCONET_CACHE_DIR: join(tmp, 'cache') });
  const r = await run({ cmd: ['cat', 'in.txt'], inputs: [{ src: join(tmp, 'in.txt'), dst: 'in.txt' }] });
  assert.equal(r.status, 'failed');
  assert.equal(r.error?.code, ErrorCode.SANDBOX_FAILED);
  assert.match(r.error!.message, /ENOTDIR/);
  const next = await run({ cmd: ['echo', 'still-serving'] });
  assert.equal(next.status, 'succeeded');
  assert.equal(next.stdout, 'still-serving\n');
  assert.equal(next.executor, 'solo');
  assert.equal(ex.exitCode, null, 'the executor is still running');
});

test('a cache dir that cannot be opened: CACHE_UNAVAILABLE, the executor keeps serving, and the next data task tries again', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const tmp = procs.tmpDir();
  const blocker = join(tmp, 'blocker');
  writeFileSync(blocker, 'not a directory');
  writeFileSync(join(tmp, 'in.txt'), 'input\n');
  const { ex, run } = await setup(procs, t, { FALCONET_CACHE_DIR: join(blocker, 'cache'), FALCONET_WORK_DIR: join(tmp, 'work') });
  const task: TaskSpec = { cmd: ['cat', 'in.txt'], inputs: [{ src: join(tmp, 'in.txt'), dst: 'in.txt' }] };
  const r = await run(task);
  assert.equal(r.status, 'failed');
  assert.equal(r.error?.code, ErrorCode.CACHE_UNAVAILABLE);
  const plain = await run({ cmd: ['echo', 'still-serving'] });
  assert.equal(plain.stdout, 'still-serving\n');
  // The failed open is not remembered: once the directory can be made, the next task uses it.
  rmSync(blocker);
  const healed = await run(task);
  assert.equal(healed.status, 'succeeded', JSON.stringify(healed.error));
  assert.equal(healed.stdout, 'input\n');
  assert.equal(ex.exitCode, null, 'the executor is still running');
});

test('a spawn helper frame of an unknown type ends the task SPAWN_HELPER_LOST instead of never', T, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'falconet-fake-helper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Says a correct hello, then answers every spawn request with a frame of type 'Z'.
  const fake = join(dir, 'fake-helper');
  writeFileSync(
    fake,
    `#!${process.execPath}
const magic = 'falconet-spawn-helper';
const hello = Buffer.alloc(6 + magic.length);
hello.writeUInt32LE(2 + magic.length, 0); hello[4] = 0x48; hello[5] = ${HELPER_PROTOCOL_VERSION}; hello.write(magic, 6, 'latin1');
process.stdout.write(hello);
let buf = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
    const len = buf.readUInt32LE(0);
    if (buf[4] === 0x53) {
      const f = Buffer.alloc(9); f.writeUInt32LE(5, 0); f[4] = 0x5a; f.writeUInt32LE(buf.readUInt32LE(5), 5);
      process.stdout.write(f);
    }
    buf = buf.subarray(4 + len);
  }
});
`,
  );
  chmodSync(fake, 0o755);
  const r = await runAttempt({ cmd: ['/bin/true'] }, { outputLimit: 1024, killGraceMs: 100, baseEnv: taskBaseEnv(), spawner: 'helper', helperPath: fake, helperScope: 'unknown-frame' }).done;
  assert.equal(r.status, 'failed');
  assert.equal(r.error?.code, ErrorCode.SPAWN_HELPER_LOST);
  assert.match(r.error!.message, /unknown type 0x5a/);
});

test('crash-only: an unhandled rejection or uncaught exception in the executor process exits 70 after logging it', T, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const dir = procs.tmpDir();
  for (const [kind, fault, logged] of [
    ['rejection', 'Promise.reject(new Error("injected fault"))', /unhandled promise rejection; exiting/],
    ['exception', '(() => { throw new Error("injected fault"); })()', /uncaught exception; exiting/],
  ] as const) {
    // Preloaded into the executor: waits until the executor installed its handlers (or 5 s, for
    // the code before them, where Node's own default then decides), then injects the fault.
    const preload = join(dir, `${kind}.mjs`);
    writeFileSync(preload, `const t0 = Date.now();
const poll = setInterval(() => {
  if (process.listenerCount('unhandledRejection') === 0 && Date.now() - t0 < 5000) return;
  clearInterval(poll);
  ${fault};
}, 10);
`);
    const ex = startExecutor(procs, d.url, ['--id', `crash-${kind}`], { NODE_OPTIONS: `--import ${preload}`, FALCONET_LOG: 'info' });
    let stderr = '';
    ex.stderr!.on('data', (b: Buffer) => (stderr += b));
    const code = await new Promise<number | null>((r) => ex.once('exit', (c) => r(c)));
    assert.equal(code, 70, `${kind}: ${stderr.slice(-2000)}`);
    assert.match(stderr, logged);
    assert.match(stderr, /injected fault/);
  }
});

/** A dispatcher that only does what a test tells it: welcome, assign, ack, drop the connection. */
class FakeDispatcher {
  readonly wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  readonly #conns: Conn[] = [];
  #waiters: Array<() => void> = [];
  constructor() {
    this.wss.on('connection', (ws) => {
      this.#conns.push(new Conn(ws));
      for (const w of this.#waiters.splice(0)) w();
    });
  }
  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`;
  }
  /** The n-th connection (0-based), once it is there. */
  async conn(n: number): Promise<Conn> {
    while (this.#conns.length <= n) await new Promise<void>((r) => this.#waiters.push(r));
    return this.#conns[n];
  }
  close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    return new Promise((r) => this.wss.close(() => r()));
  }
}

class Conn {
  readonly messages: Array<Record<string, any>> = [];
  readonly #codec = new Codec();
  #seen = 0;
  #waiters: Array<() => void> = [];
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      for (const m of this.#codec.decode(data) as Array<Record<string, any>>) if (m.t !== 'hb') this.messages.push(m);
      for (const w of this.#waiters.splice(0)) w();
    });
  }
  send(...msgs: unknown[]): void {
    for (const frame of this.#codec.encode(msgs)) this.ws.send(frame);
  }
  welcome(): void {
    this.send({ t: 'welcome', v: PROTOCOL_VERSION, role: 'executor', heartbeatMs: 200, leaseMs: 10_000, maxFrameBytes: 16 << 20, caps: [] });
  }
  /** The next message (after the ones already returned) that `pred` accepts. */
  async next(pred: (m: Record<string, any>) => boolean): Promise<Record<string, any>> {
    for (;;) {
      while (this.#seen < this.messages.length) {
        const m = this.messages[this.#seen++];
        if (pred(m)) return m;
      }
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }
}

const doneOf = (uid: number) => (m: Record<string, any>) => m.t === 'done' && m.result.uid === uid;
const noop = (uid: number) => ({ t: 'task', uid, attempt: 1, spec: { builtin: 'noop' } });

test('results are kept until acknowledged: resent and listed in the hello after a reconnect, forgotten once acked', T, async (t) => {
  const procs = new Procs();
  const fake = new FakeDispatcher();
  t.after(async () => {
    await procs.killAll();
    await fake.close();
  });
  await new Promise<void>((r) => fake.wss.once('listening', () => r()));
  const ex = startExecutor(procs, fake.url, ['--id', 'outboxer', '--slots', '2']);

  // 1. A result is sent at once, and not acknowledged before the connection drops.
  const c1 = await orExit(ex, fake.conn(0));
  await c1.next((m) => m.t === 'hello');
  c1.welcome();
  c1.send(noop(1));
  await orExit(ex, c1.next(doneOf(1)));
  c1.ws.terminate();

  // 2. The next hello still holds it, and it comes again after the welcome.
  const c2 = await orExit(ex, fake.conn(1));
  const hello2 = await c2.next((m) => m.t === 'hello');
  assert.deepEqual(hello2.executor.running, [{ uid: 1, attempt: 1 }]);
  c2.welcome();
  const again = await orExit(ex, c2.next(doneOf(1)));
  assert.equal(again.result.status, 'succeeded');

  // 3. Once acknowledged it is forgotten: neither in the next hello nor sent again.
  c2.send({ t: 'ack', done: [{ uid: 1, attempt: 1 }] }, noop(2));
  await orExit(ex, c2.next(doneOf(2)));
  c2.ws.terminate();
  const c3 = await orExit(ex, fake.conn(2));
  const hello3 = await c3.next((m) => m.t === 'hello');
  assert.deepEqual(hello3.executor.running, [{ uid: 2, attempt: 1 }]);
  c3.welcome();
  c3.send(noop(3));
  // What is resent goes out in the welcome's turn, before task 3 can even have run.
  await orExit(ex, c3.next(doneOf(3)));
  const resent = c3.messages.filter((m) => m.t === 'done').map((m) => m.result.uid);
  assert.deepEqual(resent.sort(), [2, 3], 'task 2 (not acked) again, task 1 (acked) not');
});
