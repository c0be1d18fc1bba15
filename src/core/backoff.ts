/**
 * The failed-authentication back-off, one for every front end: more than `maxFailures` failures from one
 * address inside a sliding `windowMs` blocks that address until its oldest failure leaves the window.
 * Memory is bounded: at most `maxAddresses` addresses are tracked (the least recently failing is dropped
 * first), and each keeps at most `maxFailures` timestamps.
 *
 * Config keys (every front end uses the same words): `limits.maxAuthFailuresPerIp`,
 * `limits.authFailureWindowMs`.
 */
import { z } from 'zod';

/** The two config keys, for a front end's `limits` schema (defaults live here, once). */
export const authBackoffLimits = {
  /** Failed authentications from one address inside the window before it must back off. */
  maxAuthFailuresPerIp: z.number().int().min(1).default(20),
  /** The sliding window those failures are counted in, in milliseconds. */
  authFailureWindowMs: z.number().int().min(1).default(60000),
};

export class FailureBackoff {
  readonly #failures = new Map<string, number[]>();

  constructor(
    private readonly maxFailures: number,
    private readonly windowMs: number,
    private readonly maxAddresses = 100_000,
  ) {}

  /** Addresses tracked right now (bounded by `maxAddresses`). */
  get size(): number {
    return this.#failures.size;
  }

  #recent(ip: string, nowMs: number): number[] | undefined {
    const list = this.#failures.get(ip);
    if (list === undefined) return undefined;
    const since = nowMs - this.windowMs;
    while (list.length > 0 && list[0]! <= since) list.shift();
    if (list.length === 0) {
      this.#failures.delete(ip);
      return undefined;
    }
    return list;
  }

  /** True when `ip` has used up its failures for now. */
  blocked(ip: string, nowMs = Date.now()): boolean {
    return (this.#recent(ip, nowMs)?.length ?? 0) >= this.maxFailures;
  }

  /** Milliseconds until `ip` may try again (0 when it is not blocked). */
  retryAfterMs(ip: string, nowMs = Date.now()): number {
    const list = this.#recent(ip, nowMs);
    if (list === undefined || list.length < this.maxFailures) return 0;
    return Math.max(0, list[0]! + this.windowMs - nowMs);
  }

  /** Records one failed authentication from `ip`. */
  fail(ip: string, nowMs = Date.now()): void {
    let list = this.#recent(ip, nowMs);
    if (list === undefined) {
      if (this.#failures.size >= this.maxAddresses) {
        const oldest = this.#failures.keys().next();
        if (oldest.done !== true) this.#failures.delete(oldest.value);
      }
      list = [];
    } else {
      // Re-insert so Map order is "least recently failing first" for the eviction above.
      this.#failures.delete(ip);
    }
    this.#failures.set(ip, list);
    list.push(nowMs);
    if (list.length > this.maxFailures) list.shift();
  }
}
