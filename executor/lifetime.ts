/**
 * When this executor ends, and what it does about it (issue 12 item 6).
 *
 * An end comes from `--lifetime S` (counted from the start), or on EC2 from the instance metadata
 * service, polled every few seconds with IMDSv2 tokens (imds.ts):
 * - `meta-data/spot/instance-action`, a spot interruption notice `{"action", "time"}` (404 until
 *   there is one): the executor drains at once and hands its running tasks back after
 *   `--spot-grace` (default 0: at once), at the latest at the notice's time;
 * - `meta-data/events/maintenance/scheduled`, scheduled events `[{"Code", "NotBefore", "State"}]`:
 *   the earliest active one's NotBefore is an end like a lifetime's.
 *
 * For an end that is not a spot notice, the executor drains once less than `--drain-margin`
 * (default 120 s) is left, and hands back what still runs at the end itself. The dispatcher is told
 * each end as it is learned (and in every hello), so it starts no task whose `timeoutMs` exceeds
 * what is left. A hand-back is a `bye`: the dispatcher re-queues the attempts without counting
 * them as crashes, and the executor retires.
 */

/** What the watch reads from the metadata service: a GET of `/latest/<path>`, undefined on 404. */
export interface NoticeSource {
  get(path: string): Promise<string | undefined>;
}

export interface LifetimeOptions {
  /** `--lifetime`: the executor ends this long after `startedAt`. */
  lifetimeMs?: number;
  startedAt?: number;
  /** Drain when less than this is left (default 120 s). */
  drainMarginMs?: number;
  /** After a spot interruption notice, hand running tasks back this much later (default 0), at the latest at the notice's time. */
  spotGraceMs?: number;
  /** The metadata service to poll for notices (on EC2); none: only `lifetimeMs`. */
  imds?: NoticeSource;
  /** How often to poll it (default 5 s). */
  pollMs?: number;
}

export interface LifetimeEvents {
  /** An end was learned, or the executor started draining for it: tell the dispatcher. */
  onEnd(endsAt: number, reason: string, draining: boolean): void;
  /** Time is up: hand the running tasks back and leave. */
  onHandBack(reason: string): void;
  /** A poll failed (logged; polling goes on). */
  onPollError?(err: Error): void;
}

export const DEFAULT_DRAIN_MARGIN_MS = 120_000;
export const DEFAULT_NOTICE_POLL_MS = 5_000;
/** setTimeout's longest delay; longer waits are re-armed. */
const MAX_DELAY = 2 ** 31 - 1;

export const SPOT_PATH = 'meta-data/spot/instance-action';
export const EVENTS_PATH = 'meta-data/events/maintenance/scheduled';

/** A spot interruption notice's deadline, or null when the body is not one. */
export function parseSpotNotice(body: string): { action: string; at: number } | null {
  try {
    const n = JSON.parse(body) as { action?: unknown; time?: unknown };
    const at = typeof n.time === 'string' ? Date.parse(n.time) : NaN;
    return Number.isFinite(at) ? { action: typeof n.action === 'string' ? n.action : 'terminate', at } : null;
  } catch {
    return null;
  }
}

/** The earliest scheduled event that is still to come (not completed or canceled), or null. */
export function parseScheduledEvents(body: string): { code: string; at: number } | null {
  let events: unknown;
  try {
    events = JSON.parse(body);
  } catch {
    return null;
  }
  if (!Array.isArray(events)) return null;
  let first: { code: string; at: number } | null = null;
  for (const e of events as Array<{ Code?: unknown; NotBefore?: unknown; State?: unknown }>) {
    if (e === null || typeof e !== 'object') continue;
    if (e.State === 'completed' || e.State === 'canceled') continue;
    const at = typeof e.NotBefore === 'string' ? Date.parse(e.NotBefore) : NaN;
    if (!Number.isFinite(at)) continue;
    if (!first || at < first.at) first = { code: typeof e.Code === 'string' ? e.Code : 'event', at };
  }
  return first;
}

