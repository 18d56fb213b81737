/** The client-side CLI commands, built on the SDK exactly as a user's program would be. */
import { constants as osConstants } from 'node:os';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, FalconetError, type TaskResult, type TaskSpec } from '../protocol/index.js';
import { connect, type Client, type ConnectOptions, type StateChange } from './client.js';
import { fetchStatus } from './status-view.js';
import { BAD_SHOWN, newPrefix, readTaskFile, reportBad, streamTasks, type Bad, type Numbered } from './input.js';
import { Progress, Tally, type ProgressMode } from './progress.js';
import { api } from './query-commands.js';
import { keyFor, saveSessionKey, sessionKeysDir } from './session-keys.js';
import { InputLines, LineWriter, resultLine } from './output.js';

/** How long a command waits in silence before it says on stderr what it waits for. */
const NOTICE_MS = 2000;
/** How long `run` waits for its cancelled task's result after Ctrl-C before it exits anyway. */
const CANCEL_WAIT_MS = 2000;

/** Where a client command dials, as its flags (or the environment) said. */
export interface Target {
  /** The dispatchers, as one comma-separated string for messages. */
  url: string;
  /** The dispatchers, checked (ws:// or wss://), in the order they are tried. */
  urls: string[];
  token: string | undefined;
  /** How long to keep dialing a dispatcher that does not answer (one that restarts, say). */
  connectTimeoutMs: number;
  /** wss://: PEM CA certificate(s) trusted besides the root CAs (--ca FILE, FALCONET_CA). */
  ca?: string;
  /** The key of the session a command names (--session-key, FALCONET_SESSION_KEY). */
  sessionKey?: string;
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
    else if (c.state === 'reconnecting') later(`dispatcher ${c.dispatcher ?? ''} gone, reconnecting to ${c.next || t.url} (${c.reason})`.replace('  ', ' '));
    else if (c.state === 'connected' && told) notice(`connected to ${c.dispatcher ?? t.url}${c.resumed ? '; session resumed' : ''}`);
    if (c.state !== 'reconnecting' && c.state !== 'connecting') told = false;
  };
  return connect(t.urls, { token: t.token, connectTimeoutMs: t.connectTimeoutMs, onState, ...(t.ca ? { ca: t.ca } : {}), ...extra });
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
  /** Bumped by stop(): a status fetch that comes back after it (or after a poke) says nothing. */
  #generation = 0;
  constructor(
    private readonly target: Target,
    private readonly prefix: () => string = () => '',
  ) {
    this.poke();
  }
  /** Results seen: poke() only counts (it runs per result), the timer looks whether it moved. */
  #pokes = 0;
  poke(): void {
    this.#pokes++;
    if (this.#timer === null) this.#arm();
  }
  /** Says what we wait for after NOTICE_MS without a poke (checked every NOTICE_MS, so within 2×). */
  #arm(): void {
    const pokes = this.#pokes;
    const generation = this.#generation;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#pokes !== pokes) return this.#arm();
      void queueSummary(this.target)
        .then((line) => generation === this.#generation && pokes === this.#pokes && notice(this.prefix() + line))
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
    if (r.status !== 'succeeded' && r.error) process.stderr.write(`falconet: ${r.status}: ${r.error.code}: ${spawnProblem(task, r) ?? r.error.message}\n`);
    return exitCodeOf(r);
  } finally {
    waiting.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await client.close();
  }
}

/**
 * A task that could not start names what is at fault: Node says `spawn CMD ENOENT` both for a
 * missing command and for a missing working directory, so with --cwd given the directory is named.
 */
