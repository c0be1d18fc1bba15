/**
 * A registered tunnel-proxy client whose server connection sits on ANOTHER node: this node relays the
 * client's link ↔ the forward stream to that node, where the client is a ClientLeg of the server like
 * any local one (cluster/tp-forward.ts has the bytes on the stream and who sends what).
 *
 * - client → stream: raw bytes; the client's link is paused while the stream holds more than its
 *   high-water mark (the far node's own client-buffer rules then apply to the stream).
 * - stream → client: the far node's data frames, passed on as they arrive; the stream is paused while the
 *   client's link holds more than its mark, so a client that stops reading fills the stream, which the far
 *   node sees as a slow client (RELAY_TP_SLOW_CLIENT there).
 * - The client leaves (FIN, close frame, reset): the stream is flushed and ended; the far node tells the
 *   server ClientDisconnected. No half-close, as for a local client.
 * - The far node closes the client (close frame, then end): the client gets that close code and reason.
 *   The stream ends without one (the far node died, or dropped the client): closed as RELAY_TP_SERVER_GONE.
 */
import type { StreamLink, LinkHandlers } from '../links.ts';
import type { PartyInfo } from '../cluster/forward.ts';
import { TpForwardDecoder, type TpForwardSink } from '../cluster/tp-forward.ts';
import type { TpConnection, TpContext } from './connection.ts';

export class RemoteClientLeg {
  readonly createdAt = Date.now();
  readonly #decoder = new TpForwardDecoder();
  /** The close the far node asked for (`null` until its close frame arrives; `undefined`: a FIN only). */
  #farClose: { code: number; reason: string } | undefined | null = null;
  #gone = false;
  /** The stream is paused because the client's link is full (not for any other reason). */
  #streamPaused = false;
  #clientPaused = false;

  constructor(
    readonly conn: TpConnection,
    readonly uuid: string,
    readonly name: string,
    /** The server as its node described it (name, uuid, monitor id, node). */
    readonly server: PartyInfo,
    readonly stream: StreamLink,
    private readonly ctx: TpContext,
  ) {}

  /** Takes over the client's link and the stream (call once the client has its RegisterClient answer). */
  start(): void {
    const { conn, stream, ctx } = this;
    const sink: TpForwardSink = {
      data: (bytes) => {
        conn.txBytes += bytes.length;
        ctx.registry.totals.traffic += bytes.length;
        if (!conn.link.sendData(bytes) && !this.#streamPaused) {
          this.#streamPaused = true;
          stream.pause();
        }
      },
      close: (close) => {
        this.#farClose = close;
      },
      invalid: (reason) => {
        conn.log.warn({ reason, node: this.server.node }, 'malformed forward stream from the server node');
        conn.fail('RELAY_TP_BAD_FRAME');
      },
    };
    const client: LinkHandlers = {
      data: (chunk) => {
        conn.rxBytes += chunk.length;
        ctx.registry.totals.traffic += chunk.length;
        if (!stream.sendData(chunk) && !this.#clientPaused) {
          this.#clientPaused = true;
          conn.link.pause();
        }
      },
      // No half-close in this protocol: the client has left (gone() ends the stream).
      end: () => conn.fail('RELAY_PARTNER_CLOSED'),
      close: () => conn.linkClosed(),
      drain: () => {
        if (!this.#streamPaused) return;
        this.#streamPaused = false;
        stream.resume();
      },
      fault: conn.boundary.catch,
    };
    const far: LinkHandlers = {
      data: (chunk) => this.#decoder.push(chunk, sink),
      end: () => this.#farEnded(),
      close: () => this.#farEnded(),
      drain: () => {
        if (!this.#clientPaused) return;
        this.#clientPaused = false;
        conn.link.resume();
      },
      fault: conn.boundary.catch,
    };
    conn.link.attach(client);
    stream.attach(far);
    stream.resume();
    if (this.ctx.log.isLevelEnabled('debug'))
      conn.log.debug({ clientUuid: this.uuid, serverNode: this.server.node, serverName: this.server.name }, 'tunnel-proxy client forwarded to its server node');
  }

  #farEnded(): void {
    if (this.#gone) return;
    const close = this.#farClose;
    if (close === null) this.conn.fail('RELAY_TP_SERVER_GONE');
    else this.conn.finishWith(close, 'closed by the server node');
  }

  /** The connection is closing or gone (called by TpConnection): flush what the client sent and end the stream. */
  gone(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.ctx.registry.removeClient(this);
    this.stream.finish();
  }
}
