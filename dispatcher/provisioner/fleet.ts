/**
 * What the provisioner scales: the queue and the executors. Alone, that is this dispatcher's
 * core. Over PostgreSQL (several dispatchers, docs/scale-out.md) the one provisioner, on the
 * leader, must see the whole cluster: every dispatcher's queue, and its own executors wherever
 * they connected (an executor follows the work, or moves when its dispatcher dies). Each
 * dispatcher therefore publishes a small report with its presence ({@link reportFleet}: its queue,
 * the free slots of executors no provisioner started, the provisioner's executors one by one, and
 * the resource requests only typed instances could run), and the leader merges the others'
 * reports with its own live view ({@link ClusterFleet}). A drain of an executor connected
 * elsewhere goes through the database to whichever dispatcher holds it.
 *
 * Pure: no I/O here (cluster.ts reads and writes the reports and drain orders).
 */
import type { DispatcherCore } from '../core.js';
import { labelsFit } from '../model.js';
import type { ExecutorView } from '../view.js';
import type { ExecutorInfo } from '../../protocol/index.js';
import { fitsResources } from './instance-types.js';
import type { WaitingShape } from './fit-plan.js';

/** One executor as the provisioner reads it (a local one's live view has more). */
export interface FleetMember extends Pick<ExecutorView, 'connected' | 'draining' | 'leaving' | 'running' | 'idleSince'> {
  readonly info: Readonly<Pick<ExecutorInfo, 'id' | 'instanceId' | 'slots' | 'resources' | 'labels'>>;
}

/** The provisioner's window on the queue and the executors. */
export interface Fleet {
  /** Tasks that wait for an executor and that the free slots of executors not ours will not take. */
  demand(isOurs: (e: FleetMember) => boolean): number;
  /** Every executor here, and the provisioner's own executors connected to other dispatchers. */
  executors(): FleetMember[];
  /** Queued resource requests by shape (the cluster's: elsewhere only those no executor there but ours could run). */
  queuedRequests(): WaitingShape[];
  /** Drains an executor wherever it is connected. */
  drain(id: string): void;
}

/** Tasks queued at this dispatcher beyond the free slots of its executors that are not ours. */
function localDemand(view: DispatcherCore['view'], isOurs: (e: FleetMember) => boolean): number {
  return Math.max(0, view.queued - freeSlots(view.executors(), (e) => !isOurs(e)));
}

/** A single dispatcher's fleet: its core. */
export function localFleet(core: Pick<DispatcherCore, 'view' | 'drain'>): Fleet {
  return {
    demand: (isOurs) => localDemand(core.view, isOurs),
    executors: () => core.view.executors(),
    queuedRequests: () => core.view.queuedRequests(),
    drain: (id) => void core.drain(id),
  };
}

function freeSlots(executors: readonly FleetMember[], which: (e: FleetMember) => boolean): number {
  let free = 0;
  for (const e of executors) if (which(e) && e.connected && !e.draining && !e.leaving) free += Math.max(0, e.info.slots - e.running);
  return free;
}

/** One of the provisioner's executors in a report. `idleMs`: for how long it held nothing, at the report. */
export interface ReportedExecutor {
  id: string;
  instanceId?: string;
  slots: number;
  running: number;
  connected: boolean;
  draining: boolean;
  idleMs: number | null;
  resources?: Record<string, number>;
  labels: Record<string, string>;
}

/** What a dispatcher publishes with its presence (the `fleet` column of `dispatchers`). */
export interface FleetReport {
  queued: number;
  /** Free slots of connected executors that no provisioner started: they take queued tasks there. */
  free: number;
  /** The provisioner's executors connected here (their instance ids are in the `instances` table). */
  executors: ReportedExecutor[];
  /** Queued requests no executor here but the provisioner's could ever run: typed launches serve them. */
  shapes: WaitingShape[];
}

