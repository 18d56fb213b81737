/**
 * Prometheus metrics at /metrics (docs/operations.md lists them, with alerts). Nothing here is on
 * the dispatch path: the core, the adapter, the store and the provisioner count in plain numbers
 * (and `Buckets`, histogram.ts) where things happen, and every family below reads them when
 * scraped (prom-client `collect`, or a histogram object built at scrape time).
 *
 * Across a restart: the task counters (submitted, dispatched, retried, finished) are kept by the
 * durable store with every commit and restored, so they only go down when the store is new or in
 * memory. Everything else counts from process start and says so in its HELP text.
 */
import { readFileSync } from 'node:fs';
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { Buckets } from './histogram.js';
import type { DurableStore } from './durable-store.js';
import { executorState } from './status.js';
import type { CoreView } from './view.js';

/** The package's version, read once. */
export const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

/** Per-executor series are exported for at most this many executors (the stalest first), so a 19,000-executor fleet does not make every scrape 38,000 lines. */
export const MAX_EXECUTOR_SERIES = 500;

const PROCESS = '(since this dispatcher process started)';
const STORED = '(kept across restarts by the durable store; from 0 with --store memory)';

/** What the network adapter counts, read at scrape time. */
export interface ServerCounters {
  connections(): { client: number; executor: number; handshake: number };
  readonly slowConsumerDrops: Readonly<{ client: number; executor: number }>;
  readonly authFailures: Readonly<{ client: number; executor: number; http: number }>;
}

/** What the durable store counts (SQLite or PostgreSQL). */
export type StoreCounters = Pick<DurableStore, 'commitSeconds' | 'batchChanges'>;

/** What a provisioner shows. */
export interface ProvisionerCounters {
  readonly counters: { readonly launched: number; readonly bootFailed: number; readonly bootSeconds: Buckets };
  status(): { breaker: { open: boolean; failures: number }; instances: Array<{ state: string }> };
}

export const INSTANCE_STATES = ['requested', 'pending', 'booting', 'registered', 'idle', 'busy', 'draining', 'terminated', 'boot-failed'] as const;
const EXECUTOR_STATES = ['busy', 'idle', 'draining', 'disconnected'] as const;

function gauge(registry: Registry, name: string, help: string, read: (g: Gauge) => void, labelNames: string[] = []): void {
  new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      read(this);
    },
  });
}

/** A counter whose value is a number kept elsewhere; `read` returns it, or per-label values. */
function counter(registry: Registry, name: string, help: string, read: () => number | Record<string, number>, label?: string): void {
  new Counter({
    name,
    help,
    labelNames: label ? [label] : [],
    registers: [registry],
    collect() {
      this.reset();
      const v = read();
      if (typeof v === 'number') this.inc(v);
      else for (const [k, n] of Object.entries(v)) this.inc({ [label!]: k }, n);
    },
  });
}

/** A Prometheus histogram read from `Buckets` at scrape time (absent source: no samples yet). */
export function histogram(registry: Registry, name: string, help: string, source: () => Buckets): void {
  const get = () => {
    const b = source();
    const values: Array<{ metricName: string; labels: Record<string, string>; value: number }> = [];
    let cumulative = 0;
    for (let i = 0; i < b.bounds.length; i++) {
      cumulative += b.counts[i];
      values.push({ metricName: `${name}_bucket`, labels: { le: String(b.bounds[i]) }, value: cumulative });
    }
    cumulative += b.counts[b.bounds.length];
    values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
    values.push({ metricName: `${name}_sum`, labels: {}, value: b.sum });
    values.push({ metricName: `${name}_count`, labels: {}, value: b.count });
    return { name, help, type: 'histogram', values, aggregator: 'sum' };
  };
  registry.registerMetric({ name, help, type: 'histogram', aggregator: 'sum', get, reset() {} } as unknown as Metric);
}

