/**
 * Packing tasks with resource requests, on the pure core: no sockets, a manual clock, every
 * message through the real codec and validators. Never oversubscribed, GPUs handed out by index,
 * a request no executor can run says why it waits, a large request is not starved by small ones.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  taskProblem,
  type DispatcherToClient,
  type DispatcherToExecutor,
  type ExecutorInfo,
  type TaskSpec,
} from '../protocol/index.js';
import { fromClient, fromExecutor, toClient, toExecutor } from './wire.js';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';

type Assign = Extract<DispatcherToExecutor, { t: 'task' }>;

class Harness implements Outbox {
  now = 1_000_000;
  readonly assigned = new Map<number, Assign[]>();
  readonly core: DispatcherCore;
  constructor(opts: Partial<DispatcherCore['options']> = {}) {
    this.core = new DispatcherCore({ heartbeatMs: 100, leaseMs: 60_000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 60_000, ...opts }, this, { now: () => this.now });
  }
  toClient(_conn: number, msg: DispatcherToClient): void {
    toClient(msg);
  }
  toExecutor(conn: number, msg: DispatcherToExecutor): void {
    const m = toExecutor(msg);
    if (m.t !== 'task') return;
    let list = this.assigned.get(conn);
    if (!list) this.assigned.set(conn, (list = []));
    list.push(m);
  }
  resultReceived(): void {}
  close(): void {}
  /** Assignments to `conn` since the last call. */
  take(conn: number): Assign[] {
    const list = this.assigned.get(conn) ?? [];
    this.assigned.set(conn, []);
    return list;
  }
  client(conn: number): void {
    const hello = fromClient({ t: 'hello', v: 1, role: 'client', caps: [] });
    if (hello.t === 'hello') this.core.openSession(conn, {}, true);
  }
  submit(conn: number, tasks: TaskSpec[]): void {
    const m = fromClient({ t: 'submit', ref: 1, tasks });
    if (m.t === 'submit') this.core.submit(conn, m);
  }
  executor(conn: number, over: Partial<ExecutorInfo> = {}): void {
    const info: ExecutorInfo = { id: `e${conn}`, hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: 'i1', mode: 'push', running: [], ...over };
    const m = fromExecutor({ t: 'hello', v: 1, role: 'executor', caps: [], executor: info });
    if (m.t === 'hello') this.core.registerExecutor(conn, m.executor);
  }
  done(conn: number, a: Assign): void {
    const m = fromExecutor({
      t: 'done',
      result: { uid: a.uid, attempt: a.attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, startedAt: this.now, finishedAt: this.now },
    });
    if (m.t === 'done') this.core.attemptDone(conn, m.result);
  }
}

/** A deterministic pseudo-random sequence (the test must fail the same way every time). */
function lcg(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

test('packing: mixed requests on executors of different sizes never oversubscribe; GPUs by index, never shared', { timeout: 30_000 }, () => {
  const h = new Harness({ reserveAfterMs: 1e9 });
  const sizes: Record<number, { cpus: number; memoryMb: number; gpus: number }> = {
    10: { cpus: 2, memoryMb: 4000, gpus: 0 },
    11: { cpus: 8, memoryMb: 16000, gpus: 2 },
    12: { cpus: 4, memoryMb: 64000, gpus: 4 },
  };
  h.client(1);
  for (const [conn, r] of Object.entries(sizes)) h.executor(Number(conn), { slots: 6, resources: r, gpuIndices: r.gpus === 4 ? [0, 1, 5, 7] : undefined });
  const rand = lcg(7);
  const tasks: TaskSpec[] = [];
  for (let i = 0; i < 400; i++) {
    const resources: Record<string, number> = { cpus: [0.5, 1, 2, 3, 4][Math.floor(rand() * 5)] };
    if (rand() < 0.5) resources.memoryMb = Math.floor(rand() * 8000);
    if (rand() < 0.3) resources.gpus = 1 + Math.floor(rand() * 2);
    tasks.push(rand() < 0.2 ? { id: `p${i}`, builtin: 'noop' } : { id: `r${i}`, builtin: 'noop', resources });
  }
  h.submit(1, tasks);
  const req = new Map(tasks.map((t) => [t.id!, t.resources ?? {}]));
  const running = new Map<number, Assign[]>(Object.keys(sizes).map((c) => [Number(c), []]));
  let finished = 0;
  for (let round = 0; round < 10_000 && finished < tasks.length; round++) {
    h.core.schedule();
    for (const [conn, list] of running) {
      list.push(...h.take(conn));
      const size = sizes[conn];
      const sum = (k: string) => list.reduce((n, a) => n + (req.get(a.spec.id!)![k] ?? 0), 0);
      assert.ok(list.length <= 6, `e${conn} holds ${list.length} attempts with 6 slots`);
      for (const k of ['cpus', 'memoryMb', 'gpus'] as const) assert.ok(sum(k) <= size[k] + 1e-9, `e${conn} oversubscribed: ${k} ${sum(k)} > ${size[k]}`);
      const gpus = list.flatMap((a) => a.gpus ?? []);
      assert.equal(new Set(gpus).size, gpus.length, `GPUs shared on e${conn}: ${gpus}`);
      for (const a of list) assert.equal(a.gpus?.length ?? 0, req.get(a.spec.id!)!.gpus ?? 0, `${a.spec.id} got the GPUs it asked for`);
      if (conn === 12) for (const g of gpus) assert.ok([0, 1, 5, 7].includes(g), `index ${g} is one the executor has`);
      // Finish a random part of what runs.
      for (let i = list.length - 1; i >= 0; i--) {
        if (rand() < 0.4) {
          h.done(conn, list[i]);
          list.splice(i, 1);
          finished++;
        }
      }
    }
  }
  assert.equal(finished, tasks.length, 'every task ran');
});

test('fractional cpus add up exactly; an executor without resources (an older one) takes only plain tasks', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.executor(10, { slots: 20 });
  h.executor(11, { slots: 20, resources: { cpus: 1 } });
  h.submit(1, [...Array.from({ length: 12 }, (_, i) => ({ id: `f${i}`, builtin: 'noop' as const, resources: { cpus: 0.1 } })), { id: 'plain', builtin: 'noop' }]);
  h.core.schedule();
  assert.deepEqual(h.take(10).map((a) => a.spec.id), ['plain']);
  assert.equal(h.take(11).length, 10, 'ten tenths of a cpu fit one cpu, the eleventh does not');
});

