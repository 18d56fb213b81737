/**
 * The Python client (clients/python) against real dispatcher and executor processes: each test
 * runs one scenario of clients/python/tests/scenarios.py with Debian's /usr/bin/python3 (which has
 * python3-msgpack and python3-websockets; they are installed with apt when missing). The
 * scenarios assert on their own and have their own deadlines; this file starts the processes,
 * does to the dispatcher what a scenario asks (kill -9, restart), and reports figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect } from '../client/index.js';
import { movedPeer } from './moved-peer.js';
import { Procs, ensureDebianPackages, freePort, startDispatcher, startExecutor, waitExecutors, type Dispatcher } from './helpers.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PYTHON = '/usr/bin/python3';
const SCENARIOS = join(ROOT, 'clients/python/tests/scenarios.py');
const PYTHONPATH = join(ROOT, 'clients/python/src');

let ready: Promise<string | null> | null = null;

/** null when /usr/bin/python3 can import msgpack and websockets (installing them with apt if need be), else why not. */
function pythonReady(): Promise<string | null> {
  return ready!;
}
// Installed before any test starts: apt may take minutes, which no test's timeout should include.
ready = Promise.resolve(ensureDebianPackages(['python3-msgpack', 'python3-websockets'], () => spawnSync(PYTHON, ['-c', 'import msgpack, websockets'], { timeout: 30_000 }).status === 0));

interface Scenario {
  code: number | null;
  stdout: string;
  stderr: string;
  figures: Array<Record<string, unknown>>;
}

/**
 * Runs one scenario to its end. `onRequest` answers its `@@...` lines (the answer goes to its stdin).
 * The process is tracked by `procs`, so a failing test leaves nothing running.
 */
function scenario(procs: Procs, name: string, args: string[], onRequest: (line: string) => Promise<string> = async (l) => `unexpected ${l}`): Promise<Scenario> {
  const child: ChildProcess = spawn(PYTHON, [SCENARIOS, name, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONPATH, PYTHONUNBUFFERED: '1' },
  });
  procs.all.add(child);
  child.once('exit', () => procs.all.delete(child));
  let stdout = '';
  let stderr = '';
  let partial = '';
  const figures: Array<Record<string, unknown>> = [];
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d;
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('@@json ')) figures.push(JSON.parse(line.slice(7)) as Record<string, unknown>);
      else if (line.startsWith('@@')) {
        void onRequest(line).then(
          (answer) => child.stdin!.write(answer + '\n'),
          (err: Error) => child.stdin!.write(`failed: ${err.message}\n`),
        );
      }
    }
  });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr, figures })));
}

function passed(s: Scenario, name: string): void {
  assert.equal(s.code, 0, `scenario ${name} failed (exit ${s.code}):\n${s.stderr}\n${s.stdout}`);
  assert.match(s.stdout, new RegExp(`scenario ${name}: ok`));
}

/** A dispatcher with `executors` executors of `slots` slots each, all connected. */
async function cluster(procs: Procs, executors: number, slots: number, args: string[] = []): Promise<Dispatcher> {
  const d = await startDispatcher(procs, args);
  for (let i = 0; i < executors; i++) startExecutor(procs, d.url, ['--slots', String(slots), '--id', `py-e${i}`]);
  await waitExecutors(d.url, executors);
  return d;
}

test('python client: submit, failures, a bad task (TASK_INVALID), handles, cancel, task(id), sessions, addresses, close', { timeout: 120_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await cluster(procs, 1, 4);
  passed(await scenario(procs, 'basic', [d.url]), 'basic');
});

test('python client: submit_many of 1,000 noop tasks with backpressure, each result once', { timeout: 120_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await cluster(procs, 2, 4);
  passed(await scenario(procs, 'many', [d.url]), 'many');
});

