/**
 * Instance types the provisioner may launch for resource requests no executor can run
 * (`--ec2-instance-types`, `--local-executor-types`): parsing them, ordering them from small to
 * large, and whether a request fits one. Pure: no I/O.
 *
 * A type says what an executor of that type advertises; the backend makes it so (EC2: user-data
 * `resources`; local: `--resources`), so the dispatcher's view of a fresh instance and the
 * executor's own hello agree even where detection would differ (a GPU driver not loaded yet).
 */
import { ErrorCode, FalconetError } from '../../protocol/index.js';
import { parseResources } from '../../executor/resources.js';
import type { ResourceRequest } from '../resources.js';

/** One launchable type and what its executors have. */
export interface InstanceType {
  /** The EC2 instance type (`g5.xlarge`), or a local type's name. */
  readonly name: string;
  /** What its executors advertise: `cpus`, `memoryMb`, `gpus`, custom names. */
  readonly resources: Readonly<Record<string, number>>;
}

const TYPE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MILLI = 1000;

/**
 * Parses `name:k=v,k=v;name2:k=v` into types, smallest first (`orderTypes`). `flag` names the
 * option in the USAGE error for an empty list, a bad or repeated name, or bad amounts.
 */
export function parseInstanceTypes(text: string, flag: string): InstanceType[] {
  const items = text.split(';').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new FalconetError(ErrorCode.USAGE, `${flag} takes TYPE:NAME=AMOUNT,...;TYPE2:... e.g. c7g.large:cpus=2,memoryMb=4096;g5.xlarge:cpus=4,memoryMb=16384,gpus=1 (got ${JSON.stringify(text)})`);
  const types: InstanceType[] = [];
  for (const item of items) {
    const colon = item.indexOf(':');
    const name = (colon < 0 ? item : item.slice(0, colon)).trim();
    if (!TYPE_NAME.test(name)) throw new FalconetError(ErrorCode.USAGE, `${flag}: ${JSON.stringify(name)} is not an instance type name (letters, digits, . _ -), in ${JSON.stringify(item)}`);
    if (colon < 0 || item.slice(colon + 1).trim() === '') throw new FalconetError(ErrorCode.USAGE, `${flag}: type ${name} needs its resources after a colon, e.g. ${name}:cpus=2,memoryMb=4096`);
    if (types.some((t) => t.name === name)) throw new FalconetError(ErrorCode.USAGE, `${flag}: type ${name} is given twice`);
    types.push({ name, resources: parseResources(item.slice(colon + 1), `${flag} (type ${name})`) });
  }
  return orderTypes(types);
}

/**
 * Smallest first: fewest gpus, then cpus, then memoryMb, then the sum of the custom resources,
 * then the order given. The first type that fits a request is the one launched for it, so that a
 * GPU machine is never started for a request a CPU machine can run.
 */
export function orderTypes(types: readonly InstanceType[]): InstanceType[] {
  const amount = (t: InstanceType, k: string) => t.resources[k] ?? 0;
  const custom = (t: InstanceType) => Object.entries(t.resources).reduce((s, [k, v]) => (k === 'gpus' || k === 'cpus' || k === 'memoryMb' ? s : s + v), 0);
  return types
    .map((t, i) => ({ t, i }))
    .sort((a, b) =>
      amount(a.t, 'gpus') - amount(b.t, 'gpus') ||
      amount(a.t, 'cpus') - amount(b.t, 'cpus') ||
      amount(a.t, 'memoryMb') - amount(b.t, 'memoryMb') ||
      custom(a.t) - custom(b.t) ||
      a.i - b.i)
    .map((x) => x.t);
}

/**
 * Whether `req` fits in `resources` when nothing else runs (an executor's advertised resources or
 * a type's). Amounts compare in thousandths, as the scheduler does (resources.ts). Undefined
 * resources (an executor older than resource requests) fit nothing.
 */
export function fitsResources(req: ResourceRequest, resources: Readonly<Record<string, number>> | undefined): boolean {
  if (resources === undefined) return false;
  if (req.gpus > Math.floor(resources.gpus ?? 0)) return false;
  for (let i = 0; i < req.names.length; i++) if (req.milli[i] > Math.round((resources[req.names[i]] ?? 0) * MILLI)) return false;
  return true;
}

/** The smallest type (in `orderTypes` order, which `types` is in) that fits `req`, if any. */
export function smallestFitting(types: readonly InstanceType[], req: ResourceRequest): InstanceType | undefined {
  return types.find((t) => fitsResources(req, t.resources));
}

/** `cpus=4,gpus=1,memoryMb=16384`: a type's resources, for messages and `--resources`. */
export function resourcesText(resources: Readonly<Record<string, number>>): string {
  return Object.keys(resources).sort().map((k) => `${k}=${resources[k]}`).join(',');
}

/**
 * What is appended to the reason a request waits (`falconet task`, `status`), given the
 * configured types: which type the provisioner launches for it, or that none fits.
 */
export function fitHint(types: readonly InstanceType[], req: ResourceRequest): string {
  const t = smallestFitting(types, req);
  if (t !== undefined) return `instance type ${t.name} fits it (the provisioner launches one)`;
  return `no instance type fits it (configured: ${types.map((x) => `${x.name} ${resourcesText(x.resources)}`).join('; ')})`;
}
