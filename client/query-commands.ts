/**
 * The CLI's task commands: `task`, `tasks`, `sessions`, and `cancel` by ids, over the dispatcher's
 * HTTP API (GET /api/tasks…, GET /api/sessions, POST /api/tasks/cancel): one request each, and no
 * session opened for a look (a WebSocket client always opens one).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, FalconetError, type SessionInfo, type TaskInfo } from '../protocol/index.js';
import type { Target } from './commands.js';
import { keyFor } from './session-keys.js';
import { httpBase } from './url.js';
import { requestAny, type JsonResponse } from './http-get.js';

const NOTICE_MS = 2000;

function notice(text: string): void {
  process.stderr.write(`falconet: ${text}\n`);
}

/**
 * One HTTP request to the dispatcher, with the token as Bearer: to the first of the target's
 * dispatchers that can be reached (a connection failure moves to the next; an answer, even an
 * error, is the answer). Like the other client commands it keeps trying when none answers (one
 * that is starting) for --connect-timeout, saying after ~2 s what it waits for; an answer that is
 * an error is thrown as the dispatcher's FalconetError.
 */
export async function api<T>(target: Target, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const where = target.urls.map(httpBase).join(',');
  const deadline = Date.now() + target.connectTimeoutMs;
  const told = setTimeout(() => notice(`dialing ${where}: is a dispatcher running? (start one with: falconet up)`), NOTICE_MS).unref();
  const headers: Record<string, string> = {};
  if (target.token) headers.authorization = `Bearer ${target.token}`;
  try {
    for (;;) {
      let res: JsonResponse;
      try {
        res = await requestAny(target.urls, path, { method, headers, ...(body !== undefined ? { body } : {}), timeoutMs: Math.max(1, deadline - Date.now()), ...(target.ca ? { ca: target.ca } : {}) });
      } catch (err) {
        if (err instanceof FalconetError) throw err; // TLS_FAILED: dialing again will not mend it
        const e = err as { code?: string; cause?: { code?: string; message?: string }; message?: string };
        const why = e.code ?? e.cause?.code ?? e.cause?.message ?? e.message;
        if (Date.now() + 200 >= deadline) throw new FalconetError(ErrorCode.UNREACHABLE, `no dispatcher answered at ${where}${path} within ${target.connectTimeoutMs} ms (last error: ${why})`);
        await sleep(200);
        continue;
      }
      const parsed = res.body as any;
      if (!res.ok) {
        const wire = parsed?.error ?? { code: res.status === 404 ? ErrorCode.NOT_FOUND : ErrorCode.INTERNAL, message: `HTTP ${res.status} from ${res.url}` };
        throw FalconetError.fromWire(wire);
      }
      if (parsed === undefined) throw new FalconetError(ErrorCode.INTERNAL, `HTTP ${res.status} from ${res.url}: not JSON`);
      return parsed as T;
    }
  } finally {
    clearTimeout(told);
  }
}

/** A time as local ISO-ish text, or '-'. */
function when(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  const d = new Date(ms);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** How a finished task ended, in a few words: `exit 0, 1.2 s`, `signal SIGKILL`, `TASK_EXECUTOR_LOST`. */
function outcome(t: TaskInfo): string {
  const r = t.result;
  if (!r) return '';
  const how = r.exitCode !== null ? `exit ${r.exitCode}` : r.signal ? `signal ${r.signal}` : r.error ? r.error.code : '';
  const took = r.timings.started !== null ? `${((r.timings.finished - r.timings.started) / 1000).toFixed(3)} s` : '';
  return [how, took, r.cached ? 'cached: the memoized result of an earlier run' : ''].filter(Boolean).join(', ');
}

/** The last `n` lines of a text, each indented. */
function tail(text: string, n: number): string {
  const lines = text.replace(/\n$/, '').split('\n');
  const shown = lines.slice(-n);
  const skipped = lines.length - shown.length;
  return (skipped > 0 ? `    … ${skipped} line(s) before\n` : '') + shown.map((l) => `    ${l}`).join('\n') + '\n';
}

export function describeTask(t: TaskInfo): string {
  const lines = [
    `task ${t.id}`,
    `  session     ${t.session}`,
    `  state       ${t.state}`,
    `  attempt     ${t.attempt}`,
    `  executor    ${t.executor ?? '-'}`,
    `  submitted   ${when(t.submittedAt)}`,
    `  dispatched  ${when(t.dispatchedAt)}`,
  ];
  if (t.waiting) lines.push(`  waiting     ${t.waiting}`);
  let out = lines.join('\n') + '\n';
  const r = t.result;
  if (r) {
    out += `  result      ${r.status}${outcome(t) ? ` (${outcome(t)})` : ''}${r.attempts ? `, ${r.attempts} attempt(s)` : ''}\n`;
    out += `  finished    ${when(r.timings.finished)}\n`;
    if (r.error) out += `  error       ${r.error.code}: ${r.error.message}\n`;
    if (r.stdout) out += `  stdout (${Buffer.byteLength(r.stdout)} bytes${r.truncated ? ', truncated' : ''}):\n` + tail(r.stdout, 10);
    if (r.stderr) out += `  stderr (${Buffer.byteLength(r.stderr)} bytes${r.truncated ? ', truncated' : ''}):\n` + tail(r.stderr, 10);
  } else if (t.state !== 'queued' && t.state !== 'running') {
    out += `  result      (no longer held by the dispatcher)\n`;
  }
  return out;
}

/** `falconet task ID`: what one task does now, and how it ended. NOT_FOUND: exit 1. */
export async function taskCommand(target: Target, id: string, asJson: boolean): Promise<number> {
  const t = await api<TaskInfo>(target, 'GET', `/api/tasks/${encodeURIComponent(id)}`);
  process.stdout.write(asJson ? JSON.stringify(t) + '\n' : describeTask(t));
  return 0;
}

/** Pads columns to their widest cell; the last column is not padded. */
function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd() + '\n').join('');
}

