/**
 * A registered tunnel-proxy server connection (a nymea daemon): SLIP frames in both directions, address 0
 * its JSON-RPC channel, every other address one client (client-leg.ts).
 *
 * Inbound frames are decoded incrementally (protocol/slip.ts) and routed as they arrive: a payload piece
 * for a client is written to that client at once, so no frame is ever buffered whole. Fixes over nymea:
 * payloads are unescaped before they reach a client; a frame for an unknown address is dropped alone
 * (the frames after it are delivered); a malformed frame closes only the client it was for; a control
 * message that is not JSON (or any other JSON-RPC error on address 0) is answered on address 0 and
 * closes nothing.
 *
 * Backpressure (both directions bounded, declared policy):
 * - server → client: when more than `limits.clientBufferBytes` wait toward one client, the server
 *   connection is paused (nothing more is read from it) until that client drains. A client that keeps
 *   its buffer full for `timeouts.slowClientMs` is dropped (RELAY_TP_SLOW_CLIENT) and reading resumes, so
 *   a client that stops reading stalls its siblings for at most slowClientMs and holds at most its buffer
 *   plus one read of the server connection.
 * - client → server: when more than `limits.serverBufferBytes` wait toward the server connection, every
 *   client of it is paused until it drains.
 * - control answers and notifications (address 0): while more than `limits.serverBufferBytes` wait toward
 *   the server connection they are queued in order and the server connection is paused (its requests are
 *   not read) until it drains; a queue past `limits.serverBufferBytes` (a server that floods requests and
 *   reads nothing) drops the connection (RELAY_TP_UNREAD_ANSWERS).
 * Kernel relay (splice) does not apply: both directions need framing work in user space.
 */
import { DATA_PATH_GC } from '../young-gc.ts';
import { errorResponse, successResponse } from '../protocol/jsonrpc.ts';
import { notification } from '../protocol/jsonrpc.ts';
import { CONTROL_ADDRESS, RESERVED_ADDRESS, SLIP_END, SLIP_ESC, SlipDecoder, encodeFrame, type SlipSink } from '../protocol/slip.ts';
import { decodeTunnelProxyRequest, bracedUuid } from '../protocol/tunnel-proxy-api.ts';
import type { LinkHandlers } from '../links.ts';
import type { TpConnection, TpContext } from './connection.ts';
import type { ClientLeg } from './client-leg.ts';

/**
 * True for addresses a stock nymea peer can route: not 0, not 0xFFFF, and no byte that SLIP escapes
 * (64,514 of them: `tunnelProxy.limits.maxClientsPerServer`'s maximum).
 */
export function usableAddress(a: number): boolean {
  if (a === CONTROL_ADDRESS || a === RESERVED_ADDRESS) return false;
  const hi = a >>> 8;
  const lo = a & 0xff;
  // nymea's libraries read the address before unescaping: 0x00C0 or 0xDB01 would be misrouted there.
  return hi !== SLIP_END && hi !== SLIP_ESC && lo !== SLIP_END && lo !== SLIP_ESC;
}

/**
 * The first usable address after `last` (round-robin, wrapping) that `taken` says is free, or undefined
 * when every usable address is taken.
 */
export function nextFreeAddress(last: number, taken: (address: number) => boolean): number | undefined {
  let a = last & 0xffff;
  for (let tries = 0; tries <= 0xffff; tries++) {
    a = (a + 1) & 0xffff;
    if (usableAddress(a) && !taken(a)) return a;
  }
  return undefined;
}

export class ServerLeg {
  readonly createdAt = Date.now();
  readonly remoteAddress: string;
  /** Clients by socket address. */
  readonly #clients = new Map<number, ClientLeg>();
  #lastAddress = 0;
  readonly #decoder = new SlipDecoder();
  /** The control message being assembled (address 0), and whether it outgrew the limit. */
  #control: Buffer[] = [];
  #controlBytes = 0;
  #controlOverflow = false;
  /** Clients whose buffer is full (the server connection is paused while any is). */
  #blocked = 0;
  /** Control frames waiting for the server connection to drain (it is paused while any wait). */
  #answers: Buffer[] = [];
  #answerBytes = 0;
  /** Reading from the server connection is paused (for a blocked client or for queued answers). */
  #readingPaused = false;
  /** The server connection's buffer is full: its clients are paused. */
  #clientsPaused = false;
  #idleTimer: NodeJS.Timeout | undefined;
  #gone = false;
  /** Payload bytes for addresses nobody holds (dropped), for the monitor and logs. */
  droppedBytes = 0;
  readonly #sink: SlipSink;

