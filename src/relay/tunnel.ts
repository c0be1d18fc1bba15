/**
 * An established tunnel: two links relaying bytes exactly, in both directions, with backpressure.
 *
 * Start: each side gets `RemoteProxy.TunnelEstablished` (the partner's name and uuid) as the last JSON
 * it will ever see; relaying starts only once both notifications are flushed, so no relayed byte shares
 * a write with a notification (stock clients hang otherwise). Data a side sends meanwhile is held.
 * Data path: a chunk from A is written to B; when more than `tunnelBufferBytes` wait on B, A is paused
 * until B drains. No per-chunk allocation, timer or log.
 * End: when A ends its sending side, B is sent what is pending and then closed (stream FIN, or WS close
 * 1011 "Tunnel client disconnected"); B may still send toward A until it ends too or `halfCloseMs`
 * passes. When A is gone entirely, B is flushed and closed. The key is free for a new pair from A's end on.
 */
import type { Logger } from '../core/log.ts';
import { errorSpec } from '../core/errors.ts';
import type { Session } from './session.ts';
import type { RendezvousKey, Rendezvous } from './rendezvous.ts';
import { notification } from './protocol/jsonrpc.ts';
import { normalizeUuid } from './uuid.ts';

export interface TunnelContext {
  readonly rendezvous: Rendezvous<Session>;
  readonly log: Logger;
  readonly halfCloseMs: number;
  readonly closeFlushMs: number;
  nextNotificationId(): number;
  /** Adds relayed bytes to the server's traffic counters. */
  countTraffic(bytes: number): void;
  closed(tunnel: Tunnel): void;
}

const PARTNER_CLOSED = errorSpec('RELAY_PARTNER_CLOSED').close;

let nextTunnelId = 1;

export class Tunnel {
  readonly id = nextTunnelId++;
  readonly createdAt = Date.now();
  #open = 2;
  #relaying = false;
  #released = false;
  /** Relayed bytes in both directions; the idle sweeper compares it between ticks. */
  relayedBytes = 0;

  constructor(
    readonly a: Session,
    readonly b: Session,
    private readonly key: RendezvousKey,
    private readonly ctx: TunnelContext,
  ) {}

  /** Sends both notifications, then starts relaying once both are flushed. */
  start(): void {
    const { a, b } = this;
    a.enterPairing();
    b.enterPairing();
    const held: [Buffer[], Buffer[]] = [[], []];
    // Until relaying starts, hold (and stop reading) whatever a side sends.
    const hold = (s: Session, into: Buffer[]) => {
      s.link.handlers.data = (chunk) => {
        into.push(chunk);
        s.link.pause();
      };
    };
    hold(a, held[0]);
    hold(b, held[1]);
    for (const s of [a, b]) {
      const forget = s.link.handlers.close;
      s.link.handlers.end = () => this.#sideGone(s, false);
      s.link.handlers.close = () => {
        this.#sideGone(s, true);
        forget();
      };
    }
    let flushed = 0;
    const onFlushed = () => {
      if (++flushed === 2) this.#startRelay(held);
    };
    a.sendText(notification(this.ctx.nextNotificationId(), 'RemoteProxy.TunnelEstablished', { name: b.name, uuid: normalizeUuid(b.uuid) }), onFlushed);
    b.sendText(notification(this.ctx.nextNotificationId(), 'RemoteProxy.TunnelEstablished', { name: a.name, uuid: normalizeUuid(a.uuid) }), onFlushed);
    this.ctx.log.info({ tunnel: this.id, sessions: [a.id, b.id] }, 'tunnel established');
  }

  #startRelay(held: [Buffer[], Buffer[]]): void {
    if (this.#open < 2 || this.a.link.closed || this.b.link.closed) return;
    this.#relaying = true;
    this.a.state = 'tunnel';
    this.b.state = 'tunnel';
    this.#wire(this.a, this.b);
    this.#wire(this.b, this.a);
    for (const chunk of held[0]) this.a.link.handlers.data(chunk, false);
    for (const chunk of held[1]) this.b.link.handlers.data(chunk, false);
    this.a.link.resume();
    this.b.link.resume();
  }

  #wire(from: Session, to: Session): void {
    const src = from.link;
    const dst = to.link;
    const ctx = this.ctx;
    src.handlers.data = (chunk) => {
      const n = chunk.length;
      from.rxBytes += n;
      to.txBytes += n;
      this.relayedBytes += n;
      ctx.countTraffic(n);
      if (!dst.sendData(chunk)) src.pause();
    };
    dst.handlers.drain = () => src.resume();
  }

  /** One side ended its sending (`gone` false) or disappeared (`gone` true). */
  #sideGone(side: Session, gone: boolean): void {
    const other = side === this.a ? this.b : this.a;
    // The tunnel is ending (a FIN cannot be told apart from a full close until later): free the key
    // for the next pair now; what is left of this tunnel drains on its own.
    this.#release();
    if (gone) {
      side.state = 'closed';
      other.link.finish(PARTNER_CLOSED, this.ctx.closeFlushMs);
      if (--this.#open === 0) this.#closed();
    } else {
      other.link.finish(PARTNER_CLOSED, this.ctx.halfCloseMs);
    }
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    void this.ctx.rendezvous.release(this.key);
  }

  #closed(): void {
    this.a.state = 'closed';
    this.b.state = 'closed';
    this.#release();
    this.ctx.log.info({ tunnel: this.id, relaying: this.#relaying, rx: [this.a.rxBytes, this.b.rxBytes] }, 'tunnel closed');
    this.ctx.closed(this);
  }

  /** Closes both sides with a catalogue reason (shutdown, idle timeout). */
  close(reason: { code: number; reason: string } | undefined): void {
    this.a.link.finish(reason);
    this.b.link.finish(reason);
  }
}
