/**
 * GET a JSON document from the dispatcher's HTTP API over http:// or https://, verifying an
 * https:// server against Node's root CAs plus `ca` (what `fetch` cannot be told without undici).
 * A certificate that does not verify rejects with FalconetError TLS_FAILED; other network errors
 * reject as they are (the caller may try again).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tlsFailure, trustedCas } from '../protocol/tls.js';

export interface JsonResponse {
  status: number;
  ok: boolean;
  body: unknown;
}

export function getJson(url: string, o: { headers?: Record<string, string>; timeoutMs: number; ca?: string | Buffer }): Promise<JsonResponse> {
  return new Promise((resolve, reject) => {
    const https = url.startsWith('https:');
    const ca = https ? trustedCas(o.ca) : undefined;
    const req = (https ? httpsRequest : httpRequest)(url, { method: 'GET', headers: o.headers ?? {}, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          return reject(new Error(`${url}: HTTP ${res.statusCode}, not JSON: ${JSON.stringify(text.slice(0, 200))}`));
        }
        const status = res.statusCode ?? 0;
        resolve({ status, ok: status >= 200 && status < 300, body });
      });
    });
    req.setTimeout(o.timeoutMs, () => req.destroy(Object.assign(new Error(`${url}: no answer within ${o.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => reject(tlsFailure(err, url) ?? err));
    req.end();
  });
}
