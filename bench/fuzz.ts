/**
 * A seeded, structure-aware protocol fuzzer (issue 14 item 7) against a real dispatcher process,
 * with an honest SDK client and an honest executor process working beside it.
 *
 * fast-check generates rounds of actions from the message shapes of protocol/messages.ts: valid
 * messages of both roles, then mutated ones (a field dropped or of the wrong type, huge strings,
 * unknown and non-string `t`, 64-bit integers, extra fields, not a map at all), wrong order
 * (submit before hello, a second hello), executors reporting attempts that are not theirs
 * (forged `done` for uids around the ones they saw) or taking over the honest executor's id,
 * garbage frames (random bytes, text, truncated or deeply nested msgpack, oversized frames) and
 * pre-hello floods from several loopback addresses. The actions of a round run concurrently.
 *
 * It fails on: the dispatcher exiting, /healthz not answering (a hang), any INTERNAL error or
 * 1011 close received by anyone, an honest result lost, duplicated or changed, and dispatcher RSS
 * past a budget. Usage: `npm run fuzz -- --minutes N [--seed S]` (FALCONET_FUZZ_SEED too).
 *
 * The honest side is kept apart by construction, so that fuzz traffic can only reach it through
 * a dispatcher bug: honest tasks need a label only the honest executor carries; fuzz tasks that
 * are valid are harmless commands (the honest executor may run them: no shell, no inputs, no
 * cwd); fuzz ids never start with the honest prefix; `cancel` across sessions with `all`, and
 * `drain` of the honest executor, are not generated (both are allowed to any client today:
 * docs/security.md).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { Packr, Unpackr } from 'msgpackr';
import { connect, type Client, type TaskResult } from '../client/index.js';
import { PROTOCOL_VERSION } from '../protocol/index.js';
import { taskProblem } from '../protocol/validate.js';
import { Procs, startDispatcher, startExecutor, waitExecutors, within, type Dispatcher } from '../test/helpers.js';
import { loadFastCheck, rssOf, fdsOf, healthy, rawUpgrade, streamFrame, clientFrame, mb, MiB, type Arbitrary, type FastCheck } from './hostile.js';

export interface FuzzOptions {
  seed: number;
  /** How long to fuzz (the honest side then drains, which adds a few seconds). */
  ms: number;
  /** Dispatcher RSS that fails the run, in bytes. */
  rssBudget?: number;
  log?: (line: string) => void;
  /** Extra dispatcher flags (e.g. --transport uws). */
  dispatcherArgs?: string[];
}

export interface FuzzReport {
  seed: number;
  rounds: number;
  actions: number;
  frames: number;
  messages: number;
  connections: number;
  /** Error codes the fuzz peers received, with counts. */
  codes: Record<string, number>;
  closeCodes: Record<string, number>;
  honest: { submitted: number; results: number; stray: number };
  rss: { start: number; max: number; end: number; budget: number };
  fds: { start: number; end: number };
  failures: string[];
}

const CLIENT_TOKEN = 'fuzz-client-token';
const EXECUTOR_TOKEN = 'fuzz-executor-token';
const HONEST = 'honest-';
const FRAME_LIMIT = 1 * MiB;
const HELLO_LIMIT = 64 * 1024;

// ---- what the generator produces ------------------------------------------------------------------

type Token = 'client' | 'executor' | 'none' | 'wrong';
/** A value resolved when it is sent: an attempt of this connection's, or a guess at someone else's. */
type AttemptRef = { own: number } | { forged: number; attempt: number };
type Frame =
  | { kind: 'msgs'; records: boolean; msgs: unknown[] }
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'text'; text: string }
  | { kind: 'nested'; depth: number }
  | { kind: 'truncated'; msgs: unknown[]; cut: number };
type Action =
  | { kind: 'client'; token: Token; records: boolean; hello: unknown; frames: Frame[]; linger: number }
  | { kind: 'executor'; token: Token; records: boolean; hello: unknown; frames: Frame[]; linger: number; honestId: boolean }
  | { kind: 'prehello'; frames: Frame[]; big: number; from: number }
  | { kind: 'flood'; n: number; from: number; hold: number; big: boolean };

const BIG64 = [2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 32n, 2n ** 40n];

