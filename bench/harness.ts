/** What every bench scenario shares: where results go, and how to watch its child processes. */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * bench/results/ in the repository, or `$FALCONET_BENCH_RESULTS` (the CI smoke run writes to a
 * temp dir so that it never overwrites measured figures).
 */
export function resultsFile(name = ''): string {
  const dir = process.env.FALCONET_BENCH_RESULTS ?? fileURLToPath(new URL('../../bench/results', import.meta.url));
  return name ? join(dir, name) : dir;
}

/** Resolves with the first match of `re` on the child's stdout (the pipe keeps draining). */
export function waitLine(child: ChildProcess, re: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d;
      const m = buf.match(re);
      if (m) resolve(m);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before ${re}: ${buf}`)));
  });
}

/** Resolves once the child has exited (at once if it already has). */
export const exited = (p: ChildProcess): Promise<unknown> => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));
