/**
 * A tunnel-proxy client forwarded between nodes: the bytes on the forward stream (forward.ts, claim kind
 * `tp`) once the handshake said OK, and the server node's stand-in link for the client.
 *
 * The client sits on node B (where it connected); its server connection on node A. B answers the
 * client's RegisterClient itself once A accepted the claim (the answer's bytes do not depend on the node:
 * `{"id":N,"params":{"tunnelProxyError":"TunnelProxyErrorNoError"},"status":"success"}\n`), A sends the
 * server its ClientConnected as it accepts (before B can answer the client, as nymea orders them), and
 * from then on:
 *
 *   B → A   the client's bytes, raw; FIN: the client left (A tells the server ClientDisconnected)
 *   A → B   frames:  01 <len:u32 BE, ≥ 1> <len bytes>        bytes from the server for the client
 *                    02 <code:u16 BE> <n:u8, ≤ 123> <n bytes>  how A closes the client: the WebSocket
 *                                                            close code and reason (code 0: none, a
 *                                                            FIN); the last frame, A then ends the stream
 *
 * The close needs carrying because A decides it (server gone, DisconnectClient, a bad frame, A shutting
 * down) and a WebSocket client sees its code and reason; the rest of what the client sees (its own
 * JSON-RPC answers before registration, the RegisterClient answer, B's own limits and shutdown) B sends
 * as for a local client. A stream that ends without a close frame (A died, or dropped a client that did
 * not read) closes the client as its server going away would (RELAY_TP_SERVER_GONE).
 *
 * The decoder is pure (bytes in, events out, no buffering of data: a payload is passed on in the pieces
 * it arrives in); it never throws. A peer here passed the cluster key's handshake, but is bounded all
 * the same: an unknown frame type or an oversized reason is `invalid`.
 */
import type { Socket } from 'node:net';
import { StreamLink, type Link, type LinkHandlers, type TransportKind } from '../links.ts';

export const FRAME_DATA = 0x01;
export const FRAME_CLOSE = 0x02;
/** The longest close reason a WebSocket close frame can carry, bytes. */
export const MAX_REASON = 123;
/** Payloads at most this long are copied into one write with their header; longer ones go as two writes. */
const COALESCE_BYTES = 16 * 1024;

export function encodeDataHeader(length: number): Buffer {
  const h = Buffer.allocUnsafe(5);
  h[0] = FRAME_DATA;
  h.writeUInt32BE(length, 1);
  return h;
}

export function encodeClose(close: { code: number; reason: string } | undefined): Buffer {
  let reason = Buffer.from(close?.reason ?? '');
  if (reason.length > MAX_REASON) reason = reason.subarray(0, MAX_REASON);
  const f = Buffer.allocUnsafe(4 + reason.length);
  f[0] = FRAME_CLOSE;
  f.writeUInt16BE(close === undefined ? 0 : close.code & 0xffff, 1);
  f[3] = reason.length;
  reason.copy(f, 4);
  return f;
}

export interface TpForwardSink {
  /** A piece of the server's bytes for the client (may be a view of the input chunk). */
  data(bytes: Buffer): void;
  /** The close frame: `undefined` = no WebSocket close frame (code 0). */
  close(close: { code: number; reason: string } | undefined): void;
  /** A malformed stream: nothing more is decoded. */
  invalid(reason: string): void;
}

/** Decodes the A → B direction incrementally; see the file header. */
export class TpForwardDecoder {
  /** Header bytes gathered (type + up to 4), or the close frame gathered so far. */
  #head: number[] = [];
  /** Payload bytes still to pass on for the current data frame. */
  #left = 0;
  #done = false;

  push(chunk: Buffer, sink: TpForwardSink): void {
    let i = 0;
    while (i < chunk.length && !this.#done) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, chunk.length - i);
        this.#left -= n;
        sink.data(chunk.subarray(i, i + n));
        i += n;
        continue;
      }
      this.#head.push(chunk[i++] ?? 0);
      const h = this.#head;
      const type = h[0];
      if (type === FRAME_DATA) {
        if (h.length < 5) continue;
        const len = ((h[1]! << 24) >>> 0) + (h[2]! << 16) + (h[3]! << 8) + h[4]!;
        this.#head = [];
        if (len === 0) return this.#invalid(sink, 'empty data frame');
        this.#left = len;
      } else if (type === FRAME_CLOSE) {
        if (h.length < 4) continue;
        const n = h[3]!;
        if (n > MAX_REASON) return this.#invalid(sink, 'close reason too long');
        if (h.length < 4 + n) continue;
        const code = (h[1]! << 8) + h[2]!;
        const reason = Buffer.from(h.slice(4)).toString('utf8');
        this.#head = [];
        this.#done = true;
        sink.close(code === 0 ? undefined : { code, reason });
      } else {
        return this.#invalid(sink, `unknown frame type ${String(type)}`);
      }
    }
  }

  #invalid(sink: TpForwardSink, reason: string): void {
    this.#done = true;
    this.#head = [];
    this.#left = 0;
    sink.invalid(reason);
  }
}

const KINDS: readonly TransportKind[] = ['tcp', 'tls', 'unix', 'ws', 'wss'];

/** The client's transport as B reported it (shown by A's monitor); anything else reads as tcp. */
export function transportKind(text: string): TransportKind {
  return KINDS.find((k) => k === text) ?? 'tcp';
}

/**
 * Node A's link for a client that sits on another node: the forward stream, with the server's bytes
 * framed and the close carried (see the file header). Inbound it is the client's raw bytes, so the
 * ClientLeg that owns it works as for a local client; `kind` and `remoteAddress` are the client's own
 * (from the claim), for ClientConnected and the monitor.
 */
export class ForwardedClientLink implements Link {
  readonly #inner: StreamLink;
  #finishing = false;

  constructor(
    readonly kind: TransportKind,
    readonly remoteAddress: string,
    socket: Socket,
    streamKind: 'tcp' | 'unix',
    highWaterBytes: number,
    closeFlushMs: number,
  ) {
    this.#inner = new StreamLink(streamKind, socket, highWaterBytes, closeFlushMs);
  }

  get handlers(): LinkHandlers {
    return this.#inner.handlers;
  }
  attach(handlers: LinkHandlers): void {
    this.#inner.attach(handlers);
  }
  get pendingBytes(): number {
    return this.#inner.pendingBytes;
  }
  get closed(): boolean {
    return this.#inner.closed;
  }

  sendText(text: string): void {
    this.sendData(Buffer.from(text));
  }

  sendData(chunk: Buffer): boolean {
    if (this.#finishing || chunk.length === 0) return true;
    if (chunk.length <= COALESCE_BYTES) return this.#inner.sendData(Buffer.concat([encodeDataHeader(chunk.length), chunk]));
    this.#inner.sendData(encodeDataHeader(chunk.length));
    return this.#inner.sendData(chunk);
  }

  pause(): void {
    this.#inner.pause();
  }
  resume(): void {
    this.#inner.resume();
  }

  finish(close?: { code: number; reason: string }, lingerMs?: number): void {
    if (this.#finishing || this.#inner.closed) return;
    this.#inner.sendData(encodeClose(close));
    this.#finishing = true;
    this.#inner.finish(undefined, lingerMs);
  }

  destroy(): void {
    this.#inner.destroy();
  }
}