/** The dispatcher's registry: the core, the adapter, Node's process metrics and falconet_info. */
export function metricsFor(core: CoreView, server?: ServerCounters): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  gauge(registry, 'falconet_info', 'The dispatcher\'s version; always 1', (g) => g.set({ version: VERSION }, 1), ['version']);

  // The queue and the fleet.
  gauge(registry, 'falconet_tasks_queued', 'Tasks waiting for an executor (queue depth, state queued)', (g) => g.set(core.queued));
  gauge(registry, 'falconet_tasks_running', 'Tasks dispatched to an executor and not finished (state dispatched)', (g) => g.set(core.running));
  gauge(registry, 'falconet_executors', 'Registered executors (connected, or disconnected with their lease running)', (g) => g.set(core.executorCount));
  gauge(
    registry,
    'falconet_executors_by_state',
    'Registered executors by state: busy, idle, draining, disconnected (lease running)',
    (g) => {
      const n: Record<string, number> = { busy: 0, idle: 0, draining: 0, disconnected: 0 };
      for (const e of core.executors()) n[executorState(e)]++;
      for (const state of EXECUTOR_STATES) g.set({ state }, n[state]);
    },
    ['state'],
  );
  gauge(registry, 'falconet_slots', 'Slots of connected executors', (g) => {
    let total = 0;
    for (const e of core.executors()) if (e.connected) total += e.info.slots;
    g.set(total);
  });
  gauge(registry, 'falconet_slots_busy', 'Slots of connected executors running an attempt', (g) => {
    let busy = 0;
    for (const e of core.executors()) if (e.connected) busy += Math.min(e.info.slots, e.running);
    g.set(busy);
  });
  // Bounded cardinality: only executors registered now (a departed executor's series ends with
  // it), and at most MAX_EXECUTOR_SERIES of them, the longest silent first.
  const perExecutor = () => {
    const all = core.executors();
    if (all.length <= MAX_EXECUTOR_SERIES) return all;
    return all.sort((a, b) => a.lastSeen - b.lastSeen).slice(0, MAX_EXECUTOR_SERIES);
  };
  gauge(registry, 'falconet_executor_running_tasks', `Attempts an executor holds, per registered executor (at most ${MAX_EXECUTOR_SERIES} executors, the longest silent first)`, (g) => {
    g.reset();
    for (const e of perExecutor()) g.set({ executor: e.info.id }, e.running);
  }, ['executor']);
  gauge(registry, 'falconet_executor_last_seen_age_seconds', `Seconds since anything arrived from an executor, per registered executor (at most ${MAX_EXECUTOR_SERIES}, the longest silent first)`, (g) => {
    g.reset();
    const now = Date.now();
    for (const e of perExecutor()) g.set({ executor: e.info.id }, Math.max(0, now - e.lastSeen) / 1000);
  }, ['executor']);
  gauge(registry, 'falconet_executors_last_seen_age_max_seconds', 'The longest silence of any registered executor, in seconds (0 with none)', (g) => {
    let oldest = Infinity;
    for (const e of core.executors()) oldest = Math.min(oldest, e.lastSeen);
    g.set(oldest === Infinity ? 0 : Math.max(0, Date.now() - oldest) / 1000);
  });

  // Task counters and latencies.
  counter(registry, 'falconet_tasks_submitted_total', `Tasks accepted ${STORED}`, () => core.rates.submitted);
  counter(registry, 'falconet_tasks_dispatched_total', `Attempts started: tasks sent to an executor, retries included ${STORED}`, () => core.dispatched);
  counter(registry, 'falconet_tasks_retried_total', `Attempts that ended and sent their task back to the queue (crash, retryable error, hand-back) ${STORED}`, () => core.rates.retried);
  counter(registry, 'falconet_steals_total', `Work stealing: steal requests sent to executors holding tasks that had not started ${PROCESS}`, () => core.steals.asked);
  counter(registry, 'falconet_tasks_stolen_total', `Work stealing: tasks executors gave back, not started, for free slots elsewhere (not retries) ${PROCESS}`, () => core.steals.returned);
  counter(registry, 'falconet_tasks_finished_total', `Tasks finished, by status ${STORED}`, () => core.rates.finished, 'status');
  histogram(registry, 'falconet_task_queue_wait_seconds', `Finished tasks: submitted to (last) dispatched, dispatcher clock ${PROCESS}`, () => core.rates.queueWait);
  histogram(registry, 'falconet_task_dispatch_to_start_seconds', `Finished tasks: dispatched to started on the executor (includes clock skew between hosts) ${PROCESS}`, () => core.rates.dispatchToStart);
  histogram(registry, 'falconet_task_run_seconds', `Finished tasks: started to finished, executor clock ${PROCESS}`, () => core.rates.runTime);

  // Sessions.
  gauge(registry, 'falconet_sessions', 'Sessions kept (open, or finished within --retention)', (g) => g.set(core.sessionCounts().total));
  gauge(registry, 'falconet_sessions_connected', 'Sessions with a client connected', (g) => g.set(core.sessionCounts().connected));
  gauge(registry, 'falconet_results_unacked', 'Finished results their clients have not acknowledged (result backlog)', (g) => g.set(core.unackedResults()));

  if (server) {
    gauge(registry, 'falconet_connections', 'WebSocket connections by role (handshake: no hello yet)', (g) => {
      const n = server.connections();
      for (const [role, v] of Object.entries(n)) g.set({ role }, v);
    }, ['role']);
    counter(registry, 'falconet_slow_consumer_drops_total', `Connections dropped because too much waited to be sent to them, by role ${PROCESS}`, () => server.slowConsumerDrops, 'role');
    counter(registry, 'falconet_auth_failures_total', `Credentials refused, by the role asked for (http: the HTTP API's bearer token) ${PROCESS}`, () => server.authFailures, 'role');
  }
  return registry;
}

