/**
 * The HTTP side of the dispatcher's port, so that a shell script with curl is a client:
 * `/healthz`, `/metrics` (Prometheus), `/api/status`, and the task API:
 * - `GET /api/tasks/ID[?session=S]`: one task (TaskInfo with its result when finished), 404 NOT_FOUND;
 * - `GET /api/tasks?session=&state=&limit=`: `{tasks: [...]}`, newest first;
 * - `POST /api/tasks`: a JSON array of tasks (into a new session), or `{session?, key?, tasks}` →
 *   `{session, key, ids}`; all or nothing: 400 TASK_INVALID with each problem, 400
 *   INVALID_MESSAGE for a body that is not JSON, 403 SESSION_FORBIDDEN for an existing session
 *   without its key; answered once the tasks are committed (a 200 survives kill -9), 503 when the
 *   store failed or the dispatcher stops first;
 * - `POST /api/tasks/cancel`: `{ids, session, key?}` → `{cancelled}` (without `session`: every
 *   session, for the administrator only: 403 ADMIN_REQUIRED);
 * - `GET /api/sessions`: `{sessions: [...]}`;
 * - `GET /`: the dashboard, a static page that polls the routes above (dashboard/page.ts).
 * Everything but `/healthz` and `/` needs the client token (`Authorization: Bearer …`) off loopback;
 * the administrator token is accepted wherever the client token is, and needs no session keys.
 */
import type { Registry } from 'prom-client';
import { ErrorCode, type FalconetError, LIMITS, TaskStateSchema, wireError, type TaskInfo } from '../protocol/index.js';
import type { DispatcherCore } from './core.js';
import { DASHBOARD_HTML } from './dashboard/page.js';
import { completeInfo, type Found } from './queries.js';
import type { HttpReply, HttpRequest } from './transport.js';
import type { ResultLookup } from './server.js';
import { sameSecret } from './sessions.js';

const STATES = new Set<string>([...TaskStateSchema.anyOf.map((s) => s.const as string), 'finished']);

export interface HttpApiDeps {
  core: DispatcherCore;
  metrics: Registry;
  /** Stored results for task queries (absent: the in-memory store keeps none). */
  lookup: ResultLookup | undefined;
  /** The expected client token when HTTP needs one (off loopback), else undefined. */
  token(): string | undefined;
  /** Whether a request bearing this token (or none) is the administrator's. */
  isAdmin(bearer: string | undefined): boolean;
  stopping(): boolean;
  /** Counts a refused credential (metrics). */
  authFailed?(): void;
  /** Extra fields for /api/status (the provisioner's). */
  statusExtra(): Record<string, unknown> | undefined;
  /** Several dispatchers (cluster.ts): where a session is served, and who is live. */
  router?: SessionRouter | null;
  /** Resolves when what the core journaled so far is committed: submits and cancels are answered after it. */
  durable(): Promise<void>;
}

/** Where a session is served when several dispatchers share one database (docs/scale-out.md). */
export interface SessionRouter {
  /**
   * null: here. A URL: the dispatcher that holds the session's partition (a client is sent there
   * with MOVED, an HTTP request with 307). '': its partition is between owners (retry shortly).
   * `session` undefined asks where a new session can be opened.
   */
  route(session: string | undefined): string | null;
  /** Live dispatchers, their partitions and the provisioner's leader (GET /api/dispatchers). */
  dispatchers(): unknown[];
}

