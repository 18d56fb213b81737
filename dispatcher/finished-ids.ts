/**
 * The finished tasks of a session by id (what `SessionRecord.finishedIds` holds): a map from id to
 * a packed number (seq and status, model.ts packFinished) that keeps insertion order, built for
 * the ids clients really send. A session keeps every finished id for as long as it lives (a
 * resubmit of a finished id is still one task), so a session of a million tasks holds a million
 * of them: as a JS Map that was the dispatcher's most expensive structure per task (a profile of
 * a million no-ops put `accept` and `append` at 3.5 µs of the dispatcher thread's ~14 µs per task,
 * most of it inserting into and probing a Map that grows to a million string keys, ~0.5 µs per
 * operation against ~0.1 µs in a small one) and ~80 bytes per id kept alive.
 *
 * Ids the SDK, the CLI and job arrays generate are a stem and a counter (`k3j4h5ab-1234`, a line's
 * `file-17`, an element's `A[7]`, a dispatcher-generated `@12`): such an id is kept as a slot of a
 * dense array per stem, indexed by its number (8 bytes, no string kept, no hashing of the whole id).
 * Every other id, or one whose number would leave its stem's array mostly empty, goes to a plain
 * Map. A log of entries in insertion order (8 bytes each) gives iteration in the order of results.
 */

/** A slot holds -1 until its id is finished (packed values are never negative). */
const EMPTY = -1;
/** Numbers of at most this many digits, without leading zeros, are dense candidates. */
const MAX_DIGITS = 9;
/** A stem's array grows to hold `n` only if that leaves it at least a quarter full (plus a little). */
const SLACK = 4096;
/** A stem starts with an id numbered below this (a counter's first ids); other ids start none. */
const FIRST_BELOW = 64;
/**
 * Stems per session at most: real clients use a few (one per SDK process, the CLI, each array);
 * ids that merely end in digits (`…a7` of a UUID) must not each make one.
 */
const MAX_STEMS = 64;

/** The dense ids sharing one stem: `prefix` + number + `suffix` (suffix `]` for array elements). */
interface Stem {
  readonly prefix: string;
  readonly suffix: string;
  readonly index: number;
  values: Float64Array;
  count: number;
}

export class FinishedIds {
  /** By prefix: `k3j4h5ab-` of `k3j4h5ab-12`; by prefix with its `[` for elements (`A[7]`): two maps, as `A[7` is not `A[7]`. */
  readonly #stems = new Map<string, Stem>();
  readonly #bracketStems = new Map<string, Stem>();
  readonly #stemList: Stem[] = [];
  readonly #others = new Map<string, number>();
  readonly #otherIds: string[] = [];
  /** Insertion order: a dense entry is `stem.index * 2^31 + n`, an other one `-(its #otherIds index + 1)`. */
  #log = new Float64Array(1024);
  #size = 0;
  /** The stem of the last dense id seen: consecutive ids almost always share it. */
  #last: Stem | null = null;
  // Where #split left the id's number (no tuple allocated per lookup).
  #n = 0;

  get size(): number {
    return this.#size;
  }

  has(id: string): boolean {
    return this.get(id) !== undefined;
  }

  get(id: string): number | undefined {
    const stem = this.#split(id, false);
    if (stem === null) return this.#others.get(id);
    const n = this.#n;
    if (n < stem.values.length) {
      const v = stem.values[n];
      if (v !== EMPTY) return v;
    }
    // Not in its dense array: it may have gone to the map (a number past the array's reach).
    return this.#others.size > 0 ? this.#others.get(id) : undefined;
  }

