/**
 * One real executor process against a scripted dispatcher, to measure the executor alone: its CPU
 * per task (from /proc, after a warm-up) with the acks of its results sent at once (what the
 * memory store does) or held for a commit (the durable store: a group commit of `--commit-ms`,
 * one in flight, the acks of every turn that arrived meanwhile released together when it ends).
 * The dispatcher's own work is not in the figure, so runs compare what the executor does.
 *
 *   node dist/bench/executor-cpu.js [--tasks 300000] [--warmup 50000] [--slots 1000]
 *        [--window 2000] [--frame 1000] [--commit-ms 0,150] [--rate 25000] [--runs 1]
 *
 * The defaults are the durable throughput bench as one of its executors sees it: frames of 1,000
 * tasks, 25,000 tasks/s, and (with 150 ms) 6,000-8,000 results waiting for their ack (--rate 0:
 * as fast as the executor goes).
 *
 * It pushes noop tasks in frames of `--frame`, keeps `--window` assigned, and answers each frame
 * of results with as many new tasks (sent at once, as the dispatcher does; with `--rate`, a frame
 * every `frame / rate` seconds, as a dispatcher slower than the executor feeds it). Linux only (/proc).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocketServer, type WebSocket } from 'ws';
import { Codec, PROTOCOL_VERSION, RECORDS_CAP } from '../protocol/index.js';
import { cpuProfFlags, threadsMs } from './harness.js';

const CLI = fileURLToPath(new URL('../client/cli.js', import.meta.url));

interface Figures {
  commitMs: number;
  tasksPerSecond: number;
  usPerTask: number;
  frames: { in: number; out: number };
  maxUnacked: number;
}

async function run(o: { tasks: number; warmup: number; slots: number; window: number; frame: number; commitMs: number; rate: number }): Promise<Figures> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const port = (wss.address() as { port: number }).port;
  // FALCONET_BENCH_CPU_PROF=DIR or FALCONET_BENCH_FLAGS_EXECUTOR='--trace-gc' (harness.ts), as in every bench.
  const flags = cpuProfFlags('executor');
  const child = spawn(process.execPath, [...flags, CLI, 'executor', '--dispatcher', `ws://127.0.0.1:${port}`, '--slots', String(o.slots)], { stdio: ['ignore', flags.length > 0 ? 'inherit' : 'ignore', 'ignore'], env: { ...process.env, FALCONET_LOG: 'warn' } });
  try {
    return await new Promise<Figures>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`executor exited ${code}`)));
      wss.once('connection', (ws: WebSocket) => {
        const codec = new Codec();
        let next = 1;
        let sent = 0;
        let done = 0;
        let unacked = 0;
        let maxUnacked = 0;
        let framesIn = 0;
        let framesOut = 0;
        let t0 = 0;
        let c0 = 0;
        /** Refs of results received, per turn, waiting for the "commit" that acks them. */
        let turn: Array<{ uid: number; attempt: number }> = [];
        let held: Array<Array<{ uid: number; attempt: number }>> = [];
        let committing = false;
        const send = (msgs: unknown[]) => {
          for (const f of codec.encode(msgs)) {
            framesOut++;
            ws.send(f);
          }
        };
        const assign = (n: number) => {
          const msgs: unknown[] = [];
          for (let i = 0; i < n && sent < o.tasks; i++, sent++) msgs.push({ t: 'task', uid: next++, attempt: 1, spec: { builtin: 'noop' } });
          for (let i = 0; i < msgs.length; i += o.frame) send(msgs.slice(i, i + o.frame));
        };
        const commit = () => {
          committing = true;
          const groups = held;
          held = [];
          setTimeout(() => {
            committing = false;
            for (const g of groups) {
              unacked -= g.length;
              send([{ t: 'ack', done: g }]);
            }
            if (held.length > 0) commit();
          }, o.commitMs);
        };
        let flushQueued = false;
        // --rate: freed places are refilled by a timer, a frame of `--frame` tasks at a time (as a
        // busy dispatcher sends them), at most `rate` tasks/s.
        let owed = 0;
        if (o.rate > 0) {
          const tick = setInterval(() => {
            const n = Math.min(owed, o.frame);
            if (n > 0) {
              owed -= n;
              assign(n);
            }
            if (sent >= o.tasks) clearInterval(tick);
          }, (1000 * o.frame) / o.rate);
          ws.once('close', () => clearInterval(tick));
        }
        const flush = () => {
          flushQueued = false;
          if (turn.length === 0) return;
          const refs = turn;
          turn = [];
          if (o.commitMs === 0) {
            unacked -= refs.length;
            send([{ t: 'ack', done: refs }]);
          } else {
            held.push(refs);
            if (!committing) commit();
          }
        };
        ws.on('message', (data: Buffer) => {
          framesIn++;
          let finished = 0;
          for (const m of codec.decode(data) as Array<{ t: string; v?: number; result?: { uid: number; attempt: number } }>) {
            if (m.t === 'hello') {
              send([{ t: 'welcome', v: PROTOCOL_VERSION, role: 'executor', heartbeatMs: 1000, leaseMs: 60_000, maxFrameBytes: 16 << 20, caps: ['batch', RECORDS_CAP] }]);
              assign(o.window);
            } else if (m.t === 'done') {
              turn.push({ uid: m.result!.uid, attempt: m.result!.attempt });
              finished++;
            }
          }
          if (finished === 0) return;
          done += finished;
          unacked += finished;
          if (unacked > maxUnacked) maxUnacked = unacked;
          if (done >= o.warmup && t0 === 0) {
            t0 = performance.now();
            c0 = threadsMs(child.pid!);
            framesIn = framesOut = maxUnacked = 0;
          }
          if (done >= o.tasks) {
            const seconds = (performance.now() - t0) / 1000;
            const measured = o.tasks - o.warmup;
            resolve({ commitMs: o.commitMs, tasksPerSecond: Math.round(measured / seconds), usPerTask: ((threadsMs(child.pid!) - c0) * 1000) / measured, frames: { in: framesIn, out: framesOut }, maxUnacked });
            return;
          }
          if (o.rate > 0) owed += finished;
          else assign(finished);
          if (!flushQueued) {
            flushQueued = true;
            setImmediate(flush);
          }
        });
      });
    });
  } finally {
    if (flags.length > 0) {
      // A clean exit, so that a profile is written.
      child.removeAllListeners('exit');
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
    child.kill('SIGKILL');
    wss.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { tasks: { type: 'string' }, warmup: { type: 'string' }, slots: { type: 'string' }, window: { type: 'string' }, frame: { type: 'string' }, 'commit-ms': { type: 'string' }, rate: { type: 'string' }, runs: { type: 'string' } } });
  const base = {
    tasks: Number(values.tasks ?? 300_000),
    warmup: Number(values.warmup ?? 50_000),
    slots: Number(values.slots ?? 1000),
    window: Number(values.window ?? 2000),
    frame: Number(values.frame ?? 1000),
    rate: Number(values.rate ?? 25_000),
  };
  const commits = (values['commit-ms'] ?? '0,150').split(',').map(Number);
  for (let r = 0; r < Number(values.runs ?? 1); r++) {
    for (const commitMs of commits) {
      const f = await run({ ...base, commitMs });
      console.log(`commit ${String(commitMs).padStart(3)} ms: ${f.usPerTask.toFixed(2)} µs/task, ${f.tasksPerSecond} tasks/s, frames in ${f.frames.in} out ${f.frames.out}, most unacked ${f.maxUnacked}`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
