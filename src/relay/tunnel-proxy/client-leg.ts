/**
 * A registered tunnel-proxy client connection (an app): raw bytes in both directions, exactly like a
 * legacy tunnel, multiplexed onto its server connection under a 16-bit socket address.
 *
 * Its bytes go to the server as one SLIP frame per read; the server's frames for its address arrive
 * through `deliver`. When more than `limits.clientBufferBytes` wait toward it, the server connection is
 * paused for it (server-leg.ts) and a `timeouts.slowClientMs` timer starts; draining cancels both, the
 * timer firing drops this client (RELAY_TP_SLOW_CLIENT). A client that ends its side (FIN or close frame)
 * has left: the protocol has no half-close, so the server hears ClientDisconnected at once and what it
 * still sends is flushed before our FIN.
 */
import type { LinkHandlers } from '../links.ts';
import { TUNNEL_READ_BUFFERS, TUNNEL_TLS_READ_BUFFERS } from '../read-buffers.ts';
import type { TpConnection, TpContext } from './connection.ts';
import type { ServerLeg } from './server-leg.ts';

/** A read at least this large marks a busy client (the read buffers' small size). */
const BUSY_READ_BYTES = 16 * 1024;

/**
 * The link's owner once registered: one small object whose methods live on the prototype, instead of a
 * handler object holding a closure per event (with their context, ~0.3 KiB an idle client kept).
 */
class ClientEvents implements LinkHandlers {
  constructor(private readonly leg: ClientLeg) {}
  data(chunk: Buffer): void {
    this.leg.fromLink(chunk);
  }
  end(): void {
    this.leg.linkEnded();
  }
  close(): void {
    this.leg.conn.linkClosed();
  }
  drain(): void {
    this.leg.drained();
  }
  fault(err: unknown): void {
    this.leg.conn.boundary.trip(err);
  }
}

/** A slow client's timeout (one function for every client; the leg is the timer's argument). */
function slowClientTimeout(leg: ClientLeg): void {
  leg.conn.boundary.run(() => leg.conn.drop('RELAY_TP_SLOW_CLIENT'));
}

export class ClientLeg {
  /** Given by the server leg when the client is added (never 0, 0xFFFF or a byte SLIP escapes). */
  address = 0;
  /** More than the client buffer waits toward this client; the server connection is paused for it. */
  blocked = false;
  #slowTimer: NodeJS.Timeout | undefined;
  #gone = false;

  constructor(
    readonly conn: TpConnection,
    readonly uuid: string,
    readonly name: string,
    readonly server: ServerLeg,
    private readonly ctx: TpContext,
  ) {
    conn.link.attach(new ClientEvents(this));
  }

  /** Bytes the client sent (its link's data event). */
  fromLink(chunk: Buffer): void {
    this.conn.rxBytes += chunk.length;
    this.server.fromClient(this.address, chunk);
    if (!this.#reusedReads && chunk.length >= BUSY_READ_BYTES) this.#reuseReads();
  }

  /** The client ended its side (its link's end event). */
  linkEnded(): void {
    // No half-close in this protocol: the client has left (the server is told now).
    this.#leave();
    this.conn.fail('RELAY_PARTNER_CLOSED');
  }

  #reusedReads = false;

  /**
   * A client that turned busy reads into one reused buffer from now on, instead of a fresh one per read
   * that only the collector frees (read-buffers.ts). Its bytes are copied into a SLIP frame before `data`
   * returns (ServerLeg.fromClient, encodeFrame), so the writer never holds any of the buffer (`pending`
   * 0). Only once busy: the switch costs an idle client ~1 KiB of heap, and most clients are idle.
   */
  #reuseReads(): void {
    this.#reusedReads = true;
    const link = this.conn.link;
    link.readIntoBuffers?.(link.kind === 'tls' || link.kind === 'wss' ? TUNNEL_TLS_READ_BUFFERS : TUNNEL_READ_BUFFERS, () => 0);
  }

  /** Called once the server knows this client and the client has its answer. */
  start(): void {
    // Only when debug is on: a child logger per client would cost more than the rest of an idle client.
    if (this.ctx.log.isLevelEnabled('debug'))
      this.conn.log.debug({ clientUuid: this.uuid, serverUuid: this.server.uuid, socketAddress: this.address }, 'tunnel-proxy client registered');
  }

  /** Bytes from the server for this client. */
  deliver(bytes: Buffer): void {
    this.conn.txBytes += bytes.length;
    const link = this.conn.link;
    link.sendData(bytes);
    if (this.blocked || link.pendingBytes < this.ctx.config.limits.clientBufferBytes) return;
    this.blocked = true;
    this.server.clientBlocked(this);
    this.#slowTimer = setTimeout(slowClientTimeout, this.ctx.config.timeouts.slowClientMs, this);
  }

  /** What waited toward the client went below the link's mark (its link's drain event). */
  drained(): void {
    if (!this.blocked || this.conn.link.pendingBytes >= this.ctx.config.limits.clientBufferBytes) return;
    this.#unblock();
  }

  #unblock(): void {
    if (this.#slowTimer !== undefined) clearTimeout(this.#slowTimer);
    this.#slowTimer = undefined;
    if (!this.blocked) return;
    this.blocked = false;
    this.server.clientUnblocked(this);
  }

  /** Leaves the server's table (ClientDisconnected) and the registry; idempotent. */
  #leave(): void {
    if (this.#gone) return;
    this.#gone = true;
    if (this.#slowTimer !== undefined) clearTimeout(this.#slowTimer);
    this.#slowTimer = undefined;
    // removeClient unblocks the server when this client held it.
    this.server.removeClient(this);
    this.blocked = false;
    this.ctx.registry.removeClient(this);
  }

  /** The connection is closing or gone (called by TpConnection). */
  gone(): void {
    this.#leave();
  }

  /** The server connection went away: flush what it sent, then close. */
  serverGone(): void {
    if (this.#gone) return;
    this.#gone = true;
    if (this.#slowTimer !== undefined) clearTimeout(this.#slowTimer);
    this.ctx.registry.removeClient(this);
    this.conn.fail('RELAY_TP_SERVER_GONE');
  }
}
