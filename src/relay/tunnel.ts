/**
 * An established tunnel: two links relaying bytes exactly, in both directions, with backpressure.
 *
 * Start: each side gets `RemoteProxy.TunnelEstablished` (the partner's name and uuid) as the last JSON
 * it will ever see; relaying starts only once both notifications are flushed, so no relayed byte shares
 * a write with a notification (stock clients hang otherwise). Data a side sends meanwhile is held.
 * Data path: a chunk from A is written to B; when more than `tunnelBufferBytes` wait on B, A is paused
 * until B drains. A reader that has used its fair share of an event-loop turn also pauses until a later
 * turn (read-turns.ts), so a quiet tunnel never waits behind busy ones' bursts. WebSocket sides deliver
 * their frames' bytes as they arrive (links.ts); every side reads into reused buffers (read-buffers.ts:
 * plain sockets and `ws` 256 KiB at a time, TLS and WSS record after record into 64 KiB ones). No
 * per-chunk timer or log; every 2 MiB read into fresh buffers (a quiet socket's copies, a link Node's
 * internals kept on its own reads), a young-generation collection frees the spent ones (young-gc.ts).
 * End: when A ends its sending side, B is sent what is pending and then closed (stream FIN, or WS close
 * 1011 "Tunnel client disconnected"); B may still send toward A until it ends too or `halfCloseMs`
 * passes. When A is gone entirely, B is flushed and closed. The key is free for a new pair from A's end on.
 * Kernel relay: when both sides are plain TCP/unix sockets and the native splice addon is loaded, a tunnel
 * that has carried `splice.afterBytes` is handed to the kernel (splice.ts): Node stops reading both
 * sockets, what it had already read is forwarded, and once nothing waits to be written (nor a write's
 * outcome to be reported: a reset peer's write error would destroy a socket the kernel relay holds) the fds move to
 * the addon's thread. Its events (half-close, done, error) map onto the same rules as above.
 */
import type { Logger } from '../core/log.ts';
import { errorSpec } from '../core/errors.ts';
import { FaultBoundary } from '../core/fault.ts';
import type { Session, SessionState } from './session.ts';
import type { RendezvousKey, Rendezvous } from './rendezvous.ts';
import { notification } from './protocol/jsonrpc.ts';
import { normalizeUuid } from './uuid.ts';
import { StreamLink, type Link, type LinkHandlers } from './links.ts';
import type { SpliceEngine, SpliceEvent } from './splice.ts';
import { ReadTurns } from './read-turns.ts';
import { DATA_PATH_GC } from './young-gc.ts';
import { TUNNEL_READ_BUFFERS, TUNNEL_TLS_READ_BUFFERS } from './read-buffers.ts';

// Read buffers dropped in bulk (many tunnels ending) lived long: only a full collection frees them.
TUNNEL_READ_BUFFERS.onDropped = () => DATA_PATH_GC.collectAll();
TUNNEL_TLS_READ_BUFFERS.onDropped = () => DATA_PATH_GC.collectAll();

export interface TunnelContext {
  readonly rendezvous: Rendezvous<Session>;
  readonly log: Logger;
  readonly halfCloseMs: number;
  readonly closeFlushMs: number;
  nextNotificationId(): number;
  /** Adds relayed bytes to the server's traffic counters (`kernel`: moved by the kernel relay). */
  countTraffic(bytes: number, kernel?: boolean): void;
  closed(tunnel: Tunnel): void;
  /** The kernel relay, when available and enabled. */
  readonly splice: SpliceEngine | undefined;
  /** Bytes a tunnel carries in JavaScript before it is handed to the kernel relay. */
  readonly spliceAfterBytes: number;
  /** The largest WebSocket message a side may send once the tunnel runs. */
  readonly tunnelBufferBytes: number;
}

/**
 * One side of a tunnel: a local client (a Session), or the stream to a partner on another node
 * (cluster/remote-party.ts), which has no notification of its own to send (its node sends it).
 */
