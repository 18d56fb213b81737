/** The client-side CLI commands, built on the SDK exactly as a user's program would be. */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { constants as osConstants } from 'node:os';
import { ErrorCode, FalconetError, type TaskResult, type TaskSpec } from '../protocol/index.js';
import { connect, type Client, type ConnectOptions } from './client.js';

/** Where a client command dials, as its flags (or the environment) said. */
export interface Target {
  url: string;
  token: string | undefined;
  /** How long to keep dialing a dispatcher that does not answer (one that restarts, say). */
  connectTimeoutMs: number;
}

/** Connects as the command's target says. */
export function dial(t: Target, extra: ConnectOptions = {}): Promise<Client> {
  return connect(t.url, { token: t.token, connectTimeoutMs: t.connectTimeoutMs, ...extra });
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

export async function runCommand(target: Target, task: TaskSpec): Promise<number> {
  const client = await dial(target);
  try {
    const r = await client.submit(task);
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    if (r.truncated) process.stderr.write('falconet: output was truncated\n');
    if (r.status !== 'succeeded' && r.error) process.stderr.write(`falconet: ${r.status}: ${r.error.code}: ${r.error.message}\n`);
    return exitCodeOf(r);
  } finally {
    await client.close();
  }
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
      const r = await client.submitMany(readTasks(a.file, bad), { until: 'accepted', maxInFlight: a.maxInFlight ?? 50_000 });
      for (const x of r.rejected) process.stderr.write(`falconet: task ${x.id}: ${x.code}: ${x.message}\n`);
      process.stdout.write(`${client.session.id}\n`);
      return r.rejected.length + badLines > 0 ? 1 : 0;
    }
    return await streamResults(client, a, bad, () => badLines);
  } finally {
    await client.close();
  }
}

async function streamResults(client: Client, a: SubmitArgs, bad: (line: number, m: string) => void, badLines: () => number): Promise<number> {
  const progress = new Progress(a.progress);
  let submitted = 0;
  let done = 0;
  let failed = 0;
  const out = new LineWriter();
  // Results are printed as they come: the submit loop and this loop run side by side. The
  // iterator ends when the client closes, after handing over what it already holds.
  const reading = (async () => {
    for await (const r of client.results()) {
      done++;
      if (r.status !== 'succeeded') failed++;
      out.write(r);
      progress.update(done, submitted);
    }
    out.flush();
  })();
  const counting = async function* (src: AsyncGenerator<TaskSpec>) {
    for await (const t of src) {
      submitted++;
      yield t;
    }
  };
  const r = await client.submitMany(counting(readTasks(a.file, bad)), { until: 'finished', maxInFlight: a.maxInFlight ?? 20_000 });
  await client.close();
  await reading;
  for (const x of r.rejected) {
    failed++;
    done++;
    process.stdout.write(JSON.stringify({ id: x.id, status: 'failed', error: { code: x.code, message: x.message } }) + '\n');
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
  let seen = 0;
  let failed = 0;
  const out = new LineWriter();
  try {
    if (client.outstanding > 0) {
      for await (const r of client.results()) {
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
    await client.close();
  }
  return failed > 0 ? 1 : 0;
}

export async function statusCommand(target: Target, asJson: boolean): Promise<number> {
  const httpUrl = target.url.replace(/^ws/, 'http').replace(/\/$/, '') + '/api/status';
  const t = target.token;
  let res: Response;
  try {
    res = await fetch(httpUrl, { headers: t ? { authorization: `Bearer ${t}` } : {} });
  } catch (err) {
    throw new FalconetError(ErrorCode.UNREACHABLE, `cannot reach ${httpUrl}: ${(err as Error).message}`);
  }
  const body = (await res.json()) as Record<string, any>;
  if (!res.ok) throw FalconetError.fromWire(body.error ?? { code: ErrorCode.INTERNAL, message: `HTTP ${res.status}` });
  if (asJson) {
    process.stdout.write(JSON.stringify(body, null, 2) + '\n');
    return 0;
  }
  const t2 = body.tasks;
  process.stdout.write(
    `tasks: ${t2.queued} queued, ${t2.running} running, ${t2.submitted} submitted; finished ${JSON.stringify(t2.finished)}\n` +
      `rates/s: submitted ${body.rates.submitted}, finished ${body.rates.finished}\n` +
      `slots: ${body.slots.busy}/${body.slots.total} busy; sessions: ${body.sessions.total} (${body.sessions.connected} connected)\n` +
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
