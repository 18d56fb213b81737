/**
 * Several dispatchers over one real PostgreSQL (test/postgres.ts; docs/scale-out.md): tasks done
 * exactly once while dispatchers are killed and stopped, a client that resumes its session on
 * another dispatcher, the fence that refuses a late owner's writes, and the provisioner's lead
 * moving when its dispatcher dies. Real dispatcher, executor and client processes on loopback.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { connect, type Client, type TaskResult } from '../client/index.js';
import { PARTITIONS } from '../dispatcher/pg-schema.js';
import type { DispatcherEntry } from '../dispatcher/cluster.js';
import { Procs, exited, runCli, startDispatcher, startExecutor, waitFor, waitForLine, type Dispatcher } from './helpers.js';
import { query, startPostgres, type PgServer } from './postgres.js';

let server: PgServer | null = null;
let skip: string | false = false;
let dbs = 0;

before(async () => {
  const s = await startPostgres();
  if ('skip' in s) skip = s.skip;
  else server = s;
});
after(() => server?.stop());

/** Short leases so that a dead dispatcher's partitions move within seconds. */
const CLUSTER = ['--partition-lease-ms', '1500', '--inbox-poll-ms', '50'];

async function cluster(procs: Procs, url: string, n: number, extra: string[] = []): Promise<Dispatcher[]> {
  const ds: Dispatcher[] = [];
  for (let i = 0; i < n; i++) ds.push(await startDispatcher(procs, ['--store', url, ...CLUSTER, ...extra]));
  // Shares settle: every dispatcher holds partitions and together they hold all of them.
  await waitFor('partitions spread over every dispatcher', async () => {
    const list = await dispatchers(ds[0]).catch(() => []);
    return list.length === n && list.every((d) => d.partitions > 0) && list.reduce((a, d) => a + d.partitions, 0) === PARTITIONS;
  });
  return ds;
}

async function dispatchers(d: Dispatcher): Promise<DispatcherEntry[]> {
  const res = await fetch(d.url.replace(/^ws/, 'http') + '/api/dispatchers');
  return ((await res.json()) as { dispatchers: DispatcherEntry[] }).dispatchers;
}

async function statusOf(d: Dispatcher): Promise<{ executors: unknown[]; provisioner?: unknown }> {
  return (await (await fetch(d.url.replace(/^ws/, 'http') + '/api/status')).json()) as { executors: unknown[]; provisioner?: unknown };
}

async function kill9(d: Dispatcher): Promise<void> {
  const exit = exited(d.proc, 10_000, 'a dispatcher after kill -9');
  d.proc.kill('SIGKILL');
  await exit;
}

/** Every result received, by id: what a failure shows of a task delivered twice. */
const received = new Map<string, TaskResult[]>();

/** Reads `n` results from a client; counts each id. */
async function collect(client: Client, n: number, seen: Map<string, number>, progress: () => void): Promise<void> {
  let got = 0;
  for await (const r of client.results()) {
    seen.set(r.id, (seen.get(r.id) ?? 0) + 1);
    received.set(r.id, [...(received.get(r.id) ?? []), r]);
    assert.equal(r.status, 'succeeded', `${r.id}: ${JSON.stringify(r.error)}`);
    progress();
    if (++got === n) return;
  }
}

function exactlyOnce(seen: Map<string, number>, ids: string[]): void {
  const twice = [...seen].filter(([, n]) => n > 1).slice(0, 5);
  assert.deepEqual(twice, [], `no result delivered twice: ${JSON.stringify(twice.map(([id]) => received.get(id)?.map((r) => ({ attempts: r.attempts, executor: r.executor, timings: r.timings, cached: r.cached }))))}`);
  const missing = ids.filter((id) => !seen.has(id)).slice(0, 5);
  assert.deepEqual(missing, [], 'every task finished');
  assert.equal(seen.size, ids.length);
}