export interface TunnelParty {
  readonly id: number;
  readonly connectionId: string;
  readonly name: string;
  readonly uuid: string;
  readonly userName: string;
  readonly link: Link;
  state: SessionState;
  rxBytes: number;
  txBytes: number;
  /** Stops the phase timers: the tunnel owns the link from now on. */
  enterPairing(): void;
  /** Sends the tunnel's notification (a JSON-RPC line); `onFlushed` once it is written. */
  sendText(text: string, onFlushed?: () => void): void;
  /** The link is gone (the tunnel saw its close). */
  linkClosed(): void;
  /**
   * Only on the far side of a forwarded tunnel (cluster/remote-party.ts), for logs: the node the partner
   * client sits on, and that client's own address (not the node-to-node stream's).
   */
  readonly node?: string;
  readonly clientAddress?: string;
}

/**
 * Fair shares of an event-loop turn for every JavaScript-path tunnel in this process (one event loop, so
 * one scheduler; read-turns.ts): 1 MiB per turn in total, at least one read per busy reader (256 KiB for a
 * plain socket reading into read-buffers.ts, 64 KiB for TLS and WebSocket sides), and only as many yielded
 * readers resumed per turn as that 1 MiB holds. With 64 busy tunnels a turn copies ~1 MiB instead of up
 * to 2 MiB per socket; a lone tunnel yields once per MiB (one setImmediate and a read restart, against
 * four 256 KiB reads and writes).
 */
const READ_TURNS = new ReadTurns(1024 * 1024, 64 * 1024);


/** How long a hand-off may wait for Node's write buffers to empty before it gives up (stays in JS). */
const HANDOFF_WAIT_MS = 2000;

const PARTNER_CLOSED = errorSpec('RELAY_PARTNER_CLOSED').close;

let nextTunnelId = 1;
let kernelRefusalLogged = false;
/** The first tunnel on the kernel path without pipes is logged, once per process. */
let pipelessLogged = false;

export class Tunnel {
  readonly id = nextTunnelId++;
  readonly createdAt = Date.now();
  #open = 2;
  #released = false;
  /** Relayed bytes in both directions; the idle sweeper compares it between ticks. */
  relayedBytes = 0;
  /** Set while the kernel relay owns both sockets. */
  #spliced: { id: number; counters: BigUint64Array; seen: [bigint, bigint] } | undefined;
  #handoff: 'none' | 'pending' | 'done' | 'refused' = 'none';
  /** Both stream links, when the kernel relay could ever carry this tunnel (decided once, at start). */
  #streams: [StreamLink, StreamLink] | undefined;
  #halfTimer: NodeJS.Timeout | undefined;
  /** The tunnel owns both links from start(): these are their handlers (the tunnel's alone). */
  readonly #handlers: [LinkHandlers, LinkHandlers];
  /** What each side sent before relaying started (replayed first, then dropped). */
  readonly #held: [Buffer[], Buffer[]] = [[], []];
  /** A bug in the data path closes this tunnel (both sides), nothing else. */
  readonly #boundary: FaultBoundary;

  /** True while the kernel relay holds this tunnel's fds (from the hand-off until its final event). */
  get spliced(): boolean {
    return this.#spliced !== undefined;
  }

