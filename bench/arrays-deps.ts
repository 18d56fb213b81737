/**
 * Job arrays and dependencies, measured in the dispatcher's core (issue 12 "Done when"):
 *
 * - `array`: heap and RSS of one queued array of 1,000,000 noop elements, against 1,000,000 plain
 *   queued noop tasks (the same core, the in-memory journal), per element / per task.
 * - `dag`: a DAG of 100,000 tasks submitted in one submit (each task after two tasks of the
 *   layer before: ~200,000 edges), then every task run to its end layer by layer; time and heap
 *   against the same 100,000 tasks without `after`, so what is left is the cost of the edges:
 *   µs and bytes per edge.
 *
 * `node dist/bench/arrays-deps.js [--elements N] [--tasks N] [--width W]`. The core is driven
 * directly (no sockets): what is measured is the bookkeeping, not the wire.
 */
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { DispatcherToClient, DispatcherToExecutor, TaskSpec } from '../protocol/index.js';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heap(): { heap: number; rss: number } {
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

class Sink implements Outbox {
  assigned: Array<{ uid: number; attempt: number }> = [];
  results = 0;
  toClient(_c: number, m: DispatcherToClient): void {
    if (m.t === 'result') this.results++;
  }
  toExecutor(_c: number, m: DispatcherToExecutor): void {
    if (m.t === 'task') this.assigned.push({ uid: m.uid, attempt: m.attempt });
  }
  resultReceived(): void {}
  close(): void {}
}

function newCore(): { core: DispatcherCore; sink: Sink } {
  const sink = new Sink();
  const core = new DispatcherCore({ heartbeatMs: 1000, leaseMs: 60_000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 24, retentionMs: 3_600_000 }, sink);
  core.openSession(1, {}, true);
  return { core, sink };
}

function submit(core: DispatcherCore, tasks: TaskSpec[]): void {
  core.submit(1, { t: 'submit', ref: 1, tasks });
}

const mb = (b: number) => `${(b / 1048576).toFixed(1)} MB`;

function arrayFigures(n: number): void {
  const { core } = newCore();
  const base = heap();
  submit(core, [{ id: 'big', array: { from: 1, to: n }, builtin: 'noop' }]);
  const held = heap();
  if (core.view.queued !== n) throw new Error(`queued ${core.view.queued}, expected ${n}`);
  const plain = newCore();
  const base2 = heap();
  for (let i = 0; i < n; i += 100_000) submit(plain.core, Array.from({ length: Math.min(100_000, n - i) }, (_, k) => ({ id: `p${i + k}`, builtin: 'noop' as const })));
  const held2 = heap();
  console.log(`array of ${n.toLocaleString('en-US')} queued elements: heap +${mb(held.heap - base.heap)} (${((held.heap - base.heap) / n).toFixed(2)} B/element), RSS +${mb(held.rss - base.rss)}`);
  console.log(`${n.toLocaleString('en-US')} plain queued tasks:        heap +${mb(held2.heap - base2.heap)} (${((held2.heap - base2.heap) / n).toFixed(0)} B/task), RSS +${mb(held2.rss - base2.rss)}`);
  // Keep both alive until measured.
  if (core.view.queued + plain.core.view.queued < 0) console.log('');
}

/** 100,000 tasks in layers of `width`; task i of a layer waits for two tasks of the layer before. */
function dagTasks(n: number, width: number, withAfter: boolean): { tasks: TaskSpec[]; edges: number } {
  const tasks: TaskSpec[] = [];
  let edges = 0;
  for (let i = 0; i < n; i++) {
    const layer = Math.floor(i / width);
    const t: TaskSpec = { id: `t${i}`, builtin: 'noop' };
    if (withAfter && layer > 0) {
      const prev = (layer - 1) * width;
      const a = prev + (i % width);
      const b = prev + ((i * 7 + 3) % width);
      t.after = a === b ? [`t${a}`] : [`t${a}`, `t${b}`];
      edges += t.after.length;
    }
    tasks.push(t);
  }
  return { tasks, edges };
}

function runDag(n: number, width: number, withAfter: boolean): { submitMs: number; releaseMs: number; heldBytes: number; edges: number } {
  const { tasks, edges } = dagTasks(n, width, withAfter);
  const { core, sink } = newCore();
  core.registerExecutor(100, { id: 'e', hostname: 'h', addresses: [], slots: 1_000_000, memory: 0, labels: {}, version: 'b', incarnation: 'i', mode: 'push', running: [] });
  const base = heap();
  let t0 = performance.now();
  submit(core, tasks);
  const submitMs = performance.now() - t0;
  const held = heap();
  t0 = performance.now();
  let rounds = 0;
  while (sink.results < n) {
    core.schedule();
    const batch = sink.assigned;
    sink.assigned = [];
    if (batch.length === 0) throw new Error(`stuck at ${sink.results} of ${n} results`);
    for (const a of batch) core.attemptDone(100, { uid: a.uid, attempt: a.attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: '', stderr: '', truncated: false, startedAt: 0, finishedAt: 0 });
    rounds++;
  }
  const releaseMs = performance.now() - t0;
  if (withAfter && rounds < n / width) throw new Error(`${rounds} rounds: the layers did not wait for each other`);
  return { submitMs, releaseMs, heldBytes: held.heap - base.heap, edges };
}

const { values } = parseArgs({ options: { elements: { type: 'string' }, tasks: { type: 'string' }, width: { type: 'string' }, runs: { type: 'string' } } });
const elements = Number(values.elements ?? 1_000_000);
const n = Number(values.tasks ?? 100_000);
const width = Number(values.width ?? 1000);
const runs = Number(values.runs ?? 3);
arrayFigures(elements);
const rows: Array<{ d: ReturnType<typeof runDag>; p: ReturnType<typeof runDag> }> = [];
for (let r = 0; r < runs; r++) rows.push({ p: runDag(n, width, false), d: runDag(n, width, true) });
const med = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
const edges = rows[0].d.edges;
const subUs = med(rows.map((x) => ((x.d.submitMs - x.p.submitMs) * 1000) / edges));
const relUs = med(rows.map((x) => ((x.d.releaseMs - x.p.releaseMs) * 1000) / edges));
const bytes = med(rows.map((x) => (x.d.heldBytes - x.p.heldBytes) / edges));
console.log(`DAG of ${n.toLocaleString('en-US')} tasks, ${edges.toLocaleString('en-US')} edges, layers of ${width} (medians of ${runs} runs):`);
console.log(`  with after:    submit ${med(rows.map((x) => x.d.submitMs)).toFixed(0)} ms, run to the end ${med(rows.map((x) => x.d.releaseMs)).toFixed(0)} ms, heap held after submit +${mb(med(rows.map((x) => x.d.heldBytes)))}`);
console.log(`  without after: submit ${med(rows.map((x) => x.p.submitMs)).toFixed(0)} ms, run to the end ${med(rows.map((x) => x.p.releaseMs)).toFixed(0)} ms, heap held after submit +${mb(med(rows.map((x) => x.p.heldBytes)))}`);
console.log(`  per edge: submit ${subUs.toFixed(2)} µs, release ${relUs.toFixed(2)} µs, ${bytes.toFixed(0)} bytes held`);