test('three dispatchers on one database: 20,000 tasks exactly once while one is killed with kill -9 and another stopped with SIGTERM', { timeout: 600_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  const clients: Client[] = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await procs.killAll();
  });
  const db = await server!.newDatabase(`s${++dbs}`);
  const ds = await cluster(procs, db, 3);
  const list = (first: number): string => [0, 1, 2].map((i) => ds[(first + i) % 3].url).join(',');
  // Two executors per dispatcher, each given every URL with its own first.
  for (let i = 0; i < 6; i++) startExecutor(procs, list(i % 3), ['--slots', '16', '--dispatcher-order', 'first']);
  await waitFor('six executors', async () => {
    const n = await Promise.all(ds.map(async (d) => (await (await fetch(d.url.replace(/^ws/, 'http') + '/api/status')).json()) as { executors: unknown[] }));
    return n.reduce((a, s) => a + s.executors.length, 0) >= 6;
  });

  const PER = [6667, 6667, 6666];
  const ids: string[] = [];
  const seen = new Map<string, number>();
  let done = 0;
  // What a failure shows: each client's connections, its cursor and how many results it read.
  const history: string[][] = [[], [], []];
  const got = [0, 0, 0];
  const diagnose = (): string =>
    clients.map((cl, i) => `client ${i}: ${got[i]} results, cursor ${cl.session.cursor}, outstanding ${cl.outstanding}, ${history[i].join(' → ')}`).join('; ');
  const reached = (k: number): Promise<void> =>
    waitFor(`${k} results`, () => done >= k, 300_000).then(
      () => undefined,
      (err: Error) => {
        throw new Error(`${err.message}: ${diagnose()}`);
      },
    );
  const work: Promise<void>[] = [];
  for (let c = 0; c < 3; c++) {
    const client = await connect(list(c), { connectTimeoutMs: 120_000 });
    clients.push(client);
    const at = Date.now();
    client.onState((ch) => history[c].push(`${Date.now() - at}ms ${ch.state}${ch.resumed !== undefined ? ` resumed=${ch.resumed}` : ''} ${ch.dispatcher ?? ''} (cursor ${client.session.cursor}, read ${got[c]})${ch.reason ? ` ${ch.reason}` : ''}`));
    const mine = Array.from({ length: PER[c] }, (_, i) => `c${c}-${i}`);
    ids.push(...mine);
    work.push(collect(client, mine.length, seen, () => (done++, got[c]++)));
    void client.submitMany(mine.map((id) => ({ id, builtin: 'sleep' as const, ms: 1 })), { until: 'accepted' }).catch(() => {});
  }
  await reached(4000);
  await kill9(ds[0]);
  await reached(9000);
  const term = exited(ds[1].proc, 60_000, 'the SIGTERMed dispatcher');
  ds[1].proc.kill('SIGTERM');
  assert.equal((await term).code, 0, 'a graceful stop');
  await Promise.race([Promise.all(work), reached(ids.length)]);
  await Promise.all(work);
  try {
    exactlyOnce(seen, ids);
  } catch (err) {
    throw new Error(`${(err as Error).message}; ${diagnose()}`);
  }
  // The survivor comes to hold every partition (the stopped one's at once, the killed one's after its leases).
  await waitFor('the survivor holding every partition', async () => {
    const left = await dispatchers(ds[2]);
    return left.length === 1 && left[0].partitions === PARTITIONS;
  });
});

test('a client whose dispatcher dies resumes its session on another, with no result twice', { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  let client: Client | null = null;
  t.after(async () => {
    await client?.close().catch(() => {});
    await procs.killAll();
  });
  const db = await server!.newDatabase(`s${++dbs}`);
  const [a, b] = await cluster(procs, db, 2);
  startExecutor(procs, `${a.url},${b.url}`, ['--slots', '8', '--dispatcher-order', 'first']);
  startExecutor(procs, `${b.url},${a.url}`, ['--slots', '8', '--dispatcher-order', 'first']);
  client = await connect(`${a.url},${b.url}`, { connectTimeoutMs: 120_000 });
  const session = client.session.id;
  const ids = Array.from({ length: 3000 }, (_, i) => `r${i}`);
  const seen = new Map<string, number>();
  let done = 0;
  const reading = collect(client, ids.length, seen, () => done++);
  void client.submitMany(ids.map((id) => ({ id, builtin: 'sleep' as const, ms: 2 })), { until: 'accepted' }).catch(() => {});
  await waitFor('a third of the results', () => done >= 1000, 120_000);
  await kill9(a);
  await reading;
  exactlyOnce(seen, ids);
  assert.equal(client.session.id, session, 'the same session, resumed');
  const rows = await query<{ n: string }>(db, 'SELECT count(*) AS n FROM results WHERE session = $1', [session]);
  assert.equal(Number(rows[0].n), ids.length, 'each result stored once');
});

