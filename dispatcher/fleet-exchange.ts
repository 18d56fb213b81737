/**
 * The database side of the provisioner's cluster-wide view (provisioner/fleet.ts): every
 * dispatcher publishes its fleet report with its presence and carries out drain orders for the
 * executors connected to it; the leader reads the others' reports and writes drain orders.
 *
 * Drain orders live in their own table, keyed by executor, not by dispatcher: an executor that
 * moves before its order is carried out is drained by whichever dispatcher it reaches next. An
 * order nobody carries out (its executor is gone) is pruned after ten minutes.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import type { DispatcherCore } from './core.js';
import { fromPgText, toPgText } from './pg-schema.js';
import { ClusterFleet, reportFleet, type FleetReport, type RemoteReport } from './provisioner/fleet.js';

/** A drain order nobody could carry out this long is dropped. */
const DRAIN_ORDER_TTL = '10 minutes';

export class FleetExchange {
  /** Ids of the instances the provisioner recorded (its `instances` table), read every round. */
  #instances: ReadonlySet<string> = new Set();
  #reports: RemoteReport[] = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly self: string,
    private readonly log: Logger,
  ) {}

  /** This dispatcher's report, as written with its presence (JSON). */
  report(core: DispatcherCore): string {
    return JSON.stringify(reportFleet(core.view, this.#instances, Date.now()));
  }

  /**
   * One round: which executors are the provisioner's, the other live dispatchers' reports
   * (`live`: rows of `dispatchers` with `fleet` and `age`), and the drain orders for executors
   * connected here, carried out and deleted.
   */
  async refresh(core: DispatcherCore, live: ReadonlyArray<{ id: string; fleet: string | null; age: number }>): Promise<void> {
    const ids = await this.pool.query<{ id: string }>('SELECT id FROM instances');
    this.#instances = new Set(ids.rows.map((r) => fromPgText(r.id)));
    const reports: RemoteReport[] = [];
    for (const r of live) {
      if (r.id === this.self || r.fleet === null) continue;
      try {
        reports.push({ dispatcher: r.id, ageMs: Math.max(0, Number(r.age)), report: JSON.parse(r.fleet) as FleetReport });
      } catch {
        this.log.warn({ dispatcher: r.id }, 'cluster: unreadable fleet report');
      }
    }
    this.#reports = reports;
    const orders = await this.pool.query<{ executor: string }>('SELECT executor FROM drains');
    const done: string[] = [];
    for (const r of orders.rows) {
      const id = fromPgText(r.executor);
      if (core.view.executor(id)?.connected && core.drain(id)) done.push(r.executor);
    }
    if (done.length) {
      await this.pool.query('DELETE FROM drains WHERE executor = ANY($1::text[])', [done]);
      this.log.info({ executors: done.length }, 'cluster: drained executors on the provisioner’s order');
    }
    // Only when orders wait: an empty table costs a round one read, not a write.
    if (orders.rows.length > done.length) await this.pool.query(`DELETE FROM drains WHERE at < clock_timestamp() - $1::interval`, [DRAIN_ORDER_TTL]);
  }

  /** The leader's fleet: its core live, the others from their reports. */
  fleet(core: DispatcherCore): ClusterFleet {
    return new ClusterFleet(core, () => this.#reports, (id) => this.#orderDrain(id), { now: () => Date.now() });
  }

  #orderDrain(id: string): void {
    this.pool
      .query('INSERT INTO drains (executor) VALUES ($1) ON CONFLICT (executor) DO NOTHING', [toPgText(id)])
      .catch((err: Error) => this.log.warn({ err: err.message, executor: id }, 'cluster: could not order a drain'));
  }
}