export async function handleHttp(req: HttpRequest, d: HttpApiDeps): Promise<HttpReply> {
  const { path, method } = req;
  if (path === '/healthz') return json(200, { ok: !d.stopping() });
  // Static and holding no data, so served without the token; the page sends it on its API calls.
  if (method === 'GET' && (path === '/' || path === '/index.html')) return { status: 200, headers: DASHBOARD_HEADERS, body: DASHBOARD_HTML };
  const token = d.token();
  const auth = req.authorization ?? '';
  const bearer = auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
  const admin = d.isAdmin(bearer);
  if (token !== undefined && !admin) {
    if (!sameSecret(bearer ?? '', token)) {
      d.authFailed?.();
      return json(401, { error: wireError(ErrorCode.AUTH_FAILED, 'Authorization: Bearer <client token> required') });
    }
  }
  const query = new URLSearchParams(req.query);
  if (method === 'GET' && path === '/api/status') return json(200, { ...d.core.status(), ...d.statusExtra() });
  if (method === 'GET' && path === '/metrics') return { status: 200, headers: { 'content-type': d.metrics.contentType }, body: await d.metrics.metrics() };
  if (method === 'GET' && path === '/api/dispatchers') return json(200, { dispatchers: d.router?.dispatchers() ?? [{ url: null, partitions: null, leader: true, self: true }] });
  if (method === 'GET' && path === '/api/sessions') return json(200, { sessions: d.core.sessionInfos() });
  if (method === 'GET' && path === '/api/tasks') {
    const state = query.get('state') ?? undefined;
    if (state !== undefined && !STATES.has(state)) return bad(ErrorCode.INVALID_MESSAGE, `state must be one of ${[...STATES].join(', ')}`);
    const limit = query.get('limit');
    const n = limit === null ? undefined : Number(limit);
    if (n !== undefined && !(Number.isInteger(n) && n >= 1 && n <= 10_000)) return bad(ErrorCode.INVALID_MESSAGE, 'limit must be an integer from 1 to 10000');
    const found = d.core.findTasks({ ...(query.get('session') ? { session: query.get('session')! } : {}), ...(state ? { state: state as never } : {}), ...(n ? { limit: n } : {}) });
    return json(200, { tasks: found.tasks });
  }
  if (method === 'GET' && path.startsWith('/api/tasks/')) {
    const id = decodeURIComponent(path.slice('/api/tasks/'.length));
    const found = d.core.findTasks({ ids: [id], ...(query.get('session') ? { session: query.get('session')! } : {}) });
    if (found.tasks.length === 0) return json(404, { error: wireError(ErrorCode.NOT_FOUND, `no task ${id}`) });
    return json(200, (await withStoredResults(found, d.lookup))[0]);
  }
  if (method === 'POST' && (path === '/api/tasks' || path === '/api/tasks/cancel')) {
    if (req.body === null) return json(413, { error: wireError(ErrorCode.FRAME_TOO_LARGE, 'the request body is too large') });
    let body: unknown;
    try {
      body = JSON.parse(req.body.toString('utf8'));
    } catch (err) {
      return bad(ErrorCode.INVALID_MESSAGE, `the body is not JSON: ${(err as Error).message}`);
    }
    const elsewhere = d.router ? moved(d.router, (body as { session?: unknown } | null)?.session, path === '/api/tasks', req.path + (req.query ? `?${req.query}` : '')) : null;
    if (elsewhere) return elsewhere;
    return path === '/api/tasks' ? submit(body, d, admin) : cancel(body, d, admin);
  }
  return json(404, { error: wireError(ErrorCode.NOT_FOUND, `no route ${method} ${path}`) });
}

/** The answer once the change it reports is committed (acknowledged means durable), or 503. */
async function whenDurable(d: HttpApiDeps, reply: HttpReply): Promise<HttpReply> {
  try {
    await d.durable();
    return reply;
  } catch (err) {
    const e = err as FalconetError;
    return json(503, { error: wireError(e.code ?? ErrorCode.STORE_FAILED, e.message) });
  }
}

