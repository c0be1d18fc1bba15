/**
 * The rendezvous table: where an authenticated client waits for the partner with the same (token, nonce).
 *
 * The protocol code talks only to the `Rendezvous` interface, so a shared directory (Redis, for several
 * gateway machines) can replace the in-memory table without touching sessions. Methods are async for that
 * reason. Keys hold secrets (tokens): implementations must never log them.
 *
 * Rules (spec "Pairing"): an empty nonce equals an absent one; pairing is by token AND nonce (nymea 1.8.4
 * paired by nonce alone: FIX); while a key has a tunnel, further clients are refused; the key is free
 * again once its tunnel closes or its waiting client leaves.
 */

export interface RendezvousKey {
  readonly token: string;
  readonly nonce: string;
}

export type OfferResult<P> =
  | { readonly kind: 'waiting' }
  | { readonly kind: 'paired'; readonly partner: P }
  | { readonly kind: 'tunnel-exists' }
  | { readonly kind: 'too-many-waiting' }
  /**
   * The partner waits on another gateway node that cannot be reached (it has no forward address):
   * nothing changed, the offer is refused and its entry stays.
   */
  | { readonly kind: 'partner-elsewhere'; readonly node: string }
  /**
   * The partner waits on another node, reachable at `address`: the key now holds a tunnel owned by
   * this node (released with `release` as for `paired`); this node claims the partner there with `ref`
   * (cluster/forward.ts). If the claim finds it gone, `release` and offer again.
   */
  | { readonly kind: 'paired-remote'; readonly node: string; readonly address: string; readonly ref: string };

export interface Rendezvous<P> {
  /** Registers `party` under `key`: it waits, pairs with the waiting partner, or is refused. */
  offer(key: RendezvousKey, party: P): Promise<OfferResult<P>>;
  /** A waiting party left before pairing. No-op if it is not the one waiting. */
  withdraw(key: RendezvousKey, party: P): Promise<void>;
  /** The tunnel under `key` closed; the key may be used again. */
  release(key: RendezvousKey): Promise<void>;
  /** Waiting parties and open tunnels, for the monitor. */
  readonly size: { readonly waiting: number; readonly tunnels: number };
  /**
   * A shared table: the address other nodes reach this node's forward listener at (set once it is
   * bound). Waiting entries made from then on carry it, so a partner on another node can be forwarded.
   */
  advertise?(address: string): void;
  /**
   * A shared table: another node paired with our waiting party `ref` (its `paired-remote` result) and
   * claims it. Returns the party and forgets it here (the shared entry is the claimer's already), or
   * undefined when it already left.
   */
  claimRemote?(ref: string): P | undefined;
  /**
   * `serve --workers` (cluster/handoff.ts): the tunnel this worker holds under `key` goes to another
   * worker with its client (the primary moves it in its table); returns the key's slot, or undefined
   * when this worker holds no tunnel there.
   */
  tunnelMovedOut?(key: RendezvousKey): string | undefined;
  /** The tunnel under `key` came here with a moved client: `release` gives it back from now on. */
  tunnelMovedIn?(key: RendezvousKey): void;
  /** Connects to a shared store, if any (before the relay accepts clients). */
  start?(): Promise<void>;
  /** Disconnects from a shared store, if any (after the relay closed). */
  close?(): Promise<void>;
}

/**
 * A `paired-remote` ref: `<key hash>.<party number>` (the shared table's names for the waiting party),
 * built by the claimer's table and parsed by the waiting node's. Undefined when it is not one.
 */
export function parseRemoteRef(ref: string): { readonly slot: string; readonly party: string } | undefined {
  const dot = ref.lastIndexOf('.');
  return dot <= 0 || dot === ref.length - 1 ? undefined : { slot: ref.slice(0, dot), party: ref.slice(dot + 1) };
}

/**
 * The parties of a shared table that wait in THIS process: the table knows each by its number (`id`),
 * this process keeps the party itself and what it wrote for it (`E`). Both shared tables use it.
 */
