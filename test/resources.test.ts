/**
 * Resource requests through real processes: a dispatcher and executors of different sizes on
 * loopback, GPUs from a fake `nvidia-smi` first on PATH. Oversubscription is judged from the
 * tasks' own clocks: each prints when it started and ended.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TaskResult, type TaskSpec } from '../client/index.js';
import { Procs, runCli, startDispatcher, startExecutor, waitExecutors, waitFor } from './helpers.js';

/** A directory holding an `nvidia-smi` that lists `indices` (none: it fails, as without a driver). */
function fakeNvidiaSmi(procs: Procs, indices: number[]): string {
  const dir = procs.tmpDir();
  const file = join(dir, 'nvidia-smi');
  const body = indices.length ? `printf '${indices.map((i) => `${i}\\n`).join('')}'` : 'echo "NVIDIA-SMI has failed" >&2; exit 9';
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return dir;
}

const withPath = (dir: string) => ({ PATH: `${dir}:${process.env.PATH}` });

/** What a task prints: its start and end in ns, and the GPUs it was given. */
const PROBE = 'echo start $(date +%s%N); echo gpus=$CUDA_VISIBLE_DEVICES; sleep 0.3; echo end $(date +%s%N)';

test('mixed requests on executors of different sizes: never oversubscribed by the tasks’ own timings; GPUs by index', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  const sizes: Record<string, Record<string, number>> = { small: { cpus: 2, memoryMb: 1000, gpus: 0 }, big: { cpus: 4, memoryMb: 4000, gpus: 2 } };
  startExecutor(procs, d.url, ['--id', 'small', '--slots', '4', '--resources', 'cpus=2,memoryMb=1000'], withPath(fakeNvidiaSmi(procs, [])));
  startExecutor(procs, d.url, ['--id', 'big', '--slots', '8', '--resources', 'cpus=4,memoryMb=4000'], withPath(fakeNvidiaSmi(procs, [0, 1])));
  const s = await waitExecutors(d.url, 2);
  assert.deepEqual(Object.fromEntries(s.executors.map((e) => [e.id, e.resources])), sizes, 'each advertised what it was given and the GPUs nvidia-smi listed');

  const shapes: Array<Record<string, number>> = [{ cpus: 1 }, { cpus: 2 }, { cpus: 3 }, { cpus: 1, memoryMb: 600 }, { cpus: 1, gpus: 1 }, { cpus: 0.5, gpus: 2 }, { memoryMb: 900 }];
  const tasks: TaskSpec[] = Array.from({ length: 42 }, (_, i) => ({ id: `t${i}`, cmd: ['sh', '-c', PROBE], resources: shapes[i % shapes.length] }));
  const client = await connect(d.url);
  const results: TaskResult[] = await Promise.all(tasks.map((task) => client.submit(task)));
  await client.close();

  const requested = new Map(tasks.map((task) => [task.id!, task.resources!]));
  type Span = { id: string; start: number; end: number; gpus: string };
  const byExecutor = new Map<string, Span[]>();
  for (const r of results) {
    assert.equal(r.status, 'succeeded', `${r.id}: ${r.stderr}`);
    const m = /start (\d+)\ngpus=(.*)\nend (\d+)/.exec(r.stdout);
    assert.ok(m, `${r.id} printed its times: ${r.stdout}`);
    const span = { id: r.id, start: Number(BigInt(m[1]) / 1000n), end: Number(BigInt(m[3]) / 1000n), gpus: m[2] };
    const list = byExecutor.get(r.executor!) ?? [];
    list.push(span);
    byExecutor.set(r.executor!, list);
    const wanted = requested.get(r.id)!.gpus ?? 0;
    if (wanted > 0) {
      assert.equal(r.executor, 'big', `${r.id} asked for GPUs`);
      const got = span.gpus.split(',');
      assert.equal(got.length, wanted, `${r.id}: CUDA_VISIBLE_DEVICES=${span.gpus}`);
      assert.ok(got.every((g) => g === '0' || g === '1'), `${r.id}: CUDA_VISIBLE_DEVICES=${span.gpus}`);
    } else {
      assert.equal(span.gpus, '', `${r.id} asked for no GPU and sees none set`);
    }
  }
  let overlapped = false;
  for (const [exec, spans] of byExecutor) {
    // At each start, the tasks running then (started, not ended) must fit the executor.
    for (const at of spans) {
      const now = spans.filter((x) => x.start <= at.start && at.start < x.end);
      if (now.length > 1) overlapped = true;
      for (const name of ['cpus', 'memoryMb', 'gpus']) {
        const sum = now.reduce((n, x) => n + (requested.get(x.id)![name] ?? 0), 0);
        assert.ok(sum <= sizes[exec][name], `${exec} oversubscribed at ${at.start}: ${name} ${sum} > ${sizes[exec][name]} (${now.map((x) => x.id).join(' ')})`);
      }
      const gpus = now.flatMap((x) => (x.gpus ? x.gpus.split(',') : []));
      assert.equal(new Set(gpus).size, gpus.length, `${exec}: a GPU shared at ${at.start}: ${gpus}`);
    }
  }
  assert.ok(overlapped, 'tasks were packed side by side, not run one at a time');
});

test('a GPU request on a machine without GPUs waits with its reason (task, status); a GPU executor runs it with CUDA_VISIBLE_DEVICES', { timeout: 180_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--id', 'cpu-only', '--slots', '2'], withPath(fakeNvidiaSmi(procs, [])));
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  const done = client.submit({ id: 'train', cmd: ['sh', '-c', 'echo gpus=$CUDA_VISIBLE_DEVICES'], resources: { gpus: 1 } });
  const reason = 'needs gpus=1, the largest executor has 0';
  await waitFor('the task to say why it waits', async () => (await client.task('train')).waiting === reason);
  const env = { FALCONET_URL: d.url };
  const task = await runCli(procs, ['task', 'train'], { env });
  assert.match(task.stdout, new RegExp(`waiting +${reason}`), task.stdout);
  const st = await runCli(procs, ['status'], { env });
  assert.match(st.stdout, new RegExp(`waits +1 task: ${reason}`), st.stdout);
  assert.equal((await client.task('train')).state, 'queued');

  startExecutor(procs, d.url, ['--id', 'gpu', '--slots', '1'], withPath(fakeNvidiaSmi(procs, [3, 5])));
  const r = await done;
  assert.equal(r.status, 'succeeded');
  assert.equal(r.executor, 'gpu');
  assert.equal(r.stdout, 'gpus=3\n', 'the lowest free index, as CUDA_VISIBLE_DEVICES');
  await client.close();
});