test('python client: a dispatcher kill -9 and restart; the client reconnects, resends, and gets every result once; another process resumes at the cursor', { timeout: 150_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const port = await freePort();
  const dataDir = procs.tmpDir();
  const args = ['--port', String(port), '--data-dir', dataDir];
  let d = await cluster(procs, 2, 2, args);
  let kills = 0;
  const s = await scenario(procs, 'resume', [d.url], async (line) => {
    if (line === '@@kill') {
      const exited = new Promise((r) => d.proc.once('exit', r));
      d.proc.kill('SIGKILL');
      await exited;
      kills++;
      return 'killed';
    }
    if (line === '@@restart') {
      d = await startDispatcher(procs, args);
      return 'restarted';
    }
    return `unexpected ${line}`;
  });
  passed(s, 'resume');
  t.diagnostic(`resume: ${JSON.stringify(s.figures)}`);
  assert.equal(kills, 1, 'the dispatcher was killed while the client worked');
});

test('python client: the concurrent.futures Executor adapter', { timeout: 120_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await cluster(procs, 1, 8);
  passed(await scenario(procs, 'executor', [d.url]), 'executor');
});

test('python wire: every frame to a peer without `records` decodes with a plain msgpack decoder (ext types refused); a peer sending an extension type gets BAD_FRAME and the others are still served', { timeout: 60_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await cluster(procs, 1, 2);
  // FALCONET_CAPTURE_EXCHANGE=file.json keeps the byte-by-byte exchange docs/protocol.md shows.
  const capture = process.env.FALCONET_CAPTURE_EXCHANGE;
  const s = await scenario(procs, 'wire', [d.url, ...(capture ? [capture] : [])]);
  passed(s, 'wire');
  assert.ok(Number(s.figures[0]?.frames) >= 5, `frames decoded: ${JSON.stringify(s.figures)}`);
});

test(
  'python wire: a msgpackr record from a peer that did not announce `records` gets BAD_FRAME or INVALID_MESSAGE, and the others are still served',
  { timeout: 60_000 },
  async (t) => {
    const why = await pythonReady();
    if (why) return t.skip(why);
    const procs = new Procs();
    t.after(() => procs.killAll());
    const d = await cluster(procs, 1, 2);
    const s = await scenario(procs, 'records', [d.url]);
    t.diagnostic(`the dispatcher answered the records frame with: ${JSON.stringify(s.figures[0] ?? s.stderr.split('\n').slice(-2).join(' '))}`);
    passed(s, 'records');
  },
);

test('throughput: 20,000 noop tasks through the Python client and through the TypeScript SDK (figures only)', { timeout: 180_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await cluster(procs, 2, 8);
  const n = 20_000;
  /** The TypeScript SDK: submitMany of `count` noop tasks while reading results; seconds. */
  const tsRun = async (count: number): Promise<number> => {
    const client = await connect(d.url);
    const t0 = performance.now();
    let got = 0;
    const reading = (async () => {
      for await (const _ of client.results()) if (++got === count) break;
    })();
    await client.submitMany(
      (function* () {
        for (let i = 0; i < count; i++) yield { builtin: 'noop' as const };
      })(),
    );
    await reading;
    const seconds = (performance.now() - t0) / 1000;
    await client.close();
    assert.equal(got, count);
    return seconds;
  };
  const pyRun = async (count: number): Promise<number> => {
    const s = await scenario(procs, 'bench', [d.url, String(count)]);
    passed(s, 'bench');
    return (s.figures[0] as { seconds: number }).seconds;
  };
  // A warm-up round each (the dispatcher's JIT and store), then the measured runs on the same
  // dispatcher and executors, one after the other.
  await tsRun(2000);
  await pyRun(2000);
  const tsSeconds = await tsRun(n);
  const pySeconds = await pyRun(n);
  const py = { seconds: pySeconds, rate: Math.round(n / pySeconds) };
  t.diagnostic(`TypeScript SDK: ${n} noop tasks in ${tsSeconds.toFixed(2)} s = ${Math.round(n / tsSeconds)} tasks/s`);
  t.diagnostic(`Python client:  ${n} noop tasks in ${py.seconds.toFixed(2)} s = ${py.rate} tasks/s`);
});

test('python client: a comma list dials past a dead dispatcher; MOVED is followed to where the session lives', { timeout: 120_000 }, async (t) => {
  const why = await pythonReady();
  if (why) return t.skip(why);
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await cluster(procs, 1, 2);
  const peer = await movedPeer(() => d.url);
  t.after(() => peer.close());
  passed(await scenario(procs, 'failover', [d.url, peer.url]), 'failover');
});
