/**
 * Which partitions a dispatcher should hold: the pure half of the partition leases (cluster.ts
 * does the SQL). Every dispatcher runs this on the same table and converges on a fair share
 * without talking to the others: each takes free or expired partitions up to its share, and one
 * holding more than its share gives back idle ones while another live dispatcher has too few.
 *
 * Times are the database's clock (milliseconds), so that dispatchers on machines whose clocks
 * disagree still agree on when a lease has run out.
 */

/** One row of the `partitions` table. */
export interface PartitionRow {
  id: number;
  owner: string | null;
  epoch: number;
  /** When the owner's lease runs out (ms, database clock); null once released. */
  leaseUntil: number | null;
}

export interface LeaseView {
  me: string;
  /** The database's clock when the rows were read (ms). */
  now: number;
  rows: readonly PartitionRow[];
  /** Dispatchers that renewed their presence within a lease, this one included. */
  live: readonly string[];
  /** Partitions this dispatcher holds that have work or clients in memory: never given back. */
  busy: ReadonlySet<number>;
}

export interface LeasePlan {
  /** Held by this dispatcher (by row): renew them, fenced by their epoch. */
  renew: PartitionRow[];
  /** Free, released or expired: try to take them (epoch + 1). */
  claim: PartitionRow[];
  /** Idle and beyond this dispatcher's share while another has too few: give them back. */
  release: PartitionRow[];
}

/** The fair share of `partitions` among `live` dispatchers (rounded up: every partition has a taker). */
export function shareOf(partitions: number, live: number): number {
  return Math.ceil(partitions / Math.max(1, live));
}

/**
 * The plan for one round. Claims start at a point that depends on the dispatcher's id, so that
 * dispatchers starting together mostly ask for different partitions; expired partitions (a dead
 * owner's: they hold work) come before never-held ones.
 */
export function planLeases(v: LeaseView): LeasePlan {
  const share = shareOf(v.rows.length, v.live.length);
  const liveSet = new Set(v.live);
  const held = v.rows.filter((r) => r.owner === v.me);
  const heldBy = new Map<string, number>();
  for (const r of v.rows) if (r.owner !== null && isValid(r, v.now) && liveSet.has(r.owner)) heldBy.set(r.owner, (heldBy.get(r.owner) ?? 0) + 1);

  const renew = [...held];
  let release: PartitionRow[] = [];
  // Give back only down to the floor of the share, and only while another live dispatcher is below
  // it: shares then settle (no partition keeps moving back and forth between equals).
  const floor = Math.floor(v.rows.length / Math.max(1, v.live.length));
  const short = v.live.some((d) => d !== v.me && (heldBy.get(d) ?? 0) < floor);
  if (held.length > floor && short) {
    release = held.filter((r) => !v.busy.has(r.id)).slice(0, held.length - floor);
    const gone = new Set(release);
    renew.splice(0, renew.length, ...held.filter((r) => !gone.has(r)));
  }

  const room = share - held.length;
  const claim: PartitionRow[] = [];
  if (room > 0) {
    const free = v.rows.filter((r) => r.owner !== v.me && !isValid(r, v.now));
    const start = hashOf(v.me) % Math.max(1, v.rows.length);
    const rank = (r: PartitionRow): number => (r.owner !== null ? 0 : 1) * v.rows.length + ((r.id - start + v.rows.length) % v.rows.length);
    free.sort((a, b) => rank(a) - rank(b));
    claim.push(...free.slice(0, room));
  }
  return { renew, claim, release };
}

/** A lease that has not run out (a released row has none). */
function isValid(r: PartitionRow, now: number): boolean {
  return r.owner !== null && r.leaseUntil !== null && r.leaseUntil > now;
}

/** FNV-1a, 32 bits: a stable spread of ids (session ids into partitions, dispatcher ids into start points). */
export function hashOf(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** What a live dispatcher last reported of its work (the `dispatchers` table). */
export interface DispatcherLoad {
  id: string;
  url: string;
  /** Tasks waiting for a slot. */
  queued: number;
  executors: number;
  /** Executors connected and idle for a while. */
  idle: number;
}

/**
 * Executors register with any dispatcher but run only its partitions' tasks, so idle executors
 * follow the work: a dispatcher with nothing queued sends up to half of its idle executors
 * (MOVED) to the live dispatcher with the most queued tasks per executor. Half, so that a
 * dispatcher whose queue refills keeps some; the rest follow at the next round if still idle.
 * Never past an even split of the two dispatchers' executors: a dispatcher holds as many
 * connections as its process may open (about 19,000 here), and a full one must not be sent more.
 */
export function planMoves(me: string, loads: readonly DispatcherLoad[]): { to: string; n: number } | null {
  const mine = loads.find((l) => l.id === me);
  if (!mine || mine.queued > 0 || mine.idle === 0) return null;
  let best: DispatcherLoad | null = null;
  let bestNeed = 0;
  for (const l of loads) {
    if (l.id === me || l.queued === 0) continue;
    const need = l.queued / (l.executors + 1);
    if (need > bestNeed) [best, bestNeed] = [l, need];
  }
  if (!best) return null;
  const n = Math.min(Math.max(1, Math.floor(mine.idle / 2)), Math.ceil((mine.executors - best.executors) / 2));
  return n > 0 ? { to: best.url, n } : null;
}