  constructor(
    readonly conn: TpConnection,
    readonly uuid: string,
    readonly name: string,
    private readonly ctx: TpContext,
  ) {
    this.remoteAddress = conn.link.remoteAddress;
    this.#sink = {
      payload: (address, bytes) => this.#payload(address, bytes),
      end: (address) => {
        if (address === CONTROL_ADDRESS) this.#controlEnd();
      },
      invalid: (address, reason) => this.#invalid(address, reason),
    };
    const handlers: LinkHandlers = {
      data: (chunk) => this.#onData(chunk),
      end: () => conn.fail('RELAY_PARTNER_CLOSED'),
      close: () => conn.linkClosed(),
      drain: () => this.#serverDrained(),
      fault: conn.boundary.catch,
    };
    conn.link.attach(handlers);
    const idleMs = ctx.config.timeouts.serverIdleMs;
    if (idleMs > 0) this.#idleTimer = setTimeout(() => conn.boundary.run(() => conn.fail('RELAY_TP_SERVER_IDLE_TIMEOUT')), idleMs);
  }

  get clientCount(): number {
    return this.#clients.size;
  }
  get clients(): IterableIterator<ClientLeg> {
    return this.#clients.values();
  }
  /** True while the server connection is paused (for a client that does not read, or until it reads its answers). */
  get paused(): boolean {
    return this.#readingPaused;
  }

  /**
   * Sends one JSON-RPC line on address 0, or queues it while the server connection has more than
   * `limits.serverBufferBytes` unread (answers keep their order).
   */
  sendControl(text: string): void {
    const frame = encodeFrame(CONTROL_ADDRESS, Buffer.from(text));
    const link = this.conn.link;
    if (this.#gone || (this.#answers.length === 0 && link.pendingBytes < this.ctx.config.limits.serverBufferBytes)) {
      this.conn.txBytes += frame.length;
      link.sendData(frame);
      return;
    }
    this.#answers.push(frame);
    this.#answerBytes += frame.length;
    if (this.#answerBytes > this.ctx.config.limits.serverBufferBytes) {
      this.#answers = [];
      this.#answerBytes = 0;
      this.conn.drop('RELAY_TP_UNREAD_ANSWERS');
      return;
    }
    this.#updateReading();
  }

  /** Writes queued control frames while the server connection takes them; true once none wait. */
  #flushAnswers(force = false): boolean {
    const link = this.conn.link;
    while (this.#answers.length > 0 && (force || link.pendingBytes < this.ctx.config.limits.serverBufferBytes)) {
      const frame = this.#answers.shift()!;
      this.#answerBytes -= frame.length;
      this.conn.txBytes += frame.length;
      link.sendData(frame);
    }
    return this.#answers.length === 0;
  }

  /** Pauses or resumes reading the server connection for its reasons: blocked clients, queued answers. */
  #updateReading(): void {
    if (this.#gone) return;
    const pause = this.#blocked > 0 || this.#answers.length > 0;
    if (pause === this.#readingPaused) return;
    this.#readingPaused = pause;
    if (pause) this.conn.link.pause();
    else this.conn.link.resume();
  }

  /** Gives `client` a free address and tells the server (ClientConnected). */
  addClient(client: ClientLeg): void {
    const a = nextFreeAddress(this.#lastAddress, (x) => this.#clients.has(x));
    // Unreachable while callers check maxClientsPerServer first (its maximum is the usable count); a bug
    // closes this client (fault boundary) rather than taking another client's address.
    if (a === undefined) throw new Error('no free socket address');
    this.#lastAddress = a;
    client.address = a;
    this.#clients.set(a, client);
    if (this.#clientsPaused) client.conn.link.pause();
    this.conn.sendJson(
      notification(this.ctx.registry.nextNotificationId(), 'TunnelProxy.ClientConnected', {
        clientName: client.name,
        clientPeerAddress: client.conn.peerAddress,
        clientUuid: bracedUuid(client.uuid),
        socketAddress: a,
      }),
    );
  }

  /** `client` is gone: free its address and tell the server (ClientDisconnected). */
  removeClient(client: ClientLeg): void {
    if (this.#clients.get(client.address) !== client) return;
    this.#clients.delete(client.address);
    if (client.blocked) this.clientUnblocked(client);
    if (!this.#gone) this.conn.sendJson(notification(this.ctx.registry.nextNotificationId(), 'TunnelProxy.ClientDisconnected', { socketAddress: client.address }));
  }

  /**
   * Relays a client's bytes to the server as one frame; pauses every client when the server's buffer is
   * full. `chunk` may be a view of a reused read buffer: nothing of it is kept past this call (the frame is
   * a copy).
   */
  fromClient(address: number, chunk: Buffer): void {
    const frame = encodeFrame(address, chunk);
    this.conn.txBytes += frame.length;
    this.ctx.registry.totals.traffic += chunk.length;
    DATA_PATH_GC.charge(chunk.length);
    const link = this.conn.link;
    link.sendData(frame);
    if (!this.#clientsPaused && link.pendingBytes >= this.ctx.config.limits.serverBufferBytes) {
      this.#clientsPaused = true;
      for (const c of this.#clients.values()) c.conn.link.pause();
    }
  }

  #serverDrained(): void {
    if (this.#answers.length > 0 && this.#flushAnswers()) this.#updateReading();
    if (!this.#clientsPaused || this.conn.link.pendingBytes >= this.ctx.config.limits.serverBufferBytes) return;
    this.#clientsPaused = false;
    for (const c of this.#clients.values()) c.conn.link.resume();
  }

  /** A client's buffer went over its limit: stop reading the server until it drains. */
  clientBlocked(_client: ClientLeg): void {
    this.#blocked++;
    this.#updateReading();
  }

  clientUnblocked(_client: ClientLeg): void {
    this.#blocked--;
    this.#updateReading();
  }

  #onData(chunk: Buffer): void {
    this.#idleTimer?.refresh();
    this.conn.rxBytes += chunk.length;
    this.#decoder.push(chunk, this.#sink);
  }

  #payload(address: number, bytes: Buffer): void {
    // Dropped while decoding a read: the rest of it is for nobody.
    if (this.#gone) return;
    if (address === CONTROL_ADDRESS) {
      if (this.#controlOverflow) return;
      this.#controlBytes += bytes.length;
      if (this.#controlBytes > this.ctx.maxMessageBytes) {
        this.#controlOverflow = true;
        this.#control = [];
        return;
      }
      // The piece may be a view of the socket's chunk: keep a copy.
      this.#control.push(Buffer.from(bytes));
      return;
    }
    const client = this.#clients.get(address);
    if (client === undefined) {
      this.droppedBytes += bytes.length;
      return;
    }
    this.ctx.registry.totals.traffic += bytes.length;
    DATA_PATH_GC.charge(bytes.length);
    client.deliver(bytes);
  }

  #controlEnd(): void {
    if (this.#gone) return;
    const overflow = this.#controlOverflow;
    const message = Buffer.concat(this.#control);
    this.#control = [];
    this.#controlBytes = 0;
    this.#controlOverflow = false;
    if (overflow) {
      this.conn.log.warn({ code: 'RELAY_MESSAGE_TOO_LARGE', limit: this.ctx.maxMessageBytes }, 'control message over the limit dropped');
      this.conn.sendJson(errorResponse(-1, 'Data buffer size violation.'));
      return;
    }
    this.#handleControl(message);
  }

  #invalid(address: number | undefined, reason: string): void {
    if (address === undefined || address === CONTROL_ADDRESS) {
      this.#control = [];
      this.#controlBytes = 0;
      this.#controlOverflow = false;
      this.conn.log.warn({ reason, address }, 'malformed SLIP frame from a server dropped');
      return;
    }
    this.#clients.get(address)?.conn.fail('RELAY_TP_BAD_FRAME');
  }

  #handleControl(message: Buffer): void {
    const decoded = decodeTunnelProxyRequest(message);
    if (!decoded.ok) {
      // nymea closes the server connection and with it every client; answering is enough.
      const { id, error, text } = decoded.failure;
      this.conn.log.warn({ code: error.code }, 'bad JSON-RPC message on the control channel answered');
      this.conn.sendJson(errorResponse(id, text));
      return;
    }
    const req = decoded.request;
    if (this.conn.answerCommon(req)) return;
    switch (req.method) {
      case 'TunnelProxy.DisconnectClient': {
        const client = this.#clients.get(req.socketAddress);
        if (client === undefined) {
          this.conn.sendJson(successResponse(req.id, { tunnelProxyError: 'TunnelProxyErrorUnknownSocketAddress' }));
          return;
        }
        this.conn.sendJson(successResponse(req.id, { tunnelProxyError: 'TunnelProxyErrorNoError' }));
        client.conn.fail('RELAY_TP_DISCONNECT_REQUESTED');
        return;
      }
      case 'TunnelProxy.RegisterServer':
        if (req.serverUuid === null) {
          this.conn.sendJson(successResponse(req.id, { slipEnabled: false, tunnelProxyError: 'TunnelProxyErrorInvalidUuid' }));
          return;
        }
        return this.conn.answerAndClose(req.id, { slipEnabled: false, tunnelProxyError: 'TunnelProxyErrorAlreadyRegistered' }, 'RELAY_TP_ALREADY_REGISTERED');
      case 'TunnelProxy.RegisterClient':
        if (req.serverUuid === null || req.clientUuid === null) {
          this.conn.sendJson(successResponse(req.id, { tunnelProxyError: 'TunnelProxyErrorInvalidUuid' }));
          return;
        }
        return this.conn.answerAndClose(req.id, { tunnelProxyError: 'TunnelProxyErrorAlreadyRegistered' }, 'RELAY_TP_ALREADY_REGISTERED');
      default:
        return;
    }
  }

  /** The server connection is gone or closing: every client is flushed and closed, the uuid is free. */
  gone(): void {
    if (this.#gone) return;
    // Answers still queued go out before the close (a last error answer among them); bounded by the queue.
    this.#flushAnswers(true);
    this.#gone = true;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.ctx.registry.removeServer(this);
    this.ctx.cluster?.serverGone(this.uuid);
    const clients = [...this.#clients.values()];
    this.#clients.clear();
    for (const c of clients) c.serverGone();
    this.conn.log.info({ serverUuid: this.uuid, rx: this.conn.rxBytes, tx: this.conn.txBytes, seconds: Math.round((Date.now() - this.createdAt) / 1000) }, 'tunnel-proxy server gone');
  }
}
