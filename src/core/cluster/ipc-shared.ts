/**
 * Shared state for `serve --workers N` without Redis: the primary process holds failure counters and
 * "seen once" keys (`PrimarySharedState`, pure bookkeeping); each worker reaches it over the cluster IPC
 * channel (`IpcSharedState`, a `SharedState`). Keys cross the channel as SHA-256 hashes (addresses and
 * (client, jti) pairs never in clear). Messages carry `gh: 'cs'`.
 *
 * Worker → primary: {gh, id, op:'fail', scope, key, max, windowMs} → {gh, id, forMs}
 *                   {gh, id, op:'once', scope, key, ttlMs, max}    → {gh, id, verdict}
 * Primary → every worker: {gh, op:'blocked', scope, key, forMs} when an address reaches the limit.
 * Bounded: the primary tracks at most 100,000 addresses per scope and `max` once-keys per scope; a
 * worker has at most 10,000 requests in flight, each with a deadline (a silent primary = unreachable).
 */
import { createHash } from 'node:crypto';
import { FailureBackoff } from '../backoff.ts';
import { IpcQuestions, type IpcChannel } from './ipc-questions.ts';
import { Listeners, type OnceVerdict, type SharedState } from './shared-state.ts';

/** The channel to the primary: `process` in a cluster worker (same shape as the rendezvous uses). */
export type { IpcChannel } from './ipc-questions.ts';

type CsBody =
  | { readonly op: 'fail'; readonly scope: string; readonly key: string; readonly max: number; readonly windowMs: number }
  | { readonly op: 'once'; readonly scope: string; readonly key: string; readonly ttlMs: number; readonly max: number };

export type CsRequest = CsBody & { readonly gh: 'cs'; readonly id: number };

export type CsAnswer =
  | { readonly gh: 'cs'; readonly id: number; readonly forMs: number }
  | { readonly gh: 'cs'; readonly id: number; readonly verdict: OnceVerdict };

export interface CsBlocked {
  readonly gh: 'cs';
  readonly op: 'blocked';
  readonly scope: string;
  readonly key: string;
  readonly forMs: number;
}

const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;

export function isCsRequest(m: unknown): m is CsRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  if (r.gh !== 'cs' || typeof r.id !== 'number' || typeof r.scope !== 'string' || typeof r.key !== 'string' || !num(r.max)) return false;
  return (r.op === 'fail' && num(r.windowMs)) || (r.op === 'once' && num(r.ttlMs));
}

/** Addresses tracked per scope in the primary. */
const MAX_ADDRESSES = 100_000;
/** Once-keys per scope at most, whatever a worker asks. */
const MAX_ONCE = 10_000_000;

/** The primary's tables. `handle` answers one request; `broadcast` reaches every worker. */
export class PrimarySharedState {
  readonly #backoff = new Map<string, FailureBackoff>();
  readonly #once = new Map<string, { entries: Map<string, number>; nextExpiryMs: number }>();

  constructor(
    private readonly broadcast: (m: CsBlocked) => void,
    private readonly now: () => number = Date.now,
  ) {}

  handle(req: CsRequest): CsAnswer {
    const t = this.now();
    if (req.op === 'fail') {
      const name = `${req.scope}\0${req.max}\0${req.windowMs}`;
      let b = this.#backoff.get(name);
      if (b === undefined) this.#backoff.set(name, (b = new FailureBackoff(req.max, req.windowMs, MAX_ADDRESSES)));
      b.fail(req.key, t);
      const forMs = b.retryAfterMs(req.key, t);
      if (forMs > 0) this.broadcast({ gh: 'cs', op: 'blocked', scope: req.scope, key: req.key, forMs });
      return { gh: 'cs', id: req.id, forMs };
    }
    let table = this.#once.get(req.scope);
    if (table === undefined) this.#once.set(req.scope, (table = { entries: new Map(), nextExpiryMs: Infinity }));
    const seen = table.entries.get(req.key);
    if (seen !== undefined && seen >= t) return { gh: 'cs', id: req.id, verdict: 'duplicate' };
    if (table.entries.size >= Math.min(req.max, MAX_ONCE) && t >= table.nextExpiryMs) {
      let next = Infinity;
      for (const [k, until] of table.entries) {
        if (until < t) table.entries.delete(k);
        else if (until < next) next = until;
      }
      table.nextExpiryMs = next;
    }
    if (table.entries.size >= Math.min(req.max, MAX_ONCE)) return { gh: 'cs', id: req.id, verdict: 'full' };
    const until = t + req.ttlMs;
    table.entries.set(req.key, until);
    if (until < table.nextExpiryMs) table.nextExpiryMs = until;
    return { gh: 'cs', id: req.id, verdict: 'fresh' };
  }

  /** Once-keys held now, all scopes (tests, metrics). */
  get onceEntries(): number {
    let n = 0;
    for (const t of this.#once.values()) n += t.entries.size;
    return n;
  }
}

/** A worker's view of the primary's shared state. */
export class IpcSharedState implements SharedState {
  readonly kind = 'workers';
  readonly #questions: IpcQuestions<CsAnswer>;
  readonly #blocked = new Listeners<[string, number]>();

  constructor(
    private readonly channel: IpcChannel,
    /** Bounds one request to the primary, ms. */
    requestTimeoutMs: number,
    maxPending = 10_000,
  ) {
    this.#questions = new IpcQuestions<CsAnswer>(channel, 'cs', 'shared state', requestTimeoutMs, maxPending);
  }

  readonly #onMessage = (m: unknown): void => {
    if (typeof m !== 'object' || m === null || (m as { gh?: unknown }).gh !== 'cs') return;
    const r = m as Record<string, unknown>;
    if (r.op === 'blocked') {
      if (typeof r.scope === 'string' && typeof r.key === 'string' && num(r.forMs)) this.#blocked.emit(r.scope, r.key, r.forMs);
      return;
    }
    this.#questions.answer(m);
  };

  hash(label: string, ...parts: string[]): string {
    const h = createHash('sha256').update(label);
    for (const p of parts) h.update(`\0${Buffer.byteLength(p)}:${p}`);
    return h.digest('hex');
  }

  start(): Promise<void> {
    this.channel.on('message', this.#onMessage);
    return Promise.resolve();
  }

  /** Stops listening; requests in flight fail. */
  close(): Promise<void> {
    this.channel.off('message', this.#onMessage);
    this.#questions.failAll();
    return Promise.resolve();
  }

  #ask(req: CsBody): Promise<CsAnswer> {
    return this.#questions.ask(req);
  }

  async once(scope: string, key: string, ttlMs: number, maxEntries: number): Promise<OnceVerdict> {
    const a = await this.#ask({ op: 'once', scope, key, ttlMs: Math.max(1, Math.ceil(ttlMs)), max: maxEntries });
    if (!('verdict' in a)) throw new Error('unexpected shared state answer');
    return a.verdict;
  }

  async countFailure(scope: string, key: string, maxFailures: number, windowMs: number): Promise<number> {
    const a = await this.#ask({ op: 'fail', scope, key, max: maxFailures, windowMs });
    if (!('forMs' in a)) throw new Error('unexpected shared state answer');
    return a.forMs;
  }

  onBlocked(scope: string, listener: (key: string, forMs: number) => void): () => void {
    return this.#blocked.add(scope, listener);
  }

  /** The primary's tables die with the primary, and the workers with it: no reset to report. */
  onReset(): () => void {
    return () => undefined;
  }
}
