/**
 * `falconet status` and `falconet top`: the dispatcher's /api/status read at a glance. A summary
 * first (executors by state, slots, the queue by state, tasks/s over the last 10 s, the queue's
 * ETA), then tables with headers. Many executors are summarised by state and only the busiest
 * listed (`status executors` or `-o wide` lists every one); ended provisioner instances are
 * counted and only the last few listed; an instance whose executor is in the executor table is
 * not listed twice.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import type { Target } from './commands.js';
import { httpBase } from './url.js';
import { notJson, requestAny } from './http-get.js';

const NOTICE_MS = 2000;
/** Ended instances listed at most (the rest are counted). */
const ENDED_SHOWN = 3;

export type Status = Record<string, any>;

/**
 * The dispatcher's /api/status (with the token as Bearer when one is set): from the first of the
 * target's dispatchers that can be reached.
 */
export async function fetchStatus(target: Target, timeoutMs: number): Promise<Status> {
  const res = await requestAny(target.urls, '/api/status', { headers: target.token ? { authorization: `Bearer ${target.token}` } : {}, timeoutMs, ...(target.ca ? { ca: target.ca } : {}) });
  if (res.body === undefined) throw notJson(res);
  const body = res.body as Status;
  if (!res.ok) throw FalconetError.fromWire(body.error ?? { code: ErrorCode.INTERNAL, message: `HTTP ${res.status}` });
  return body;
}

/** /api/status, retried for --connect-timeout while nobody answers (a dispatcher that is starting). */
export async function fetchStatusPatiently(target: Target): Promise<Status> {
  const url = target.urls.map((u) => httpBase(u) + '/api/status').join(',');
  const deadline = Date.now() + target.connectTimeoutMs;
  const told = setTimeout(() => process.stderr.write(`falconet: dialing ${url}: is a dispatcher running? (start one with: falconet up)\n`), NOTICE_MS).unref();
  try {
    for (;;) {
      try {
        return await fetchStatus(target, Math.max(1, deadline - Date.now()));
      } catch (err) {
        if (err instanceof FalconetError) throw err; // the dispatcher answered, and refused
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        const why = cause?.code ?? cause?.message ?? (err as Error).message;
        if (Date.now() + 200 >= deadline) throw new FalconetError(ErrorCode.UNREACHABLE, `no dispatcher answered at ${url} within ${target.connectTimeoutMs} ms (last error: ${why})`);
        await sleep(200);
      }
    }
  } finally {
    clearTimeout(told);
  }
}

export const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
/** A rate: one decimal under 10 (7.4), whole above (1,234). */
const rateFmt = (n: number) => (n > 0 && n < 10 && !Number.isInteger(n) ? n.toFixed(1) : fmt(n));

/** 75 → `1m15s`; 3700 → `1h01m`. */
export function duration(s: number): string {
  if (!Number.isFinite(s)) return '-';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Pads columns to their widest cell; the last column is not padded. */
export function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd());
}

/** "480 busy · 20 idle" from a list of states, busiest states first. */
function byState(states: string[], order: string[]): string {
  const counts = new Map<string, number>();
  for (const s of states) counts.set(s, (counts.get(s) ?? 0) + 1);
  const keys = [...counts.keys()].sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  return keys.map((k) => `${fmt(counts.get(k)!)} ${k}`).join(' · ');
}

const EXEC_ORDER = ['busy', 'idle', 'draining', 'disconnected'];
const INSTANCE_ORDER = ['requested', 'pending', 'booting', 'registered', 'busy', 'idle', 'draining', 'terminating', 'failed', 'terminated'];
const ENDED = new Set(['terminated', 'failed']);

export interface RenderOptions {
  /** Every executor and instance, with addresses and boot phases. */
  wide: boolean;
  /** Only this table (after the summary). */
  view?: 'executors' | 'instances';
  /** At most this many lines (top: the terminal's height); executors beyond it are summarised. */
  maxLines?: number;
  url?: string;
}