/** The arbitraries: valid messages of both roles, their mutations, frames, actions. */
function generators(fc: FastCheck) {
  const id = fc.string({ minLength: 1, maxLength: 24 }).filter((s) => !s.startsWith(HONEST) && !s.startsWith('@'));
  const big = fc.constantFrom(...BIG64);
  const huge = fc.constantFrom(300, 70_000, 700_000, 1_500_000, 2_500_000).map((n) => 'h'.repeat(n));
  const scalar = fc.oneof<unknown>(
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.integer({ min: -1, max: 3 }),
    fc.double(),
    big,
    fc.string({ maxLength: 40 }),
    fc.uint8Array({ maxLength: 16 }),
  );
  const anyValue = fc.oneof<unknown>(
    scalar,
    fc.array(scalar, { maxLength: 6 }),
    fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 5 }),
    huge,
  );
  const ms = fc.integer({ min: 0, max: 10_000 });
  const ref = fc.oneof<unknown>(fc.nat(1_000_000), fc.constant(0));

  // Tasks a fuzz client may submit that pass validation: harmless wherever they run.
  const safeRun = fc.oneof<Record<string, unknown>>(
    fc.constant({ builtin: 'noop' }),
    fc.integer({ min: 0, max: 80 }).map((n) => ({ builtin: 'sleep', ms: n })),
    fc.string({ maxLength: 30 }).map((s) => ({ cmd: ['echo', s] })),
    fc.constantFrom({ cmd: ['true'] }, { cmd: ['false'] }),
    fc.string({ maxLength: 30 }).map((s) => ({ cmd: ['printf', '%s', s] })),
  );
  const task = fc
    .tuple(
      safeRun,
      fc.record(
        {
          id,
          priority: fc.integer({ min: -1000, max: 1000 }),
          maxAttempts: fc.integer({ min: 1, max: 100 }),
          timeoutMs: fc.integer({ min: 1, max: 10_000 }),
          labels: fc.constantFrom({ fuzz: '1' }, { fuzz: '2' }, {}),
          env: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).map((k) => `F_${k}`), fc.string({ maxLength: 20 }), { maxKeys: 3 }),
          retryOnExit: fc.array(fc.integer({ min: 1, max: 255 }), { maxLength: 3 }),
        },
        { requiredKeys: [] },
      ),
    )
    .map(([run, rest]) => ({ ...run, ...rest }));

  const clientMsg = fc.oneof<Record<string, unknown>>(
    fc.record({ t: fc.constant('submit'), ref, tasks: fc.array(task, { maxLength: 12 }) }),
    fc.record({ t: fc.constant('cancel'), ref, ids: fc.array(id, { maxLength: 5 }), session: fc.option(fc.oneof(id, fc.constant('*')), { nil: undefined }) }).map(dropUndefined),
    fc.record({ t: fc.constant('cancel'), ref, ids: fc.constant([]), all: fc.constant(true) }),
    fc.record({ t: fc.constant('ack'), cursor: fc.nat(100_000) }),
    fc.record({ t: fc.constant('drain'), ref, executor: id }),
    fc.record({ t: fc.constant('provisioner'), ref, action: fc.constant('reset') }),
    fc
      .record({
        t: fc.constant('query'),
        ref,
        ids: fc.option(fc.array(id, { maxLength: 5 }), { nil: undefined }),
        session: fc.option(id, { nil: undefined }),
        state: fc.option(fc.constantFrom('queued', 'running', 'succeeded', 'failed', 'finished', 'lost'), { nil: undefined }),
        limit: fc.option(fc.integer({ min: 1, max: 10_000 }), { nil: undefined }),
      })
      .map(dropUndefined),
    fc.record({ t: fc.constant('sessions'), ref }),
    fc.record({ t: fc.constant('hb'), at: ms }),
    fc.record({ t: fc.constant('hello'), v: fc.constant(PROTOCOL_VERSION), role: fc.constant('client'), caps: fc.constant([]) }),
  );

  const attemptRef = fc.oneof<AttemptRef>(
    fc.nat(20).map((k) => ({ own: k })),
    fc.record({ forged: fc.integer({ min: -40, max: 40 }), attempt: fc.integer({ min: 0, max: 4 }) }),
  );
  const status = fc.constantFrom('succeeded', 'failed', 'timed_out', 'cancelled');
  const done = fc
    .record({
      ref: attemptRef,
      status,
      exitCode: fc.oneof<number | null>(fc.constant(null), fc.integer({ min: -1, max: 255 })),
      signal: fc.oneof<string | null>(fc.constant(null), fc.constantFrom('SIGKILL', 'SIGTERM')),
      stdout: fc.oneof(fc.string({ maxLength: 50 }), fc.constant('FORGED')),
      stderr: fc.string({ maxLength: 20 }),
      truncated: fc.boolean(),
    })
    .map(({ ref: r, ...rest }) => ({ t: 'done', result: { uid: r, attempt: r, ...rest, startedAt: Date.now(), finishedAt: Date.now() } }));
  const executorMsg = fc.oneof<Record<string, unknown>>(
    done,
    done,
    fc.record({ t: fc.constant('pull'), n: fc.integer({ min: 0, max: 50 }) }),
    fc.record({ t: fc.constant('hb'), at: ms, data: fc.record({ cacheHits: fc.nat(), cacheMisses: fc.nat(), bytesIn: fc.nat(), bytesOut: fc.nat() }), holds: fc.array(fc.string({ maxLength: 64 }), { maxLength: 5 }) }),
    fc.record({ t: fc.constant('bye'), reason: fc.string({ maxLength: 30 }) }),
  );

  // Mutations: each takes a valid message and breaks it one way.
  const mutate = (msg: Arbitrary<Record<string, unknown>>): Arbitrary<unknown> =>
    fc.oneof<unknown>(
      msg,
      msg,
      msg,
      msg,
      fc.tuple(msg, fc.nat(10)).map(([m, k]) => withoutKey(m, k)),
      fc.tuple(msg, fc.nat(10), anyValue).map(([m, k, v]) => withKey(m, k, v)),
      fc.tuple(msg, fc.nat(10), big).map(([m, k, v]) => withKey(m, k, v)),
      fc.tuple(msg, fc.nat(10), huge).map(([m, k, v]) => withKey(m, k, v)),
      fc.tuple(msg, fc.string({ minLength: 1, maxLength: 12 }), anyValue).map(([m, k, v]) => ({ ...m, [`x_${k}`]: v })),
      fc.tuple(msg, fc.string({ maxLength: 12 })).map(([m, t]) => ({ ...m, t: `zz${t}` })),
      fc.tuple(msg, fc.oneof<unknown>(big, fc.integer(), fc.constant(null), fc.boolean(), fc.array(fc.integer(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }))).map(([m, t]) => ({ ...m, t })),
      fc.tuple(msg, fc.nat(10)).map(([m, k]) => deepen(m, k)),
      anyValue,
    );

  // A bad frame closes the connection (BAD_FRAME): rare, so that sessions live long enough.
  const frame = (msg: Arbitrary<unknown>): Arbitrary<Frame> => {
    const msgs = fc.record({ kind: fc.constant('msgs' as const), records: fc.boolean(), msgs: fc.array(msg, { minLength: 1, maxLength: 6 }) });
    return fc.oneof<Frame>(
      ...Array.from({ length: 24 }, () => msgs),
      fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
      fc.record({ kind: fc.constant('text' as const), text: fc.string({ maxLength: 40 }) }),
      fc.record({ kind: fc.constant('nested' as const), depth: fc.constantFrom(50, 5_000, 100_000) }),
      fc.record({ kind: fc.constant('truncated' as const), msgs: fc.array(msg, { minLength: 1, maxLength: 3 }), cut: fc.nat(30) }),
    );
  };

  // Mostly the right credential: most of the state to break lies past the hello.
  const token = fc.constantFrom<Token>('client', 'client', 'client', 'client', 'client', 'client', 'client', 'executor', 'none', 'wrong');
  const eToken = fc.constantFrom<Token>('executor', 'executor', 'executor', 'executor', 'executor', 'executor', 'executor', 'client', 'none', 'wrong');
  const clientHello = fc
    .record({
      t: fc.constant('hello'),
      v: fc.constant(PROTOCOL_VERSION),
      role: fc.constant('client'),
      caps: fc.constantFrom([], ['batch', 'records'], ['x']),
      session: fc.option(id, { nil: undefined }),
      cursor: fc.option(fc.nat(50), { nil: undefined }),
      leaseMs: fc.option(fc.integer({ min: 1, max: 5000 }), { nil: undefined }),
      attachOnly: fc.option(fc.boolean(), { nil: undefined }),
    })
    .map(dropUndefined);
  const executorHello = fc
    .record({
      t: fc.constant('hello'),
      v: fc.constant(PROTOCOL_VERSION),
      role: fc.constant('executor'),
      caps: fc.constantFrom([], ['records']),
      executor: fc.record({
        id,
        hostname: fc.string({ maxLength: 20 }),
        addresses: fc.array(fc.string({ maxLength: 15 }), { maxLength: 2 }),
        slots: fc.integer({ min: 1, max: 64 }),
        memory: fc.oneof<unknown>(fc.nat(), big.filter((b) => b >= 0n && b < 2n ** 53n)),
        labels: fc.constantFrom({ fuzz: '1' }, { fuzz: '2' }, {}, { fuzz: '1', x: 'y' }),
        version: fc.constant('fuzz'),
        incarnation: fc.string({ minLength: 1, maxLength: 12 }),
        mode: fc.constantFrom('push', 'pull'),
        running: fc.array(fc.record({ uid: fc.nat(2000), attempt: fc.nat(3) }), { maxLength: 4 }),
      }),
    });
  const helloOf = (h: Arbitrary<Record<string, unknown>>) =>
    fc.oneof<unknown>(h, h, h, h, h, h, h, h, h, h, h, h, mutate(h), fc.tuple(h, fc.integer({ min: 0, max: 99 })).map(([m, v]) => ({ ...m, v })), fc.tuple(h, big).map(([m, v]) => ({ ...m, v })));

  const action = fc.oneof<Action>(
    fc.record({ kind: fc.constant('client' as const), token, records: fc.boolean(), hello: helloOf(clientHello), frames: fc.array(frame(mutate(clientMsg)), { maxLength: 16 }), linger: fc.integer({ min: 0, max: 400 }) }),
    fc.record({ kind: fc.constant('client' as const), token, records: fc.boolean(), hello: helloOf(clientHello), frames: fc.array(frame(mutate(clientMsg)), { maxLength: 16 }), linger: fc.integer({ min: 0, max: 400 }) }),
    fc.record({
      kind: fc.constant('executor' as const),
      token: eToken,
      records: fc.boolean(),
      hello: helloOf(executorHello),
      frames: fc.array(frame(mutate(executorMsg)), { maxLength: 20 }),
      linger: fc.integer({ min: 0, max: 600 }),
      honestId: fc.integer({ min: 0, max: 19 }).map((k) => k === 0),
    }),
    fc.record({
      kind: fc.constant('executor' as const),
      token: eToken,
      records: fc.boolean(),
      hello: helloOf(executorHello),
      frames: fc.array(frame(mutate(executorMsg)), { maxLength: 20 }),
      linger: fc.integer({ min: 0, max: 600 }),
      honestId: fc.constant(false),
    }),
    fc.record({
      kind: fc.constant('prehello' as const),
      frames: fc.array(frame(mutate(clientMsg)), { minLength: 1, maxLength: 3 }),
      big: fc.constantFrom(0, 0, 0, HELLO_LIMIT + 1, 2 * MiB, 32 * MiB),
      from: fc.integer({ min: 2, max: 9 }),
    }),
    fc.record({ kind: fc.constant('flood' as const), n: fc.integer({ min: 5, max: 120 }), from: fc.integer({ min: 2, max: 9 }), hold: fc.integer({ min: 50, max: 1500 }), big: fc.boolean() }),
  );
  return { round: fc.array(action, { minLength: 3, maxLength: 10 }) };
}

