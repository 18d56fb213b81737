/**
 * What `submit` and `watch` say on stderr while they run and when they end: a progress line
 * (done of total, failed, in flight, tasks/s over the last 5 s, elapsed, ETA), redrawn in place on
 * a terminal only; and one summary line at the end (`9,999 succeeded, 1 failed (exit 4), in 7.6 s`).
 */
import type { TaskResult } from '../protocol/index.js';

export type ProgressMode = 'tty' | 'lines' | 'off';

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/** 75 → `1:15`; 3725 → `1:02:05`. */
export function clock(s: number): string {
  if (!Number.isFinite(s)) return '-:--';
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** Counts of results by status, and why the failures failed. */
export class Tally {
  constructor(readonly started = Date.now()) {}
  done = 0;
  readonly by: Record<string, number> = {};
  readonly reasons = new Map<string, number>();
  add(r: Pick<TaskResult, 'status' | 'exitCode' | 'error'>): void {
    this.done++;
    this.by[r.status] = (this.by[r.status] ?? 0) + 1;
    if (r.status !== 'succeeded') {
      const why = r.status === 'failed' && r.exitCode !== null && r.exitCode !== undefined && r.exitCode !== 0 ? `exit ${r.exitCode}` : (r.error?.code ?? r.status);
      this.reasons.set(why, (this.reasons.get(why) ?? 0) + 1);
    }
  }
  get failed(): number {
    return this.done - (this.by.succeeded ?? 0);
  }
  /** `9,999 succeeded, 1 failed (exit 4), in 7.6 s`, with `extra` before the time. */
  line(extra: string[] = []): string {
    const parts: string[] = [];
    const order = ['succeeded', 'failed', 'timed_out', 'cancelled', 'lost'];
    for (const k of order) {
      const n = this.by[k] ?? 0;
      if (n === 0 && !(k === 'succeeded' && this.done > 0)) continue;
      parts.push(`${fmt(n)} ${k.replace('_', ' ')}`);
    }
    if (this.done === 0) parts.push('0 tasks');
    if (this.reasons.size > 0) {
      const reasons = [...this.reasons.entries()].sort((a, b) => b[1] - a[1]);
      const shown = reasons.slice(0, 3).map(([why, n]) => (reasons.length === 1 ? why : `${why} ×${fmt(n)}`));
      const i = parts.findIndex((p) => !p.endsWith('succeeded'));
      parts[i] += ` (${shown.join(', ')}${reasons.length > 3 ? ', …' : ''})`;
    }
    return `${[...parts, ...extra].join(', ')}, in ${((Date.now() - this.started) / 1000).toFixed(1)} s`;
  }
}

export class Progress {
  #lastDraw = 0;
  #drawn = false;
  readonly #samples: Array<{ at: number; done: number }> = [];
  readonly #started = Date.now();
  constructor(private readonly mode: ProgressMode) {}

  /** tasks/s over the last ~5 s. */
  #rate(now: number, done: number): number {
    this.#samples.push({ at: now, done });
    while (this.#samples.length > 2 && now - this.#samples[1].at >= 5000) this.#samples.shift();
    const a = this.#samples[0];
    const dt = (now - a.at) / 1000;
    return dt > 0.2 ? (done - a.done) / dt : 0;
  }

  text(done: number, total: number, failed: number, inFlight: number, now = Date.now()): string {
    const rate = this.#rate(now, done);
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const width = 24;
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
    const eta = done >= total ? '0:00' : rate > 0 ? clock((total - done) / rate) : '-:--';
    return `[${bar}] ${fmt(done)}/${fmt(total)} ${Math.floor(frac * 100)}% · ${fmt(failed)} failed · ${fmt(inFlight)} in flight · ${fmt(rate)}/s · ${clock((now - this.#started) / 1000)} elapsed · ETA ${eta}`;
  }

  update(done: number, total: number, failed: number, inFlight: number): void {
    if (this.mode === 'off') return;
    const now = Date.now();
    const every = this.mode === 'tty' ? 100 : 5000;
    if (now - this.#lastDraw < every) return;
    this.#lastDraw = now;
    const line = this.fit(this.text(done, total, failed, inFlight, now));
    if (this.mode === 'tty') {
      this.#drawn = true;
      process.stderr.write(`\r${line}\x1b[K`);
    } else process.stderr.write(`${line}\n`);
  }

  /** A redrawn line must not wrap: `\r` returns only to the start of the last screen line. */
  fit(line: string): string {
    const cols = process.stderr.columns;
    return this.mode === 'tty' && cols && line.length >= cols ? line.slice(0, cols - 1) : line;
  }

  /** Leaves the last state drawn (a finished bar) on its own line, before the summary. */
  end(done: number, total: number, failed: number): void {
    if (this.mode === 'tty' && this.#drawn) process.stderr.write(`\r${this.fit(this.text(done, total, failed, 0))}\x1b[K\n`);
  }
}