/** The summary lines. */
export function summary(s: Status, url?: string): string[] {
  const t = s.tasks;
  const f = t.finished as Record<string, number>;
  const execs = (s.executors as Array<{ state: string }>) ?? [];
  const live = execs.filter((e) => e.state !== 'disconnected').length;
  const rate = s.rates.finished as number;
  const left = t.queued + t.running;
  const eta = left === 0 ? 'queue empty' : rate > 0 ? `ETA ${duration(left / rate)} for ${fmt(left)} queued+running` : 'ETA - (nothing finished in the last 10 s)';
  const pct = s.slots.total > 0 ? ` (${Math.round((100 * s.slots.busy) / s.slots.total)}%)` : '';
  const finished = ['succeeded', 'failed', 'timed_out', 'cancelled', 'lost'].filter((k) => f[k] > 0 || k === 'succeeded').map((k) => `${fmt(f[k] ?? 0)} ${k.replace('_', ' ')}`).join(' · ');
  const lines = [
    `falconet dispatcher${url ? ` ${url}` : ''} · up ${duration(s.uptimeMs / 1000)}`,
    ...(s.tls === true ? ['tls        on (wss://, https://)'] : s.tlsWarning ? [`tls        OFF: ${s.tlsWarning}`] : []),
    `executors  ${fmt(live)}${execs.length ? ` (${byState(execs.map((e) => e.state), EXEC_ORDER)})` : ' (none connected: start one with falconet executor --dispatcher URL)'}`,
    `slots      ${fmt(s.slots.busy)}/${fmt(s.slots.total)} busy${pct}`,
    `queue      ${fmt(t.queued)} queued · ${fmt(t.running)} running · ${fmt(t.submitted)} submitted`,
    `finished   ${finished}`,
    `rate       ${rateFmt(rate)} tasks/s finished · ${rateFmt(s.rates.submitted)}/s submitted (last 10 s) · ${eta}`,
    `sessions   ${fmt(s.sessions.total)} (${fmt(s.sessions.connected)} connected)${s.data?.cacheHitRatio != null ? ` · cache hit ${Math.round(100 * s.data.cacheHitRatio)}%` : ''}`,
  ];
  for (const r of (s.requests as Array<{ request: string; labels: string; tasks: number; reason: string | null }>) ?? []) {
    if (r.reason !== null) lines.push(`waits      ${fmt(r.tasks)} ${r.tasks === 1 ? 'task' : 'tasks'}${r.labels ? ` with labels ${r.labels}` : ''}: ${r.reason}`);
  }
  if (s.reservation) lines.push(`reserved   ${s.reservation.executor} for a waiting ${s.reservation.request} request`);
  // Several dispatchers over PostgreSQL (docs/scale-out.md): each, its partitions, the provisioner's leader.
  const ds = (s.dispatchers as Array<{ url: string; partitions: number; leader: boolean; self: boolean }> | undefined) ?? [];
  if (ds.length > 0) {
    const one = (d: (typeof ds)[number]) => `${d.url} ${fmt(d.partitions)} partitions${d.self ? ' (this one)' : ''}${d.leader ? ' (provisioner)' : ''}`;
    lines.push(`cluster    ${fmt(ds.length)} dispatchers: ${one(ds[0])}`, ...ds.slice(1).map((d) => `           ${one(d)}`));
  }
  const p = s.provisioner;
  if (p) {
    const inst = (p.instances as Array<{ state: string }>) ?? [];
    const active = inst.filter((i) => !ENDED.has(i.state));
    const ended = inst.length - active.length;
    lines.push(
      `fleet      ${p.backend}, ${p.policy}, ${p.min}–${p.max}: ${active.length ? byState(active.map((i) => i.state), INSTANCE_ORDER) : 'no instances'}${ended ? ` · ${fmt(ended)} ended` : ''} · breaker ${p.breaker.open ? `OPEN: ${p.breaker.reason}` : 'closed'}`,
      `           last decision: ${p.lastDecision}${p.lastError ? `; last error: ${p.lastError}` : ''}`,
    );
  }
  return lines;
}

function age(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : duration(ms / 1000);
}

/** When an executor ends and why (a column only when some executor knows its end). */
function endsIn(e: any, now: number): string {
  if (e.endsAt === undefined) return '-';
  const left = e.endsAt - now;
  return `${left > 0 ? `in ${age(left)}` : 'now'}${e.endReason ? ` (${e.endReason})` : ''}`;
}

function executorRows(execs: any[], wide: boolean, now = Date.now()): string[][] {
  const ends = execs.some((e) => e.endsAt !== undefined);
  const head = ['EXECUTOR', 'STATE', 'RUNNING', 'SLOTS', 'DONE', 'SEEN', 'MODE', ...(ends ? ['ENDS'] : []), ...(wide ? ['ADDRESSES', 'INSTANCE', 'BOOT'] : [])];
  return [
    head,
    ...execs.map((e) => [
      e.id,
      e.state,
      fmt(e.running),
      fmt(e.slots),
      fmt(e.completed),
      `${age(e.lastSeenMsAgo)} ago`,
      e.mode,
      ...(ends ? [endsIn(e, now)] : []),
      ...(wide
        ? [
            e.addresses.join(','),
            e.instanceId ?? '-',
            e.boot?.length ? e.boot.map((b: { phase: string; at: number }) => `${b.phase}+${b.at - e.boot[0].at}ms`).join(' ') : '-',
          ]
        : []),
    ]),
  ];
}

/** Busiest first, then the most recently seen: the ones worth a line when not all fit. */
function rank(execs: any[]): any[] {
  const order = (e: any) => EXEC_ORDER.indexOf(e.state);
  return [...execs].sort((a, b) => order(a) - order(b) || b.running - a.running || a.id.localeCompare(b.id, 'en', { numeric: true }));
}

