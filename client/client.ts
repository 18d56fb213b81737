/**
 * The client SDK. A client works in a session: every task it submits gets an id (its own, or
 * one the SDK makes), and the session outlives the connection: the SDK reconnects on its own,
 * resends submits the dispatcher had not yet acknowledged (idempotent by id), and resumes the
 * result stream at its cursor.
 *
 * Delivery: within one process every result is handed out once (to its submit() promise or to a
 * results() iterator), in sequence order for the iterators. Results are acknowledged lazily: after
 * a crash of the client process, a reattaching client gets the last few again. See results.ts.
 *
 * Every path ends: a promise the SDK returns settles (close() rejects what is pending with
 * CLIENT_CLOSED), and nothing the SDK does on a timer or a socket event can throw into the host.
 */
import {
  ErrorCode,
  FalconetError,
  PROTOCOL_VERSION,
  RECORDS_CAP,
  PEERS_CAP,
  compileInbound,
  DispatcherToClientSchemas,
  type DispatcherToClient,
  type Msg,
  type SessionInfo,
  type TaskInfo,
  type TaskState,
  type TaskResult,
  type TaskSpec,
} from '../protocol/index.js';
import { Link } from '../protocol/link.js';
import type { Resolver } from '../protocol/dispatchers.js';
import { ResultStream } from './results.js';
import { SubmitPipeline, type Rejection } from './submits.js';
import { abortable, type TaskHandle } from './handles.js';
import { dispatcherUrls } from './url.js';
import { LogReader, type LogStream } from './logs.js';

export type { TaskResult, TaskSpec } from '../protocol/index.js';
export type { Rejection } from './submits.js';
export type { LogEnd, LogPiece, LogStream } from './logs.js';

/** Where a client stands with its dispatcher. */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** One change of {@link Client.state}, as {@link Client.onState} listeners receive it. */
export interface StateChange {
  state: ConnectionState;
  /** With `connected`: the dispatcher knew the session (it was resumed, not opened afresh). */
  resumed?: boolean;
  /** With `reconnecting` (why the connection was lost) and `closed` (why the client ended). */
  reason?: string;
  /** With `connected`: the dispatcher's URL; with `reconnecting`: the one lost. */
  dispatcher?: string;
  /** With `reconnecting`: the dispatcher dialed next (another one of the list, when there is one). */
  next?: string;
  /** With `closed`: the error that ended the client (UNREACHABLE, AUTH_FAILED, CLIENT_CLOSED). */
  error?: FalconetError;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The client credential. The SDK reads no environment variable for it; the CLI passes FALCONET_TOKEN. */
  token?: string;
  /** Resume this session instead of starting a new one. */
  session?: string;
  /**
   * The session's key: needed to resume a session (unless `token` is the administrator's). For a
   * new session, the key it gets (default: the dispatcher picks one; see {@link Client.session}).
   */
  sessionKey?: string;
  /** With `session`: the last result sequence number already consumed (default: the session's stored cursor). */
  cursor?: number;
  /**
   * Client lease: if no client of this session is connected for this long, the dispatcher
   * cancels the session's unfinished tasks (frees executors when a workflow engine dies).
   * Default: none; tasks keep running for a later reattach.
   */
  leaseMs?: number;
  /** With `session`: fail with NOT_FOUND instead of opening a session the dispatcher does not know. */
  attachOnly?: boolean;
  /**
   * How long {@link connect} keeps dialing before it rejects with UNREACHABLE (naming the URL and
   * the last socket error). Default 10 s.
   */
  connectTimeoutMs?: number;
  /** Tasks per submit message at most (default 2,000); batches are also split to fit the dispatcher's frame limit. */
  maxBatch?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Called on every state change from the first `connecting` on; the same as {@link Client.onState}. */
  onState?: (change: StateChange) => void;
  /** Stops {@link connect}: it rejects with the signal's reason and the client is closed. */
  signal?: AbortSignal;
  /**
   * Errors from the dispatcher that answer no request of yours (SHUTTING_DOWN for a submit that
   * the SDK will resend after the reconnect, INVALID_MESSAGE): for logs. Nothing to act on.
   */
  onError?: (err: FalconetError) => void;
  /**
   * wss://: PEM CA certificate(s) to trust besides Node's root CAs when verifying the dispatcher
   * (a private CA, a self-signed certificate). A certificate that does not verify rejects
   * {@link connect} with TLS_FAILED at the first attempt, naming the cause.
   */
  ca?: string | Buffer;
  /**
   * How DNS names in `url` are resolved at each dial round, every address becoming a candidate
   * (default: `dns.promises.lookup(host, {all: true})`): a hook for service discovery.
   */
  resolve?: Resolver;
}