async function submit(body: unknown, d: HttpApiDeps, admin: boolean): Promise<HttpReply> {
  const wrapped = body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as { session?: unknown; key?: unknown; tasks?: unknown }) : { tasks: body };
  const { session, key } = wrapped;
  if (session !== undefined && (typeof session !== 'string' || session.length === 0 || session.length > LIMITS.idLength)) return bad(ErrorCode.INVALID_MESSAGE, 'session must be a non-empty string');
  const keyProblem = sessionKeyProblem(key);
  if (keyProblem) return bad(ErrorCode.INVALID_MESSAGE, keyProblem);
  if (!Array.isArray(wrapped.tasks)) return bad(ErrorCode.INVALID_MESSAGE, 'the body must be a JSON array of tasks, or {"session"?, "key"?, "tasks": [...]}');
  if (wrapped.tasks.length > LIMITS.tasksPerSubmit) return bad(ErrorCode.INVALID_MESSAGE, `at most ${LIMITS.tasksPerSubmit} tasks per request`);
  const r = d.core.submitDetached(session as string | undefined, wrapped.tasks, key as string | undefined, admin);
  if ('refused' in r) return json(403, { error: r.refused });
  if ('problems' in r) {
    const first = r.problems[0];
    return json(400, { error: { ...wireError(ErrorCode.TASK_INVALID, `task ${first.index}: ${first.message}`), problems: r.problems } });
  }
  return whenDurable(d, json(200, r));
}

async function cancel(body: unknown, d: HttpApiDeps, admin: boolean): Promise<HttpReply> {
  const b = body as { ids?: unknown; session?: unknown; key?: unknown } | null;
  if (b === null || typeof b !== 'object' || !Array.isArray(b.ids) || !b.ids.every((x) => typeof x === 'string')) {
    return bad(ErrorCode.INVALID_MESSAGE, 'the body must be {"ids": ["…"], "session": "…", "key"?: "…"}');
  }
  if (b.session !== undefined && typeof b.session !== 'string') return bad(ErrorCode.INVALID_MESSAGE, 'session must be a string');
  const keyProblem = sessionKeyProblem(b.key);
  if (keyProblem) return bad(ErrorCode.INVALID_MESSAGE, keyProblem);
  const r = d.core.cancelIds(b.ids as string[], b.session as string | undefined, b.key as string | undefined, admin);
  return typeof r === 'number' ? whenDurable(d, json(200, { cancelled: r })) : json(403, { error: r });
}

/** What is wrong with a session key given over HTTP (the same bounds as on the wire), or null. */
function sessionKeyProblem(key: unknown): string | null {
  if (key === undefined) return null;
  return typeof key === 'string' && key.length >= 16 && key.length <= 256 ? null : 'key must be a string of 16 to 256 characters';
}

/** Completes the infos of finished tasks whose results only the store still has. */
export async function withStoredResults(found: Found, lookup: ResultLookup | undefined): Promise<TaskInfo[]> {
  if (found.stored.length > 0 && lookup) {
    const results = await lookup(found.stored);
    found.stored.forEach((ref, i) => completeInfo(found.tasks[ref.index], results[i] ?? null));
  }
  return found.tasks;
}

const DASHBOARD_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-cache',
  // Inline script and style only, requests to this origin only, never framed.
  'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
};

function bad(code: ErrorCode, message: string): HttpReply {
  return json(400, { error: wireError(code, message) });
}

/**
 * A submit or cancel for a session another dispatcher serves: 307 to it (the method and body are
 * kept; `curl -L` follows), or 503 MOVED while its partition is between owners. A submit without
 * a session goes elsewhere only when this dispatcher holds no partition at all.
 */
function moved(router: SessionRouter, session: unknown, submitting: boolean, pathAndQuery: string): HttpReply | null {
  if (typeof session !== 'string' && !(submitting && session === undefined)) return null;
  const to = router.route(typeof session === 'string' ? session : undefined);
  if (to === null) return null;
  if (to === '') return json(503, { error: wireError(ErrorCode.MOVED, 'this session\'s partition is moving between dispatchers; try again in a moment') });
  const location = to.replace(/^ws/, 'http') + pathAndQuery;
  return { status: 307, headers: { location, 'content-type': 'application/json', 'cache-control': 'no-store' }, body: JSON.stringify({ error: wireError(ErrorCode.MOVED, `session served by ${to}`, to) }) };
}

function json(status: number, body: unknown): HttpReply {
  return { status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' }, body: JSON.stringify(body) };
}