function dropUndefined<T extends Record<string, unknown>>(m: T): T {
  for (const k of Object.keys(m)) if (m[k] === undefined) delete m[k];
  return m;
}
function keyAt(m: Record<string, unknown>, k: number): string | undefined {
  const keys = Object.keys(m);
  return keys.length ? keys[k % keys.length] : undefined;
}
function withoutKey(m: Record<string, unknown>, k: number): Record<string, unknown> {
  const key = keyAt(m, k);
  const out = { ...m };
  if (key !== undefined) delete out[key];
  return out;
}
function withKey(m: Record<string, unknown>, k: number, v: unknown): Record<string, unknown> {
  const key = keyAt(m, k);
  return key === undefined ? m : { ...m, [key]: v };
}
/** Pushes the value of one key a level down (a field where an array or map of it belongs, or the reverse). */
function deepen(m: Record<string, unknown>, k: number): Record<string, unknown> {
  const key = keyAt(m, k);
  return key === undefined ? m : { ...m, [key]: k % 2 ? [m[key]] : { v: m[key] } };
}

// ---- sending ---------------------------------------------------------------------------------------

const plain = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: true, mapsAsObjects: true, int64AsType: 'number' });

/** A task spec a fuzz client sends that would pass validation must be harmless (see the header). */
function harmless(task: unknown): unknown {
  if (taskProblem(task) !== null) return task; // refused anyway
  const t = task as Record<string, unknown>;
  const cmd = t.cmd as string[] | undefined;
  const okCmd = cmd === undefined || (['echo', 'true', 'false', 'printf'].includes(cmd[0]) && !t.shell);
  const okOther = t.inputs === undefined && t.outputs === undefined && t.environment === undefined && t.cwd === undefined && t.shell !== true && (t.ms === undefined || (t.ms as number) <= 200);
  const okLabels = t.labels === undefined || !Object.keys(t.labels as object).some((k) => k.startsWith('honest'));
  const okId = typeof t.id !== 'string' || !t.id.startsWith(HONEST);
  return okCmd && okOther && okLabels && okId ? task : { builtin: 'noop' };
}

