/**
 * `FALCONET_COMMIT_TRACE=FILE`: where each durable commit's time goes, for people measuring the
 * commit path (issue 13: what the distance from the durable round trip to its floors is made of).
 * Off unless set; then one JSON line per commit is appended to FILE (by 200s: a dispatcher killed
 * loses at most the last ones), `node dist/bench/commit-trace.js FILE` sums them up.
 *
 * A line: [packStart, packed, rows, results, bytes, writerWoke, unpacked, statementsDone,
 * committed, answered]: times in ms on one clock for both threads (`performance.timeOrigin +
 * performance.now()`: each thread's own origin, so `performance.now()` alone would not compare).
 */
import { appendFileSync } from 'node:fs';

/** The trace file, or undefined (tracing off). */
export const TRACE_FILE = process.env.FALCONET_COMMIT_TRACE;

/** Now, in ms since the epoch with sub-ms precision, comparable across threads. */
export const traceClock = (): number => performance.timeOrigin + performance.now();

/** The dispatcher thread's side: what it did for commit n, completed by the writer's times. */
export class CommitTrace {
  readonly #sent = new Map<number, number[]>();
  #lines: string[] = [];
  constructor(readonly file: string) {}

  /** Commit n was packed (from `started`) and handed to the writer. */
  sent(n: number, started: number, rows: number, results: number, bytes: number): void {
    this.#sent.set(n, [started, traceClock(), rows, results, bytes]);
  }

  /** The writer's answer for commit n arrived, with its times (writer woke, unpacked, statements done, committed). */
  answered(n: number, writer: number[]): void {
    const sent = this.#sent.get(n);
    if (!sent) return;
    this.#sent.delete(n);
    this.#lines.push(JSON.stringify([...sent, ...writer, traceClock()]));
    if (this.#lines.length >= 200) this.flush();
  }

  flush(): void {
    if (this.#lines.length === 0) return;
    appendFileSync(this.file, this.#lines.join('\n') + '\n');
    this.#lines = [];
  }
}
