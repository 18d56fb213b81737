/**
 * Which dispatcher a link dials next, and when: the failover rules of protocol/link.ts without
 * its sockets, so that they can be read (and tested) in one place.
 *
 * - A round tries every candidate once (each URL; a DNS name resolved at the start of the round
 *   gives one candidate per address). A failed dial moves to the next candidate at once; only a
 *   full round of failures waits: exponential backoff with full jitter, per round.
 * - Once welcomed, a link stays on its dispatcher. After a loss it dials the next candidate at
 *   once (with one candidate: after a short jittered wait, so a fleet does not return in one
 *   instant, and with the name resolved again).
 * - MOVED sends the link to `to` at once (added to the URLs when new), {@link MAX_MOVES} times in a
 *   row without a welcome; after that each redirect waits like a failed round.
 */
import { expandCandidates, rank, type Candidate, type Resolver } from './dispatchers.js';

/** Around this long (jittered) between asks while a session's partition is between dispatchers. */
const MOVING_RETRY_MS = 300;
/** How long a dispatcher that refused a dial counts as dead for redirects to it. */
const DEAD_FOR_MS = 2000;
/** Redirects (MOVED) followed at once in a row without a welcome; more wait like a failed round. */
export const MAX_MOVES = 5;
/** Redirect targets added to the configured list at most (a dispatcher cannot grow it without bound). */
const MAX_ADDED_URLS = 16;
/** Live dispatchers taken from a `peers` message at most. */
const MAX_LEARNED_URLS = 64;

export interface DialPlanOptions {
  /** `first`: the list's order from its first (clients); `random`: a per-plan random order (executors). */
  order?: 'first' | 'random';
  resolve?: Resolver;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** What to do after a connection closed. */
export interface NextDial {
  next: Candidate;
  delayMs: number;
  /** The wait is a backoff (a failed round, or too many redirects in a row). */
  backoff: boolean;
  /** Resolve the names again before dialing (a new round): {@link DialPlan.round} gives the candidate. */
  newRound: boolean;
}

export class DialPlan {
  /** The configured dispatchers, then redirect targets. */
  readonly #urls: string[];
  #added = 0;
  /** The live dispatchers the connected one last named (`peers`), beyond #urls: dialed after them. */
  #learned: string[] = [];
  /** This round's candidates, and the one dialed last. */
  #cands: Candidate[] = [];
  #cur: Candidate | null = null;
  /** Dials failed in this round; full rounds failed in a row (the backoff's exponent). */
  #failed = 0;
  #rounds = 0;
  /** Redirects in a row without a welcome. */
  #moves = 0;
  /** The URL whose dial failed last, and when: a redirect to it is not followed for a moment. */
  #lastDead: { url: string; at: number } | null = null;
  readonly #seed = (Math.random() * 0x100000000) >>> 0;

  constructor(
    urls: readonly string[],
    private readonly o: DialPlanOptions = {},
  ) {
    this.#urls = [...urls];
  }

  /** The dispatchers known: the configured ones, then those redirects named, then those a dispatcher named. */
  get urls(): readonly string[] {
    return this.#learned.length ? [...this.#urls, ...this.#learned] : this.#urls;
  }

  /**
   * The live dispatchers, as the connected one lists them (`peers`): the next rounds dial them
   * too, after the known URLs. Each list replaces the last (a dispatcher that left is dropped).
   */
  learn(urls: readonly string[]): void {
    this.#learned = [...new Set(urls)].filter((u) => !this.#urls.includes(u)).slice(0, MAX_LEARNED_URLS);
  }

  /** The candidate dialed last (the connected one while connected). */
  get current(): Candidate | null {
    return this.#cur;
  }

  /** How many candidates this round has. */
  get size(): number {
    return this.#cands.length;
  }

  /** Starts a round: resolves every name now; returns the candidate after the last one dialed. */
  async round(): Promise<Candidate> {
    const urls = this.urls;
    let cands = await expandCandidates(urls, this.o.resolve);
    if (cands.length === 0) cands = urls.map((url) => ({ url, key: url, label: url }));
    if (this.o.order === 'random') cands.sort((a, b) => rank(this.#seed, a.key) - rank(this.#seed, b.key));
    this.#cands = cands;
    this.#failed = 0;
    return this.#after(this.#cur);
  }

  /** The link dials `c` now. */
  dialing(c: Candidate): void {
    this.#cur = c;
  }

  /** A welcome came: failures and redirects start counting afresh. */
  welcomed(): void {
    this.#rounds = this.#failed = this.#moves = 0;
  }

  /**
   * The connection to the current candidate closed: `wasUp` if it had been welcomed, `moved` the
   * URL a MOVED sent it to (checked). Says what to dial next and after how long.
   */
  closed(wasUp: boolean, moved: string | null): NextDial {
    // MOVED with no target: the session's partition is between dispatchers (its owner died and
    // the others have not taken it yet). Not a failure to back off from: ask again shortly.
    // A redirect to the dispatcher that just refused us (a dead owner whose lease has not run
    // out yet: the others cannot know it is dead) is a "not yet" too.
    if (moved && this.#lastDead?.url === moved && Date.now() - this.#lastDead.at < DEAD_FOR_MS) moved = '';
    // A dispatcher answered: the failures counted so far (a dead one's refusals) start afresh.
    if (moved === '') {
      this.#rounds = this.#failed = 0;
      return { next: this.#after(this.#cur), delayMs: MOVING_RETRY_MS / 2 + Math.random() * MOVING_RETRY_MS, backoff: false, newRound: false };
    }
    if (moved !== null) {
      const next = this.#candidateFor(moved);
      if (++this.#moves > MAX_MOVES) return { next, delayMs: this.#backoff(), backoff: true, newRound: false };
      return { next, delayMs: 0, backoff: false, newRound: false };
    }
    const next = this.#after(this.#cur);
    if (!wasUp && this.#cur) this.#lastDead = { url: this.#cur.url, at: Date.now() };
    if (wasUp) {
      if (next.key !== this.#cur?.key) return { next, delayMs: 0, backoff: false, newRound: false };
      return { next, delayMs: this.#backoff(), backoff: false, newRound: true };
    }
    if (++this.#failed >= this.#cands.length) return { next, delayMs: this.#backoff(), backoff: true, newRound: true };
    return { next, delayMs: 0, backoff: false, newRound: false };
  }

  /** The candidate after `c` in this round's order (the first when `c` is not in it). */
  #after(c: Candidate | null): Candidate {
    if (this.#cands.length === 0) return { url: this.#urls[0]!, key: this.#urls[0]!, label: this.#urls[0]! };
    const at = c ? this.#cands.findIndex((x) => x.key === c.key) : -1;
    return this.#cands[(at + 1) % this.#cands.length]!;
  }

  /** A redirect's target as a candidate: one of this round's when its URL is known, else dialed by name. */
  #candidateFor(url: string): Candidate {
    const known = this.#cands.find((c) => c.url === url);
    if (known) return known;
    if (!this.#urls.includes(url) && this.#added < MAX_ADDED_URLS) {
      this.#urls.push(url);
      this.#added++;
    }
    return { url, key: url, label: url };
  }

  /** The next backoff: full jitter over an exponential of the failed rounds in a row. */
  #backoff(): number {
    const base = this.o.initialBackoffMs ?? 100;
    const cap = this.o.maxBackoffMs ?? 10_000;
    return Math.random() * Math.min(cap, base * 2 ** Math.min(this.#rounds++, 30));
  }
}