interface PeerState {
  /** Attempts this connection was given: {uid, attempt}. */
  own: Array<{ uid: number; attempt: number }>;
}

/** Resolves the generator's placeholders at send time; keeps fuzz traffic away from the honest side. */
function resolve(msg: unknown, st: PeerState, ctx: RunContext): unknown {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return msg;
  const m = msg as Record<string, unknown>;
  if (m.t === 'submit' && Array.isArray(m.tasks)) return { ...m, tasks: m.tasks.map(harmless) };
  if (m.t === 'cancel' && m.session === '*' && m.all === true) return { ...m, all: false };
  if (m.t === 'drain' && m.executor === ctx.honestExecutor) return { ...m, executor: 'nobody' };
  if (m.t === 'done' && m.result && typeof m.result === 'object') {
    const r = m.result as Record<string, unknown>;
    const ref = r.uid as AttemptRef | unknown;
    if (ref && typeof ref === 'object' && ('own' in ref || 'forged' in ref)) {
      let uid: number;
      let attempt: number;
      if ('own' in ref && st.own.length > 0) {
        const a = st.own[(ref as { own: number }).own % st.own.length];
        ({ uid, attempt } = a);
      } else {
        const f = ref as { forged?: number; attempt?: number; own?: number };
        uid = Math.max(0, ctx.maxUid + (f.forged ?? 0));
        attempt = f.attempt ?? 1;
      }
      const sameRef = r.attempt === r.uid;
      return { ...m, result: { ...r, uid, attempt: sameRef ? attempt : r.attempt } };
    }
  }
  return m;
}

