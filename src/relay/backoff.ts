/**
 * Failed-authentication back-off per client address: more than `maxFailures` failures inside `windowMs`
 * blocks further Authenticate calls from that address until the oldest failure leaves the window.
 * Memory is bounded: at most `maxAddresses` addresses are tracked (the oldest entry is dropped first).
 */
export class AuthBackoff {
  readonly #failures = new Map<string, number[]>();

  constructor(
    private readonly maxFailures: number,
    private readonly windowMs: number,
    private readonly maxAddresses = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  #recent(ip: string): number[] {
    const list = this.#failures.get(ip);
    if (list === undefined) return [];
    const since = this.now() - this.windowMs;
    while (list.length > 0 && list[0]! <= since) list.shift();
    if (list.length === 0) this.#failures.delete(ip);
    return list;
  }

  /** True when `ip` has used up its failures for now. */
  blocked(ip: string): boolean {
    return this.#recent(ip).length >= this.maxFailures;
  }

  /** Records one failed authentication from `ip`. */
  fail(ip: string): void {
    const list = this.#recent(ip);
    if (list.length === 0) {
      if (this.#failures.size >= this.maxAddresses) {
        const oldest = this.#failures.keys().next();
        if (oldest.done !== true) this.#failures.delete(oldest.value);
      }
      this.#failures.set(ip, list);
    }
    list.push(this.now());
    if (list.length > this.maxFailures) list.shift();
  }
}
