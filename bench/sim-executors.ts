/**
 * Many lightweight simulated executors in one process, for the scale benchmark: each is its own
 * WebSocket connection speaking the real protocol through the real codec (hello with role
 * executor, one slot, push mode; a `done` for each `task` at once; a heartbeat now and then).
 * No process is started and nothing is validated beyond what the codec does: this is the load,
 * the dispatcher is what is measured.
 *
 *   node dist/bench/sim-executors.js --url ws://127.0.0.1:PORT --count 9500 [--prefix sim0-]
 *        [--batch 250] [--heartbeat-ms 10000] [--on-moved follow|redial]
 *
 * Connections are opened `--batch` at a time, each batch only after the previous one is welcomed,
 * so the dispatcher's accept backlog never overflows. Progress goes to stdout as lines:
 * `welcomed N` after each batch, `ready N MS` once all are welcomed (MS from the first dial),
 * then `stats done=N moved=M` every second while tasks flow. SIGTERM closes everything and exits.
 *
 * A dispatcher of a cluster sends idle executors elsewhere (`error` MOVED with `to`, then close):
 * `--on-moved follow` (default, what a real executor does) dials `to`; `redial` dials its own
 * `--url` again after a second, so that a benchmark keeps exactly `--count` on each dispatcher.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { Codec, PROTOCOL_VERSION, RECORDS_CAP, type ExecutorInfo } from '../protocol/index.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    count: { type: 'string' },
    prefix: { type: 'string' },
    batch: { type: 'string' },
    'heartbeat-ms': { type: 'string' },
    'on-moved': { type: 'string' },
  },
});
const onMoved = values['on-moved'] ?? 'follow';
if (onMoved !== 'follow' && onMoved !== 'redial') throw new Error(`--on-moved must be follow or redial, not ${onMoved}`);
const url = values.url ?? '';
const count = Number(values.count ?? 1000);
const prefix = values.prefix ?? `sim-${process.pid}-`;
const batch = Number(values.batch ?? 250);
const heartbeatMs = Number(values['heartbeat-ms'] ?? 10_000);

// The codec keeps no state between frames (msgpackr records are declared in each frame), so one
// instance serves every connection of this process.
const codec = new Codec();
const incarnation = randomBytes(8).toString('hex');
const conns: WebSocket[] = [];
let welcomed = 0;
let failed = 0;
let done = 0;
let lastDone = 0;
/** MOVED received (each one a re-dial). */
let moved = 0;

function send(ws: WebSocket, msgs: unknown[]): void {
  if (ws.readyState !== WebSocket.OPEN) return;
  for (const frame of codec.encode(msgs)) ws.send(frame);
}

function info(i: number): ExecutorInfo {
  return {
    id: `${prefix}${i}`,
    hostname: 'sim',
    addresses: ['127.0.0.1'],
    slots: 1,
    memory: 0,
    labels: {},
    version: 'sim',
    pid: process.pid,
    incarnation,
    mode: 'push',
    running: [],
  };
}

/** Opens one connection to `to`; resolves once it is welcomed (true) or refused/closed (false). */
function open(i: number, to = url): Promise<boolean> {
  return new Promise((resolve) => {
    let movedTo: string | null = null;
    const ws = new WebSocket(to, { perMessageDeflate: false });
    ws.binaryType = 'nodebuffer';
    let up = false;
    ws.on('open', () => send(ws, [{ t: 'hello', v: PROTOCOL_VERSION, role: 'executor', caps: ['batch', 'push', 'pull', RECORDS_CAP], executor: info(i) }]));
    ws.on('message', (data: Buffer) => {
      const out: unknown[] = [];
      for (const raw of codec.decode(data)) {
        const m = raw as { t: string; uid?: number; attempt?: number; code?: string; message?: string; to?: string };
        if (m.t === 'task') {
          const now = Date.now();
          out.push({
            t: 'done',
            result: { uid: m.uid, attempt: m.attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, startedAt: now, finishedAt: now },
          });
          done++;
        } else if (m.t === 'welcome' && !up) {
          up = true;
          conns.push(ws);
          welcomed++;
          resolve(true);
        } else if (m.t === 'error' && m.code === 'MOVED' && m.to) {
          moved++;
          movedTo = onMoved === 'follow' ? m.to : url;
        } else if (m.t === 'error') {
          process.stderr.write(`sim ${i}: ${m.code} ${m.message}\n`);
        }
      }
      if (out.length > 0) send(ws, out);
    });
    ws.on('error', (err) => process.stderr.write(`sim ${i}: ${err.message}\n`));
    ws.on('close', () => {
      if (!up) {
        failed++;
        resolve(false);
      } else if (movedTo !== null && !stopping) {
        // Its old socket stays in `conns` (closed sockets are skipped); the new one is added on welcome.
        const next = movedTo;
        welcomed--;
        setTimeout(() => void open(i, next), onMoved === 'redial' ? 1000 : 0);
      }
    });
  });
}

let stopping = false;
async function main(): Promise<void> {
  const t0 = performance.now();
  for (let i = 0; i < count && !stopping; i += batch) {
    const n = Math.min(batch, count - i);
    await Promise.all(Array.from({ length: n }, (_, k) => open(i + k)));
    process.stdout.write(`welcomed ${welcomed} failed ${failed}\n`);
  }
  process.stdout.write(`ready ${welcomed} ${Math.round(performance.now() - t0)}\n`);
  // Heartbeats: one timer sweeps a slice of the connections every 100 ms, so each connection
  // sends one `hb` per heartbeatMs without 10,000 timers.
  const slices = Math.max(1, Math.round(heartbeatMs / 100));
  let slice = 0;
  setInterval(() => {
    const at = Date.now();
    for (let k = slice; k < conns.length; k += slices) send(conns[k], [{ t: 'hb', at }]);
    slice = (slice + 1) % slices;
  }, 100);
  setInterval(() => {
    if (done !== lastDone) process.stdout.write(`stats done=${done} moved=${moved}\n`);
    lastDone = done;
  }, 1000);
}

process.on('SIGTERM', () => {
  stopping = true;
  for (const ws of conns) ws.terminate();
  process.exit(0);
});

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(1);
});
