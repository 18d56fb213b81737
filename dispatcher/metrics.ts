/**
 * Prometheus metrics at /metrics. Gauges and counters are read from the core when scraped
 * (prom-client `collect`), so the dispatch path pays nothing for them.
 */
import { Registry, Gauge, Counter } from 'prom-client';
import type { CoreView } from './view.js';

export function metricsFor(core: CoreView): Registry {
  const registry = new Registry();
  new Gauge({
    name: 'falconet_tasks_queued',
    help: 'Tasks waiting for an executor',
    registers: [registry],
    collect() {
      this.set(core.queued);
    },
  });
  new Gauge({
    name: 'falconet_tasks_running',
    help: 'Tasks dispatched to an executor and not finished',
    registers: [registry],
    collect() {
      this.set(core.running);
    },
  });
  new Gauge({
    name: 'falconet_executors',
    help: 'Registered executors',
    registers: [registry],
    collect() {
      this.set(core.executorCount);
    },
  });
  new Counter({
    name: 'falconet_tasks_submitted_total',
    help: 'Tasks accepted since start',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(core.rates.submitted);
    },
  });
  new Counter({
    name: 'falconet_tasks_finished_total',
    help: 'Tasks finished since start, by status',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [status, n] of Object.entries(core.rates.finished)) this.inc({ status }, n);
    },
  });
  return registry;
}
