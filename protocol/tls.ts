/**
 * TLS on the dialing side (executors, the SDK, the CLI): which CAs verify the dispatcher, and
 * which socket errors mean "TLS will not work with this dispatcher" (fatal, TLS_FAILED) rather
 * than "it is not there yet" (dial again).
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { ErrorCode, FalconetError } from './errors.js';

/**
 * The `ca` option for a TLS dial: Node's bundled root CAs (Mozilla's, what "system CAs" means to
 * Node unless `--use-openssl-ca`; NODE_EXTRA_CA_CERTS still applies) plus `extra`. Node's own `ca`
 * option replaces the roots instead of adding to them; undefined when there is no extra.
 */
export function trustedCas(extra: string | Buffer | undefined): string[] | undefined {
  if (extra === undefined || extra.length === 0) return undefined;
  return [...rootCertificates, typeof extra === 'string' ? extra : extra.toString('utf8')];
}

/** True when `value` is PEM text rather than a file name. */
export function isPem(value: string): boolean {
  return value.includes('-----BEGIN ');
}

/**
 * A CA setting as a user gives it (`--ca`, `FALCONET_CA`, the executor's `ca` user-data key):
 * PEM text as it is, or the name of a PEM file, read now. USAGE when the file cannot be read or
 * holds no certificate. `what` names the setting in the message.
 */
export function readCa(value: string | undefined, what: string): string | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  let text = value;
  if (!isPem(value)) {
    try {
      text = readFileSync(value, 'utf8');
    } catch (err) {
      throw new FalconetError(ErrorCode.USAGE, `${what}: cannot read the CA file ${value}: ${(err as Error).message}`);
    }
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new FalconetError(ErrorCode.USAGE, `${what}: ${isPem(value) ? 'the value' : value} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return text;
}

/** OpenSSL's and Node's codes for a server certificate that does not verify. */
const CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_CRL',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_CERT_ALTNAME_FORMAT',
]);

/**
 * The TLS failure `err` (a socket or request error) stands for, as a TLS_FAILED error naming
 * `url`, the cause and what to do; null when `err` is no TLS failure (refused, reset, DNS: worth
 * dialing again). Certificate errors, and a wss:// URL answered by a server that speaks no TLS,
 * will not fix themselves.
 */
export function tlsFailure(err: unknown, url: string): FalconetError | null {
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const code = e?.code ?? '';
  const message = e?.message ?? String(err);
  if (CERT_CODES.has(code)) {
    const hint =
      code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH'
        ? 'dial the dispatcher by a name or address its certificate holds'
        : 'give the CA that signed the dispatcher\'s certificate with --ca FILE or FALCONET_CA (SDK: the `ca` option)';
    return new FalconetError(ErrorCode.TLS_FAILED, `TLS to ${url}: certificate verify failed: ${message} (${code}); ${hint}`, { cause: err });
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long|unknown protocol/i.test(message)) {
    return new FalconetError(ErrorCode.TLS_FAILED, `TLS to ${url}: the server does not speak TLS (${message}); dial ws:// instead, or start the dispatcher with --tls-cert and --tls-key`, { cause: err });
  }
  return null;
}