/** Options of {@link Client.submitMany}. */
export interface SubmitManyOptions {
  /** Tasks in flight at once; the iterable is not read further until some come back. Default 10,000. */
  maxInFlight?: number;
  /**
   * What "back" means: `finished` (the result arrived; default) or `accepted` (the dispatcher
   * has the task; use it to submit and leave).
   */
  until?: 'finished' | 'accepted';
}

/**
 * Connects to a dispatcher and resolves once the session is open. `url` is `ws://HOST:PORT`,
 * `wss://HOST:PORT` or `HOST:PORT`, or several of them (an array, or one string separated by
 * commas): they are dialed in turn from the first, a DNS name with several addresses giving one
 * candidate per address, and after a loss the client moves to the next (see protocol/link.ts).
 * Rejects once: USAGE for an address that is none of these (naming the entry), UNREACHABLE when
 * no dispatcher answered within `connectTimeoutMs`, or the dispatcher's refusal (AUTH_FAILED,
 * VERSION_MISMATCH, NOT_FOUND). After a rejection nothing is left running.
 */
export async function connect(url: string | readonly string[], options: ConnectOptions = {}): Promise<Client> {
  const client = new Client(dispatcherUrls(url), options);
  await abortable(client.ready, options.signal, () => void client.close().catch(() => {}));
  return client;
}

type Answer = Msg<DispatcherToClient, 'reply' | 'tasks' | 'sessions'>;

/** A session with a dispatcher. Create it with {@link connect}. */
export class Client {
  /** Resolves at the first welcome; rejects if the dispatcher refuses us, cannot be reached, or close() comes first. */
  readonly ready: Promise<void>;
  #sessionId: string | undefined;
  #sessionKey: string | undefined;
  /** Whether a welcome ever came: a session busy at the first hello fails connect() at once. */
  #everUp = false;
  readonly #link: Link<DispatcherToClient>;
  readonly #results: ResultStream;
  readonly #submits: SubmitPipeline;
  /** Requests waiting for their answer (`reply`, `tasks` or `sessions`), by ref. */
  readonly #replies = new Map<number, { resolve(m: Answer): void; reject(e: Error): void }>();
  #ackTimer: NodeJS.Timeout | null = null;
  #ackedSent: number;
  #connectTimer: NodeJS.Timeout | null;
  #rejectReady: (e: Error) => void = () => {};
  /** Why this client can no longer be used (closed, refused, never reached); null while usable. */
  #ended: FalconetError | null = null;
  #state: ConnectionState = 'connecting';
  readonly #listeners = new Set<(change: StateChange) => void>();
  /** Results the dispatcher will still send, as of the last message from it. */
  #remaining = 0;
  #resumed = false;
  /** Live output streams ({@link logs}), by the ref of their request. */
  readonly #logs = new Map<number, LogReader>();

