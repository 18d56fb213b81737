/** The client-side CLI commands, built on the SDK exactly as a user's program would be. */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { constants as osConstants } from 'node:os';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, FalconetError, type TaskResult, type TaskSpec } from '../protocol/index.js';
import { connect, type Client, type ConnectOptions, type StateChange } from './client.js';
import { httpBase } from './url.js';
import { getJson } from './http-get.js';

/** How long a command waits in silence before it says on stderr what it waits for. */
const NOTICE_MS = 2000;
/** How long `run` waits for its cancelled task's result after Ctrl-C before it exits anyway. */
const CANCEL_WAIT_MS = 2000;

/** Where a client command dials, as its flags (or the environment) said. */
export interface Target {
  url: string;
  token: string | undefined;
  /** How long to keep dialing a dispatcher that does not answer (one that restarts, say). */
  connectTimeoutMs: number;
  /** wss://: PEM CA certificate(s) trusted besides the root CAs (--ca FILE, FALCONET_CA). */
  ca?: string;
}

function notice(text: string): void {
  process.stderr.write(`falconet: ${text}\n`);
}

/**
 * Connects as the command's target says. While dialing or redialing takes longer than ~2 s it
 * says so on stderr, once per wait: no command waits in silence.
 */
export function dial(t: Target, extra: ConnectOptions = {}): Promise<Client> {
  let timer: NodeJS.Timeout | null = null;
  let told = false;
  const later = (text: string) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => ((told = true), notice(text)), NOTICE_MS).unref();
  };
  const onState = (c: StateChange) => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (c.state === 'connecting') later(`dialing ${t.url}: is a dispatcher running? (start one with: falconet up)`);
    else if (c.state === 'reconnecting') later(`dispatcher gone, reconnecting to ${t.url} (${c.reason})`);
    else if (c.state === 'connected' && told) notice(`connected to ${t.url}${c.resumed ? '; session resumed' : ''}`);
    if (c.state !== 'reconnecting' && c.state !== 'connecting') told = false;
  };
  return connect(t.url, { token: t.token, connectTimeoutMs: t.connectTimeoutMs, onState, ...(t.ca ? { ca: t.ca } : {}), ...extra });
}

/** The dispatcher's /api/status (with the token as Bearer when one is set). */
async function fetchStatus(target: Target, timeoutMs: number): Promise<Record<string, any>> {
  const url = httpBase(target.url) + '/api/status';
  const res = await getJson(url, { headers: target.token ? { authorization: `Bearer ${target.token}` } : {}, timeoutMs, ...(target.ca ? { ca: target.ca } : {}) });
  const body = res.body as Record<string, any>;
  if (!res.ok) throw FalconetError.fromWire(body.error ?? { code: ErrorCode.INTERNAL, message: `HTTP ${res.status}` });
  return body;
}

/** One line on what tasks wait for, from the dispatcher's status; never throws. */
async function queueSummary(target: Target): Promise<string> {
  try {
    const s = await fetchStatus(target, 2000);
    const live = (s.executors as Array<{ state: string }>).filter((e) => e.state !== 'disconnected').length;
    if (live === 0) return `queued: 0 executors connected (start one with: falconet executor --dispatcher ${target.url})`;
    return `queued: ${live} executors connected, ${s.slots.busy}/${s.slots.total} slots busy; ${s.tasks.queued} tasks queued, ${s.tasks.running} running`;
  } catch (err) {
    return `waiting (dispatcher status unavailable: ${(err as Error).message})`;
  }
}

/**
 * Says what the command waits for once nothing happened for ~2 s; quiet again until the next
 * {@link poke} (a result arrived) is followed by another quiet stretch.
 */