  constructor(
    readonly a: TunnelParty,
    readonly b: TunnelParty,
    private readonly key: RendezvousKey,
    private readonly ctx: TunnelContext,
  ) {
    this.#boundary = new FaultBoundary(
      () => ctx.log.child({ tunnel: this.id, sessions: [a.id, b.id] }),
      (err) => this.close(err.spec.close),
      () => {
        a.link.destroy();
        b.link.destroy();
      },
    );
    this.#handlers = [this.#initialHandlers(a, this.#held[0]), this.#initialHandlers(b, this.#held[1])];
  }

  /** A side's handlers until relaying starts: hold (and stop reading) what it sends. */
  #initialHandlers(s: TunnelParty, held: Buffer[]): LinkHandlers {
    return {
      data: (chunk) => {
        held.push(chunk);
        s.link.pause();
      },
      end: () => this.#sideGone(s, false),
      close: () => {
        this.#sideGone(s, true);
        s.linkClosed();
      },
      drain: () => undefined,
      fault: this.#boundary.catch,
    };
  }

  /** Sends both notifications, then starts relaying once both are flushed. */
  start(): void {
    const { a, b } = this;
    a.enterPairing();
    b.enterPairing();
    // From here on the tunnel is the links' only owner.
    a.link.attach(this.#handlers[0]);
    b.link.attach(this.#handlers[1]);
    const held = this.#held;
    let flushed = 0;
    const onFlushed = () => {
      if (++flushed === 2) this.#boundary.run(() => this.#startRelay(held));
    };
    a.sendText(notification(this.ctx.nextNotificationId(), 'RemoteProxy.TunnelEstablished', { name: b.name, uuid: normalizeUuid(b.uuid) }), onFlushed);
    b.sendText(notification(this.ctx.nextNotificationId(), 'RemoteProxy.TunnelEstablished', { name: a.name, uuid: normalizeUuid(a.uuid) }), onFlushed);
    // The audit trail: one info line at the start and one at the end (with the totals), both naming the
    // two remote addresses (about a sixth of the setup CPU at full rate, docs/benchmarks.md).
    this.ctx.log.info(this.#who(), 'tunnel established');
  }

  /**
   * The log fields naming both clients; for a forwarded tunnel also the partner's node and both
   * connection ids (the same on both nodes' lines, so the two halves can be matched).
   */
  #who(): Record<string, unknown> {
    const { a, b } = this;
    const who = { tunnel: this.id, sessions: [a.id, b.id], remotes: [a.clientAddress ?? a.link.remoteAddress, b.clientAddress ?? b.link.remoteAddress], users: [a.userName, b.userName] };
    const partnerNode = a.node ?? b.node;
    return partnerNode === undefined ? who : { ...who, partnerNode, connections: [a.connectionId, b.connectionId] };
  }

  #startRelay(held: [Buffer[], Buffer[]]): void {
    if (this.#open < 2 || this.a.link.closed || this.b.link.closed) return;
    this.a.state = 'tunnel';
    this.b.state = 'tunnel';
    // Decided once, so the data path only compares a state and a counter per chunk.
    this.#streams = this.#spliceable();
    // Messages inside the tunnel may be as large as its buffer (before it, the JSON-RPC limit held).
    for (const l of [this.a.link, this.b.link]) if ('setMaxMessageBytes' in l) (l as { setMaxMessageBytes(n: number): void }).setMaxMessageBytes(this.ctx.tunnelBufferBytes);
    this.#wire(this.a, this.b, this.#handlers[0], this.#handlers[1]);
    this.#wire(this.b, this.a, this.#handlers[1], this.#handlers[0]);
    // No hand-off while held chunks are replayed: it would forward bytes Node read after them first.
    this.#handoff = 'pending';
    for (const chunk of held[0]) this.a.link.handlers.data(chunk, false);
    for (const chunk of held[1]) this.b.link.handlers.data(chunk, false);
    held[0].length = 0;
    held[1].length = 0;
    // WebSocket sides deliver their data frames piece by piece from here on, like a stream (links.ts).
    this.a.link.streamFrames?.(this.ctx.tunnelBufferBytes);
    this.b.link.streamFrames?.(this.ctx.tunnelBufferBytes);
    this.#handoff = this.#streams === undefined ? 'refused' : 'none';
    if (this.#handoff === 'none' && this.relayedBytes >= this.ctx.spliceAfterBytes) return this.#handOff(this.#streams!);
    this.a.link.resume();
    this.b.link.resume();
  }

  /** Both links when the kernel relay could carry this tunnel (plain TCP/unix sockets, addon loaded). */
  #spliceable(): [StreamLink, StreamLink] | undefined {
    const { a, b } = this;
    if (this.ctx.splice === undefined) return undefined;
    if (!(a.link instanceof StreamLink) || !(b.link instanceof StreamLink) || a.link.kind === 'tls' || b.link.kind === 'tls') return undefined;
    return [a.link, b.link];
  }

  /** Moves the tunnel to the kernel relay (see the file header). Falls back to JS on any obstacle. */
  #handOff([la, lb]: [StreamLink, StreamLink]): void {
    this.#handoff = 'pending';
    const engine = this.ctx.splice!;
    // Whatever Node already read belongs to the partner: forward it through the JS path first.
    for (const c of la.quiesce()) this.a.link.handlers.data(c, false);
    for (const c of lb.quiesce()) this.b.link.handlers.data(c, false);
    const giveUp = Date.now() + HANDOFF_WAIT_MS;
    const attempt = () => {
      if (this.#open < 2) return;
      const fa = la.spliceFd();
      const fb = lb.spliceFd();
      if (fa === undefined || fb === undefined) {
        if (Date.now() < giveUp && (la.writesInFlight || lb.writesInFlight) && !la.closed && !lb.closed) {
          setTimeout(() => this.#boundary.run(attempt), 1);
          return;
        }
        return this.#stayInJs();
      }
      try {
        const { id, counters } = engine.start(fa, fb, (e) => this.#onSpliceEventIsolated(e));
        this.#spliced = { id, counters, seen: [0n, 0n] };
        this.#handoff = 'done';
        this.ctx.log.debug({ tunnel: this.id }, 'tunnel handed to the kernel relay');
        if (!pipelessLogged) {
          const stats = engine.stats();
          if (stats.pipeless > 0) {
            pipelessLogged = true;
            this.ctx.log.info({ tunnel: this.id, kernelRelay: stats }, 'the pipe budget is spent: further tunnels run on the kernel path without pipes (they copy; docs/operations.md, "Kernel relay")');
          }
        }
      } catch (err) {
        // Once per process at warn, then debug (the addon refuses only on a real error now: tunnels without a
        // pipe budget run pipe-less on the kernel path), with the addon's stats; the server's `dataPaths`
        // counts the tunnels on each path.
        const level = kernelRefusalLogged ? 'debug' : 'warn';
        kernelRefusalLogged = true;
        this.ctx.log[level]({ tunnel: this.id, err: (err as Error).message, kernelRelay: engine.stats() }, 'kernel relay refused a tunnel; it stays on the JavaScript path');
        this.#stayInJs();
      }
    };
    attempt();
  }

  #stayInJs(): void {
    this.#handoff = 'refused';
    for (const l of [this.a.link, this.b.link]) if (l instanceof StreamLink) l.resumeFromSplice();
  }

  /** Folds the kernel relay's counters into the sessions and the server totals. */
  sync(): void {
    const sp = this.#spliced;
    if (sp === undefined) return;
    const ab = sp.counters[0]!;
    const ba = sp.counters[1]!;
    const dab = Number(ab - sp.seen[0]);
    const dba = Number(ba - sp.seen[1]);
    if (dab === 0 && dba === 0) return;
    sp.seen = [ab, ba];
    this.a.rxBytes += dab;
    this.b.txBytes += dab;
    this.b.rxBytes += dba;
    this.a.txBytes += dba;
    this.relayedBytes += dab + dba;
    this.ctx.countTraffic(dab + dba, true);
  }

  /** A bug handling a kernel-relay event closes this tunnel only; after the final event the sockets are ours to close. */
  #onSpliceEventIsolated(e: SpliceEvent): void {
    try {
      this.#onSpliceEvent(e);
    } catch (err) {
      this.#boundary.trip(err);
      if (e.kind !== 'half') {
        this.a.link.destroy();
        this.b.link.destroy();
      }
    }
  }

  #onSpliceEvent(e: SpliceEvent): void {
    this.sync();
    if (e.kind === 'half') {
      // One side ended and the kernel shut the other's write side: as in JS, the key is free now and
      // the other side has halfCloseMs to finish.
      this.#release();
      const id = this.#spliced?.id;
      if (id !== undefined) this.#halfTimer ??= setTimeout(() => this.ctx.splice?.stop(id), this.ctx.halfCloseMs);
      return;
    }
    if (this.#halfTimer !== undefined) clearTimeout(this.#halfTimer);
    if (e.kind === 'error') this.ctx.log.debug({ tunnel: this.id, errno: e.errno }, 'kernel relay ended with an error');
    // The final event (exactly one per tunnel): the addon's thread no longer touches the fds, so closing
    // the sockets is ours now, and only now (`spliced` turns false: the server's close waits for that).
    this.#spliced = undefined;
    this.a.link.destroy();
    this.b.link.destroy();
  }

  #wire(from: TunnelParty, to: TunnelParty, fromHandlers: LinkHandlers, toHandlers: LinkHandlers): void {
    const src = from.link;
    const dst = to.link;
    const ctx = this.ctx;
    // Every side reads into reused buffers (TLS and WSS into smaller ones, record after record); a view the
    // partner could not write at once stays with its write queue (read-buffers.ts).
    const pool = src.kind === 'tls' || src.kind === 'wss' ? TUNNEL_TLS_READ_BUFFERS : TUNNEL_READ_BUFFERS;
    const large = src.readIntoBuffers?.(pool, () => dst.pendingBytes) === true;
    const reader = READ_TURNS.reader(large ? pool.largeBytes : undefined);
    /** Paused until `dst` drains (backpressure). */
    let blocked = false;
    /** Paused until the event-loop turn is over (its share of the turn used, see read-turns.ts). */
    let yielding = false;
    const endOfTurn = () =>
      this.#boundary.run(() => {
        yielding = false;
        // A hand-off in progress (or done) owns the reader's state; it resumes it itself if it gives up.
        if (!blocked && this.#handoff !== 'pending' && this.#handoff !== 'done') src.resume();
      });
    // A WebSocket delivers whole messages (up to tunnelBufferBytes, several socket reads each): charge its
    // raw reads instead, so a busy WS tunnel yields mid-message like a TCP one yields between reads (a quiet
    // WS tunnel's ping waited for 64 busy tunnels' whole 256 KiB messages, ~0.1-0.6 s).
    const rawReads = src.observeReads !== undefined;
    src.observeReads?.((n) => {
      if (READ_TURNS.charge(reader, n) && !yielding && !blocked) {
        yielding = true;
        src.pause();
        READ_TURNS.yieldTurn(endOfTurn, reader);
      }
    });
    fromHandlers.data = (chunk) => {
      const n = chunk.length;
      from.rxBytes += n;
      to.txBytes += n;
      this.relayedBytes += n;
      ctx.countTraffic(n);
      const shareUsed = !rawReads && READ_TURNS.charge(reader, n);
      // Reads into reused buffers leave nothing for the collector: only fresh ones are paced (a quiet
      // plain socket's reads are copies out of the shared small buffer: fresh).
      if (!large || chunk.buffer.byteLength !== pool.largeBytes) DATA_PATH_GC.charge(n);
      if (!dst.sendData(chunk)) {
        blocked = true;
        src.pause();
      } else if (shareUsed && !yielding) {
        yielding = true;
        src.pause();
        READ_TURNS.yieldTurn(endOfTurn, reader);
      }
      if (this.#handoff === 'none' && this.relayedBytes >= ctx.spliceAfterBytes) this.#handOff(this.#streams!);
    };
    toHandlers.drain = () => {
      blocked = false;
      if (!yielding) src.resume();
    };
  }

  /** One side ended its sending (`gone` false) or disappeared (`gone` true). */
  #sideGone(side: TunnelParty, gone: boolean): void {
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
    this.ctx.rendezvous.release(this.key).catch((err: unknown) => this.ctx.log.error({ err, code: 'RELAY_RENDEZVOUS_FAILED', tunnel: this.id }, 'rendezvous release failed'));
  }

  #closed(): void {
    if (this.#halfTimer !== undefined) clearTimeout(this.#halfTimer);
    this.sync();
    this.a.state = 'closed';
    this.b.state = 'closed';
    this.#release();
    // A forwarded tunnel has a half on each node, and the cluster logs its end once, at info, like a
    // local tunnel's (log lines are a large part of a pairing's CPU, docs/benchmarks.md "Scale-out"):
    // on the node where it was made (its second client arrived here, the waiting partner `a` is the far
    // side); the partner's node logs it at debug. Both nodes log `tunnel established` at info.
    const level = this.b.node === undefined ? 'info' : 'debug';
    if (this.ctx.log.isLevelEnabled(level)) {
      this.ctx.log[level]({ ...this.#who(), bytes: [this.a.rxBytes, this.b.rxBytes], seconds: Math.round((Date.now() - this.createdAt) / 1000), kernel: this.#handoff === 'done' }, 'tunnel closed');
    }
    this.ctx.closed(this);
  }

  /**
   * Closes both sides with a catalogue reason (shutdown, idle timeout). A spliced tunnel is only asked to
   * stop: its sockets are destroyed when the kernel relay confirms (its final event), never before, as
   * its thread may use the fds until then (`spliced` stays true meanwhile).
   */
  close(reason: { code: number; reason: string } | undefined): void {
    // Streams carry no reason: the kernel relay is stopped, and its `stopped` event closes both sockets.
    if (this.#spliced !== undefined) return this.ctx.splice?.stop(this.#spliced.id);
    this.a.link.finish(reason);
    this.b.link.finish(reason);
  }
}
