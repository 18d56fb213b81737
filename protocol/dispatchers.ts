/**
 * Where the dispatchers are: what a user may give as "the dispatcher" (one address, or a comma
 * list of them), and the candidates one dial round tries, a DNS name with several addresses
 * giving one candidate per address. Shared by the SDK, the CLI (WebSocket and HTTP) and executors,
 * so every entry point reads a list the same way and says the same thing about a bad entry.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import { ErrorCode, FalconetError } from './errors.js';

/** `host:port`, `[v6]:port`, optionally followed by a path: what people type without a scheme. */
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})(\/.*)?$/;

/**
 * Turns what a user gave as one dispatcher's address into a ws:// or wss:// URL: `host:port`
 * becomes `ws://host:port`; ws:// and wss:// URLs pass as they are. Anything else (http://, a bare
 * host, a typo) throws FalconetError USAGE, so that a wrong address fails at once and says why
 * instead of dialing something that can never answer.
 */
export function dispatcherUrl(input: string): string {
  const text = input.trim();
  const withScheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) ? text : HOST_PORT.test(text) ? `ws://${text}` : null;
  if (withScheme === null) {
    throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)} is not a dispatcher address: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT`);
  }
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)} is not a valid URL: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)}: a dispatcher is dialed over ws:// or wss://, not ${url.protocol}//`);
  }
  if (url.port !== '' && Number(url.port) > 65535) throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)}: port out of range`);
  return withScheme;
}

/** Dispatcher URLs in one list at most: more is a typo or an attack on memory, not a fleet. */
export const MAX_DISPATCHER_URLS = 64;

/**
 * Reads a list of dispatchers: a comma-separated string (`--dispatcher`, `FALCONET_URL`, user-data
 * `url`) or an array (the SDK's `url`, user-data `urls`), each entry as {@link dispatcherUrl} takes
 * it. Duplicates are dropped, order is kept (clients dial the first first). An empty list, an
 * empty entry (`a,,b`) or a bad one throws USAGE naming the entry and its place in the list.
 */
export function dispatcherUrls(input: string | readonly string[]): string[] {
  const entries = typeof input === 'string' ? input.split(',') : [...input];
  if (entries.length === 0 || (entries.length === 1 && String(entries[0]).trim() === '')) {
    throw new FalconetError(ErrorCode.USAGE, 'no dispatcher address given: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT (several separated by commas)');
  }
  if (entries.length > MAX_DISPATCHER_URLS) throw new FalconetError(ErrorCode.USAGE, `${entries.length} dispatcher addresses: at most ${MAX_DISPATCHER_URLS} in one list`);
  const out: string[] = [];
  entries.forEach((entry, i) => {
    const where = entries.length > 1 ? `dispatcher list entry ${i + 1} of ${entries.length}: ` : '';
    if (typeof entry !== 'string' || entry.trim() === '') {
      throw new FalconetError(ErrorCode.USAGE, `${where}empty address (${JSON.stringify(typeof input === 'string' ? input : entries)}): give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT separated by commas`);
    }
    let url: string;
    try {
      url = dispatcherUrl(entry);
    } catch (err) {
      throw new FalconetError(ErrorCode.USAGE, where + (err as Error).message);
    }
    if (!out.includes(url)) out.push(url);
  });
  return out;
}

/** One address a host name resolved to. */
export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to every address it has (the default: `dns.promises.lookup(host, {all: true})`). */
export type Resolver = (host: string) => Promise<ResolvedAddress[]>;

/** The system resolver, as getaddrinfo answers (hosts file, DNS): every address. */
export const systemResolver: Resolver = (host) => dnsLookup(host, { all: true });

/** One thing to dial: a dispatcher URL, and (for a DNS name) one of its addresses. */
export interface Candidate {
  /** The dispatcher URL as configured: its host stays the TLS server name and the Host header. */
  url: string;
  /** The address to connect to; absent for an IP literal, `localhost`, or a name that did not resolve (dialed by name, so the error says why). */
  address?: string;
  family?: number;
  /** Stable identity within a list: `url` or `url@address`. */
  key: string;
  /** For messages: `ws://d.example:7878 (10.0.0.5)`. */
  label: string;
}

/** How long one name's resolution may take before it is dialed by name instead (getaddrinfo has no timeout of its own). */
const RESOLVE_TIMEOUT_MS = 5000;

/** The host of a ws(s) URL without IPv6 brackets. */
function hostOf(url: string): string {
  return new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
}

/**
 * The candidates of one dial round: each URL in turn, a name that resolves to several addresses
 * giving one candidate per address (in the resolver's order). IP literals and `localhost` are
 * used as they are. A name that does not resolve (or not within 5 s) stays one candidate dialed
 * by name, so that its failure (ENOTFOUND) is what the user sees.
 */
export async function expandCandidates(urls: readonly string[], resolve: Resolver = systemResolver): Promise<Candidate[]> {
  const lists = await Promise.all(
    urls.map(async (url): Promise<Candidate[]> => {
      const plain: Candidate[] = [{ url, key: url, label: url }];
      let host: string;
      try {
        host = hostOf(url);
      } catch {
        return plain;
      }
      if (isIP(host) !== 0 || host === 'localhost') return plain;
      let timer: NodeJS.Timeout | undefined;
      try {
        const found = await Promise.race([
          resolve(host),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), RESOLVE_TIMEOUT_MS))),
        ]);
        const seen = new Set<string>();
        const out: Candidate[] = [];
        for (const a of found) {
          if (seen.has(a.address) || isIP(a.address) === 0) continue;
          seen.add(a.address);
          out.push({ url, address: a.address, family: a.family === 6 ? 6 : 4, key: `${url}@${a.address}`, label: `${url} (${a.address})` });
        }
        return out.length > 0 ? out : plain;
      } catch {
        return plain;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return lists.flat();
}

/**
 * The `lookup` option that makes a connection (ws, http, https) go to the candidate's address
 * while the URL keeps its host name, so TLS verifies the certificate for that name and the Host
 * header names it. Undefined for a candidate dialed as it is.
 */
export function candidateLookup(c: Candidate): LookupFunction | undefined {
  const address = c.address;
  if (address === undefined) return undefined;
  const family = c.family ?? 4;
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    // Node asks for every address (`all`) when it races IPv4 and IPv6 (autoSelectFamily).
    if (options?.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  }) as unknown as LookupFunction;
}

/**
 * A stable pseudo-random rank for a candidate (FNV-1a of a per-process seed and the key): an
 * executor sorts its candidates by it, so a fleet starts spread over the dispatchers and each
 * executor's "next" after a loss differs, while one executor's order stays the same from round
 * to round (new addresses fall into place instead of reshuffling the rest).
 */
export function rank(seed: number, key: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