/** Everything `status` prints, as lines. */
export function render(s: Status, o: RenderOptions): string[] {
  const out = summary(s, o.url);
  const execs: any[] = s.executors ?? [];
  const p = s.provisioner;
  const budget = o.maxLines ?? Infinity;
  const showExecs = o.view !== 'instances';
  const showInst = o.view !== 'executors' && p;
  if (showExecs && execs.length > 0) {
    out.push('');
    const ranked = rank(execs);
    // Room: what is left of the screen after the instance lines (at most ~6), the header and a "more" line.
    const room = o.wide || o.view === 'executors' ? Infinity : Math.max(3, Math.min(20, budget - out.length - (showInst ? 7 : 0) - 2));
    const shown = ranked.slice(0, room);
    out.push(...table(executorRows(shown, o.wide, s.now)));
    if (shown.length < ranked.length) out.push(`… ${fmt(ranked.length - shown.length)} more executors (${byState(ranked.slice(shown.length).map((e) => e.state), EXEC_ORDER)}); all of them: falconet status executors`);
  }
  if (showInst) {
    const all: any[] = p.instances ?? [];
    const registered = new Set(execs.map((e) => e.id));
    // An instance whose executor is in the table above is that executor: not listed twice.
    const active = all.filter((i) => !ENDED.has(i.state) && (o.wide || o.view === 'instances' || !(i.executorId && registered.has(i.executorId))));
    const ended = all.filter((i) => ENDED.has(i.state)).sort((a, b) => (b.endedAt ?? 0) - (a.endedAt ?? 0));
    const endedShown = o.wide || o.view === 'instances' ? ended : ended.slice(0, ENDED_SHOWN);
    const activeShown = o.wide || o.view === 'instances' ? active : active.slice(0, 5);
    const rows = [...activeShown, ...endedShown];
    if (rows.length > 0) {
      out.push('');
      out.push(
        ...table([
          ['INSTANCE', 'STATE', 'EXECUTOR', 'AGE', 'REASON'],
          ...rows.map((i) => [i.id, i.state, i.executorId ?? '-', duration(((i.endedAt ?? s.now) - i.requestedAt) / 1000), [i.type ? `type ${i.type}` : '', i.reason ?? ''].filter(Boolean).join('; ')]),
        ]),
      );
      const hidden = active.length - activeShown.length + ended.length - endedShown.length;
      if (hidden > 0) out.push(`… ${fmt(hidden)} more instances (${fmt(ended.length - endedShown.length)} ended); all of them: falconet status instances`);
    }
  }
  return out;
}

export interface StatusArgs {
  output: 'text' | 'wide' | 'json';
  view?: 'executors' | 'instances';
}

export async function statusCommand(target: Target, a: StatusArgs): Promise<number> {
  const body = await fetchStatusPatiently(target);
  if (a.output === 'json') {
    process.stdout.write(JSON.stringify(body, null, 2) + '\n');
    return 0;
  }
  process.stdout.write(render(body, { wide: a.output === 'wide', ...(a.view ? { view: a.view } : {}), url: target.url }).join('\n') + '\n');
  return 0;
}

/**
 * `falconet top` / `status --watch`: the status redrawn in place every interval, fitted to the
 * terminal's height. q or Ctrl-C quits (exit 0). A dispatcher that stops answering is said on the
 * screen, and top keeps trying.
 */
export async function topCommand(target: Target, o: { intervalMs: number; wide: boolean }): Promise<never> {
  const tty = process.stdout.isTTY === true;
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const quit = () => stop();
  process.on('SIGINT', quit);
  process.on('SIGTERM', quit);
  if (process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdin.resume();
    process.stdin.on('data', (d: Buffer) => {
      // Keys can arrive together in one read (a loaded machine, a paste): look for one anywhere.
      if (/[qQ\x03]/.test(d.toString())) quit();
    });
  }
  if (tty) process.stdout.write('\x1b[?25l'); // hide the cursor while drawing
  let lastError = '';
  try {
    let first = true;
    for (;;) {
      let lines: string[];
      try {
        const s = await fetchStatus(target, Math.max(1000, o.intervalMs));
        lastError = '';
        const rows = (process.stdout.rows ?? 40) - 2;
        lines = render(s, { wide: o.wide, maxLines: rows, url: target.url });
        lines = lines.slice(0, rows);
      } catch (err) {
        if (err instanceof FalconetError && err.code !== ErrorCode.UNREACHABLE) throw err; // refused: say so and stop
        lastError = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
        lines = [`falconet top: ${target.urls.map(httpBase).join(',')} does not answer (${lastError}); retrying every ${o.intervalMs / 1000} s`];
      }
      const stamp = `${new Date().toLocaleTimeString('en-GB')} · every ${o.intervalMs / 1000} s · q quits`;
      const screen = [...lines, '', stamp].map((l) => l + '\x1b[K').join('\n');
      // Home, draw over the old screen line by line, clear what is left below: no flicker.
      process.stdout.write(tty ? `${first ? '\x1b[2J' : ''}\x1b[H${screen}\x1b[J` : `${screen}\n\n`);
      first = false;
      const next = await Promise.race([sleep(o.intervalMs, 'tick'), stopped.then(() => 'stop')]);
      if (next === 'stop') break;
    }
  } finally {
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
    if (process.stdin.isTTY) {
      process.stdin.setRawMode(false);
      process.stdin.pause();
    }
    if (tty) process.stdout.write('\x1b[?25h\n');
  }
  // Quit means now: no keep-alive socket or pending timer of the last round holds the process.
  process.exit(0);
}