export class LifetimeWatch {
  #endsAt: number | null = null;
  #reason = '';
  #draining = false;
  #handedBack = false;
  /** When to start draining, and to hand back (ms since the epoch); Infinity: not known. */
  #drainAt = Infinity;
  #handBackAt = Infinity;
  /** One timer, for the nearer of the two. */
  #timer: NodeJS.Timeout | null = null;
  #pollTimer: NodeJS.Timeout | null = null;
  #polling = false;
  #stopped = false;

  constructor(
    private readonly o: LifetimeOptions,
    private readonly events: LifetimeEvents,
  ) {}

  /** When this executor ends (ms since the epoch), if known. */
  get endsAt(): number | null {
    return this.#endsAt;
  }

  get reason(): string {
    return this.#reason;
  }

  /** It drains for its end: it takes no new task. */
  get draining(): boolean {
    return this.#draining;
  }

  start(): void {
    if (this.o.lifetimeMs !== undefined) {
      const end = (this.o.startedAt ?? Date.now()) + this.o.lifetimeMs;
      this.#setEnd(end, 'lifetime', end, false);
    }
    if (this.o.imds) {
      this.#pollTimer = setInterval(() => void this.#poll(), this.o.pollMs ?? DEFAULT_NOTICE_POLL_MS);
      void this.#poll();
    }
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#pollTimer) clearInterval(this.#pollTimer);
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#stopped) return;
    this.#polling = true;
    try {
      const imds = this.o.imds!;
      const [spot, scheduled] = await Promise.all([imds.get(SPOT_PATH), imds.get(EVENTS_PATH)]);
      if (this.#stopped) return;
      const notice = spot === undefined ? null : parseSpotNotice(spot);
      if (notice) {
        const handBackAt = Math.min(notice.at, Date.now() + (this.o.spotGraceMs ?? 0));
        this.#setEnd(notice.at, `spot interruption: ${notice.action}`, handBackAt, true);
      }
      const event = scheduled === undefined ? null : parseScheduledEvents(scheduled);
      if (event) this.#setEnd(event.at, `scheduled event: ${event.code}`, event.at, false);
    } catch (err) {
      this.events.onPollError?.(err as Error);
    } finally {
      this.#polling = false;
    }
  }

  /** An end learned: kept when it is the first, earlier than the one known, or a spot notice. */
  #setEnd(endsAt: number, reason: string, handBackAt: number, drainNow: boolean): void {
    if (this.#stopped) return;
    const known = this.#endsAt;
    // The same end again (every poll of a standing notice) or a later one: nothing new.
    if (known !== null && known <= endsAt && !(drainNow && !this.#draining)) return;
    this.#endsAt = known === null ? endsAt : Math.min(known, endsAt);
    this.#reason = reason;
    this.#drainAt = Math.min(this.#drainAt, drainNow ? Date.now() : this.#endsAt - (this.o.drainMarginMs ?? DEFAULT_DRAIN_MARGIN_MS));
    this.#handBackAt = Math.min(this.#handBackAt, handBackAt);
    if (Date.now() >= this.#drainAt) this.#draining = true;
    this.events.onEnd(this.#endsAt, reason, this.#draining);
    this.#check();
  }

  /** Drains and hands back when their time has come; else waits for the nearer of the two. */
  #check(): void {
    if (this.#stopped) return;
    const now = Date.now();
    if (!this.#draining && now >= this.#drainAt) {
      this.#draining = true;
      this.events.onEnd(this.#endsAt!, this.#reason, true);
    }
    if (now >= this.#handBackAt) {
      this.stop();
      this.events.onHandBack(this.#reason);
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    const next = Math.min(this.#draining ? Infinity : this.#drainAt, this.#handBackAt);
    this.#timer = setTimeout(() => this.#check(), Math.min(MAX_DELAY, Math.max(0, next - now)));
  }
}
