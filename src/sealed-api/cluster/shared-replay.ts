/**
 * The replay cache across nodes and workers: a `ReplayStore` over the cluster's shared state
 * (core/cluster/): each accepted (client, jti) is a key hashed with the cluster secret, held until the
 * request's expiry (`SET NX PX` on Redis; the primary's table between workers), so a replay sent to any
 * other node or worker is refused as a local one is. The store unreachable → `remember` rejects, and the
 * request gets the sealed 503 SEALED_REPLAY_STORE_FAILED: an action whose replay status is unknown never runs.
 *
 * Bounded: on Redis, this process refuses new requests ('full') while it holds `maxEntries` keys that
 * have not expired yet (so each node adds at most that many); between workers the primary counts them all.
 */
import type { SharedState } from '../../core/cluster/shared-state.ts';
import type { ReplayStore, ReplayVerdict } from '../replay.ts';

/** Expiry granularity of the local tally, ms. */
const BUCKET_MS = 1000;

export class SharedReplayStore implements ReplayStore {
  /** Keys this process added, by expiry bucket (bucket start → count): `size`, and the bound on Redis. */
  readonly #buckets = new Map<number, number>();
  #count = 0;

  constructor(
    private readonly shared: SharedState,
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Keys this process added that have not expired yet. */
  get size(): number {
    this.#sweep(this.now());
    return this.#count;
  }

  #sweep(nowMs: number): void {
    for (const [bucket, n] of this.#buckets) {
      if (bucket + BUCKET_MS > nowMs) continue;
      this.#buckets.delete(bucket);
      this.#count -= n;
    }
  }

  async remember(key: string, untilMs: number, nowMs: number): Promise<ReplayVerdict> {
    if (this.shared.kind === 'redis') {
      this.#sweep(nowMs);
      if (this.#count >= this.maxEntries) return 'full';
    }
    const verdict = await this.shared.once('replay', this.shared.hash('replay', key), Math.max(1, untilMs - nowMs), this.maxEntries);
    if (verdict === 'fresh') {
      const bucket = Math.floor(untilMs / BUCKET_MS) * BUCKET_MS;
      this.#buckets.set(bucket, (this.#buckets.get(bucket) ?? 0) + 1);
      this.#count++;
    }
    return verdict;
  }
}