test("a partition's old owner that comes back late has its writes refused (STORE_FENCED) and stops", { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  let client: Client | null = null;
  t.after(async () => {
    await client?.close().catch(() => {});
    await procs.killAll();
  });
  const db = await server!.newDatabase(`s${++dbs}`);
  const [a, b] = await cluster(procs, db, 2);
  startExecutor(procs, `${b.url},${a.url}`, ['--slots', '4', '--dispatcher-order', 'first']);
  client = await connect(`${a.url},${b.url}`, { connectTimeoutMs: 120_000 });
  await client.submit({ id: 'before', builtin: 'noop' });
  const fenced = waitForLine(a.proc, /STORE_FENCED/, 120_000, 'stderr');
  // a pauses past its leases: b takes every partition, with new epochs.
  a.proc.kill('SIGSTOP');
  await waitFor('b holding every partition', async () => (await dispatchers(b).catch(() => [])).some((d) => d.self && d.partitions === PARTITIONS), 60_000);
  const epochs = await query<{ owner: string; n: string }>(db, 'SELECT owner, count(*) AS n FROM partitions GROUP BY owner');
  assert.equal(epochs.length, 1, 'one owner');
  a.proc.kill('SIGCONT');
  await fenced;
  const exit = await exited(a.proc, 30_000, 'the fenced dispatcher');
  assert.notEqual(exit.code, 0, 'it stops rather than serve partitions it lost');
  // Its client moved to b, and work goes on there.
  const r = await client.submit({ id: 'after', builtin: 'noop' });
  assert.equal(r.status, 'succeeded');
});

test("the provisioner's lead moves when its dispatcher dies", { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  let leaderPid = 0;
  t.after(async () => {
    await procs.killAll();
    // The killed leader's local executor outlives it (on purpose): stop it here.
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (leaderPid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`local-${leaderPid}-`)) process.kill(Number(pid), 'SIGKILL');
      } catch {}
    }
  });
  const db = await server!.newDatabase(`s${++dbs}`);
  const ds = await cluster(procs, db, 3, ['--provisioner', 'local', '--min', '1', '--max', '1', '--executor-slots', '1']);
  const lead = await waitFor('a leader', async () => (await dispatchers(ds[0])).find((d) => d.leader));
  const leader = ds.find((d) => d.url === lead.url)!;
  leaderPid = leader.proc.pid!;
  const others = ds.filter((d) => d !== leader);
  // Only the leader runs the provisioner, and it starts its executor.
  await waitFor("the leader's executor", async () => (await statusOf(leader)).executors.length >= 1);
  for (const d of others) assert.equal((await statusOf(d)).provisioner, undefined, 'no provisioner on a follower');
  await kill9(leader);
  const next = await waitFor('a new leader', async () => (await dispatchers(others[0]).catch(() => [])).find((d) => d.leader && d.url !== lead.url), 60_000);
  assert.ok(others.some((d) => d.url === next.url));
  const successor = others.find((d) => d.url === next.url)!;
  await waitFor('the provisioner running on the new leader', async () => (await statusOf(successor)).provisioner !== undefined);
  // It adopts the dead leader's instance: its executor reconnected to one of the survivors (whichever
  // it is, the new leader sees it) and no second instance is launched for --min 1.
  type Instance = { id: string; state: string; adopted?: boolean };
  const adopted = await waitFor("the dead leader's instance adopted, its executor seen again", async () => {
    const list = ((await statusOf(successor)).provisioner as { instances: Instance[] } | undefined)?.instances ?? [];
    return list.some((i) => i.adopted && ['idle', 'registered', 'busy'].includes(i.state)) ? list : undefined;
  }).catch(async (err: Error) => {
    const seen = await Promise.all(others.map(async (d) => ({ url: d.url, status: await statusOf(d) })));
    throw new Error(`${err.message}; survivors: ${JSON.stringify(seen)}`);
  });
  assert.equal(adopted.length, 1, JSON.stringify(adopted));
  // `falconet status` shows every live dispatcher, its partitions and the leader.
  const shown = await waitFor('status listing the two live dispatchers', async () => {
    const r = await runCli(procs, ['status', '--dispatcher', others[0].url]);
    return r.code === 0 && /cluster +2 dispatchers/.test(r.stdout) ? r.stdout : undefined;
  });
  assert.match(shown, new RegExp(`${next.url} \\d+ partitions.*\\(provisioner\\)`));
});


