/**
 * Connections that have not completed their hello, counted in total and per remote address, so
 * that unauthenticated peers can hold only a bounded share of the dispatcher (docs/security.md):
 * over either cap a new connection is refused at once. Pure bookkeeping: the server answers.
 */
import type { ConnId } from './model.js';

export interface PendingLimits {
  maxPendingHellos: number;
  maxPendingHellosPerAddress: number;
}

export class PendingHellos {
  readonly #byConn = new Map<ConnId, string>();
  readonly #perAddress = new Map<string, number>();

  constructor(private readonly limits: PendingLimits) {}

  /** Pending connections in total, or from `address`. */
  count(address?: string): number {
    return address === undefined ? this.#byConn.size : (this.#perAddress.get(address) ?? 0);
  }

  /** Why a new connection from `address` is refused (the cap it would pass), or null. */
  overCap(address: string): string | null {
    const fromAddress = this.count(address);
    if (this.#byConn.size >= this.limits.maxPendingHellos) {
      return `${this.#byConn.size} connections are waiting to complete their hello (--max-pending-hellos ${this.limits.maxPendingHellos})`;
    }
    if (fromAddress >= this.limits.maxPendingHellosPerAddress) {
      return `${fromAddress} connections from ${address} are waiting to complete their hello (--max-pending-hellos-per-address ${this.limits.maxPendingHellosPerAddress})`;
    }
    return null;
  }

  add(conn: ConnId, address: string): void {
    this.#byConn.set(conn, address);
    this.#perAddress.set(address, this.count(address) + 1);
  }

  /** The peer completed its hello, or left: it no longer counts. */
  release(conn: ConnId): void {
    const address = this.#byConn.get(conn);
    if (address === undefined) return;
    this.#byConn.delete(conn);
    const n = this.count(address) - 1;
    if (n <= 0) this.#perAddress.delete(address);
    else this.#perAddress.set(address, n);
  }
}