export class LocalWaiting<P, E extends { readonly id: string; readonly slot: string }> {
  readonly #byId = new Map<string, P>();
  readonly #entries = new Map<P, E>();

  get size(): number {
    return this.#byId.size;
  }

  add(party: P, entry: E): void {
    this.#byId.set(entry.id, party);
    this.#entries.set(party, entry);
  }

  /** The party numbered `id` (the table paired it), taken out; undefined when it already left. */
  takeById(id: string): P | undefined {
    const party = this.#byId.get(id);
    if (party !== undefined) this.#forget(party, id);
    return party;
  }

  /** What was written for `party`, taken out (it left); undefined when it is not waiting here. */
  takeParty(party: P): E | undefined {
    const entry = this.#entries.get(party);
    if (entry !== undefined) this.#forget(party, entry.id);
    return entry;
  }

  /**
   * A claim from another node (`parseRemoteRef` form): the party with that number whose key `matches`
   * the ref's, taken out; undefined otherwise.
   */
  claim(ref: string, matches: (entrySlot: string, refSlot: string) => boolean): P | undefined {
    const r = parseRemoteRef(ref);
    if (r === undefined) return undefined;
    const party = this.#byId.get(r.party);
    const entry = party === undefined ? undefined : this.#entries.get(party);
    if (party === undefined || entry === undefined || !matches(entry.slot, r.slot)) return undefined;
    this.#forget(party, r.party);
    return party;
  }

  #forget(party: P, id: string): void {
    this.#byId.delete(id);
    this.#entries.delete(party);
  }
}

type Slot<P> = { state: 'waiting'; party: P } | { state: 'tunnel' };

/** The single-process table. `maxWaitingPerToken` bounds waiting parties per token across nonces. */
export class MemoryRendezvous<P> implements Rendezvous<P> {
  readonly #slots = new Map<string, Slot<P>>();
  readonly #waitingPerToken = new Map<string, number>();
  #waiting = 0;
  #tunnels = 0;

  constructor(private readonly maxWaitingPerToken: number) {}

  get size() {
    return { waiting: this.#waiting, tunnels: this.#tunnels };
  }

  offer(key: RendezvousKey, party: P): Promise<OfferResult<P>> {
    const id = slotId(key);
    const slot = this.#slots.get(id);
    if (slot?.state === 'tunnel') return Promise.resolve({ kind: 'tunnel-exists' });
    if (slot?.state === 'waiting') {
      this.#slots.set(id, { state: 'tunnel' });
      this.#unwait(key.token);
      this.#tunnels++;
      return Promise.resolve({ kind: 'paired', partner: slot.party });
    }
    const n = this.#waitingPerToken.get(key.token) ?? 0;
    if (n >= this.maxWaitingPerToken) return Promise.resolve({ kind: 'too-many-waiting' });
    this.#waitingPerToken.set(key.token, n + 1);
    this.#waiting++;
    this.#slots.set(id, { state: 'waiting', party });
    return Promise.resolve({ kind: 'waiting' });
  }

  withdraw(key: RendezvousKey, party: P): Promise<void> {
    const id = slotId(key);
    const slot = this.#slots.get(id);
    if (slot?.state === 'waiting' && slot.party === party) {
      this.#slots.delete(id);
      this.#unwait(key.token);
    }
    return Promise.resolve();
  }

  release(key: RendezvousKey): Promise<void> {
    const id = slotId(key);
    if (this.#slots.get(id)?.state === 'tunnel') {
      this.#slots.delete(id);
      this.#tunnels--;
    }
    return Promise.resolve();
  }

  #unwait(token: string): void {
    this.#waiting--;
    const left = (this.#waitingPerToken.get(token) ?? 1) - 1;
    if (left <= 0) this.#waitingPerToken.delete(token);
    else this.#waitingPerToken.set(token, left);
  }
}

/** Unambiguous map key for (token, nonce). */
function slotId(key: RendezvousKey): string {
  return `${key.token.length}:${key.token}${key.nonce}`;
}