function encodeFrame(f: Frame, st: PeerState, ctx: RunContext): { data: Buffer | string; binary: boolean; messages: number } {
  switch (f.kind) {
    case 'msgs': {
      const msgs = f.msgs.map((m) => resolve(m, st, ctx));
      const packr = f.records ? new Packr({ useRecords: true, moreTypes: false }) : plain;
      return { data: Buffer.from(packr.pack(msgs)), binary: true, messages: msgs.length };
    }
    case 'truncated': {
      const b = Buffer.from(plain.pack(f.msgs.map((m) => resolve(m, st, ctx))));
      return { data: b.subarray(0, Math.max(1, b.length - 1 - f.cut)), binary: true, messages: 0 };
    }
    case 'bytes':
      return { data: Buffer.from(f.bytes), binary: true, messages: 0 };
    case 'text':
      return { data: f.text, binary: false, messages: 0 };
    case 'nested': {
      // [[[[...nil...]]]]: fixarray of 1, `depth` times, then nil.
      const b = Buffer.alloc(f.depth + 1, 0x91);
      b[f.depth] = 0xc0;
      return { data: b, binary: true, messages: 0 };
    }
  }
}

interface RunContext {
  port: number;
  url: string;
  honestExecutor: string;
  maxUid: number;
  codes: Record<string, number>;
  closeCodes: Record<string, number>;
  failures: string[];
  frames: number;
  messages: number;
  connections: number;
  /** What is running now, for a failure's report. */
  current: string;
}

function noteCode(ctx: RunContext, code: string, what: string): void {
  ctx.codes[code] = (ctx.codes[code] ?? 0) + 1;
  if (code === 'INTERNAL') ctx.failures.push(`INTERNAL received by ${what}`);
}

function tokenFor(t: Token): string | undefined {
  return t === 'client' ? CLIENT_TOKEN : t === 'executor' ? EXECUTOR_TOKEN : t === 'wrong' ? 'not-a-token' : undefined;
}

/** A fuzz peer: dial (from 127.0.0.`from`), send its frames, read everything, close. */
async function peer(ctx: RunContext, what: string, hello: unknown | null, frames: Frame[], linger: number, from = 1): Promise<void> {
  const ws = new WebSocket(ctx.url, { localAddress: `127.0.0.${from}`, maxPayload: 64 * MiB });
  ctx.connections++;
  const st: PeerState = { own: [] };
  let closeCode = 0;
  let onWelcome!: () => void;
  const welcomed = new Promise<void>((res) => (onWelcome = res));
  const closed = new Promise<void>((res) =>
    ws.on('close', (code) => {
      closeCode = code;
      res();
    }),
  );
  ws.on('error', () => {});
  ws.on('message', (data: Buffer) => {
    let msgs: unknown[];
    try {
      msgs = unpackr.unpack(data) as unknown[];
    } catch (err) {
      ctx.failures.push(`${what}: the dispatcher sent a frame that does not decode: ${(err as Error).message}`);
      return;
    }
    for (const m of msgs as Array<Record<string, unknown>>) {
      if (m.t === 'error') noteCode(ctx, String(m.code), what);
      if (m.t === 'welcome') onWelcome();
      if (m.t === 'task' && typeof m.uid === 'number') {
        st.own.push({ uid: m.uid, attempt: m.attempt as number });
        if (m.uid > ctx.maxUid) ctx.maxUid = m.uid;
      }
      if (m.t === 'accepted' && Array.isArray(m.rejected)) for (const r of m.rejected as Array<{ code: string }>) ctx.codes[`rejected:${r.code}`] = (ctx.codes[`rejected:${r.code}`] ?? 0) + 1;
    }
  });
  const opened = await within(
    new Promise<boolean>((res) => {
      ws.once('open', () => res(true));
      ws.once('close', () => res(false));
      ws.once('unexpected-response', () => res(false));
    }),
    10_000,
    `${what} to open`,
  ).catch(() => false);
  if (!opened) {
    ws.terminate();
    return;
  }
  const send = (data: Buffer | string, binary: boolean) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(data, { binary });
    ctx.frames++;
  };
  if (hello !== null) {
    send(Buffer.from(plain.pack([hello])), true);
    ctx.messages++;
    await Promise.race([closed, welcomed, sleep(1000)]);
  }
  for (const f of frames) {
    if (ws.readyState !== WebSocket.OPEN) break;
    const e = encodeFrame(f, st, ctx);
    send(e.data, e.binary);
    ctx.messages += e.messages;
    await Promise.race([closed, new Promise((r) => setImmediate(r))]);
  }
  await Promise.race([closed, sleep(linger)]);
  if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'fuzz done');
  await Promise.race([closed, sleep(3000)]);
  ws.terminate();
  ctx.closeCodes[closeCode] = (ctx.closeCodes[closeCode] ?? 0) + 1;
  if (closeCode === 1011) ctx.failures.push(`${what}: closed with 1011 (INTERNAL)`);
}