export interface TasksArgs {
  session?: string;
  state?: string;
  limit?: number;
}

/** `falconet tasks`: a listing, newest first, as a table or JSON lines. */
export async function tasksCommand(target: Target, a: TasksArgs, asJson: boolean): Promise<number> {
  const q = new URLSearchParams();
  if (a.session !== undefined) q.set('session', a.session);
  if (a.state !== undefined) q.set('state', a.state);
  if (a.limit !== undefined) q.set('limit', String(a.limit));
  const qs = q.toString();
  const { tasks } = await api<{ tasks: TaskInfo[] }>(target, 'GET', `/api/tasks${qs ? `?${qs}` : ''}`);
  if (asJson) {
    process.stdout.write(tasks.map((t) => JSON.stringify(t) + '\n').join(''));
    return 0;
  }
  const rows = [['ID', 'SESSION', 'STATE', 'ATTEMPT', 'EXECUTOR', 'SUBMITTED', 'INFO']];
  for (const t of tasks) rows.push([t.id, t.session, t.state, String(t.attempt), t.executor ?? '-', when(t.submittedAt), t.waiting ?? outcome(t)]);
  process.stdout.write(table(rows));
  return 0;
}

/** `falconet sessions`: every session the dispatcher holds. */
export async function sessionsCommand(target: Target, asJson: boolean): Promise<number> {
  const { sessions } = await api<{ sessions: SessionInfo[] }>(target, 'GET', '/api/sessions');
  if (asJson) {
    process.stdout.write(sessions.map((s) => JSON.stringify(s) + '\n').join(''));
    return 0;
  }
  const rows = [['SESSION', 'CREATED', 'CONNECTED', 'SUBMITTED', 'FINISHED', 'UNFINISHED', 'UNACKED']];
  for (const s of sessions) rows.push([s.id, when(s.createdAt), s.connected ? 'yes' : 'no', String(s.submitted), String(s.finished), String(s.unfinished), String(s.unacked)]);
  process.stdout.write(table(rows));
  return 0;
}

/**
 * `falconet cancel ID...` (any number of ids, any session): one POST /api/tasks/cancel across
 * sessions for the administrator; for a client token, ADMIN_REQUIRED sends it session by session
 * (found with GET /api/tasks/ID) with the keys this account holds. Prints `cancelled N`; exit 1
 * with NOT_FOUND when none of them was unfinished, 3 with SESSION_FORBIDDEN for a session whose
 * key it lacks.
 */
export async function cancelIdsCommand(target: Target, ids: string[]): Promise<number> {
  let cancelled: number;
  let refused: FalconetError | null = null;
  try {
    ({ cancelled } = await api<{ cancelled: number }>(target, 'POST', '/api/tasks/cancel', { ids }));
  } catch (err) {
    if ((err as FalconetError).code !== ErrorCode.ADMIN_REQUIRED) throw err;
    ({ cancelled, refused } = await cancelSessionBySession(target, ids));
  }
  process.stdout.write(`cancelled ${cancelled}\n`);
  if (refused) throw refused;
  if (cancelled === 0) {
    process.stderr.write(`falconet: ${ErrorCode.NOT_FOUND}: no unfinished task matched\n`);
    return 1;
  }
  return 0;
}

/** Cancels `ids` in the sessions that hold them, each with its key; the first refusal is returned. */
async function cancelSessionBySession(target: Target, ids: string[]): Promise<{ cancelled: number; refused: FalconetError | null }> {
  const bySession = new Map<string, string[]>();
  for (const id of ids) {
    const info = await api<TaskInfo>(target, 'GET', `/api/tasks/${encodeURIComponent(id)}`).catch(() => null);
    if (info && (info.state === 'queued' || info.state === 'running')) bySession.set(info.session, [...(bySession.get(info.session) ?? []), id]);
  }
  let cancelled = 0;
  let refused: FalconetError | null = null;
  for (const [session, some] of bySession) {
    const key = keyFor(target, session);
    try {
      cancelled += (await api<{ cancelled: number }>(target, 'POST', '/api/tasks/cancel', { ids: some, session, ...(key ? { key } : {}) })).cancelled;
    } catch (err) {
      if ((err as FalconetError).code !== ErrorCode.SESSION_FORBIDDEN) throw err;
      refused ??= new FalconetError(ErrorCode.SESSION_FORBIDDEN, `${some.join(', ')} not cancelled: ${(err as Error).message}`);
    }
  }
  return { cancelled, refused };
}