/**
 * This dispatcher's report. `instances` are the ids of the instances the provisioner recorded:
 * an executor is the provisioner's when its instance id (EC2) or its own id (local) is one.
 */
export function reportFleet(view: DispatcherCore['view'], instances: ReadonlySet<string>, now: number): FleetReport {
  const all = view.executors();
  const ours = (e: FleetMember) => instances.has(e.info.instanceId ?? '') || instances.has(e.info.id);
  const others = all.filter((e) => !ours(e) && e.connected && !e.draining && !e.leaving);
  const shapes = view.queuedRequests().filter((s) => !others.some((e) => labelsFit(s.labels, e.info.labels) && fitsResources(s.request, e.info.resources)));
  return {
    queued: view.queued,
    free: freeSlots(all, (e) => !ours(e)),
    executors: all.filter(ours).map((e) => ({
      id: e.info.id,
      ...(e.info.instanceId ? { instanceId: e.info.instanceId } : {}),
      slots: e.info.slots,
      running: e.running,
      connected: e.connected,
      draining: e.draining || e.leaving,
      idleMs: e.idleSince === null ? null : Math.max(0, now - e.idleSince),
      ...(e.info.resources ? { resources: e.info.resources } : {}),
      labels: e.info.labels,
    })),
    shapes,
  };
}

/** Another live dispatcher's report, and how old it is (ms, by the database's clock). */
export interface RemoteReport {
  dispatcher: string;
  ageMs: number;
  report: FleetReport;
}

/**
 * The leader's fleet: its own core, live, plus the other dispatchers' last reports. An executor
 * that shows up in two reports (it moved, and the older report is not yet replaced) counts once,
 * from the newer one; one connected here is read from here.
 */
export class ClusterFleet implements Fleet {
  constructor(
    private readonly core: Pick<DispatcherCore, 'view' | 'drain'>,
    /** The other live dispatchers' reports, as the cluster last read them. */
    private readonly remote: () => readonly RemoteReport[],
    /** Orders a drain of an executor not connected here (cluster.ts: the `drains` table). */
    private readonly drainElsewhere: (id: string) => void,
    private readonly clock: { now(): number },
  ) {}

  demand(isOurs: (e: FleetMember) => boolean): number {
    let demand = localDemand(this.core.view, isOurs);
    for (const r of this.remote()) demand += Math.max(0, r.report.queued - r.report.free);
    return demand;
  }

  executors(): FleetMember[] {
    const remote = this.#remoteMembers();
    const out: FleetMember[] = [];
    // A record kept here of an executor that left (moved: its lease runs out) yields to where it is now.
    for (const e of this.core.view.executors()) {
      if (!e.connected && remote.has(e.info.id)) continue;
      out.push(e);
      remote.delete(e.info.id);
    }
    return [...out, ...remote.values()];
  }

  queuedRequests(): WaitingShape[] {
    const shapes = [...this.core.view.queuedRequests()];
    for (const r of this.remote()) shapes.push(...r.report.shapes);
    return shapes;
  }

  drain(id: string): void {
    if (this.core.view.executor(id)?.connected) this.core.drain(id);
    else this.drainElsewhere(id);
  }

  /** The provisioner's executors in the others' reports (in two: the newer report's). */
  #remoteMembers(): Map<string, FleetMember> {
    const now = this.clock.now();
    const out = new Map<string, FleetMember>();
    for (const r of [...this.remote()].sort((a, b) => a.ageMs - b.ageMs)) {
      for (const e of r.report.executors) {
        if (out.has(e.id)) continue;
        out.set(e.id, {
          info: { id: e.id, slots: e.slots, labels: e.labels, ...(e.instanceId ? { instanceId: e.instanceId } : {}), ...(e.resources ? { resources: e.resources } : {}) },
          connected: e.connected,
          draining: e.draining,
          leaving: false,
          running: e.running,
          idleSince: e.idleMs === null ? null : now - r.ageMs - e.idleMs,
        });
      }
    }
    return out;
  }
}
