/** What every bench scenario shares: where results go. */
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