async function runAction(ctx: RunContext, a: Action, index: number): Promise<void> {
  switch (a.kind) {
    case 'client': {
      const hello = withToken(a.hello, a.token);
      return peer(ctx, `client #${index}`, hello, a.frames, a.linger);
    }
    case 'executor': {
      let hello = withToken(a.hello, a.token);
      if (a.honestId && hello && typeof hello === 'object' && (hello as { executor?: unknown }).executor && typeof (hello as { executor: unknown }).executor === 'object') {
        // A takeover attempt: the honest executor's id, from another process.
        hello = { ...(hello as object), executor: { ...((hello as { executor: object }).executor), id: ctx.honestExecutor, labels: {} } };
      }
      return peer(ctx, `executor #${index}`, hello, a.frames, a.linger);
    }
    case 'prehello': {
      const frames = a.frames.map((f) => (f.kind === 'msgs' ? { ...f, msgs: f.msgs.filter((m) => (m as { t?: unknown } | null)?.t !== 'hello') } : f));
      const p = peer(ctx, `pre-hello #${index}`, null, frames, 100, a.from);
      if (a.big === 0) return p;
      const sock = await rawUpgrade(ctx.port, `127.0.0.${a.from}`).catch(() => null);
      ctx.connections++;
      if (sock) {
        await within(streamFrame(sock, a.big), 20_000, 'a big pre-hello frame to be refused').catch((err: Error) => ctx.failures.push(`pre-hello #${index}: ${err.message}`));
        sock.destroy();
      }
      return p;
    }
    case 'flood': {
      const socks = await Promise.all(Array.from({ length: a.n }, () => rawUpgrade(ctx.port, `127.0.0.${a.from}`).catch(() => null)));
      ctx.connections += a.n;
      let refused = 0;
      for (const s of socks) {
        if (!s) continue;
        s.on('data', (d: Buffer) => {
          if (d.includes('RATE_LIMITED')) refused++;
        });
        // A hello-sized start of a frame, never finished: the slow-loris shape.
        s.write(a.big ? clientFrame(Buffer.alloc(16)).subarray(0, 10) : Buffer.alloc(0));
      }
      await sleep(a.hold);
      for (const s of socks) s?.destroy();
      if (refused) ctx.codes.RATE_LIMITED = (ctx.codes.RATE_LIMITED ?? 0) + refused;
      return;
    }
  }
}

function withToken(hello: unknown, t: Token): unknown {
  const token = tokenFor(t);
  if (hello === null || typeof hello !== 'object' || Array.isArray(hello) || token === undefined) return hello;
  return { ...(hello as object), token };
}

// ---- the honest side -------------------------------------------------------------------------------

class Honest {
  submitted = 0;
  readonly results = new Map<string, TaskResult>();
  readonly problems: string[] = [];
  stray = 0;
  readonly #pending: Array<Promise<void>> = [];
  #stop = false;
  #loop: Promise<void> | null = null;

  constructor(
    readonly client: Client,
    readonly label: string,
    readonly executorId: string,
  ) {}

