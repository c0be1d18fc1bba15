/**
 * Who is calling, as far as the network says: the client address behind `trustedHops` reverse proxies,
 * a per-address failure counter (429 after too many authentication failures) and the table of known
 * client addresses behind the "new client address" log line. Both tables are bounded.
 */
import type { IncomingMessage } from 'node:http';

/**
 * The client address: with `trustedHops` = 0 the socket's peer; with N, the N-th address from the right
 * of `header` (each trusted proxy appends the address it received from). Addresses a client put in the
 * header itself are never trusted beyond that position.
 */
export function clientAddress(req: IncomingMessage, trustedHops: number, header: string): string {
  const socketAddr = req.socket.remoteAddress ?? 'unknown';
  if (trustedHops === 0) return socketAddr;
  const raw = req.headers[header.toLowerCase()];
  const values = (Array.isArray(raw) ? raw.join(',') : (raw ?? ''))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const chain = [...values, socketAddr];
  return chain[chain.length - 1 - trustedHops] ?? chain[0]!;
}

/** Counts authentication failures per address within a window (bounded; the oldest window is dropped first). */
export class FailureBackoff {
  readonly #fails = new Map<string, { count: number; sinceMs: number }>();
  static readonly MAX_TRACKED = 100000;

  constructor(
    private readonly maxFailures: number,
    private readonly windowMs: number,
  ) {}

  blocked(ip: string, nowMs: number): boolean {
    const f = this.#fails.get(ip);
    if (f === undefined) return false;
    if (nowMs - f.sinceMs >= this.windowMs) {
      this.#fails.delete(ip);
      return false;
    }
    return f.count >= this.maxFailures;
  }

  fail(ip: string, nowMs: number): void {
    const f = this.#fails.get(ip);
    if (f !== undefined && nowMs - f.sinceMs < this.windowMs) {
      f.count++;
      return;
    }
    this.#fails.delete(ip);
    if (this.#fails.size >= FailureBackoff.MAX_TRACKED) {
      const oldest = this.#fails.keys().next().value;
      if (oldest !== undefined) this.#fails.delete(oldest);
    }
    this.#fails.set(ip, { count: 1, sinceMs: nowMs });
  }
}

/** Remembers (client, address) pairs for `ttlMs`; `seen` is true when the pair is new (or was forgotten). */
export class AddressBook {
  readonly #seen = new Map<string, number>();

  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
  ) {}

  seen(key: string, nowMs: number): boolean {
    const last = this.#seen.get(key);
    const fresh = last === undefined || nowMs - last >= this.ttlMs;
    this.#seen.delete(key);
    if (this.#seen.size >= this.maxEntries) {
      const oldest = this.#seen.keys().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
    this.#seen.set(key, nowMs);
    return fresh;
  }
}