  /** Prefer {@link connect}, which checks `url` (one URL or several, see there) and waits for {@link ready}. */
  constructor(url: string | readonly string[], private readonly o: ConnectOptions = {}) {
    const urls = typeof url === 'string' ? [url] : [...url];
    this.#sessionId = o.session;
    this.#sessionKey = o.sessionKey;
    this.#ackedSent = o.cursor ?? 0;
    this.#results = new ResultStream(o.cursor ?? 0, () => this.#scheduleAck());
    let resolveReady!: () => void;
    this.ready = new Promise((res, rej) => ((resolveReady = res), (this.#rejectReady = rej)));
    // Whoever holds `ready` sees its rejection; one who does not (new Client without awaiting)
    // must not get an unhandled rejection that ends the process.
    this.ready.catch(() => {});
    if (o.onState) this.#listeners.add(o.onState);
    const timeoutMs = o.connectTimeoutMs ?? 10_000;
    const token = o.token;
    this.#link = new Link<DispatcherToClient>({
      url: urls,
      order: 'first',
      validate: compileInbound<DispatcherToClient>(DispatcherToClientSchemas),
      hello: () => ({
        t: 'hello',
        v: PROTOCOL_VERSION,
        role: 'client',
        ...(token ? { token } : {}),
        caps: ['batch', RECORDS_CAP, PEERS_CAP],
        ...(this.#sessionId ? { session: this.#sessionId } : {}),
        ...(this.#sessionId && this.#results.cursor > 0 ? { cursor: this.#results.cursor } : {}),
        ...(this.#sessionKey ? { key: this.#sessionKey } : {}),
        ...(o.leaseMs !== undefined ? { leaseMs: o.leaseMs } : {}),
        ...(o.attachOnly ? { attachOnly: true } : {}),
      }),
      onUp: (w) => {
        this.#clearConnectTimer();
        this.#onUp(w as Msg<DispatcherToClient, 'welcome'>);
        resolveReady();
      },
      onDown: (reason, where) => {
        // Output written while we are away is not seen: each stream ends, saying so.
        for (const r of this.#logs.values()) r.finish({ status: 'disconnected' });
        this.#logs.clear();
        this.#setState({ state: 'reconnecting', reason, dispatcher: where.lost, next: where.next });
      },
      onMessage: (m) => this.#onMessage(m),
      onUnsendable: (msg, err) => this.#onUnsendable(msg as { t: string; ref?: number }, err),
      onFatal: (err) => this.#end(err),
      initialBackoffMs: o.initialBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
      ...(o.ca !== undefined ? { ca: o.ca } : {}),
      ...(o.resolve ? { resolve: o.resolve } : {}),
    });
    this.#submits = new SubmitPipeline({
      send: (msg) => this.#link.send(msg),
      maxBatch: o.maxBatch ?? 2000,
      takeBuffered: (id) => this.#results.take(id),
      sessionId: () => this.#sessionId ?? '',
    });
    this.#connectTimer = setTimeout(() => {
      const why = this.#link.lastError;
      this.#end(new FalconetError(ErrorCode.UNREACHABLE, `no dispatcher answered at ${urls.join(',')} within ${timeoutMs} ms${why ? ` (last error: ${why})` : ''}`));
    }, timeoutMs);
    this.#emit({ state: 'connecting' });
    this.#link.start();
  }

  /** Where the client stands: `connecting` (first dial), `connected`, `reconnecting` (after a loss) or `closed`. */
  get state(): ConnectionState {
    return this.#state;
  }

  /**
   * Calls `listener` on every state change (a `connected` after a loss says whether the session
   * was resumed). Returns the function that removes the listener.
   */
  onState(listener: (change: StateChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The URL of the dispatcher the client is connected to (null while it is not). */
  get dispatcher(): string | null {
    return this.#link.dispatcher;
  }

  /**
   * The dispatchers this client may dial after a loss: the URLs it was given, redirect targets,
   * and the live dispatchers its dispatcher told it of (several over PostgreSQL).
   */
  get dispatchers(): readonly string[] {
    return this.#link.urls;
  }

  /** True when the dispatcher knew the session this client asked to resume. */
  get resumed(): boolean {
    return this.#resumed;
  }

  /**
   * The session id, its key and the cursor: what a later process needs to resume this stream
   * (`connect(url, {session: id, sessionKey: key, cursor})`). Keep the key as secret as a token:
   * with it, anyone holding the client token can read and cancel this session.
   */
  get session(): { id: string; key: string; cursor: number } {
    return { id: this.#sessionId ?? '', key: this.#sessionKey ?? '', cursor: this.#results.cursor };
  }

  /**
   * Results of the session this client has not yet handed out: buffered here, or still to come
   * for tasks submitted so far. 0 means the session is done (until more tasks are submitted).
   */
  get outstanding(): number {
    return this.#remaining + this.#results.buffered + this.#submits.unaccepted;
  }

  /**
   * Submits one task; resolves with its result (whatever its status). Rejects with the
   * dispatcher's refusal (TASK_INVALID), FRAME_TOO_LARGE for a task no frame can carry,
   * TASK_DUPLICATE for an id this session finished before whose result was already handed out,
   * or CLIENT_CLOSED. A second submit of an id still pending in this client shares the first one's
   * result (the second spec is not sent).
   */
  submit(task: TaskSpec, options: { signal?: AbortSignal } = {}): Promise<TaskResult> {
    if (this.#ended) return Promise.reject(this.#ended);
    if (!options.signal) return this.#submits.submit(task);
    // An engine that stops waiting for a task wants it stopped: abort cancels it, too.
    const spec = task.id === undefined ? { ...task, id: this.#submits.newId() } : task;
    const result = this.#submits.submit(spec);
    return abortable(result, options.signal, () => {
      result.catch(() => {});
      void this.cancel([spec.id!]).catch(() => {});
    });
  }

  /**
   * Submits a task and returns its handle once the dispatcher has it (accepted, durable): the id
   * at once, the result later. Rejects like {@link submit} when the task is refused.
   */
  async start(task: TaskSpec): Promise<TaskHandle> {
    const spec = task.id === undefined ? { ...task, id: this.#submits.newId() } : task;
    const result = this.submit(spec);
    result.catch(() => {}); // whoever calls handle.result() sees it
    await Promise.race([this.#submits.accepted(spec.id!), result]);
    const id = spec.id!;
    return {
      id,
      result: (o = {}) => abortable(result, o.signal),
      cancel: async () => (await this.cancel([id])) > 0,
      describe: () => this.task(id),
    };
  }

  /**
   * Where a task is, from any session: queued (and why, when something is missing), running
   * (attempt, executor), or how it ended with its result. Rejects with NOT_FOUND for an id no
   * session has. With `session`, only that session is searched.
   */
  async task(id: string, options: { session?: string; signal?: AbortSignal } = {}): Promise<TaskInfo> {
    const answer = await abortable(this.#ask({ t: 'query', ids: [id], ...(options.session ? { session: options.session } : {}) }), options.signal);
    const found = answer.t === 'tasks' ? answer.tasks[0] : undefined;
    if (!found) throw new FalconetError(ErrorCode.NOT_FOUND, `no task ${id}${options.session ? ` in session ${options.session}` : ''}`);
    return found;
  }

  /** Tasks of one session or all, newest first, by state (`finished`: any end), at most `limit` (default 1,000). */
  async tasks(filter: { session?: string; state?: TaskState | 'finished'; limit?: number } = {}): Promise<TaskInfo[]> {
    const answer = await this.#ask({ t: 'query', ...filter });
    return answer.t === 'tasks' ? answer.tasks : [];
  }

  /**
   * A task's output (any session's, or in `session`) as it is written: what there is now and, with
   * `follow`, what comes until the task ends (a queued task is waited for). A finished task gives
   * the stdout and stderr its result keeps. Iterate the stream for `{stream, data}` pieces
   * (`falconet` pieces say what falconet left out or what happened); `ended` says how it ended.
   * An unknown id makes the iteration throw NOT_FOUND.
   */
  logs(id: string, options: { follow?: boolean; session?: string } = {}): LogStream {
    const ref = this.#submits.nextRef();
    const reader = new LogReader(() => {
      if (this.#logs.delete(ref)) this.#link.send({ t: 'logs', ref, id, stop: true });
    });
    if (this.#ended) {
      reader.fail(this.#ended);
      return reader;
    }
    this.#logs.set(ref, reader);
    if (!this.#link.send({ t: 'logs', ref, id, ...(options.follow ? { follow: true } : {}), ...(options.session ? { session: options.session } : {}) })) {
      this.#logs.delete(ref);
      reader.fail(new FalconetError(ErrorCode.UNREACHABLE, 'not connected to the dispatcher'));
    }
    return reader;
  }

  /** The dispatcher's sessions. */
  async sessions(): Promise<SessionInfo[]> {
    const answer = await this.#ask({ t: 'sessions' });
    return answer.t === 'sessions' ? answer.sessions : [];
  }

  /**
   * Submits tasks from an iterable with backpressure: at most `maxInFlight` are in flight.
   * Results arrive on {@link results}. Resolves when every task is accepted (and, with
   * `until: 'finished'`, finished); rejects with CLIENT_CLOSED if the client closes first.
   */
  async submitMany(
    tasks: Iterable<TaskSpec> | AsyncIterable<TaskSpec>,
    options: SubmitManyOptions = {},
  ): Promise<{ submitted: number; accepted: number; rejected: Rejection[] }> {
    if (this.#ended) throw this.#ended;
    return this.#submits.submitMany(tasks, options.maxInFlight ?? 10_000, options.until ?? 'finished');
  }

  /**
   * Every result of the session not yet handed out (and not taken by a submit() promise), in
   * order, as it arrives. Each call gives an iterator; concurrent iterators share the stream.
   *
   * - A result counts as consumed when its iterator is asked for the next one or returned, so
   *   after a crash it comes again (see the module doc).
   * - Calling next() while an earlier next() of the same iterator is still pending returns that
   *   same promise: a next() abandoned in a Promise.race loses nothing if you ask again.
   * - return() (a `break` out of `for await`) detaches a pending next(), which then ends.
   * - The iterator ends after close(), once it has handed out what was already received.
   */
  results(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<TaskResult> {
    const it = this.#results.iterator();
    // Aborting ends the iteration as a `break` would: a pending next() resolves done.
    options.signal?.addEventListener('abort', () => void it.return?.(), { once: true });
    if (options.signal?.aborted) void it.return?.();
    return it;
  }

  /**
   * Cancels tasks of this session by id; with `session`, of another one (give its `key`, unless
   * this client's token is the administrator's); `*` searches every session (administrator only:
   * ADMIN_REQUIRED otherwise). A refusal rejects with SESSION_FORBIDDEN or ADMIN_REQUIRED.
   */
  async cancel(ids: string[], opts: { session?: string; key?: string; all?: boolean } = {}): Promise<number> {
    // Submits made before this call go first, so a cancel right after a submit finds its task.
    this.#submits.flush();
    const reply = await this.#request({ t: 'cancel', ids, ...opts });
    if (!reply.ok && reply.error) throw FalconetError.fromWire(reply.error);
    return reply.count ?? 0;
  }

  /** Asks an executor to finish what it runs and exit. */
  async drain(executorId: string): Promise<void> {
    const reply = await this.#request({ t: 'drain', executor: executorId });
    if (!reply.ok) throw FalconetError.fromWire(reply.error ?? { code: ErrorCode.NOT_FOUND, message: executorId });
  }

  /** Closes the provisioner's circuit breaker (after fixing what made boots fail). */
  async resetProvisioner(): Promise<void> {
    const reply = await this.#request({ t: 'provisioner', action: 'reset' });
    if (!reply.ok) throw FalconetError.fromWire(reply.error ?? { code: ErrorCode.NOT_FOUND, message: 'no provisioner' });
  }

  /**
   * Sends pending submits and acknowledgements, then closes the connection. Everything still
   * pending (submit() promises, submitMany(), requests) rejects with CLIENT_CLOSED; the tasks
   * themselves stay in the session, and a later client can reattach to collect their results.
   */
  async close(): Promise<void> {
    if (this.#ended) return this.#link.close();
    this.#submits.flush();
    this.#sendAck();
    await this.#end(new FalconetError(ErrorCode.CLIENT_CLOSED, 'the client was closed'));
  }

  // ---- internals --------------------------------------------------------------------------------

  /** The one way a client ends: everything pending rejects with `err`, and nothing is left running. */
  #end(err: FalconetError): Promise<void> {
    if (this.#ended) return this.#link.close();
    this.#ended = err;
    this.#clearConnectTimer();
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    this.#rejectReady(err);
    this.#submits.failAll(err);
    for (const w of this.#replies.values()) w.reject(err);
    this.#replies.clear();
    for (const r of this.#logs.values()) r.finish({ status: 'stopped' });
    this.#logs.clear();
    this.#results.close();
    this.#setState({ state: 'closed', reason: err.message, error: err });
    return this.#link.close();
  }

  #clearConnectTimer(): void {
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
  }

  #setState(change: StateChange): void {
    if (this.#state === 'closed' || (change.state === this.#state && change.state !== 'connected')) return;
    this.#state = change.state;
    this.#emit(change);
  }

  #emit(change: StateChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        // A listener's bug must not break the connection it observes (this runs in socket events).
        process.emitWarning(`falconet: a state listener threw: ${(err as Error)?.stack ?? String(err)}`);
      }
    }
  }

  #onUp(w: Msg<DispatcherToClient, 'welcome'>): void {
    const forgotten = this.#sessionId !== undefined && !w.resumed;
    this.#sessionId = w.session;
    if (w.key !== undefined) this.#sessionKey = w.key;
    this.#everUp = true;
    this.#resumed = w.resumed;
    this.#remaining = w.unfinished + w.unacked;
    this.#results.rebase(w.cursor, forgotten);
    this.#ackedSent = forgotten ? 0 : Math.max(this.#ackedSent, w.cursor);
    this.#setState({ state: 'connected', resumed: w.resumed, ...(this.#link.dispatcher ? { dispatcher: this.#link.dispatcher } : {}) });
    // The dispatcher lost our session (an in-memory dispatcher restarted): submit again
    // everything we still wait for. Ids make this idempotent.
    this.#submits.resend(forgotten);
  }

  #onMessage(m: DispatcherToClient): void {
    switch (m.t) {
      case 'accepted':
        this.#remaining = m.remaining;
        return this.#submits.onAccepted(m);
      case 'result': {
        this.#remaining = m.remaining;
        const claimed = this.#submits.hasWaiter(m.result.id);
        if (this.#results.receive(m.seq, m.result, claimed)) this.#submits.onResult(m.result);
        return;
      }
      case 'reply':
      case 'tasks':
      case 'sessions': {
        const w = this.#replies.get(m.ref);
        this.#replies.delete(m.ref);
        return w?.resolve(m);
      }
      case 'peers':
        return this.#link.learn(m.urls);
      case 'log': {
        const r = this.#logs.get(m.ref);
        if (m.end) this.#logs.delete(m.ref);
        return r?.receive(m);
      }
      case 'error': {
        const stream = m.ref !== undefined ? this.#logs.get(m.ref) : undefined;
        if (stream) {
          this.#logs.delete(m.ref!);
          return stream.fail(FalconetError.fromWire(m));
        }
        // Another connection reads the session we ask for. At the first hello that is a mistake
        // to report (a second `watch`); after a loss it is our own old connection, which the
        // dispatcher replaces once it has been silent for three heartbeats: the link redials.
        if (m.code === ErrorCode.SESSION_BUSY && !this.#everUp) return void this.#end(FalconetError.fromWire(m));
        // Errors about a submit are answered by resending it on reconnect; others have no waiter
        // and go to whoever listens (SHUTTING_DOWN, INVALID_MESSAGE), so none is silent.
        const w = m.ref !== undefined ? this.#replies.get(m.ref) : undefined;
        if (w) {
          this.#replies.delete(m.ref!);
          w.reject(FalconetError.fromWire(m));
        } else this.o.onError?.(FalconetError.fromWire(m));
        return;
      }
    }
  }

  /** A message the link could not fit in a frame: a submit is split (or its one task refused); a request fails. */
  #onUnsendable(msg: { t: string; ref?: number }, err: FalconetError): void {
    if (msg.t === 'submit' && msg.ref !== undefined) return this.#submits.onUnsendable(msg.ref, err);
    const w = msg.ref !== undefined ? this.#replies.get(msg.ref) : undefined;
    if (w) {
      this.#replies.delete(msg.ref!);
      w.reject(err);
    }
  }

  /** The results stream moved its cursor: acknowledge soon, batched (every 1,000 or after 50 ms). */
  #scheduleAck(): void {
    if (this.#results.cursor - this.#ackedSent >= 1000) this.#sendAck();
    else if (!this.#ackTimer && !this.#ended) this.#ackTimer = setTimeout(() => this.#sendAck(), 50);
  }

  #sendAck(): void {
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    const cursor = this.#results.cursor;
    if (cursor > this.#ackedSent && this.#link.send({ t: 'ack', cursor })) this.#ackedSent = cursor;
  }

  #request(msg: Record<string, unknown>): Promise<Msg<DispatcherToClient, 'reply'>> {
    return this.#ask(msg) as Promise<Msg<DispatcherToClient, 'reply'>>;
  }

  #ask(msg: Record<string, unknown>): Promise<Answer> {
    if (this.#ended) return Promise.reject(this.#ended);
    const ref = this.#submits.nextRef();
    return new Promise((resolve, reject) => {
      this.#replies.set(ref, { resolve, reject });
      if (!this.#link.send({ ...msg, ref })) {
        this.#replies.delete(ref);
        reject(new FalconetError(ErrorCode.UNREACHABLE, 'not connected to the dispatcher'));
      }
    });
  }
}
