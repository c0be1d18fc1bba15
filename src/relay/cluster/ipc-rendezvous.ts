/**
 * The rendezvous table for `serve --workers N` on one machine, without Redis: the primary process holds
 * the table (`PrimaryRendezvousTable`), each worker reaches it over the cluster IPC channel
 * (`IpcRendezvous`, a `Rendezvous<P>`). What crosses the channel: a SHA-256 of (token, nonce) and of the
 * token (never the token), the worker's party number, and the answer. The party itself (the Session)
 * never leaves its worker.
 *
 * A partner waiting in ANOTHER worker is paired all the same (`paired-remote`, with the forward address
 * that worker gave with its offer: a unix socket of its own): the offering worker then claims it there
 * over a forward stream (forward.ts), so the tunnel runs between the two workers; a plain TCP or WS
 * client moves to the partner's worker instead (handoff.ts; `moveTunnel`). A worker that exits
 * loses its entries at once (the primary drops them), so no key stays blocked.
 */
import { createHash } from 'node:crypto';
import { IpcQuestions, type IpcChannel } from '../../core/cluster/ipc-questions.ts';
import { LocalWaiting, type OfferResult, type Rendezvous, type RendezvousKey } from '../rendezvous.ts';

/** Worker → primary. */
export interface RvRequest {
  readonly gh: 'rv';
  readonly id: number;
  readonly op: 'offer' | 'withdraw' | 'release';
  readonly slot: string;
  readonly tokenKey: string;
  readonly party: string;
  /** The offering worker's forward address ('' when it has none: its partners elsewhere are refused). */
  readonly address?: string;
}

/** Primary → worker. */
export type RvAnswer =
  | { readonly gh: 'rv'; readonly id: number; readonly kind: 'waiting' | 'tunnel-exists' | 'too-many-waiting' | 'done' }
  | { readonly gh: 'rv'; readonly id: number; readonly kind: 'paired'; readonly party: string }
  | { readonly gh: 'rv'; readonly id: number; readonly kind: 'partner-elsewhere'; readonly node: string }
  | { readonly gh: 'rv'; readonly id: number; readonly kind: 'paired-remote'; readonly node: string; readonly address: string; readonly party: string };

export function isRvRequest(m: unknown): m is RvRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return r.gh === 'rv' && typeof r.id === 'number' && (r.op === 'offer' || r.op === 'withdraw' || r.op === 'release') && typeof r.slot === 'string' && typeof r.tokenKey === 'string' && typeof r.party === 'string' && (r.address === undefined || typeof r.address === 'string');
}

type Slot = { state: 'waiting'; worker: number; party: string; tokenKey: string; address: string } | { state: 'tunnel'; worker: number };

/** The table in the primary. Pure bookkeeping (no I/O): `handle` answers one request from `worker`. */
export class PrimaryRendezvousTable {
  readonly #slots = new Map<string, Slot>();
  readonly #waitingPerToken = new Map<string, number>();

  constructor(private readonly maxWaitingPerToken: number) {}

  handle(worker: number, req: RvRequest): RvAnswer {
    const { id, slot } = req;
    const s = this.#slots.get(slot);
    switch (req.op) {
      case 'offer':
        if (s?.state === 'tunnel') return { gh: 'rv', id, kind: 'tunnel-exists' };
        if (s?.state === 'waiting') {
          if (s.worker !== worker && s.address === '') return { gh: 'rv', id, kind: 'partner-elsewhere', node: `worker-${s.worker}` };
          this.#unwait(s.tokenKey);
          this.#slots.set(slot, { state: 'tunnel', worker });
          if (s.worker !== worker) return { gh: 'rv', id, kind: 'paired-remote', node: `worker-${s.worker}`, address: s.address, party: s.party };
          return { gh: 'rv', id, kind: 'paired', party: s.party };
        }
        {
          const n = this.#waitingPerToken.get(req.tokenKey) ?? 0;
          if (n >= this.maxWaitingPerToken) return { gh: 'rv', id, kind: 'too-many-waiting' };
          this.#waitingPerToken.set(req.tokenKey, n + 1);
          this.#slots.set(slot, { state: 'waiting', worker, party: req.party, tokenKey: req.tokenKey, address: req.address ?? '' });
          return { gh: 'rv', id, kind: 'waiting' };
        }
      case 'withdraw':
        if (s?.state === 'waiting' && s.worker === worker && s.party === req.party) {
          this.#slots.delete(slot);
          this.#unwait(s.tokenKey);
        }
        return { gh: 'rv', id, kind: 'done' };
      case 'release':
        if (s?.state === 'tunnel' && s.worker === worker) this.#slots.delete(slot);
        return { gh: 'rv', id, kind: 'done' };
    }
  }

  /**
   * A client moved from worker `from` to worker `to` with the tunnel it holds under `slot`
   * (cluster/handoff.ts): the tunnel is `to`'s now. False (nothing changed) when `from` holds none there.
   */
  moveTunnel(slot: string, from: number, to: number): boolean {
    const s = this.#slots.get(slot);
    if (s?.state !== 'tunnel' || s.worker !== from) return false;
    this.#slots.set(slot, { state: 'tunnel', worker: to });
    return true;
  }

