/**
 * One lock per card with a bounded FIFO wait queue. Overflow policy: refuse the newcomer with
 * CARD_QUEUE_FULL; a waiter that waits past its deadline leaves with CARD_LOCK_TIMEOUT; a waiter whose
 * signal aborts (its client went away) leaves at once, giving its place back.
 */
import { GatewayError } from '../core/errors.ts';

interface Waiter {
  grant: (release: () => void) => void;
  timer: NodeJS.Timeout;
  /** Stops listening to the waiter's signal. */
  detach: () => void;
}

export class CardLock {
  #held = false;
  readonly #queue: Waiter[] = [];

  constructor(private readonly maxQueued: number) {}

  get queued(): number {
    return this.#queue.length;
  }

  get held(): boolean {
    return this.#held;
  }

  /**
   * Waits for the lock. @returns the release function (idempotent).
   * @throws GatewayError CARD_QUEUE_FULL, CARD_LOCK_TIMEOUT; the signal's reason when it aborts first
   */
  acquire(waitMs: number, signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve(this.#releaser());
    }
    if (this.#queue.length >= this.maxQueued) return Promise.reject(new GatewayError('CARD_QUEUE_FULL'));
    return new Promise((resolve, reject) => {
      const leave = (err: Error) => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        clearTimeout(waiter.timer);
        waiter.detach();
        reject(err);
      };
      const onAbort = () => leave(signal!.reason as Error);
      const waiter: Waiter = {
        grant: (release) => {
          waiter.detach();
          resolve(release);
        },
        timer: setTimeout(() => leave(new GatewayError('CARD_LOCK_TIMEOUT', `waited ${waitMs} ms for the card`)), waitMs),
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  #releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#queue.shift();
      if (next === undefined) {
        this.#held = false;
        return;
      }
      clearTimeout(next.timer);
      next.grant(this.#releaser());
    };
  }
}
