/**
 * Dispatcher memory, measured (docs/security.md "Memory budgets"):
 *
 * - `f5`: 80 pre-hello peers each sending a 32 MiB frame (issue 14 F5), against the defaults and
 *   against the limits of before (--hello-max-bytes as large as a frame, no pending caps): RSS
 *   before, at most during, and after.
 * - `budget`: RSS of one dispatcher (sqlite store) idle, then with N raw executors (pull mode,
 *   registered, idle), N idle clients, and M queued noop tasks; the difference per item.
 *
 * `node dist/bench/memory.js [f5|budget] [--peers N] [--tasks M]`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { pack, unpack } from 'msgpackr';
import { PROTOCOL_VERSION } from '../protocol/index.js';
import { Procs, startDispatcher, within } from '../test/helpers.js';
import { rawUpgrade, rssOf, streamFrame, mb, MiB } from './hostile.js';

async function settle(pid: number, ms = 3000): Promise<number> {
  await sleep(ms);
  return rssOf(pid)!;
}

export async function f5(extra: string[], label: string, peers = 80): Promise<string> {
  const procs = new Procs();
  try {
    const d = await startDispatcher(procs, extra);
    const pid = d.proc.pid!;
    const before = await settle(pid, 1500);
    let max = before;
    const sampler = setInterval(() => (max = Math.max(max, rssOf(pid) ?? 0)), 50);
    let written = 0;
    await Promise.all(
      Array.from({ length: peers }, async (_, i) => {
        const sock = await rawUpgrade(d.port, `127.0.0.${2 + (i % 8)}`).catch(() => null);
        if (!sock) return;
        written += await within(streamFrame(sock, 32 * MiB), 60_000, 'the frame').catch(() => 0);
        // Hold the connection a moment, as an attacker would.
        await sleep(1000);
        sock.destroy();
      }),
    );
    clearInterval(sampler);
    const after = await settle(pid, 5000);
    return `${label}: RSS before ${mb(before)}, max during ${mb(max)}, 5 s after ${mb(after)} (${peers} peers wrote ${mb(written)})`;
  } finally {
    await procs.killAll();
  }
}

function dial(url: string, from: string, hello: object): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { localAddress: from });
    ws.on('error', reject);
    ws.on('open', () => ws.send(pack([hello])));
    ws.on('message', (data: Buffer) => {
      for (const m of unpack(data) as Array<{ t: string; code?: string }>) {
        if (m.t === 'welcome') resolve(ws);
        if (m.t === 'error') reject(new Error(m.code));
      }
    });
  });
}

async function many(n: number, make: (i: number) => Promise<WebSocket>): Promise<WebSocket[]> {
  const out: WebSocket[] = [];
  for (let i = 0; i < n; i += 50) out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, k) => make(i + k)))));
  return out;
}

export async function budget(peers = 1000, tasks = 200_000): Promise<string[]> {
  const procs = new Procs();
  const lines: string[] = [];
  const sockets: WebSocket[] = [];
  try {
    const d = await startDispatcher(procs, ['--sync', 'normal']);
    const pid = d.proc.pid!;
    const idle = await settle(pid);
    lines.push(`idle dispatcher: RSS ${mb(idle)}`);
    const execs = await many(peers, (i) =>
      dial(d.url, `127.0.0.${2 + (i % 8)}`, {
        t: 'hello',
        v: PROTOCOL_VERSION,
        role: 'executor',
        caps: [],
        executor: { id: `mem-e${i}`, hostname: `host-${i}`, addresses: ['10.0.0.1'], slots: 8, memory: 8 * 1024 ** 3, labels: { zone: 'a' }, version: '0.1.0', incarnation: `inc-${i}`, mode: 'pull', running: [] },
      }),
    );
    sockets.push(...execs);
    const withExecs = await settle(pid);
    lines.push(`${peers} raw executors (pull, idle): RSS ${mb(withExecs)}, ${((withExecs - idle) / peers / 1024).toFixed(1)} KiB each`);
    const clients = await many(peers, (i) => dial(d.url, `127.0.0.${2 + (i % 8)}`, { t: 'hello', v: PROTOCOL_VERSION, role: 'client', caps: [] }));
    sockets.push(...clients);
    const withClients = await settle(pid);
    lines.push(`${peers} idle clients (one session each): RSS ${mb(withClients)}, ${((withClients - withExecs) / peers / 1024).toFixed(1)} KiB each`);
    // Queued tasks: labels no executor has, so they stay queued.
    const submitter = clients[0];
    let accepted = 0;
    const got = new Promise<void>((resolve) =>
      submitter.on('message', (data: Buffer) => {
        for (const m of unpack(data) as Array<{ t: string; accepted?: number }>) if (m.t === 'accepted') if ((accepted += m.accepted ?? 0) >= tasks) resolve();
      }),
    );
    for (let i = 0; i < tasks; i += 10_000) {
      submitter.send(pack([{ t: 'submit', ref: i, tasks: Array.from({ length: Math.min(10_000, tasks - i) }, (_, k) => ({ id: `q${i + k}`, builtin: 'noop', labels: { gpu: 'none' } })) }]));
      await sleep(200);
    }
    await within(got, 300_000, `${tasks} tasks accepted`);
    const withTasks = await settle(pid, 5000);
    lines.push(`${tasks} queued noop tasks: RSS ${mb(withTasks)}, ${((withTasks - withClients) / tasks).toFixed(0)} B each`);
  } finally {
    for (const s of sockets) s.terminate();
    await procs.killAll();
  }
  return lines;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { peers: { type: 'string' }, tasks: { type: 'string' } } });
  const what = positionals[0] ?? 'all';
  if (what === 'f5' || what === 'all') {
    console.log(await f5([], 'defaults (--hello-max-bytes 64 KiB, 64 pending per address, 1024 in all)'));
    console.log(await f5(['--hello-max-bytes', String(32 * MiB), '--max-pending-hellos', '100000', '--max-pending-hellos-per-address', '100000'], 'limits as before (frames up to 32 MiB before the hello, no caps)'));
  }
  if (what === 'budget' || what === 'all') for (const l of await budget(Number(values.peers ?? 1000), Number(values.tasks ?? 200_000))) console.log(l);
}