  /** A worker exited: everything it held is free. */
  dropWorker(worker: number): void {
    for (const [slot, s] of this.#slots) {
      if (s.worker !== worker) continue;
      this.#slots.delete(slot);
      if (s.state === 'waiting') this.#unwait(s.tokenKey);
    }
  }

  get size(): number {
    return this.#slots.size;
  }

  #unwait(tokenKey: string): void {
    const left = (this.#waitingPerToken.get(tokenKey) ?? 1) - 1;
    if (left <= 0) this.#waitingPerToken.delete(tokenKey);
    else this.#waitingPerToken.set(tokenKey, left);
  }
}

export type { IpcChannel } from '../../core/cluster/ipc-questions.ts';

/** A worker's view of the primary's table. */
export class IpcRendezvous<P> implements Rendezvous<P> {
  readonly #questions: IpcQuestions<RvAnswer>;
  readonly #waiting = new LocalWaiting<P, { slot: string; tokenKey: string; id: string }>();
  readonly #tunnels = new Set<string>();
  #address = '';
  #nextParty = 1;

  constructor(
    private readonly channel: IpcChannel,
    /** Bounds one request to the primary, ms. */
    requestTimeoutMs: number,
    /** Requests in flight at most (each is a client mid-Authenticate); past it offers fail at once. */
    maxPending = 10000,
  ) {
    this.#questions = new IpcQuestions<RvAnswer>(channel, 'rv', 'rendezvous', requestTimeoutMs, maxPending);
    channel.on('message', this.#onMessage);
  }

  get size() {
    return { waiting: this.#waiting.size, tunnels: this.#tunnels.size };
  }

  readonly #onMessage = (m: unknown): void => {
    this.#questions.answer(m);
  };

  /** Stops listening; requests in flight fail. */
  close(): Promise<void> {
    this.channel.off('message', this.#onMessage);
    this.#questions.failAll();
    return Promise.resolve();
  }

  #ask(op: RvRequest['op'], slot: string, tokenKey: string, party: string): Promise<RvAnswer> {
    return this.#questions.ask({ op, slot, tokenKey, party, address: this.#address });
  }

  async offer(key: RendezvousKey, party: P): Promise<OfferResult<P>> {
    const { slot, tokenKey } = keysOf(key);
    for (let attempt = 0; attempt < 3; attempt++) {
      const id = String(this.#nextParty++);
      const a = await this.#ask('offer', slot, tokenKey, id);
      switch (a.kind) {
        case 'waiting':
          this.#waiting.add(party, { slot, tokenKey, id });
          return { kind: 'waiting' };
        case 'paired': {
          this.#tunnels.add(slot);
          const partner = this.#waiting.takeById(a.party);
          if (partner === undefined) {
            // It left while the request was on its way: give the key back and offer again.
            await this.release(key);
            continue;
          }
          return { kind: 'paired', partner };
        }
        case 'partner-elsewhere':
          return { kind: 'partner-elsewhere', node: a.node };
        case 'paired-remote':
          this.#tunnels.add(slot);
          return { kind: 'paired-remote', node: a.node, address: a.address, ref: `${slot}.${a.party}` };
        case 'tunnel-exists':
        case 'too-many-waiting':
          return { kind: a.kind };
        case 'done':
          throw new Error('unexpected rendezvous answer');
      }
    }
    return { kind: 'tunnel-exists' };
  }

  advertise(address: string): void {
    this.#address = address;
  }

  claimRemote(ref: string): P | undefined {
    return this.#waiting.claim(ref, (entrySlot, refSlot) => entrySlot === refSlot);
  }

  tunnelMovedOut(key: RendezvousKey): string | undefined {
    const { slot } = keysOf(key);
    return this.#tunnels.delete(slot) ? slot : undefined;
  }

  tunnelMovedIn(key: RendezvousKey): void {
    this.#tunnels.add(keysOf(key).slot);
  }

  async withdraw(_key: RendezvousKey, party: P): Promise<void> {
    const e = this.#waiting.takeParty(party);
    if (e === undefined) return;
    await this.#ask('withdraw', e.slot, e.tokenKey, e.id);
  }

  async release(key: RendezvousKey): Promise<void> {
    const { slot, tokenKey } = keysOf(key);
    if (!this.#tunnels.delete(slot)) return;
    await this.#ask('release', slot, tokenKey, '');
  }
}

function keysOf(key: RendezvousKey): { slot: string; tokenKey: string } {
  const h = (label: string, ...parts: string[]) => {
    const d = createHash('sha256').update(label);
    for (const p of parts) d.update(`${Buffer.byteLength(p)}:${p}`);
    return d.digest('hex');
  };
  return { slot: h('slot', key.token, key.nonce), tokenKey: h('token', key.token) };
}