  start(): void {
    // Anything arriving on the unclaimed stream is a result no submit of ours waits for: a duplicate.
    void (async () => {
      for await (const r of this.client.results()) {
        this.stray++;
        this.problems.push(`a result nobody waited for (duplicate?): ${JSON.stringify(r).slice(0, 300)}`);
      }
    })().catch(() => {});
    this.#loop = (async () => {
      let n = 0;
      while (!this.#stop) {
        for (let i = 0; i < 8; i++) this.#submit(n++);
        await sleep(50);
      }
    })();
  }

  #submit(n: number): void {
    const id = `${HONEST}${n}`;
    const word = `w${n}x${(n * 7919) % 10007}`;
    const spec = n % 3 === 0 ? { id, cmd: ['echo', word] } : n % 3 === 1 ? { id, builtin: 'noop' as const } : { id, builtin: 'sleep' as const, ms: 5 };
    const expected = n % 3 === 0 ? `${word}\n` : '';
    this.submitted++;
    this.#pending.push(
      this.client.submit({ ...spec, labels: { honest: this.label }, maxAttempts: 100 }).then(
        (r) => {
          if (this.results.has(id)) this.problems.push(`${id}: two results`);
          this.results.set(id, r);
          if (r.status !== 'succeeded') this.problems.push(`${id}: ${r.status} ${r.error?.code ?? ''} ${r.error?.message ?? ''}`);
          else if (r.stdout !== expected) this.problems.push(`${id}: stdout ${JSON.stringify(r.stdout)}, expected ${JSON.stringify(expected)} (a forged result?)`);
          else if (r.executor !== this.executorId) this.problems.push(`${id}: ran on ${r.executor}, not the honest executor`);
        },
        (err: Error) => void this.problems.push(`${id}: submit rejected: ${err.message}`),
      ),
    );
  }

  /** Stops submitting; resolves when every submitted task has its result (or after `ms`). */
  async finish(ms: number): Promise<void> {
    this.#stop = true;
    await this.#loop;
    await within(Promise.all(this.#pending), ms, `the honest client's ${this.submitted} results`).catch((err: Error) => {
      this.problems.push(`${err.message}: ${this.submitted - this.results.size} missing`);
    });
  }
}

// ---- the run ---------------------------------------------------------------------------------------

