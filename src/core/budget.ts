/**
 * A byte budget shared by many connections: the memory that unauthenticated clients can make us hold
 * (unfinished and queued requests), bounded in total, not only per connection. Each holder charges what
 * it holds now with `set(n)`; a charge that would take the total past the limit is refused (the caller
 * applies its declared policy, e.g. answer busy and close that one connection) and nothing is charged.
 */
export class ByteBudget {
  #used = 0;

  constructor(readonly limitBytes: number) {}

  get usedBytes(): number {
    return this.#used;
  }

  /** A holder's account in this budget. */
  account(): BudgetAccount {
    return new BudgetAccount(this);
  }

  /** @internal */
  move(delta: number): boolean {
    if (delta > 0 && this.#used + delta > this.limitBytes) return false;
    this.#used += delta;
    return true;
  }
}

export class BudgetAccount {
  #held = 0;
  constructor(private readonly budget: ByteBudget) {}

  get heldBytes(): number {
    return this.#held;
  }

  /** Charges `bytes` as this holder's total. @returns false (nothing changed) when the budget cannot take it. */
  set(bytes: number): boolean {
    if (!this.budget.move(bytes - this.#held)) return false;
    this.#held = bytes;
    return true;
  }

  /** Gives everything back (the holder is gone). */
  release(): void {
    this.budget.move(-this.#held);
    this.#held = 0;
  }
}
