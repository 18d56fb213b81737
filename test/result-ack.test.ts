/**
 * Results are acknowledged: a `done` lost with its connection is sent again after the executor
 * reconnects, instead of the attempt being run again. A TCP proxy between the executor and the
 * dispatcher swallows what the executor sends once the task has run, then cuts the connection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as connectClient } from '../client/index.js';
import { pack } from 'msgpackr';
import { LIMITS } from '../protocol/index.js';
import { Procs, raw, startDispatcher, startExecutor, waitFor } from './helpers.js';

/** Forwards loopback TCP to `port`; `swallow` drops what executors send, `cut` ends every connection. */
async function proxy(port: number) {
  const pairs = new Set<[Socket, Socket]>();
  let swallowing = false;
  const server = createServer((inbound) => {
    const outbound = connect(port, '127.0.0.1');
    const pair: [Socket, Socket] = [inbound, outbound];
    pairs.add(pair);
    inbound.on('data', (d) => {
      if (!swallowing) outbound.write(d);
    });
    outbound.on('data', (d) => inbound.write(d));
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      pairs.delete(pair);
    };
    inbound.on('close', end).on('error', end);
    outbound.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    swallow(on: boolean) {
      swallowing = on;
    },
    cut() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('a result lost with its connection is delivered after the reconnect; the attempt is not run again', { timeout: 60_000 }, async () => {
  const procs = new Procs();
  const client = { close: async () => {} };
  let p: Awaited<ReturnType<typeof proxy>> | null = null;
  try {
    // A long lease: this test is about the result, not about an expired lease.
    const d = await startDispatcher(procs, ['--lease-ms', '10000']);
    p = await proxy(d.port);
    startExecutor(procs, `ws://127.0.0.1:${p.port}`, ['--slots', '1']);
    const dir = procs.tmpDir();
    const runs = join(dir, 'runs');
    const c = await connectClient(d.url);
    client.close = () => c.close();
    const result = c.submit({ id: 'once', cmd: ['/bin/sh', '-c', `echo ran >> ${runs}; sleep 0.3`] });
    // The task has started: from now on nothing the executor sends arrives (its `done` included).
    await waitFor('the task to start', () => existsSync(runs), 20_000);
    p.swallow(true);
    // Past the task's end, the connection goes; the executor redials through a working proxy.
    await new Promise((r) => setTimeout(r, 800));
    p.cut();
    p.swallow(false);
    const r = await result;
    assert.equal(r.status, 'succeeded');
    assert.equal(r.attempts, 1, 'delivered from the executor, not run again');
    assert.equal(readFileSync(runs, 'utf8'), 'ran\n');
  } finally {
    await client.close();
    await procs.killAll();
    p?.cut(); // server.close() waits for open connections
    await p?.close();
  }
});

test('an executor report that breaks the protocol ends its attempt failed with RESULT_INVALID, not a hang', { timeout: 120_000 }, async () => {
  const procs = new Procs();
  try {
    const d = await startDispatcher(procs);
    const c = await connectClient(d.url);
    const result = c.submit({ id: 'victim', builtin: 'noop' });
    // A hand-written executor that answers with a `done` whose stdout is over the wire's limit.
    const ex = await raw(d.url);
    const info = { id: 'rogue', hostname: 'h', addresses: [], slots: 1, memory: 0, labels: {}, version: 't', incarnation: 'i', mode: 'push', running: [] };
    ex.ws.send(pack([{ t: 'hello', v: 1, role: 'executor', caps: [], executor: info }]));
    const task = (await ex.next((m) => m.t === 'task')) as { uid: number; attempt: number };
    const now = Date.now();
    const done = { uid: task.uid, attempt: task.attempt, status: 'succeeded', exitCode: 0, signal: null, stdout: 'x'.repeat(LIMITS.outputChars + 1), stderr: '', truncated: false, startedAt: now, finishedAt: now };
    ex.ws.send(pack([{ t: 'done', result: done }]));
    const r = await result;
    assert.equal(r.status, 'failed');
    assert.equal(r.error?.code, 'RESULT_INVALID');
    assert.deepEqual((await ex.next((m) => m.t === 'ack')).done, [{ uid: task.uid, attempt: task.attempt }], 'acknowledged, so the executor forgets it');
    ex.ws.close();
    await c.close();
  } finally {
    await procs.killAll();
  }
});

test('a result larger than the dispatcher frame limit ends failed with RESULT_INVALID instead of waiting forever', { timeout: 60_000 }, async () => {
  const procs = new Procs();
  try {
    const d = await startDispatcher(procs, ['--max-frame-bytes', '65536']);
    startExecutor(procs, d.url, ['--slots', '1', '--output-limit', '1048576']);
    const c = await connectClient(d.url);
    const r = await c.submit({ cmd: ['/bin/sh', '-c', 'head -c 300000 /dev/zero | tr "\\\\0" x'] });
    assert.equal(r.status, 'failed');
    assert.equal(r.error?.code, 'RESULT_INVALID');
    assert.match(r.error!.message, /frame limit/);
    const small = await c.submit({ cmd: ['/bin/echo', 'still serving'] });
    assert.equal(small.stdout, 'still serving\n');
    await c.close();
  } finally {
    await procs.killAll();
  }
});
