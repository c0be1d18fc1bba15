/**
 * Questions from a `serve --workers` worker to its primary over the cluster IPC channel, matched to their
 * answers by id: the one mechanism the workers' tables (rendezvous, tunnel-proxy directory, shared state)
 * use. Every question has a deadline and a bound on how many are in flight; a closed channel fails the
 * ones under way. Answers are messages `{gh: <tag>, id, …}`; anything else on the channel is ignored here.
 */
import { asError } from '../fault.ts';

/** The channel to the primary: `process` in a cluster worker. */
export interface IpcChannel {
  send(message: unknown, callback?: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

export class IpcQuestions<A extends { readonly id: number }> {
  readonly #pending = new Map<number, { resolve: (a: A) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  #next = 1;

  constructor(
    private readonly channel: IpcChannel,
    /** The messages' `gh` tag, both ways. */
    private readonly tag: string,
    /** What the questions are about, for error messages ("rendezvous", …). */
    private readonly what: string,
    /** Bounds one question, ms. */
    private readonly timeoutMs: number,
    /** Questions in flight at most; past it a question fails at once. */
    private readonly maxPending = 10_000,
  ) {}

  /**
   * An answer to one of our questions, when `m` is one (true: consumed). Only the id is checked here; the
   * caller's answer type says the rest (the primary is our own process).
   */
  answer(m: unknown): boolean {
    if (typeof m !== 'object' || m === null) return false;
    const r = m as { gh?: unknown; id?: unknown };
    if (r.gh !== this.tag || typeof r.id !== 'number') return false;
    const p = this.#pending.get(r.id);
    if (p === undefined) return false;
    this.#pending.delete(r.id);
    clearTimeout(p.timer);
    p.resolve(m as A);
    return true;
  }

  /** Sends `{gh: tag, id, ...body}` and resolves with the answer; rejects at the deadline or on a send error. */
  ask(body: Record<string, unknown>): Promise<A> {
    if (this.#pending.size >= this.maxPending) return Promise.reject(new Error(`too many ${this.what} requests in flight`));
    const id = this.#next++;
    return new Promise<A>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`the primary did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      const fail = (err: Error) => {
        const p = this.#pending.get(id);
        if (p === undefined) return;
        this.#pending.delete(id);
        clearTimeout(p.timer);
        p.reject(err);
      };
      try {
        this.channel.send({ ...body, gh: this.tag, id }, (err) => {
          if (err !== null) fail(err);
        });
      } catch (err) {
        fail(asError(err));
      }
    });
  }

  /** Fails every question under way (the channel is being closed). */
  failAll(): void {
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`${this.what} channel closed`));
    }
    this.#pending.clear();
  }
}
