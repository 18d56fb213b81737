/**
 * Shared by the fuzzer (bench/fuzz.ts), the soak (bench/soak.ts) and the memory measurements
 * (bench/memory.ts): loading fast-check, a process's RSS and open file descriptors from /proc,
 * the dispatcher's health, and raw WebSocket sockets that can send a frame header and then as
 * much payload as they like without holding it in memory (the pre-hello attack of issue 14 F5).
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

// ---- fast-check ----------------------------------------------------------------------------------

/**
 * The part of fast-check's API used here. Typed locally (loosely) so that the build does not need
 * the package's types: fast-check is a devDependency, and the tests load it at run time.
 */
export interface Arbitrary<T> {
  map<U>(f: (v: T) => U): Arbitrary<U>;
  chain<U>(f: (v: T) => Arbitrary<U>): Arbitrary<U>;
  filter(p: (v: T) => boolean): Arbitrary<T>;
}
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface FastCheck {
  sample<T>(arb: Arbitrary<T>, opts: { seed: number; numRuns: number }): T[];
  constant<T>(v: T): Arbitrary<T>;
  constantFrom<T>(...v: T[]): Arbitrary<T>;
  integer(c?: { min?: number; max?: number }): Arbitrary<number>;
  nat(max?: number): Arbitrary<number>;
  bigInt(c: { min: bigint; max: bigint }): Arbitrary<bigint>;
  boolean(): Arbitrary<boolean>;
  double(c?: { noNaN?: boolean }): Arbitrary<number>;
  string(c?: { minLength?: number; maxLength?: number; unit?: string }): Arbitrary<string>;
  uint8Array(c?: { minLength?: number; maxLength?: number }): Arbitrary<Uint8Array>;
  array<T>(a: Arbitrary<T>, c?: { minLength?: number; maxLength?: number }): Arbitrary<T[]>;
  dictionary<T>(k: Arbitrary<string>, v: Arbitrary<T>, c?: { maxKeys?: number }): Arbitrary<Record<string, T>>;
  record<R extends Record<string, Arbitrary<any>>>(r: R, c?: { requiredKeys?: string[] }): Arbitrary<{ [K in keyof R]: R[K] extends Arbitrary<infer U> ? U : never }>;
  oneof<T>(...arbs: Array<Arbitrary<T>>): Arbitrary<T>;
  tuple<T extends unknown[]>(...arbs: { [K in keyof T]: Arbitrary<T[K]> }): Arbitrary<T>;
  option<T>(a: Arbitrary<T>, c: { nil: undefined; freq?: number }): Arbitrary<T | undefined>;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/**
 * fast-check, imported by name. Until `npm install` has put it in node_modules (it is a
 * devDependency), point FALCONET_FAST_CHECK at its ESM entry, e.g.
 * `npm install --prefix /tmp/fc fast-check@4.10.2` and
 * `FALCONET_FAST_CHECK=/tmp/fc/node_modules/fast-check/lib/fast-check.js`.
 * (NODE_PATH does not work here: ES modules ignore it.)
 */
export async function loadFastCheck(): Promise<FastCheck> {
  const spec = process.env.FALCONET_FAST_CHECK || 'fast-check';
  try {
    const mod = (await import(spec)) as { default?: FastCheck } & FastCheck;
    return (typeof mod.sample === 'function' ? mod : mod.default) as FastCheck;
  } catch (err) {
    throw new Error(`cannot load fast-check (${spec}): ${(err as Error).message}. Run npm install, or set FALCONET_FAST_CHECK to fast-check's lib/fast-check.js`);
  }
}

// ---- a process seen from /proc --------------------------------------------------------------------

/** Resident set size of a process in bytes, or null when it is gone. */
export function rssOf(pid: number): number | null {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'latin1').match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Open file descriptors of a process, or null when it is gone. */
export function fdsOf(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

export const MiB = 1024 * 1024;
export const mb = (bytes: number | null) => (bytes === null ? 'gone' : `${(bytes / MiB).toFixed(1)} MB`);

/** True when `GET /healthz` answers 200 within `ms`. */
export async function healthy(port: number, ms = 5000): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(ms) });
    await res.text();
    return res.status === 200;
  } catch {
    return false;
  }
}

// ---- raw WebSocket sockets -----------------------------------------------------------------------

/**
 * A TCP connection that completed the WebSocket upgrade (101) and nothing else; `from` is a
 * loopback address to dial from (127.0.0.2, ...) so that tests can stand for several hosts.
 * Rejects if the upgrade is refused or takes more than `ms`.
 */
export function rawUpgrade(port: number, from?: string, ms = 10_000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = tcpConnect({ host: '127.0.0.1', port, ...(from ? { localAddress: from } : {}) });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('upgrade timed out'));
    }, ms);
    let head = '';
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('connect', () => {
      const key = randomBytes(16).toString('base64');
      sock.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      // Paused while the caller attaches its listener: what came with the 101 (an error frame sent
      // at once, say) would otherwise be emitted to no one. Flowing again on the next turn.
      sock.pause();
      sock.off('data', onData);
      if (!head.startsWith('HTTP/1.1 101')) {
        sock.destroy();
        return reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
      }
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      if (rest.length > 0) sock.unshift(rest);
      sock.on('error', () => {});
      resolve(sock);
      setImmediate(() => sock.resume());
    };
    sock.on('data', onData);
  });
}

/** The header of a masked binary client frame of `length` bytes, with the all-zero mask (payload sent as is). */
export function frameHeader(length: number, opcode = 0x2): Buffer {
  if (length < 126) return Buffer.from([0x80 | opcode, 0x80 | length, 0, 0, 0, 0]);
  if (length < 65536) {
    const b = Buffer.alloc(8);
    b[0] = 0x80 | opcode;
    b[1] = 0x80 | 126;
    b.writeUInt16BE(length, 2);
    return b;
  }
  const b = Buffer.alloc(14);
  b[0] = 0x80 | opcode;
  b[1] = 0x80 | 127;
  b.writeBigUInt64BE(BigInt(length), 2);
  return b;
}

/** One whole masked binary frame (zero mask). */
export function clientFrame(payload: Buffer): Buffer {
  return Buffer.concat([frameHeader(payload.length), payload]);
}

const ZEROS = Buffer.alloc(1 << 20);

/**
 * Announces a binary frame of `bytes` and streams zeros into it, honouring backpressure, until it
 * is all written or the dispatcher closes the connection. Resolves with the bytes written.
 */
export function streamFrame(sock: Socket, bytes: number): Promise<number> {
  return new Promise((resolve) => {
    let written = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      resolve(written);
    };
    sock.once('close', finish);
    sock.once('error', finish);
    sock.write(frameHeader(bytes));
    const pump = () => {
      while (!done && written < bytes && !sock.destroyed) {
        const n = Math.min(ZEROS.length, bytes - written);
        written += n;
        if (!sock.write(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n))) return void sock.once('drain', pump);
      }
      if (written >= bytes || sock.destroyed) finish();
    };
    pump();
  });
}
