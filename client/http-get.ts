/**
 * JSON requests to the dispatcher's HTTP API over http:// or https://, verifying an https://
 * server against Node's root CAs plus `ca` (what `fetch` cannot be told without undici).
 *
 * With several dispatchers ({@link requestAny}), the candidates (each URL, a DNS name giving one
 * per address) are tried in turn while they cannot be reached; the first that answers decides,
 * even with an HTTP error (a refusal from one dispatcher is the answer, not a reason to ask
 * another). A certificate that does not verify rejects with FalconetError TLS_FAILED at once.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { tlsFailure, trustedCas } from '../protocol/tls.js';
import { candidateLookup, expandCandidates, type Resolver } from '../protocol/dispatchers.js';
import { FalconetError } from '../protocol/index.js';
import { httpBase } from './url.js';

export interface JsonResponse {
  status: number;
  ok: boolean;
  /** The parsed JSON; undefined when the answer was not JSON (see `text`). */
  body: unknown;
  text: string;
  /** The URL that answered. */
  url: string;
}

export interface JsonRequest {
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  /** Sent as JSON (content-type set). */
  body?: unknown;
  timeoutMs: number;
  ca?: string | Buffer;
  /** Connect to this address instead of resolving the URL's host (which stays the TLS name and Host header). */
  lookup?: LookupFunction;
}

/** One request. Network errors reject as they are (the caller may try another dispatcher or again). */
export function requestJson(url: string, o: JsonRequest): Promise<JsonResponse> {
  return new Promise((resolve, reject) => {
    const https = url.startsWith('https:');
    const ca = https ? trustedCas(o.ca) : undefined;
    const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
    const headers = { ...(o.headers ?? {}), ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) };
    const req = (https ? httpsRequest : httpRequest)(url, { method: o.method ?? 'GET', headers, ...(ca ? { ca } : {}), ...(o.lookup ? { lookup: o.lookup } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        const status = res.statusCode ?? 0;
        resolve({ status, ok: status >= 200 && status < 300, body, text, url });
      });
    });
    req.setTimeout(o.timeoutMs, () => req.destroy(Object.assign(new Error(`${url}: no answer within ${o.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => reject(tlsFailure(err, url) ?? err));
    req.end(payload);
  });
}

/** An answer that is not JSON, as an error (not a FalconetError: whoever retries may retry). */
export function notJson(res: JsonResponse): Error {
  return new Error(`${res.url}: HTTP ${res.status}, not JSON: ${JSON.stringify(res.text.slice(0, 200))}`);
}

/** GET a JSON document (one URL); an answer that is not JSON rejects ({@link notJson}). */
export async function getJson(url: string, o: { headers?: Record<string, string>; timeoutMs: number; ca?: string | Buffer }): Promise<JsonResponse> {
  const res = await requestJson(url, o);
  if (res.body === undefined) throw notJson(res);
  return res;
}

/**
 * `path` from the first of the dispatchers (ws:// URLs, as the CLI's target holds them) that can
 * be reached, trying each candidate in turn within `timeoutMs` overall. An answer, whatever its
 * status or body, resolves; a TLS failure rejects at once. When no candidate
 * could be reached, rejects with the last network error (its `cause`, `code` and message kept)
 * after one full round.
 */
export async function requestAny(wsUrls: readonly string[], path: string, o: JsonRequest & { resolve?: Resolver }): Promise<JsonResponse> {
  const deadline = Date.now() + o.timeoutMs;
  const cands = await expandCandidates(wsUrls, o.resolve);
  let last: unknown = new Error('no dispatcher to ask');
  for (const [i, c] of cands.entries()) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    // A candidate that swallows packets must leave time for the others.
    const share = Math.min(left, Math.max(1000, left / (cands.length - i)));
    const lookup = candidateLookup(c);
    try {
      return await requestJson(httpBase(c.url) + path, { ...o, timeoutMs: share, ...(lookup ? { lookup } : {}) });
    } catch (err) {
      if (err instanceof FalconetError) throw err;
      last = err;
    }
  }
  throw last;
}
