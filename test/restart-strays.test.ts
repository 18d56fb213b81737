/**
 * No strays after a restart: the local executors of a `falconet up` killed with kill -9 keep
 * running and redial; the next `up` on the same store adopts them into its fleet instead of
 * launching its own beside them, and stops them when it stops.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { FAST, Procs, alive, exited, freePort, status, waitExecutors, waitFor } from './helpers.js';

test('a restarted up adopts the executors of the one killed with kill -9, and stops them when it stops', { timeout: 120_000 }, async () => {
  const procs = new Procs();
  let old: Array<{ id: string; pid: number }> = [];
  try {
    const port = await freePort();
    const url = `ws://127.0.0.1:${port}`;
    const args = ['up', '--port', String(port), '--executors', '2', '--poll-ms', '100', '--data-dir', procs.tmpDir(), ...FAST];
    const first = procs.spawn(args);
    first.stdout!.resume();
    const s1 = await waitExecutors(url, 2);
    old = s1.executors.map((e) => ({ id: e.id, pid: e.pid! }));
    assert.equal(old.length, 2);
    first.kill('SIGKILL');
    await exited(first, 10_000);
    assert.ok(old.every((o) => alive(o.pid)), 'the executors outlive their dispatcher');

    const second = procs.spawn(args);
    second.stdout!.resume();
    let stderr = '';
    second.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    let last: unknown = null;
    const adopted = await waitFor(
      'the old executors registered with the new dispatcher and adopted by its provisioner',
      async () => {
        if (second.exitCode !== null) throw new Error(`the second up exited with ${second.exitCode}: ${stderr}`);
        const s = (await status(url).catch(() => undefined)) as (Awaited<ReturnType<typeof status>> & { provisioner?: { instances: Array<{ id: string; state: string; adopted?: boolean }> } }) | undefined;
        if (!s?.provisioner) return undefined;
        last = { old, executors: s.executors.map((e) => [e.id, e.state]), provisioner: s.provisioner };
        const ok = old.every((o) => s.executors.some((e) => e.id === o.id && e.state !== 'disconnected') && s.provisioner!.instances.some((i) => i.id === o.id && i.adopted && i.state !== 'pending'));
        return ok ? s : undefined;
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last status: ${JSON.stringify(last)}`);
    });
    assert.deepEqual(adopted.executors.map((e) => e.id).sort(), old.map((o) => o.id).sort());
    // A negative property: several provisioner polls (100 ms each) launch nobody beside them.
    await sleep(1000);
    const later = await status(url);
    assert.deepEqual(later.executors.map((e) => e.id).sort(), old.map((o) => o.id).sort(), 'the fleet is the adopted two, nothing launched beside them');

    second.kill('SIGTERM');
    await exited(second, 20_000);
    await waitFor('the adopted executors stopped with the dispatcher', () => old.every((o) => !alive(o.pid)), 15_000);
  } finally {
    for (const o of old) if (alive(o.pid)) process.kill(o.pid, 'SIGKILL');
    await procs.killAll();
  }
});

test('without records (an in-memory store), the executors of a killed up are drained, not kept beside the new fleet', { timeout: 120_000 }, async () => {
  const procs = new Procs();
  let old: Array<{ id: string; pid: number }> = [];
  try {
    const port = await freePort();
    const url = `ws://127.0.0.1:${port}`;
    const args = ['up', '--port', String(port), '--executors', '2', '--poll-ms', '100', '--store', 'memory', ...FAST];
    const first = procs.spawn(args);
    first.stdout!.resume();
    old = (await waitExecutors(url, 2)).executors.map((e) => ({ id: e.id, pid: e.pid! }));
    first.kill('SIGKILL');
    await exited(first, 10_000);
    const second = procs.spawn(args);
    second.stdout!.resume();
    await waitFor('the old executors drained and gone', () => old.every((o) => !alive(o.pid)), 60_000);
    const s = await waitFor('the new fleet of two', async () => {
      const st = await status(url).catch(() => undefined);
      return st && st.executors.filter((e) => e.state !== 'disconnected').length === 2 && st.executors.every((e) => !old.some((o) => o.id === e.id)) ? st : undefined;
    });
    assert.equal(s.executors.length, 2);
  } finally {
    for (const o of old) if (alive(o.pid)) process.kill(o.pid, 'SIGKILL');
    await procs.killAll();
  }
});