export function spawnProblem(task: TaskSpec, r: TaskResult): string | null {
  if (r.error?.code !== ErrorCode.SPAWN_FAILED || !/ENOENT/.test(r.error.message)) return null;
  const cmd = task.cmd?.[0] ?? '';
  const on = r.executor ? ` on executor ${r.executor}` : '';
  if (task.cwd !== undefined) {
    const here = existsSync(task.cwd) ? '' : ' (nor here)';
    return `--cwd ${task.cwd}: no such directory${on}${here}, or ${cmd} is not on its PATH (${r.error.message})`;
  }
  return `${cmd}: command not found${on} (${r.error.message})`;
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

/** Buffers JSON lines and writes them once per event-loop turn: prompt, and cheap at 100k/s. */
export interface SubmitArgs {
  file: string;
  session?: string;
  leaseMs?: number;
  detach: boolean;
  maxInFlight?: number;
  progress: ProgressMode;
  /** With detach: print each accepted task's id (one a line, in input order) instead of the session. */
  printIds?: boolean;
  /** From stdin: report a bad line and go on instead of stopping there. */
  skipInvalid?: boolean;
  /** `--array FROM-TO -- CMD`: one job array instead of task lines (`cmd` has `{index}` already). */
  array?: { from: number; to: number; cmd: string[] };
  /** Tasks with a cacheKey run even when the key has a memoized result (which they then replace). */
  noCache?: boolean;
}

/** The error that ended a client (session taken over, credential refused…), once it ends by one. */
function endError(client: Client): () => FalconetError | null {
  let ended: FalconetError | null = null;
  client.onState((c) => {
    if (c.state === 'closed' && c.error && c.error.code !== ErrorCode.CLIENT_CLOSED) ended = c.error;
  });
  return () => ended;
}

/**
 * `submit`: a file is read and checked whole before anything is sent (one bad line: nothing is
 * submitted, exit 2); stdin is checked as it comes and stops at the first bad line (exit 2 once
 * what was submitted has finished) unless --skip-invalid. Each result carries its input line.
 */
export async function submitCommand(target: Target, a: SubmitArgs): Promise<number> {
  const startedAt = Date.now();
  const prefix = newPrefix();
  const bad: Bad[] = [];
  let source: AsyncIterable<Numbered> | Numbered[];
  let total: number | undefined;
  if (a.array) {
    source = [{ line: 1, task: { id: `${prefix}-a`, array: { from: a.array.from, to: a.array.to }, cmd: a.array.cmd } }];
    total = a.array.to - a.array.from + 1;
  } else if (a.file !== '-') {
    const checked = readTaskFile(a.file, prefix);
    if (checked.bad.length > 0) {
      reportBad(a.file, checked.bad);
      process.stderr.write(`falconet: ${a.file}: ${checked.bad.length.toLocaleString('en-US')} bad line(s) of ${(checked.bad.length + checked.tasks.length).toLocaleString('en-US')}; nothing submitted\n`);
      return 2;
    }
    source = checked.tasks;
    total = checked.tasks.length;
  } else {
    source = streamTasks(a.file, prefix, a.skipInvalid ?? false, (b) => {
      bad.push(b);
      if (bad.length <= BAD_SHOWN) reportBad(a.file, [b]);
      if (!a.skipInvalid) process.stderr.write(`falconet: stopped reading at line ${b.line} (tasks before it still run; --skip-invalid goes on past bad lines)\n`);
    });
  }
  const lines = new InputLines(prefix);
  const noCache = (t: TaskSpec) => {
    if (a.noCache && t.cacheKey !== undefined) t.noCache = true;
  };
  // A file is read synchronously (the SDK then packs it without a promise per task: most of the
  // CLI's cost over the SDK's, profiled); stdin as it comes.
  function tasks(): Iterable<TaskSpec> | AsyncIterable<TaskSpec> {
    if (Array.isArray(source)) {
      const all = source;
      return (function* () {
        for (const n of all) {
          lines.note(n.task.id!, n.line);
          noCache(n.task);
          yield n.task;
        }
      })();
    }
    const stream = source;
    return (async function* () {
      for await (const n of stream) {
        lines.note(n.task.id!, n.line);
        noCache(n.task);
        yield n.task;
      }
    })();
  }
  const sessionKey = a.session ? keyFor(target, a.session) : undefined;
  const client = await dial(target, { ...(a.session ? { session: a.session } : {}), ...(sessionKey ? { sessionKey } : {}), ...(a.leaseMs !== undefined ? { leaseMs: a.leaseMs } : {}) });
  // Kept so that `falconet watch S` and `cancel --session S` work later with nothing to paste.
  if (client.session.key !== '' && client.session.key !== sessionKey) {
    const warning = saveSessionKey(client.session.id, client.session.key);
    if (warning) notice(warning);
  }
  const ended = endError(client);
  const skipped = () => (bad.length > 0 ? [`${bad.length.toLocaleString('en-US')} bad line(s) ${a.skipInvalid ? 'skipped' : '(reading stopped at the first)'}`] : []);
  const inputCode = () => (bad.length > 0 && !a.skipInvalid ? 2 : 0);
  try {
    if (a.detach) {
      const ids: string[] = [];
      const r = await client.submitMany(
        (async function* () {
          for await (const t of tasks()) {
            ids.push(t.id!);
            yield t;
          }
        })(),
        { until: 'accepted', maxInFlight: a.maxInFlight ?? 50_000 },
      );
      for (const x of r.rejected) process.stderr.write(`falconet: line ${lines.of(x.id) ?? '?'}: task ${x.id}: ${x.code}: ${x.message}\n`);
      if (a.printIds) {
        const refused = new Set(r.rejected.map((x) => x.id));
        process.stdout.write(ids.filter((id) => !refused.has(id)).map((id) => `${id}\n`).join(''));
      } else process.stdout.write(`${client.session.id}\n`);
      const extra = [...skipped(), ...(r.rejected.length ? [`${r.rejected.length.toLocaleString('en-US')} refused`] : [])];
      process.stderr.write(
        `falconet: ${r.accepted.toLocaleString('en-US')} task(s) accepted in session ${client.session.id}${extra.length ? `, ${extra.join(', ')}` : ''}; results: falconet watch ${client.session.id} (its key is in ${sessionKeysDir()})\n`,
      );
      return Math.max(inputCode(), r.rejected.length > 0 ? 1 : 0);
    }
    const tally = new Tally(startedAt);
    await streamResults(client, target, a, tasks(), lines, tally, total);
    process.stderr.write(`falconet: ${tally.line(skipped())}\n`);
    const e = ended();
    if (e) throw e;
    return Math.max(inputCode(), tally.failed > 0 ? 1 : 0);
  } finally {
    await client.close();
  }
}

async function streamResults(client: Client, target: Target, a: SubmitArgs, src: Iterable<TaskSpec> | AsyncIterable<TaskSpec>, lines: InputLines, tally: Tally, total: number | undefined): Promise<void> {
  const progress = new Progress(a.progress);
  const idle = new IdleNotice(target);
  let submitted = 0;
  let allIn = false;
  const out = new LineWriter();
  const draw = () => progress.update(tally.done, total ?? submitted, tally.failed, submitted - tally.done);
  const ticker = setInterval(draw, a.progress === 'tty' ? 250 : 5000).unref();
  // Results are printed as they come: the submit loop and this loop run side by side. The loop
  // ends once every result is in and handed out: leaving it acknowledges the last one.
  const results = client.results();
  const reading = (async () => {
    for await (const r of results) {
      idle.poke();
      tally.add(r);
      out.writeLine(resultLine(r, lines.of(r.id)));
      draw();
      if (allIn && client.outstanding === 0) break;
    }
    out.flush();
  })();
  const counting =
    Symbol.iterator in src
      ? (function* () {
          for (const t of src) {
            submitted++;
            yield t;
          }
        })()
      : (async function* () {
          for await (const t of src) {
            submitted++;
            yield t;
          }
        })();
  try {
    const r = await client.submitMany(counting, { until: 'finished', maxInFlight: a.maxInFlight ?? 20_000 });
    allIn = true;
    // Every result has arrived; if the reader already handed out the last one, end it here.
    if (client.outstanding === 0) await results.return!();
    await reading;
    for (const x of r.rejected) {
      const refused = { id: x.id, line: lines.of(x.id), status: 'failed' as const, exitCode: null, error: { code: x.code, message: x.message } };
      tally.add(refused as Pick<TaskResult, 'status' | 'exitCode' | 'error'>);
      process.stdout.write(JSON.stringify(refused) + '\n');
    }
  } finally {
    clearInterval(ticker);
    idle.stop();
    progress.end(tally.done, total ?? submitted, tally.failed);
  }
}

/** The session's counts from the dispatcher (for watch's whole total); null when it cannot say. */
async function sessionCounts(target: Target, session: string): Promise<{ submitted: number; finished: number; unfinished: number; unacked: number } | null> {
  try {
    const { sessions } = await api<{ sessions: Array<{ id: string; submitted: number; finished: number; unfinished: number; unacked: number }> }>(
      { ...target, connectTimeoutMs: Math.min(target.connectTimeoutMs, 3000) },
      'GET',
      '/api/sessions',
    );
    return sessions.find((s) => s.id === session) ?? null;
  } catch {
    return null;
  }
}

/**
 * Streams the results of a session not yet seen (acknowledged), from any process at any later
 * time, and exits when all of the session's tasks are finished: 0 if all succeeded, else 1. It
 * never exits 0 with results missing: a client ended by an error (the session taken over by
 * another connection, a refused credential) is said, with how many results are missing, and
 * exits non-zero.
 */
export async function watchCommand(target: Target, session: string, progress: ProgressMode): Promise<number> {
  const sessionKey = keyFor(target, session);
  const client = await dial(target, { session, attachOnly: true, ...(sessionKey ? { sessionKey } : {}) });
  const ended = endError(client);
  const bar = new Progress(progress);
  const idle = new IdleNotice(target);
  const tally = new Tally();
  // The whole session: results handed out before this watch count as done (the welcome says what
  // is left: unfinished + unacked).
  const counts = progress === 'off' ? null : await sessionCounts(target, session);
  const before = counts ? Math.max(0, counts.submitted - counts.unfinished - counts.unacked) : 0;
  const out = new LineWriter();
  const draw = () => bar.update(before + tally.done, before + tally.done + client.outstanding, tally.failed, client.outstanding);
  const ticker = setInterval(draw, progress === 'tty' ? 250 : 5000).unref();
  let missing = 0;
  try {
    if (client.outstanding > 0) {
      for await (const r of client.results()) {
        idle.poke();
        tally.add(r);
        out.write(r);
        draw();
        if (client.outstanding === 0) break;
      }
    }
    out.flush();
    missing = client.outstanding;
  } finally {
    clearInterval(ticker);
    idle.stop();
    bar.end(before + tally.done, before + tally.done + client.outstanding, tally.failed);
    await client.close();
  }
  const e = ended();
  const extra = before > 0 ? [`${before.toLocaleString('en-US')} handed out before this watch`] : [];
  if (e || missing > 0) {
    process.stderr.write(`falconet: ${tally.line([...extra, `${missing.toLocaleString('en-US')} result(s) missing`])}\n`);
    throw e
      ? new FalconetError(e.code, `watch of session ${session} ended early: ${e.message}; ${missing} result(s) not printed (falconet watch ${session} again gets them)`)
      : new FalconetError(ErrorCode.UNREACHABLE, `watch of session ${session} ended with ${missing} result(s) not printed`);
  }
  process.stderr.write(`falconet: ${tally.line(extra)}\n`);
  return tally.failed > 0 ? 1 : 0;
}

/** Cancels by id (or every unfinished task, `all`) in one session, with its key. */
export async function cancelCommand(target: Target, ids: string[], session: string, all: boolean): Promise<number> {
  const client = await dial(target);
  try {
    const key = keyFor(target, session);
    const n = await client.cancel(ids, { session, all, ...(key ? { key } : {}) });
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