/** Dispatcher RSS allowed during the fuzz: see docs/security.md, "Memory budgets". */
export const DEFAULT_RSS_BUDGET = 600 * MiB;

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const fc = await loadFastCheck();
  const gen = generators(fc);
  const procs = new Procs();
  const budget = opts.rssBudget ?? DEFAULT_RSS_BUDGET;
  const failures: string[] = [];
  let d: Dispatcher | null = null;
  let client: Client | null = null;
  const label = randomUUID();
  const honestExecutor = `${HONEST}executor-${label.slice(0, 8)}`;
  const report: FuzzReport = {
    seed: opts.seed,
    rounds: 0,
    actions: 0,
    frames: 0,
    messages: 0,
    connections: 0,
    codes: {},
    closeCodes: {},
    honest: { submitted: 0, results: 0, stray: 0 },
    rss: { start: 0, max: 0, end: 0, budget },
    fds: { start: 0, end: 0 },
    failures,
  };
  try {
    d = await startDispatcher(procs, [
      ...['--client-token', CLIENT_TOKEN, '--executor-token', EXECUTOR_TOKEN],
      ...['--heartbeat-ms', '250', '--lease-ms', '5000', '--hello-timeout-ms', '1000'],
      ...['--max-frame-bytes', String(FRAME_LIMIT), '--hello-max-bytes', String(HELLO_LIMIT)],
      ...['--max-pending-hellos', '256', '--max-pending-hellos-per-address', '64', '--sync', 'normal'],
      ...(opts.dispatcherArgs ?? []),
    ]);
    const pid = d.proc.pid!;
    let exited: string | null = null;
    d.proc.once('exit', (code, signal) => (exited = `the dispatcher exited (${code ?? signal})`));
    let stderrTail = '';
    d.proc.stderr!.on('data', (b: Buffer) => (stderrTail = (stderrTail + b.toString()).slice(-4000)));
    startExecutor(procs, d.url, ['--token', EXECUTOR_TOKEN, '--slots', '4', '--id', honestExecutor, '--labels', `honest=${label}`]);
    await waitExecutors(d.url, 1);
    client = await connect(d.url, { token: CLIENT_TOKEN, onError: () => {} });
    const honest = new Honest(client, label, honestExecutor);
    honest.start();
    report.rss.start = rssOf(pid) ?? 0;
    report.fds.start = fdsOf(pid) ?? 0;
    log(`fuzz: FALCONET_FUZZ_SEED=${opts.seed}, ${Math.round(opts.ms / 1000)} s, dispatcher pid ${pid} on ${d.url}, RSS ${mb(report.rss.start)} (budget ${mb(budget)})`);
    const ctx: RunContext = { port: d.port, url: d.url, honestExecutor, maxUid: 0, codes: report.codes, closeCodes: report.closeCodes, failures, frames: 0, messages: 0, connections: 0, current: '' };
    const deadline = Date.now() + opts.ms;
    const BATCH = 20;
    for (let batch = 0; Date.now() < deadline && failures.length === 0; batch++) {
      // Batch k of the run is fc.sample(round, {seed: seed + k}): a failure names its batch and round.
      const rounds = fc.sample(gen.round, { seed: (opts.seed + batch) | 0, numRuns: BATCH });
      for (let r = 0; r < rounds.length && Date.now() < deadline && failures.length === 0; r++) {
        const actions = rounds[r];
        ctx.current = `batch ${batch} round ${r}: ${describe(actions)}`;
        await within(Promise.all(actions.map((a, i) => runAction(ctx, a, i))), 60_000, `round ${ctx.current}`).catch((err: Error) => failures.push(err.message));
        report.rounds++;
        report.actions += actions.length;
        const rss = rssOf(pid);
        if (rss !== null && rss > report.rss.max) report.rss.max = rss;
        if (exited) failures.push(exited);
        else if (rss !== null && rss > budget) failures.push(`dispatcher RSS ${mb(rss)} is past the budget of ${mb(budget)}`);
        else if (!(await healthy(d.port, 5000))) failures.push('the dispatcher did not answer /healthz within 5 s (a hang)');
        if (failures.length > 0) failures.push(`while running ${ctx.current} (FALCONET_FUZZ_SEED=${opts.seed})`);
        if (report.rounds % 25 === 0) log(`fuzz: ${report.rounds} rounds, ${ctx.connections} connections, ${ctx.frames} frames, honest ${honest.results.size}/${honest.submitted}, RSS ${mb(rss)}`);
      }
    }
    report.frames = ctx.frames;
    report.messages = ctx.messages;
    report.connections = ctx.connections;
    await honest.finish(60_000);
    report.honest = { submitted: honest.submitted, results: honest.results.size, stray: honest.stray };
    failures.push(...honest.problems.slice(0, 20));
    if (honest.problems.length > 20) failures.push(`... and ${honest.problems.length - 20} more honest-side problems`);
    // The dispatcher's own count of the honest session.
    const mine = (await client.sessions()).find((s) => s.id === client!.session.id);
    if (!mine) failures.push('the honest session is gone');
    else if (mine.submitted !== honest.submitted || mine.finished !== honest.submitted || mine.unfinished !== 0) {
      failures.push(`the dispatcher counts the honest session ${JSON.stringify(mine)}, ${honest.submitted} submitted`);
    }
    if (exited) failures.push(exited);
    // Memory after: pre-hello peers are gone, the fuzz sessions and their tasks remain.
    await sleep(1500);
    report.rss.end = rssOf(pid) ?? 0;
    report.fds.end = fdsOf(pid) ?? 0;
    if (failures.length > 0) log(`fuzz: dispatcher stderr tail: ${stderrTail.slice(-1500)}`);
  } finally {
    await client?.close().catch(() => {});
    await procs.killAll();
  }
  log(
    `fuzz: ${report.rounds} rounds, ${report.actions} actions, ${report.connections} connections, ${report.frames} frames, ${report.messages} messages; ` +
      `honest ${report.honest.results}/${report.honest.submitted} results, ${report.honest.stray} stray; RSS ${mb(report.rss.start)} → max ${mb(report.rss.max)} → ${mb(report.rss.end)}; fds ${report.fds.start} → ${report.fds.end}`,
  );
  log(`fuzz: codes received ${JSON.stringify(report.codes)}; closes ${JSON.stringify(report.closeCodes)}`);
  if (failures.length > 0) log(`fuzz: FAILED (FALCONET_FUZZ_SEED=${opts.seed}):\n  ${failures.join('\n  ')}`);
  return report;
}

function describe(actions: Action[]): string {
  return actions
    .map((a) => (a.kind === 'flood' ? `flood(${a.n})` : a.kind === 'prehello' ? `prehello(${a.frames.length}${a.big ? `, ${a.big} B` : ''})` : `${a.kind}(${a.frames.length} frames)`))
    .join(' ');
}

/** FALCONET_FUZZ_SEED, else a fresh seed. */
export function fuzzSeed(): number {
  const env = process.env.FALCONET_FUZZ_SEED;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n)) throw new Error(`FALCONET_FUZZ_SEED must be an integer, got ${JSON.stringify(env)}`);
    return n | 0;
  }
  return (Math.random() * 2 ** 31) | 0;
}

// `node dist/bench/fuzz.js --minutes N [--seed S]` (npm run fuzz -- --minutes N).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { minutes: { type: 'string' }, seed: { type: 'string' }, 'rss-budget-mb': { type: 'string' }, transport: { type: 'string' } } });
  if (values.seed !== undefined) process.env.FALCONET_FUZZ_SEED = values.seed;
  const minutes = Number(values.minutes ?? '1');
  const report = await runFuzz({
    seed: fuzzSeed(),
    ms: minutes * 60_000,
    ...(values['rss-budget-mb'] ? { rssBudget: Number(values['rss-budget-mb']) * MiB } : {}),
    ...(values.transport ? { dispatcherArgs: ['--transport', values.transport] } : {}),
  });
  process.exit(report.failures.length > 0 ? 1 : 0);
}