test('a request no executor could ever run waits with its reason (task query and status); it starts once one that fits comes', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.executor(10, { slots: 4, resources: { cpus: 4, memoryMb: 8000, gpus: 0 } });
  h.submit(1, [{ id: 'g', builtin: 'noop', resources: { gpus: 1 } }, { id: 'big', builtin: 'noop', resources: { cpus: 2, memoryMb: 9000 } }, { id: 'ok', builtin: 'noop', resources: { cpus: 4 } }]);
  h.core.schedule();
  assert.deepEqual(h.take(10).map((a) => a.spec.id), ['ok']);
  const found = h.core.findTasks({ ids: ['g', 'big', 'ok'] }).tasks;
  assert.equal(found[0].waiting, 'needs gpus=1, the largest executor has 0');
  assert.equal(found[1].waiting, 'needs memoryMb=9000, the largest executor has 8000');
  assert.equal(found[2].waiting, undefined);
  const status = h.core.status();
  assert.deepEqual(
    status.requests?.filter((r) => r.reason !== null).map((r) => [r.request, r.tasks, r.reason]),
    [
      ['gpus=1', 1, 'needs gpus=1, the largest executor has 0'],
      ['cpus=2,memoryMb=9000', 1, 'needs memoryMb=9000, the largest executor has 8000'],
    ],
  );
  h.executor(11, { slots: 1, resources: { cpus: 1, gpus: 1 }, gpuIndices: [3] });
  h.core.schedule();
  const g = h.take(11);
  assert.deepEqual(g.map((a) => [a.spec.id, a.gpus]), [['g', [3]]]);
});

test('fairness: a large request is starved by a stream of small ones until its reservation holds an executor for it', { timeout: 10_000 }, () => {
  for (const reserveAfterMs of [1e12, 5000]) {
    const h = new Harness({ reserveAfterMs });
    h.client(1);
    h.executor(10, { slots: 8, resources: { cpus: 4 } });
    h.submit(1, [{ id: 's0', builtin: 'noop', resources: { cpus: 1 } }, { id: 's1', builtin: 'noop', resources: { cpus: 1 } }]);
    h.core.schedule();
    const running = h.take(10);
    h.submit(1, [{ id: 'big', builtin: 'noop', resources: { cpus: 4 } }]);
    let bigAt: number | null = null;
    let n = 2;
    // Each second one small task ends and two new ones come: there are always small ones that fit.
    for (let second = 0; second < 60 && bigAt === null; second++) {
      h.now += 1000;
      h.submit(1, [{ id: `s${n++}`, builtin: 'noop', resources: { cpus: 1 } }, { id: `s${n++}`, builtin: 'noop', resources: { cpus: 1 } }]);
      if (running.length > 0) h.done(10, running.shift()!);
      h.core.schedule();
      for (const a of h.take(10)) {
        if (a.spec.id === 'big') bigAt = second;
        running.push(a);
      }
    }
    if (reserveAfterMs > 1e9) assert.equal(bigAt, null, 'without a reservation the small ones always get in first');
    else {
      assert.ok(bigAt !== null, 'the large request started');
      assert.ok(bigAt < 15, `it started soon after its reservation (second ${bigAt})`);
    }
  }
});

test('plain tasks at a higher priority go before requests; requests before plain tasks of the same priority', { timeout: 10_000 }, () => {
  const h = new Harness();
  h.client(1);
  h.executor(10, { slots: 3, resources: { cpus: 4 } });
  h.submit(1, [{ id: 'plain', builtin: 'noop' }, { id: 'req', builtin: 'noop', resources: { cpus: 1 } }, { id: 'urgent', builtin: 'noop', priority: 5 }]);
  h.core.schedule();
  assert.deepEqual(h.take(10).map((a) => a.spec.id), ['urgent', 'req', 'plain']);
});

test('resources in a task spec: names, amounts, whole gpus', { timeout: 10_000 }, () => {
  assert.equal(taskProblem({ builtin: 'noop', resources: { cpus: 0.5, memoryMb: 100, licence: 1 } }), null);
  assert.match(taskProblem({ builtin: 'noop', resources: { gpus: 1.5 } }) ?? '', /gpus must be a whole number/);
  assert.match(taskProblem({ builtin: 'noop', resources: { cpus: -1 } }) ?? '', /resources/);
  assert.match(taskProblem({ builtin: 'noop', resources: { '1x': 1 } }) ?? '', /resources/);
  assert.match(taskProblem({ builtin: 'noop', resources: { cpus: '2' } }) ?? '', /resources/);
});
