/**
 * The dispatcher core on its own, for pure tests: no sockets, a manual clock, and every message in
 * both directions passed through the real codec and validators, as the adapter would.
 */
import type { DispatcherToClient, DispatcherToExecutor, ExecutorInfo, TaskSpec } from '../protocol/index.js';
import { fromClient, fromExecutor, toClient, toExecutor } from './wire.js';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';

export class Harness implements Outbox {
  now = 1_000_000;
  readonly sent = new Map<number, Array<DispatcherToClient | DispatcherToExecutor>>();
  readonly closed = new Map<number, string>();
  readonly core: DispatcherCore;
  constructor(opts: Partial<DispatcherCore['options']> = {}) {
    this.core = new DispatcherCore(
      { heartbeatMs: 100, leaseMs: 1000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 60_000, ...opts },
      this,
      { now: () => this.now },
    );
  }
  toClient(conn: number, msg: DispatcherToClient): void {
    this.#push(conn, toClient(msg));
  }
  toExecutor(conn: number, msg: DispatcherToExecutor): void {
    this.#push(conn, toExecutor(msg));
  }
  resultReceived(conn: number, uid: number, attempt: number): void {
    this.#push(conn, toExecutor({ t: 'ack', done: [{ uid, attempt }] }));
  }
  close(conn: number, code: string): void {
    this.closed.set(conn, code);
  }
  #push(conn: number, msg: DispatcherToClient | DispatcherToExecutor): void {
    let list = this.sent.get(conn);
    if (!list) this.sent.set(conn, (list = []));
    list.push(msg);
  }
  /** Messages to a connection since the last call. */
  take(conn: number): Array<DispatcherToClient | DispatcherToExecutor> {
    const list = this.sent.get(conn) ?? [];
    this.sent.set(conn, []);
    return list;
  }
  tasksFor(conn: number) {
    return this.take(conn).filter((m): m is Extract<DispatcherToExecutor, { t: 'task' }> => m.t === 'task');
  }
  resultsFor(conn: number) {
    return this.take(conn).filter((m): m is Extract<DispatcherToClient, { t: 'result' }> => m.t === 'result').map((m) => m.result);
  }
  /** A client opens (or, as the administrator unless `key` is given, resumes) a session; returns a refusal. */
  client(conn: number, session?: string, key?: string) {
    const hello = fromClient({ t: 'hello', v: 1, role: 'client', caps: [], ...(session ? { session } : {}), ...(key ? { key } : {}) });
    return hello.t === 'hello' ? this.core.openSession(conn, { id: hello.session, cursor: hello.cursor, key: hello.key }, key === undefined) : null;
  }
  submit(conn: number, tasks: TaskSpec[], ref = 1): void {
    const m = fromClient({ t: 'submit', ref, tasks });
    if (m.t === 'submit') this.core.submit(conn, m);
  }
  executor(conn: number, over: Partial<ExecutorInfo> = {}, caps: string[] = []): void {
    const info: ExecutorInfo = { id: `e${conn}`, hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: 'i1', mode: 'push', running: [], ...over };
    const m = fromExecutor({ t: 'hello', v: 1, role: 'executor', caps, executor: info });
    if (m.t === 'hello') this.core.registerExecutor(conn, m.executor, m.caps);
  }
  /** The executor gives back tasks it was asked to (`steal`) and had not started. */
  returned(conn: number, tasks: Array<{ uid: number; attempt: number }>): void {
    const m = fromExecutor({ t: 'returned', tasks });
    if (m.t === 'returned') this.core.returned(conn, m.tasks);
  }
  done(conn: number, uid: number, attempt: number, status: 'succeeded' | 'failed' = 'succeeded'): void {
    const m = fromExecutor({
      t: 'done',
      result: { uid, attempt, status, exitCode: status === 'succeeded' ? 0 : 1, signal: null, stdout: '', stderr: '', truncated: false, startedAt: this.now, finishedAt: this.now },
    });
    if (m.t === 'done') this.core.attemptDone(conn, m.result);
  }
}