/** Local executors a provisioner in the dispatcher `pid` started (`local-<pid>-<n>`), alive now. */
function executorsOf(pid: number): number[] {
  const found: number[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`local-${pid}-`)) found.push(Number(p));
    } catch {}
  }
  return found;
}

test('the provisioner sees the whole cluster: it launches for a follower\'s queue, its executors follow the work there, and it drains them there when idle', { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  let leaderPid = 0;
  t.after(async () => {
    await procs.killAll();
    for (const pid of leaderPid ? executorsOf(leaderPid) : []) process.kill(pid, 'SIGKILL');
  });
  const db = await server!.newDatabase(`s${++dbs}`);
  const ds = await cluster(procs, db, 2, ['--provisioner', 'local', '--min', '0', '--max', '2', '--executor-slots', '1', '--idle-timeout', '2', '--cooldown', '0', '--poll-ms', '200']);
  const lead = await waitFor('a leader', async () => (await dispatchers(ds[0])).find((d) => d.leader));
  const leader = ds.find((d) => d.url === lead.url)!;
  const follower = ds.find((d) => d !== leader)!;
  leaderPid = leader.proc.pid!;
  // Work only on the follower: a new session opens in the partitions of the dispatcher it dials.
  const client = await connect(follower.url);
  t.after(() => client.close());
  const ids = Array.from({ length: 6 }, (_, i) => `w${i}`);
  const results = await Promise.all(ids.map((id) => client.submit({ id, builtin: 'sleep', ms: 300 })));
  for (const r of results) {
    assert.equal(r.status, 'succeeded', `${r.id}: ${JSON.stringify(r.error)}`);
    // Run by the leader's instances (they registered with it, then moved to the follower's queue).
    assert.match(r.executor ?? '', new RegExp(`^local-${leaderPid}-`), `${r.id} ran on a provisioned executor`);
  }
  // Idle at the follower, they are drained there on the leader's order; each instance ends once its executor left.
  type Instance = { id: string; state: string; reason?: string };
  const ended = await waitFor('every instance ended after its executor was drained at the follower', async () => {
    const p = (await statusOf(leader)).provisioner as { instances: Instance[] } | undefined;
    const all = p?.instances ?? [];
    return all.length > 0 && all.every((i) => i.state === 'terminated') ? all : undefined;
  }, 120_000);
  assert.ok(ended.length <= 2, 'never more than --max instances');
  for (const i of ended) assert.equal(i.reason, 'its executor left', `${i.id}: ${i.reason}`);
  await waitFor('the drained executor processes exited', () => executorsOf(leaderPid).length === 0);
});

test('an executor and a client given one dispatcher are told of the others (peers) and go to one of them when theirs dies', { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const procs = new Procs();
  let client: Client | null = null;
  t.after(async () => {
    await client?.close().catch(() => {});
    await procs.killAll();
  });
  const db = await server!.newDatabase(`s${++dbs}`);
  const a = await startDispatcher(procs, ['--store', db, ...CLUSTER]);
  const exec = startExecutor(procs, a.url, ['--id', 'told', '--dispatcher-timeout', '120'], { FALCONET_LOG: 'info' });
  client = await connect(a.url, { connectTimeoutMs: 120_000 });
  assert.equal((await client.submit({ id: 'before', builtin: 'noop' })).status, 'succeeded');
  const b = await startDispatcher(procs, ['--store', db, ...CLUSTER]);
  // The dispatcher tells them once its round sees the newcomer.
  await waitForLine(exec, new RegExp(`^(?=.*live dispatchers).*${b.url.replace(/[/.]/g, '\\$&')}`, 'm'), 30_000, 'stderr');
  await waitFor('the client told of the newcomer', () => client!.dispatchers.includes(b.url));
  await kill9(a);
  await waitFor('the executor registered with the dispatcher it was told of', async () => {
    const s = (await statusOf(b)) as { executors: Array<{ id: string; state: string }> };
    return s.executors.some((e) => e.id === 'told' && e.state !== 'disconnected');
  });
  // The client resumes its session there (its partition moved with a's leases) and goes on.
  const session = client.session.id;
  assert.equal((await client.submit({ id: 'after', builtin: 'noop' })).status, 'succeeded');
  assert.equal(client.session.id, session);
  assert.equal(client.dispatcher, b.url);
});