/** The durable store's commit latency and batch size. */
export function addStoreMetrics(registry: Registry, store: StoreCounters): void {
  histogram(registry, 'falconet_store_commit_duration_seconds', `Seconds from handing a batch to the store's writer until it is on disk (fsync included with --sync full) ${PROCESS}`, () => store.commitSeconds);
  histogram(registry, 'falconet_store_commit_batch_changes', `Changes (task rows, results, sessions, other records) per commit ${PROCESS}`, () => store.batchChanges);
}

/** The provisioner's fleet, launches, failed boots, breaker and boot times. */
export function addProvisionerMetrics(registry: Registry, p: ProvisionerCounters): void {
  gauge(registry, 'falconet_provisioner_instances', 'Instances the provisioner tracks, by state (ended ones stay ~10 minutes)', (g) => {
    const n: Record<string, number> = Object.fromEntries(INSTANCE_STATES.map((s) => [s, 0]));
    for (const r of p.status().instances) n[r.state] = (n[r.state] ?? 0) + 1;
    for (const [state, v] of Object.entries(n)) g.set({ state }, v);
  }, ['state']);
  counter(registry, 'falconet_provisioner_launches_total', `Instances launched ${PROCESS}`, () => p.counters.launched);
  counter(registry, 'falconet_provisioner_boot_failures_total', `Instances that did not register within --boot-timeout or ended first ${PROCESS}`, () => p.counters.bootFailed);
  gauge(registry, 'falconet_provisioner_breaker_open', '1 while the circuit breaker is open (launches stopped until `falconet provisioner reset`), else 0', (g) => g.set(p.status().breaker.open ? 1 : 0));
  gauge(registry, 'falconet_provisioner_boot_failures_consecutive', 'Failed boots in a row (the breaker opens at its threshold, default 3)', (g) => g.set(p.status().breaker.failures));
  histogram(registry, 'falconet_provisioner_boot_seconds', `Seconds from launch to the executor's registration, instances launched by this process ${PROCESS}`, () => p.counters.bootSeconds);
}
