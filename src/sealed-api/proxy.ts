/**
 * Who is calling, as far as the network says: the client address behind `trustedHops` reverse proxies,
 * and the table of known client addresses behind the "new client address" log line (bounded). The
 * failed-authentication back-off is core's (src/core/backoff.ts), shared with the relay.
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
