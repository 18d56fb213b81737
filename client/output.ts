/**
 * What `submit` and `watch` print on stdout: one JSON line per result, written in one
 * `process.stdout.write` per event-loop turn, and the input line each result came from.
 *
 * This is the CLI's per-result hot path (a million results for a million tasks), so it avoids
 * what the profile of `falconet submit --file` showed costing most beside the SDK itself: a copy
 * of every result to put `line` after `id` (now spliced into the JSON text), and a map from
 * every task id to its line (now only for tasks that brought their own id; a generated id ends
 * in its line number).
 */
import type { TaskResult } from '../protocol/index.js';

/** Collects JSON lines and writes them in one call at the end of the turn. */
export class LineWriter {
  #lines: string[] = [];
  #queued = false;

  /** Writes `value` as one JSON line. */
  write(value: unknown): void {
    this.writeLine(JSON.stringify(value));
  }

  /** Writes `json` (one line of JSON text, without its newline). */
  writeLine(json: string): void {
    this.#lines.push(json);
    if (!this.#queued) {
      this.#queued = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.#queued = false;
    if (this.#lines.length) process.stdout.write(this.#lines.join('\n') + '\n');
    this.#lines = [];
  }
}

/**
 * `result` as a JSON line with `line` right after `id`: the same text as
 * `JSON.stringify({id, line, ...rest})`, made without copying the result when `id` is its first
 * field (as results arrive from the dispatcher).
 */
export function resultLine(result: TaskResult, line: number | null): string {
  const json = JSON.stringify(result);
  const head = '{"id":' + JSON.stringify(result.id);
  if (json.startsWith(head)) return head + ',"line":' + String(line) + json.slice(head.length);
  const { id, ...rest } = result;
  return JSON.stringify({ id, line, ...rest });
}

/**
 * Input line numbers of the tasks of one `submit`: tasks given an id by {@link idFor}-style
 * generation (`PREFIX-LINE`) carry it in the id; only tasks that brought their own are kept.
 */
export class InputLines {
  readonly #own = new Map<string, number>();
  readonly #head: string;

  constructor(prefix: string) {
    this.#head = `${prefix}-`;
  }

  /** Notes task `id` from input line `line`. */
  note(id: string, line: number): void {
    if (!id.startsWith(this.#head) || id.length === this.#head.length) this.#own.set(id, line);
    // A generated id needs nothing: its line is its suffix. An own id that happens to look
    // generated but names another line is kept too.
    else if (id.slice(this.#head.length) !== String(line)) this.#own.set(id, line);
  }

  /** The input line of task `id`, or null for one this submit did not read. */
  of(id: string): number | null {
    const own = this.#own.get(id);
    if (own !== undefined) return own;
    if (!id.startsWith(this.#head)) return null;
    const n = Number(id.slice(this.#head.length));
    return Number.isInteger(n) && n > 0 ? n : null;
  }
}