class IdleNotice {
  #timer: NodeJS.Timeout | null = null;
  /** Bumped by poke() and stop(): a status fetch that comes back after either says nothing. */
  #generation = 0;
  constructor(
    private readonly target: Target,
    private readonly prefix: () => string = () => '',
  ) {
    this.poke();
  }
  poke(): void {
    this.stop();
    const generation = this.#generation;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void queueSummary(this.target)
        .then((line) => generation === this.#generation && notice(this.prefix() + line))
        .catch(() => {}); // a notice that cannot be made is not worth more than silence
    }, NOTICE_MS).unref();
  }
  stop(): void {
    this.#generation++;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

/** The exit code `run` mirrors: the task's own, else the shell's conventions. */
export function exitCodeOf(r: TaskResult): number {
  if (r.status === 'succeeded') return 0;
  if (r.status === 'timed_out') return 124; // as timeout(1)
  if (r.error?.code === ErrorCode.SPAWN_FAILED) return 127; // as a shell's "command not found"
  if (r.exitCode !== null && r.exitCode !== 0) return r.exitCode;
  if (r.signal) return 128 + ((osConstants.signals as Record<string, number>)[r.signal] ?? 0);
  return 1;
}

/**
 * Runs one task and mirrors it: output, exit code. Like `docker run`, the task belongs to the
 * command: Ctrl-C (SIGINT) or SIGTERM cancels it, waits briefly for the cancelled result, and exits
 * 130 or 143; a second signal exits at once. A task that waits more than ~2 s gets its id printed
 * (to cancel it from elsewhere) and a line on what it waits for.
 */
export async function runCommand(target: Target, task: TaskSpec): Promise<number> {
  const client = await dial(target);
  const id = task.id ?? `run-${randomBytes(6).toString('hex')}`;
  let onSignal: (sig: NodeJS.Signals) => void = () => {};
  const interrupted = new Promise<NodeJS.Signals>((resolve) => (onSignal = resolve));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const waiting = new IdleNotice(target, () => `task ${id} (session ${client.session.id}; Ctrl-C cancels it) is not finished after ${NOTICE_MS / 1000} s; `);
  const result = client.submit({ ...task, id });
  result.catch(() => {}); // after a signal it may reject at close(); the race below sees it otherwise
  try {
    const first = await Promise.race([result, interrupted]);
    if (typeof first === 'string') return await cancelRun(client, id, first, result);
    const r = first;
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    if (r.truncated) process.stderr.write('falconet: output was truncated\n');
    if (r.status !== 'succeeded' && r.error) process.stderr.write(`falconet: ${r.status}: ${r.error.code}: ${r.error.message}\n`);
    return exitCodeOf(r);
  } finally {
    waiting.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await client.close();
  }
}

async function cancelRun(client: Client, id: string, signal: NodeJS.Signals, result: Promise<TaskResult>): Promise<number> {
  const code = signal === 'SIGINT' ? 130 : 143; // 128 + the signal, as a shell reports it
  // A second signal means "now": leave without waiting for the dispatcher.
  process.once('SIGINT', () => process.exit(code));
  process.once('SIGTERM', () => process.exit(code));
  notice(`${signal}: cancelling task ${id}`);
  try {
    await client.cancel([id]);
  } catch (err) {
    notice(`could not cancel task ${id}: ${(err as Error).message}; cancel it with: falconet cancel ${id}`);
    return code;
  }
  const r = await Promise.race([result, sleep(CANCEL_WAIT_MS, null, { ref: false })]).catch(() => null);
  if (r === null) notice(`task ${id}: no result within ${CANCEL_WAIT_MS / 1000} s of the cancel; check with: falconet status`);
  else notice(`task ${id} ${r.status}`);
  return code;
}

/** Reads tasks as JSON lines; a line that is not a JSON object is reported and skipped. */
async function* readTasks(file: string, bad: (line: number, message: string) => void): AsyncGenerator<TaskSpec> {
  const input = file === '-' ? process.stdin : createReadStream(file);
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      bad(n, `not JSON: ${(err as Error).message}`);
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      bad(n, 'a task must be a JSON object');
      continue;
    }
    yield value as TaskSpec;
  }
}

