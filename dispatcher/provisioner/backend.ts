/**
 * What a provisioner backend does: start executor instances, stop them, say what became of
 * them, and keep what they printed. `local` runs executor processes on this machine; `ec2` runs
 * instances of a baked AMI. The provisioner (provisioner.ts) is the same for both.
 */

/** A cloud-side state, reduced to what the provisioner acts on. */
import type { InstanceType } from './instance-types.js';

export type CloudState = 'pending' | 'running' | 'gone';

export interface Backend {
  readonly kind: 'local' | 'ec2';
  /**
   * Starts up to `count` instances; returns their ids (possibly fewer than asked). With `type`,
   * instances of that type, whose executors advertise its resources; without, the default type.
   */
  launch(count: number, type?: InstanceType): Promise<string[]>;
  terminate(instanceIds: string[]): Promise<void>;
  /** What the instance printed while booting (console output), for a failed boot's reason. */
  consoleOutput(instanceId: string): Promise<string>;
  /** Every instance of ours that still exists, with its state (adoption after a restart). */
  list(): Promise<Map<string, CloudState>>;
  /**
   * Called once at start with the instances a previous dispatcher recorded, before `list`: a
   * backend that cannot list what it did not start itself (local processes) finds them here.
   */
  adopt?(instanceIds: string[]): Promise<void>;
  /**
   * True when an executor that registered without a record of ours was started by a backend of
   * this kind (a local executor of a previous dispatcher that kept no records): it is drained.
   */
  isStray?(executorId: string): boolean;
  /** Stops what the backend itself holds (local processes); cloud instances are left running. */
  close(): Promise<void>;
}

/** True for errors a cloud API may clear on its own: capacity and throttling. */
export function isTransientLaunchError(err: unknown): boolean {
  const name = (err as { name?: string; Code?: string }).name ?? '';
  return /InsufficientInstanceCapacity|InsufficientCapacity|RequestLimitExceeded|Throttling|Unavailable|InternalError|ServiceUnavailable/i.test(name);
}
