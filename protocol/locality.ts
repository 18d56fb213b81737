/**
 * Locality keys: how executors and the dispatcher name the same data. An input is identified by
 * its digest when the task gives one, else by its source; the key is a short hash, because each
 * executor reports every key its cache holds (on heartbeats, when the set changes).
 */
import { createHash } from 'node:crypto';

export function localityKey(input: { src: string; sha256?: string }): string {
  const id = input.sha256 ? `sha256:${input.sha256.toLowerCase()}` : input.src;
  return createHash('sha256').update(id).digest('hex').slice(0, 16);
}