  /** Sets `id`'s packed value; a new id goes last in the order, a known one keeps its place. */
  set(id: string, packed: number): void {
    const stem = this.#split(id, true);
    if (stem !== null) {
      const n = this.#n;
      if (n >= stem.values.length && !this.#grow(stem, n)) return this.#setOther(id, packed);
      if (stem.values[n] === EMPTY) {
        if (this.#others.has(id)) return this.#setOther(id, packed); // went to the map while out of reach
        stem.count++;
        this.#append(stem.index * 2 ** 31 + n);
      }
      stem.values[n] = packed;
      return;
    }
    this.#setOther(id, packed);
  }

  /** `[id, packed]` in insertion order. */
  *entries(): IterableIterator<[string, number]> {
    for (let i = 0; i < this.#size; i++) yield this.#entry(this.#log[i]);
  }

  [Symbol.iterator](): IterableIterator<[string, number]> {
    return this.entries();
  }

  /** `[id, packed]` newest first (queries list the latest results first). */
  *newestFirst(): IterableIterator<[string, number]> {
    for (let i = this.#size - 1; i >= 0; i--) yield this.#entry(this.#log[i]);
  }

  #entry(e: number): [string, number] {
    if (e < 0) {
      const id = this.#otherIds[-e - 1];
      return [id, this.#others.get(id)!];
    }
    const stem = this.#stemList[Math.floor(e / 2 ** 31)];
    const n = e % 2 ** 31;
    return [`${stem.prefix}${n}${stem.suffix}`, stem.values[n]];
  }

  #setOther(id: string, packed: number): void {
    if (!this.#others.has(id)) {
      this.#otherIds.push(id);
      this.#append(-this.#otherIds.length);
    }
    this.#others.set(id, packed);
  }

  #append(e: number): void {
    if (this.#size === this.#log.length) {
      const log = new Float64Array(this.#log.length * 2);
      log.set(this.#log);
      this.#log = log;
    }
    this.#log[this.#size++] = e;
  }

  /** Makes room for `n` in the stem's array, unless that would leave it mostly empty. */
  #grow(stem: Stem, n: number): boolean {
    if (n >= 4 * stem.count + SLACK) return false;
    const values = new Float64Array(Math.max(n + 1, stem.values.length * 2)).fill(EMPTY);
    values.set(stem.values);
    stem.values = values;
    return true;
  }

  /**
   * The stem of a dense candidate (its number left in #n), or null: an id ending in a canonical
   * number (`7`, `…7`, `…[7]`) whose stem exists, or is made now (`create`, a number below
   * FIRST_BELOW, fewer than MAX_STEMS stems so far).
   */
  #split(id: string, create: boolean): Stem | null {
    const bracket = id.charCodeAt(id.length - 1) === 93; // ']'
    const end = bracket ? id.length - 1 : id.length;
    let start = end;
    while (start > 0 && end - start <= MAX_DIGITS) {
      const c = id.charCodeAt(start - 1);
      if (c < 48 || c > 57) break;
      start--;
    }
    const digits = end - start;
    if (digits === 0 || digits > MAX_DIGITS) return null;
    if (digits > 1 && id.charCodeAt(start) === 48) return null; // `-07` is not `-7`
    if (bracket && (start === 0 || id.charCodeAt(start - 1) !== 91)) return null; // `…7]` without its `[`
    let n = 0;
    for (let i = start; i < end; i++) n = n * 10 + (id.charCodeAt(i) - 48);
    this.#n = n;
    const suffix = bracket ? ']' : '';
    const last = this.#last;
    if (last !== null && last.suffix === suffix && last.prefix.length === start && id.startsWith(last.prefix)) return last;
    const prefix = id.slice(0, start);
    const stems = bracket ? this.#bracketStems : this.#stems;
    let stem = stems.get(prefix);
    if (stem === undefined) {
      if (!create || n >= FIRST_BELOW || this.#stemList.length >= MAX_STEMS) return null;
      stem = { prefix, suffix, index: this.#stemList.length, values: new Float64Array(FIRST_BELOW).fill(EMPTY), count: 0 };
      stems.set(prefix, stem);
      this.#stemList.push(stem);
    }
    this.#last = stem;
    return stem;
  }
}
