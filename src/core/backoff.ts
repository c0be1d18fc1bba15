/**
 * The failed-authentication back-off, one for every front end: more than `maxFailures` failures from one
 * address inside a sliding `windowMs` blocks that address until its oldest failure leaves the window.
 * Memory is bounded: at most `maxAddresses` addresses are tracked (the least recently failing is dropped
 * first), and each keeps at most `maxFailures` timestamps.
 *
 * `FailureBackoff` counts in this process. `SharedFailureBackoff` counts across the cluster too (Redis,
 * or the primary of `serve --workers`; core/cluster/): the check stays synchronous, answered from the
 * local count and from a local cache of "blocked" verdicts that every process receives when an address
 * reaches the limit anywhere. The shared store unreachable → the local count alone decides (logged once).
 *
 * Config keys (every front end uses the same words): `limits.maxAuthFailuresPerIp`,
 * `limits.authFailureWindowMs`.
 */
import { z } from 'zod';
import type { Logger } from './log.ts';
import type { SharedState } from './cluster/shared-state.ts';

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
    protected readonly maxFailures: number,
    protected readonly windowMs: number,
    protected readonly maxAddresses = 100_000,
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

export interface SharedFailureBackoffOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly shared: SharedState;
  /** Which counters: one per front end (`relay`, `sealed`). Letters and digits only. */
  readonly scope: string;
  readonly log: Logger;
  /** The clock the front end passes to `blocked`/`fail` (received verdicts are dated with it). */
  readonly now?: () => number;
  readonly maxAddresses?: number;
}

/**
 * The back-off across nodes and workers. `fail` counts locally at once and in the shared store in the
 * background; the store answers how long the address is blocked, and tells every other process too.
 * `blocked` is synchronous: the local count, or a verdict received from the cluster (keyed by the
 * address's hash, so verdicts never hold an address in clear). An address blocked on another node is
 * refused here as soon as that node's verdict arrives (one round trip to Redis or the primary).
 */
export class SharedFailureBackoff extends FailureBackoff {
  /** hash(address) → blocked until (ms, `now` clock); bounded by maxAddresses, oldest dropped first. */
  readonly #verdicts = new Map<string, number>();
  readonly #opts: SharedFailureBackoffOptions;
  readonly #now: () => number;
  readonly #off: () => void;
  readonly #inFlight = new Set<Promise<void>>();
  #degraded = false;

  constructor(opts: SharedFailureBackoffOptions) {
    super(opts.maxFailures, opts.windowMs, opts.maxAddresses);
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#off = opts.shared.onBlocked(opts.scope, (key, forMs) => this.#block(key, forMs));
  }

  #block(key: string, forMs: number): void {
    // A verdict never outlasts one window (a forged or stale notice cannot block for longer).
    const until = this.#now() + Math.min(forMs, this.windowMs);
    const had = this.#verdicts.get(key);
    this.#verdicts.delete(key);
    if (this.#verdicts.size >= this.maxAddresses) {
      const oldest = this.#verdicts.keys().next();
      if (oldest.done !== true) this.#verdicts.delete(oldest.value);
    }
    this.#verdicts.set(key, Math.max(until, had ?? 0));
  }

  #verdict(ip: string, nowMs: number): number {
    if (this.#verdicts.size === 0) return 0;
    const key = this.#opts.shared.hash('backoff', this.#opts.scope, ip);
    const until = this.#verdicts.get(key);
    if (until === undefined) return 0;
    if (until > nowMs) return until - nowMs;
    this.#verdicts.delete(key);
    return 0;
  }

  /** Verdicts held now (bounded by maxAddresses). */
  get verdicts(): number {
    return this.#verdicts.size;
  }

  override blocked(ip: string, nowMs = this.#now()): boolean {
    return super.blocked(ip, nowMs) || this.#verdict(ip, nowMs) > 0;
  }

  override retryAfterMs(ip: string, nowMs = this.#now()): number {
    return Math.max(super.retryAfterMs(ip, nowMs), this.#verdict(ip, nowMs));
  }

  override fail(ip: string, nowMs = this.#now()): void {
    super.fail(ip, nowMs);
    const key = this.#opts.shared.hash('backoff', this.#opts.scope, ip);
    const done = this.#opts.shared.countFailure(this.#opts.scope, key, this.maxFailures, this.windowMs).then(
      (forMs) => {
        if (forMs > 0) this.#block(key, forMs);
        if (this.#degraded) {
          this.#degraded = false;
          this.#opts.log.info({ scope: this.#opts.scope }, 'shared failed-auth back-off works again');
        }
      },
      (err: unknown) => {
        if (this.#degraded) return;
        this.#degraded = true;
        this.#opts.log.error(
          { err: (err as Error).message, code: 'CORE_CLUSTER_STATE_UNAVAILABLE', scope: this.#opts.scope },
          'shared failed-auth back-off unreachable: failures are counted in this process only until it is back',
        );
      },
    );
    this.#inFlight.add(done);
    // `done` never rejects (both outcomes are handled above).
    done.then(() => this.#inFlight.delete(done), () => this.#inFlight.delete(done));
  }

  /** Resolves once every failure recorded so far has reached the shared store (or failed to). */
  async settled(): Promise<void> {
    await Promise.all([...this.#inFlight]);
  }

  /** Stops receiving verdicts. */
  detach(): void {
    this.#off();
  }
}