/** Buffers JSON lines and writes them once per event-loop turn: prompt, and cheap at 100k/s. */
class LineWriter {
  #lines: string[] = [];
  #queued = false;
  write(value: unknown): void {
    this.#lines.push(JSON.stringify(value) + '\n');
    if (!this.#queued) {
      this.#queued = true;
      setImmediate(() => this.flush());
    }
  }
  flush(): void {
    this.#queued = false;
    if (this.#lines.length) process.stdout.write(this.#lines.join(''));
    this.#lines = [];
  }
}

class Progress {
  #last = 0;
  constructor(private readonly enabled: boolean) {}
  update(done: number, submitted: number, final = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!final && now - this.#last < 100) return;
    this.#last = now;
    const width = 30;
    const frac = submitted === 0 ? 0 : Math.min(1, done / submitted);
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
    process.stderr.write(`\r[${bar}] ${done}/${submitted}${final ? '\n' : ''}`);
  }
}

export interface SubmitArgs {
  file: string;
  session?: string;
  leaseMs?: number;
  detach: boolean;
  maxInFlight?: number;
  progress: boolean;
  /** With detach: print each accepted task's id (one a line, in input order) instead of the session. */
  printIds?: boolean;
}

/** Gives each task an id (its own, or a new one) and keeps them in input order. */
async function* withIds(src: AsyncGenerator<TaskSpec>, ids: string[]): AsyncGenerator<TaskSpec> {
  const prefix = `t-${randomBytes(6).toString('hex')}`;
  for await (const t of src) {
    const task = t.id === undefined ? { ...t, id: `${prefix}-${ids.length + 1}` } : t;
    ids.push(String(task.id));
    yield task;
  }
}

export async function submitCommand(target: Target, a: SubmitArgs): Promise<number> {
  const client = await dial(target, { ...(a.session ? { session: a.session } : {}), ...(a.leaseMs !== undefined ? { leaseMs: a.leaseMs } : {}) });
  let badLines = 0;
  const bad = (line: number, message: string) => {
    badLines++;
    process.stderr.write(`falconet: line ${line}: ${ErrorCode.TASK_INVALID}: ${message}\n`);
  };
  try {
    if (a.detach) {
      const ids: string[] = [];
      const tasks = a.printIds ? withIds(readTasks(a.file, bad), ids) : readTasks(a.file, bad);
      const r = await client.submitMany(tasks, { until: 'accepted', maxInFlight: a.maxInFlight ?? 50_000 });
      for (const x of r.rejected) process.stderr.write(`falconet: task ${x.id}: ${x.code}: ${x.message}\n`);
      if (a.printIds) {
        const refused = new Set(r.rejected.map((x) => x.id));
        process.stdout.write(ids.filter((id) => !refused.has(id)).map((id) => `${id}\n`).join(''));
      } else process.stdout.write(`${client.session.id}\n`);
      return r.rejected.length + badLines > 0 ? 1 : 0;
    }
    return await streamResults(client, target, a, bad, () => badLines);
  } finally {
    await client.close();
  }
}

async function streamResults(client: Client, target: Target, a: SubmitArgs, bad: (line: number, m: string) => void, badLines: () => number): Promise<number> {
  const progress = new Progress(a.progress);
  const idle = new IdleNotice(target);
  let submitted = 0;
  let done = 0;
  let failed = 0;
  let allIn = false;
  const out = new LineWriter();
  // Results are printed as they come: the submit loop and this loop run side by side. The loop
  // ends once every result is in and handed out: leaving it acknowledges the last one.
  const results = client.results();
  const reading = (async () => {
    for await (const r of results) {
      idle.poke();
      done++;
      if (r.status !== 'succeeded') failed++;
      out.write(r);
      progress.update(done, submitted);
      if (allIn && client.outstanding === 0) break;
    }
    out.flush();
  })();
  const counting = async function* (src: AsyncGenerator<TaskSpec>) {
    for await (const t of src) {
      submitted++;
      yield t;
    }
  };
  try {
    const r = await client.submitMany(counting(readTasks(a.file, bad)), { until: 'finished', maxInFlight: a.maxInFlight ?? 20_000 });
    allIn = true;
    // Every result has arrived; if the reader already handed out the last one, end it here.
    if (client.outstanding === 0) await results.return!();
    await reading;
    for (const x of r.rejected) {
      failed++;
      done++;
      process.stdout.write(JSON.stringify({ id: x.id, status: 'failed', error: { code: x.code, message: x.message } }) + '\n');
    }
  } finally {
    idle.stop();
  }
  progress.update(done, submitted, true);
  return failed + badLines() > 0 ? 1 : 0;
}

/**
 * Streams the results of a session not yet seen (acknowledged), from any process at any later
 * time, and exits when all of the session's tasks are finished: 0 if all succeeded, else 1.
 */
export async function watchCommand(target: Target, session: string, progress: boolean): Promise<number> {
  const client = await dial(target, { session, attachOnly: true });
  const bar = new Progress(progress);
  const idle = new IdleNotice(target);
  let seen = 0;
  let failed = 0;
  const out = new LineWriter();
  try {
    if (client.outstanding > 0) {
      for await (const r of client.results()) {
        idle.poke();
        seen++;
        if (r.status !== 'succeeded') failed++;
        out.write(r);
        bar.update(seen, seen + client.outstanding);
        if (client.outstanding === 0) break;
      }
    }
    out.flush();
    bar.update(seen, seen, true);
  } finally {
    idle.stop();
    await client.close();
  }
  return failed > 0 ? 1 : 0;
}

/**
 * Prints the dispatcher's status. Like the other client commands it keeps trying for
 * --connect-timeout (a dispatcher that is starting), saying after ~2 s what it waits for.
 */
export async function statusCommand(target: Target, asJson: boolean): Promise<number> {
  const url = httpBase(target.url) + '/api/status';
  const deadline = Date.now() + target.connectTimeoutMs;
  const told = setTimeout(() => notice(`dialing ${url}: is a dispatcher running? (start one with: falconet up)`), NOTICE_MS).unref();
  let body: Record<string, any>;
  try {
    for (;;) {
      try {
        body = await fetchStatus(target, Math.max(1, deadline - Date.now()));
        break;
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
  if (asJson) {
    process.stdout.write(JSON.stringify(body, null, 2) + '\n');
    return 0;
  }
  const t2 = body.tasks;
  process.stdout.write(
    `tasks: ${t2.queued} queued, ${t2.running} running, ${t2.submitted} submitted; finished ${JSON.stringify(t2.finished)}\n` +
      `rates/s: submitted ${body.rates.submitted}, finished ${body.rates.finished}\n` +
      `slots: ${body.slots.busy}/${body.slots.total} busy; sessions: ${body.sessions.total} (${body.sessions.connected} connected)\n` +
      (body.tls === true ? 'tls: on (wss://, https://)\n' : body.tlsWarning ? `tls: OFF: ${body.tlsWarning}\n` : '') +
      `executors (${body.executors.length}):\n`,
  );
  for (const e of body.executors) {
    const boot = e.boot?.length ? ` boot: ${e.boot.map((b: { phase: string; at: number }) => `${b.phase}+${b.at - e.boot[0].at}ms`).join(' ')}` : '';
    process.stdout.write(`  ${e.id.padEnd(32)} ${e.state.padEnd(12)} ${String(e.running).padStart(5)}/${String(e.slots).padEnd(5)} ${e.addresses.join(',')}${e.instanceId ? ` ${e.instanceId}` : ''}${boot}\n`);
  }
  const p = body.provisioner;
  if (p) {
    process.stdout.write(
      `provisioner: ${p.backend}, ${p.policy}, ${p.min}–${p.max}; breaker ${p.breaker.open ? `OPEN: ${p.breaker.reason}` : 'closed'}\n` +
        `  last decision: ${p.lastDecision}\n` +
        (p.lastError ? `  last error: ${p.lastError}\n` : ''),
    );
    for (const i of p.instances) {
      process.stdout.write(`  ${i.id.padEnd(32)} ${i.state.padEnd(12)}${i.executorId ? ` executor ${i.executorId}` : ''}${i.reason ? ` (${i.reason})` : ''}\n`);
    }
  }
  return 0;
}

export async function cancelCommand(target: Target, ids: string[], session: string | undefined, all: boolean): Promise<number> {
  const client = await dial(target);
  try {
    const n = await client.cancel(ids, { session: session ?? '*', all });
    process.stdout.write(`cancelled ${n}\n`);
    if (n === 0) {
      process.stderr.write(`falconet: ${ErrorCode.NOT_FOUND}: no unfinished task matched\n`);
      return 1;
    }
    return 0;
  } finally {
    await client.close();
  }
}

export async function drainCommand(target: Target, executor: string): Promise<number> {
  const client = await dial(target);
  try {
    await client.drain(executor);
    process.stdout.write(`draining ${executor}\n`);
    return 0;
  } finally {
    await client.close();
  }
}
