/**
 * Links: one interface over the relay's transports (TCP, TLS, unix: byte streams; WS, WSS: messages), so
 * the session and the tunnel never care which one a client used.
 *
 * Inbound data arrives through `onData`; `pause`/`resume` apply backpressure to the peer. Outbound:
 * `sendText` for JSON-RPC (a WebSocket text frame), `sendData` for relayed bytes (returns false once more
 * than `highWaterBytes` wait to be flushed; `onDrain` fires when that has gone), `finish(reason)` to flush
 * and close (WS: close frame with the catalogue's code and reason; streams: FIN), `destroy()` to drop now.
 *
 * Ownership: a link has exactly one owner at a time, which receives all of its events. The session owns
 * it from accept; a tunnel takes it over with `attach()` (the session's handlers are gone from then on).
 * An exception thrown by the owner's handler is handed to the owner's `fault` handler, never to the event
 * loop (fault isolation: one connection's bug closes that connection only).
 */
import type { Socket } from 'node:net';
import { isUtf8 } from 'node:buffer';
import { createRequire } from 'node:module';
import type { WebSocket } from 'ws';
import { WsDataFrames, unmaskJs, type Unmask } from './protocol/ws-data-frames.ts';
import type { ReadBuffers } from './read-buffers.ts';
import { detachHandle, type SocketHandle } from './cluster/handoff.ts';

export type TransportKind = 'tcp' | 'tls' | 'unix' | 'ws' | 'wss';

export interface LinkHandlers {
  /** Bytes from the peer; `binary` is true only for WebSocket binary frames. */
  data: (chunk: Buffer, binary: boolean) => void;
  /**
   * The peer ended its sending side (stream FIN; WebSocket: once data frames are streamed, its close frame
   * or a protocol violation, before `close`).
   */
  end: () => void;
  /** The link is fully gone (after finish/destroy or a peer reset). Fires once. */
  close: () => void;
  /** Pending outbound data went below the high-water mark after `sendData` returned false. */
  drain: () => void;
  /** One of the handlers above threw (a bug): close this connection. Called at most once per throw. */
  fault: (err: unknown) => void;
}

export interface Link {
  readonly kind: TransportKind;
  readonly remoteAddress: string;
  /** The current owner's handlers. */
  readonly handlers: LinkHandlers;
  /** Makes `handlers` the link's only owner (replacing the previous one entirely). */
  attach(handlers: LinkHandlers): void;
  /** Bytes waiting to be flushed to the peer. */
  readonly pendingBytes: number;
  readonly closed: boolean;
  sendText(text: string, onFlushed?: () => void): void;
  sendData(chunk: Buffer): boolean;
  pause(): void;
  resume(): void;
  /**
   * WebSocket links only: calls `onRead` with the size of every raw read from the underlying socket, as it
   * happens (a 256 KiB message arrives in several), so a reader's share of an event-loop turn can be
   * charged, and the link paused, in the middle of a message (read-turns.ts). Stream links have none: their
   * `data` events are the reads.
   */
  observeReads?(onRead: (bytes: number) => void): void;
  /**
   * WebSocket links only: from now on data frames are delivered piece by piece as they arrive, not as
   * whole messages (a tunnel relays bytes; see WsLink.streamFrames). Messages stay limited to
   * `maxMessageBytes`.
   */
  streamFrames?(maxMessageBytes: number): void;
  /**
   * Inside a tunnel: reads go into `pool`'s reused buffers (read-buffers.ts) and are handed on as views of
   * them; `pending()` says how many of the bytes handed on the partner's writer may still hold. False when
   * the link cannot (Node's own fresh reads go on).
   */
  readIntoBuffers?(pool: ReadBuffers, pending: () => number): boolean;
  /** Flush what is pending, then close with this close code and reason (WS) or FIN (streams). */
  /** `lingerMs` bounds how long the peer may take to close its side (default: the close-flush timeout). */
  finish(close?: { code: number; reason: string }, lingerMs?: number): void;
  destroy(): void;
  /**
   * Plain TCP and WS (over TCP) links only, before a tunnel: takes the socket's handle away from Node so
   * it can move to another worker (cluster/handoff.ts), or returns undefined (nothing changed) when the
   * link cannot move whole. After a detach the caller destroys the link (its close event follows).
   */
  detachForMove?(): SocketHandle | undefined;
}

const noop = () => undefined;
const nullHandlers: LinkHandlers = { data: noop, end: noop, close: noop, drain: noop, fault: noop };

/** Calls an owner's handler; a throw goes to the owner's fault handler (and a throwing fault handler is dropped). */
function dispatch(h: LinkHandlers, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    try {
      h.fault(err);
    } catch {
      // The owner's fault handler failed too; the link's own close path still runs.
    }
  }
}

/** The one-owner slot both transports share: the owner's handlers, and where a throwing handler goes. */
abstract class OwnedLink {
  protected h: LinkHandlers = nullHandlers;

  get handlers(): LinkHandlers {
    return this.h;
  }

  attach(handlers: LinkHandlers): void {
    this.h = handlers;
  }

  abstract destroy(): void;

  /** A handler threw: tell the owner; if its fault handler throws too, drop the connection. */
  protected fault(err: unknown): void {
    try {
      this.h.fault(err);
    } catch {
      this.destroy();
    }
  }
}

/**
 * Switches `socket` (a net.Socket or a TLSSocket) to Node's user-buffer reads (`onread`, set here on the
 * existing socket) from `pool` (read-buffers.ts: 256 KiB buffers while busy). `consume(chunk)` gets each
 * read (a view of a large buffer, or a copy out of the shared small one) and returns how many of its bytes
 * it handed to the partner's writer as views of it (a stream link: all of them; a WebSocket link: the
 * payload, not the frame headers). `pending()` is asked after each call how many of the bytes handed on
 * (at most) the partner's writer still holds. A large buffer is filled read after read while the writer
 * holds part of it, until less than `minRoom` is left; then it is left to the writer and the socket reads
 * into another. It serves again once the writer is past its last byte, and at once when the writer holds
 * nothing of it (a slower writer, TLS say, would otherwise cost a new buffer per read, each living long
 * enough to be promoted: old-space collections). `minRoom`: a plain socket's whole buffer (one read per
 * buffer: 256 KiB reads); TLS hands over at most a 16 KiB record per read, so 16 KiB. Overstating
 * `pending` only costs buffers; understating it would hand out bytes still queued. Returns the user-buffer
 * mode's on/off switch (off: Node's own reads, for the kernel relay), or undefined (nothing changed) where
 * Node's internals are not as expected.
 */
function readIntoBuffers(
  socket: Socket,
  pool: ReadBuffers,
  pending: () => number,
  consume: (chunk: Buffer) => number,
  minRoom: number = pool.largeBytes,
): { on: () => void; off: () => void } | undefined {
  type Internals = Socket & Record<symbol, unknown> & { _handle?: { useUserBuffer?: (buf: Uint8Array) => void } | null };
  const s = socket as Internals;
  if (s.destroyed) return undefined;
  const syms = Object.getOwnPropertySymbols(s);
  const sym = (name: string) => syms.find((x) => x.description === name);
  const kBuffer = sym('kBuffer');
  const kBufferCb = sym('kBufferCb');
  const kBufferGen = sym('kBufferGen');
  const handle = s._handle;
  if (kBuffer === undefined || kBufferCb === undefined || kBufferGen === undefined || s[kBuffer] !== null || typeof handle?.useUserBuffer !== 'function') return undefined;
  let cur = pool.small;
  let large = false;
  /** Where the next read goes in `cur` (large only; the shared small buffer is always read from its start). */
  let off = 0;
  /** Bytes handed on so far. */
  let handed = 0;
  /** Large buffers the writer held when they were left, with `handed` at their last byte (oldest first). */
  const lent: { buf: Buffer; end: number }[] = [];
  /** During one read's bookkeeping: a lent buffer the writer is past, to read into next. */
  let again: Buffer | undefined;
  const fresh = (): Buffer => {
    const b = again ?? pool.large();
    again = undefined;
    return b;
  };
  // Node calls this with each read's length (the bytes are in `next()`'s view), then `next` for the next read's.
  const onRead = (n: number): boolean => {
    const chunk = large ? cur.subarray(off, off + n) : Buffer.from(cur.subarray(0, n));
    handed += consume(chunk);
    // Everything handed so far less what the writer may still hold: what it has let go of.
    const done = handed - pending();
    again = undefined;
    while (lent.length > 0 && lent[0]!.end <= done) {
      const b = lent.shift()!.buf;
      if (again === undefined) again = b;
      else pool.release(b);
    }
    if (!large) {
      if (n === cur.length) {
        cur = fresh();
        large = true;
        off = 0;
      }
    } else if (done >= handed) {
      // The writer holds nothing of ours: this buffer starts over (or goes back, the socket gone quiet).
      off = 0;
      if (n < pool.smallBytes) {
        pool.release(cur);
        cur = pool.small;
        large = false;
      }
    } else if (cur.length - (off + n) < minRoom) {
      // The writer holds part of this one and too little is left: it is the writer's until it is past it.
      lent.push({ buf: cur, end: handed });
      large = n >= pool.smallBytes;
      cur = large ? fresh() : pool.small;
      off = 0;
    } else {
      off += n;
    }
    if (again !== undefined) {
      pool.release(again);
      again = undefined;
    }
    return true; // pausing is the owner's (pause()), never through the return value
  };
  const next = () => (large && off > 0 ? cur.subarray(off) : cur);
  // The reader ends: what the writer has let go of serves again, the rest is dropped (counted, so that
  // many tunnels ending at once get the full collection their long-lived buffers need).
  socket.once('close', () => {
    const done = handed - pending();
    for (const l of lent) {
      if (l.end <= done) pool.release(l.buf);
      else pool.drop(l.buf);
    }
    lent.length = 0;
    if (large) {
      if (done >= handed) pool.release(cur);
      else pool.drop(cur);
    }
    cur = pool.small;
    large = false;
    off = 0;
  });
  const switches = { on: () => ((s[kBuffer] = next()), (s[kBufferCb] = onRead), (s[kBufferGen] = next)), off: () => ((s[kBuffer] = null), (s[kBufferCb] = null), (s[kBufferGen] = null)) };
  switches.on();
  handle.useUserBuffer(next());
  return switches;
}

/** The most a TLS read hands over at once (Node decrypts one record of at most 16 KiB per read). */
const TLS_READ_BYTES = 16 * 1024;

/** A stream transport over a net.Socket or tls.TLSSocket (created with allowHalfOpen). */
export class StreamLink extends OwnedLink implements Link {
  #closed = false;
  #finishing = false;
  #flushTimer: NodeJS.Timeout | undefined;
  readonly remoteAddress: string;

  constructor(
    readonly kind: 'tcp' | 'tls' | 'unix',
    private readonly socket: Socket,
    private readonly highWaterBytes: number,
    private readonly closeFlushMs: number,
  ) {
    super();
    this.remoteAddress = kind === 'unix' ? 'unix' : (socket.remoteAddress ?? 'unknown');
    socket.setNoDelay(true);
    // The data path: one try/catch, no closure per chunk.
    socket.on('data', (chunk: Buffer) => {
      try {
        this.h.data(chunk, false);
      } catch (err) {
        this.fault(err);
      }
    });
    socket.on('end', () => dispatch(this.h, () => this.h.end()));
    socket.on('drain', () => dispatch(this.h, () => this.h.drain()));
    socket.on('error', noop); // 'close' follows every error; resets are an expected end.
    socket.on('close', () => {
      this.#closed = true;
      if (this.#flushTimer !== undefined) clearTimeout(this.#flushTimer);
      dispatch(this.h, () => this.h.close());
    });
  }


  get pendingBytes(): number {
    return this.socket.writableLength;
  }
  get closed(): boolean {
    return this.#closed;
  }
  /** The socket itself, only so shutdown can tell the connection tracker which sockets to leave open. */
  get rawSocket(): Socket {
    return this.socket;
  }

  sendText(text: string, onFlushed?: () => void): void {
    if (this.#finishing || this.socket.destroyed) return;
    this.socket.write(text, onFlushed === undefined ? undefined : () => onFlushed());
  }

  sendData(chunk: Buffer): boolean {
    if (this.#finishing || this.socket.destroyed) return true;
    this.socket.write(chunk);
    return this.socket.writableLength < this.highWaterBytes;
  }

  pause(): void {
    this.socket.pause();
  }
  resume(): void {
    this.socket.resume();
  }

  /**
   * Inside a tunnel: from now on the socket reads into `pool`'s buffers (read-buffers.ts: 256 KiB at a time
   * while busy; TLS: its 16 KiB records one after the other in one buffer) through Node's user-buffer reads,
   * and `data` gets views of them (see the function readIntoBuffers above). `pending()` is asked after each
   * handler call how many of the bytes handed to `data` (at most) the partner's writer still holds. Returns
   * false (nothing changed, Node's own reads go on) where Node's internals are not as expected.
   */
  readIntoBuffers(pool: ReadBuffers, pending: () => number): boolean {
    if (this.#closed || this.#userBuffers !== undefined) return false;
    const consume = (chunk: Buffer): number => {
      try {
        this.h.data(chunk, false);
      } catch (err) {
        this.fault(err);
      }
      return chunk.length;
    };
    this.#userBuffers = readIntoBuffers(this.socket, pool, pending, consume, this.kind === 'tls' ? TLS_READ_BYTES : pool.largeBytes);
    return this.#userBuffers !== undefined;
  }
  /** Switches Node's user-buffer mode on and off (quiesce: with it on, resume() would restart reading). */
  #userBuffers: { on: () => void; off: () => void } | undefined;

  finish(_close?: { code: number; reason: string }, lingerMs = this.closeFlushMs): void {
    if (this.#finishing || this.#closed || this.socket.destroyed) return;
    this.#finishing = true;
    // end() flushes queued writes, then sends FIN. The peer may keep its side open (a half-closed
    // tunnel keeps relaying the other way), so the wait is bounded by lingerMs.
    this.socket.end(() => {
      if (this.socket.readableEnded) this.socket.destroy();
    });
    this.socket.once('end', () => {
      if (this.socket.writableFinished) this.socket.destroy();
    });
    this.#flushTimer = setTimeout(() => this.socket.destroy(), lingerMs);
    this.#flushTimer.unref();
  }

  destroy(): void {
    this.socket.destroy();
  }

  detachForMove(): SocketHandle | undefined {
    if (this.kind !== 'tcp' || this.#finishing || this.#closed || this.#userBuffers !== undefined) return undefined;
    return detachHandle(this.socket);
  }

  /**
   * Stops Node from reading this socket (for the kernel relay) and returns chunks Node had already read
   * but not delivered; those belong to the partner. `resumeFromSplice()` undoes it.
   */
  quiesce(): Buffer[] {
    const s = this.socket as Socket & { _handle?: { readStop?: () => number; reading?: boolean } | null; _read: (n: number) => void };
    s.pause();
    // In user-buffer mode Node's resume() restarts reading by itself, past the no-op _read below.
    this.#userBuffers?.off();
    if (s._handle) {
      s._handle.readStop?.();
      // Node's own flag: left true, a later _read (after resumeFromSplice) would never restart reading.
      s._handle.reading = false;
    }
    // Node's stream machinery calls _read to refill its buffer; it must not start reading again.
    s._read = () => undefined;
    const rest: Buffer[] = [];
    for (let c = s.read() as Buffer | null; c !== null; c = s.read() as Buffer | null) rest.push(c);
    return rest;
  }

  /** Gives the socket back to Node after `quiesce()` (the kernel relay could not take it). */
  resumeFromSplice(): void {
    const s = this.socket as Socket & { _readableState?: { reading?: boolean } };
    delete (s as { _read?: unknown })._read;
    // The no-op _read never pushed, so Node's stream still believes a read is under way and would never
    // call _read again (the tunnel would stall): clear it so resume() restarts reading the handle.
    if (s._readableState !== undefined) s._readableState.reading = false;
    this.#userBuffers?.on();
    s.resume();
  }

  /**
   * The file descriptor, when this socket has one, nothing waits to be written and Node has not seen
   * its end (an end Node already read would otherwise be handled twice: by Node and by the kernel relay).
   */
  spliceFd(): number | undefined {
    const s = this.socket as Socket & { _handle?: { fd?: number } | null; _readableState?: { ended?: boolean } };
    const fd = s._handle?.fd;
    if (typeof fd !== 'number' || fd < 0 || this.writesInFlight || this.#finishing || s.destroyed || s.errored !== null || s._readableState?.ended === true) return undefined;
    return fd;
  }

  /**
   * True while a write has not completed: bytes wait, or a write's outcome is still to be reported. A write
   * that failed (the peer reset) leaves nothing waiting, yet Node reports the failure a tick later and then
   * destroys the socket: with its fd handed to the kernel relay, that would close the fd under its thread.
   */
  get writesInFlight(): boolean {
    const state = (this.socket as Socket & { _writableState?: { pendingcb?: number } })._writableState;
    return this.socket.writableLength > 0 || (state?.pendingcb ?? 0) > 0;
  }
}

/**
 * A WebSocket transport. Relayed bytes go out as text frames while the peer has only ever sent text and
 * the bytes are valid UTF-8 (stock nymea clients expect text); otherwise as binary frames, so arbitrary
 * bytes arrive exactly. A UTF-8 sequence split across chunks is held back for the next frame.
 */
export class WsLink extends OwnedLink implements Link {
  #closed = false;
  #finishing = false;
  #peerTextOnly = true;
  #carry: Buffer | undefined;
  #waitingDrain = false;
  #flushTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly kind: 'ws' | 'wss',
    private readonly ws: WebSocket,
    readonly remoteAddress: string,
    private readonly highWaterBytes: number,
    private readonly closeFlushMs: number,
  ) {
    super();
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      // Once frames are streamed, `ws` only ever sees control frames: anything else it reports is not
      // ours to deliver (see streamFrames).
      if (this.#frames !== undefined) return;
      if (isBinary) this.#peerTextOnly = false;
      try {
        this.h.data(data, isBinary);
      } catch (err) {
        this.fault(err);
      }
    });
    ws.on('error', noop);
    ws.on('close', () => {
      this.#closed = true;
      if (this.#flushTimer !== undefined) clearTimeout(this.#flushTimer);
      if (this.#carryTimer !== undefined) clearTimeout(this.#carryTimer);
      // A WebSocket has no half-close: the peer's close frame ends the whole link.
      dispatch(this.h, () => this.h.close());
    });
  }


  /**
   * The largest WebSocket message accepted from now on. Before the tunnel it is the JSON-RPC message limit
   * (a peer cannot make us buffer more than that per connection: `ws` refuses a frame by its header); the
   * tunnel raises it to its buffer size. Over it, `ws` closes the link with 1009, or with `overLimit` when
   * given (the relay's pre-tunnel answer is nymea's 1011 "Data buffer size violation.").
   */
  setMaxMessageBytes(bytes: number, overLimit?: { code: number; reason: string }): void {
    const ws = this.ws as unknown as { _receiver?: { _maxPayload?: number }; close: (code?: number, reason?: string) => void };
    const receiver = ws._receiver;
    if (receiver !== undefined && typeof receiver._maxPayload === 'number') receiver._maxPayload = bytes;
    this.#overLimit = overLimit;
    if (!this.#closeWrapped) {
      this.#closeWrapped = true;
      // `ws` closes an oversized message with a bare 1009 from inside its receiver; translate that one call.
      const close = ws.close.bind(ws);
      ws.close = (code?: number, reason?: string) => {
        const o = this.#overLimit;
        if (code === 1009 && reason === undefined && o !== undefined) close(o.code, o.reason);
        else close(code, reason);
      };
    }
  }
  #overLimit: { code: number; reason: string } | undefined;
  #closeWrapped = false;

  /** From now on `sendData` always sends binary frames (a tunnel-proxy server leg: SLIP bytes, never text). */
  sendBinaryOnly(): void {
    this.#peerTextOnly = false;
  }

  get pendingBytes(): number {
    return this.ws.bufferedAmount;
  }
  get closed(): boolean {
    return this.#closed;
  }

  sendText(text: string, onFlushed?: () => void): void {
    if (this.#finishing || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(text, { binary: false }, onFlushed === undefined ? undefined : () => onFlushed());
  }

  sendData(chunk: Buffer): boolean {
    if (this.#finishing || this.ws.readyState !== this.ws.OPEN) return true;
    let out = this.#carry === undefined ? chunk : Buffer.concat([this.#carry, chunk]);
    this.#carry = undefined;
    let binary = !this.#peerTextOnly;
    if (!binary) {
      const cut = out.length - incompleteUtf8Tail(out);
      if (isUtf8(out.subarray(0, cut))) {
        if (cut < out.length) {
          this.#carry = Buffer.from(out.subarray(cut));
          out = out.subarray(0, cut);
          this.#armCarryFlush();
        }
      } else {
        binary = true;
      }
    }
    if (out.length > 0) this.ws.send(out, { binary }, this.#afterSend);
    const below = this.ws.bufferedAmount < this.highWaterBytes;
    if (!below) this.#waitingDrain = true;
    return below;
  }

  /**
   * A held-back UTF-8 sequence whose end does not follow within UTF8_CARRY_WAIT_MS goes on alone, as a
   * binary frame (it is not UTF-8): a sender waiting for an answer to bytes ending in such a sequence
   * (any binary protocol) would otherwise wait forever for its last bytes to be delivered.
   */
  #armCarryFlush(): void {
    if (this.#carryTimer !== undefined) {
      this.#carryTimer.refresh();
      return;
    }
    this.#carryTimer = setTimeout(() => {
      const carry = this.#carry;
      if (carry === undefined || this.#finishing || this.ws.readyState !== this.ws.OPEN) return;
      this.#carry = undefined;
      this.ws.send(carry, { binary: true }, this.#afterSend);
    }, UTF8_CARRY_WAIT_MS);
    this.#carryTimer.unref();
  }
  #carryTimer: NodeJS.Timeout | undefined;

  readonly #afterSend = (): void => {
    if (this.#waitingDrain && this.ws.bufferedAmount < this.highWaterBytes / 2) {
      this.#waitingDrain = false;
      dispatch(this.h, () => this.h.drain());
    }
  };

  observeReads(onRead: (bytes: number) => void): void {
    // `ws` keeps its socket in `_socket` (ws 8); its own data listener runs first, so the frames of a read
    // are parsed (and whole messages delivered) before the read is charged. Reads into a tunnel's buffers
    // (readIntoBuffers) emit no `data`: they charge it themselves.
    const socket = (this.ws as unknown as { _socket?: Socket | null })._socket;
    if (socket === undefined || socket === null) return;
    this.#onRawRead = onRead;
    socket.on('data', (chunk: Buffer) => {
      try {
        onRead(chunk.length);
      } catch (err) {
        this.fault(err);
      }
    });
  }
  #onRawRead: ((bytes: number) => void) | undefined;

  /**
   * Inside a tunnel: once this link reads its data frames itself (streamFrames), the socket (TCP for `ws`,
   * TLS for `wss`) reads into `pool`'s buffers as a stream link's does, its frames are unmasked in place
   * there and their payloads handed on as views (the function readIntoBuffers above; `pending()`: bytes
   * the partner's writer may still hold). Before, every read was a fresh buffer that the partner's write
   * queue kept alive long enough to be promoted: 512 busy WS tunnels spent a quarter of their time
   * collecting. Returns true when the request is taken (it starts when the frames are ours: at once, or at
   * the read that lets streamFrames take over).
   */
  readIntoBuffers(pool: ReadBuffers, pending: () => number): boolean {
    if (this.#closed || this.#bufferRequest !== undefined) return false;
    this.#bufferRequest = { pool, pending };
    this.#startBuffers();
    return true;
  }
  #bufferRequest: { pool: ReadBuffers; pending: () => number } | undefined;
  #buffersStarted = false;
  /** Payload bytes handed to the owner so far (what a read handed on, for readIntoBuffers). */
  #delivered = 0;

  #startBuffers(): void {
    const request = this.#bufferRequest;
    const frames = this.#frames;
    const socket = (this.ws as unknown as { _socket?: Socket | null })._socket;
    if (request === undefined || frames === undefined || socket === undefined || socket === null || this.#buffersStarted || this.#closed) return;
    this.#buffersStarted = true;
    const consume = (chunk: Buffer): number => {
      const before = this.#delivered;
      try {
        frames.push(chunk);
        this.#onRawRead?.(chunk.length);
      } catch (err) {
        this.fault(err);
      }
      return this.#delivered - before;
    };
    readIntoBuffers(socket, request.pool, request.pending, consume, this.kind === 'wss' ? TLS_READ_BYTES : request.pool.largeBytes);
  }

  /** Reads the data frames itself once streamFrames took over (undefined until then). */
  #frames: WsDataFrames | undefined;

  /**
   * From now on this link reads its data frames itself (protocol/ws-data-frames.ts): each socket read's
   * payload bytes are unmasked in place and delivered at once, where `ws` would wait for a frame's whole
   * payload (up to `maxMessageBytes`, several reads), copy it into one buffer and deliver it then. A
   * relayed WebSocket then costs what a relayed TCP stream costs, and its reads are as fine-grained for the
   * read turns (read-turns.ts) as a TCP stream's (64 WS tunnels: docs/benchmarks.md).
   *
   * `ws` keeps the connection: control frames are handed to its receiver whole (it answers pings and runs
   * the close handshake), and a violation is handed to it as a frame it refuses with the same code, so it
   * closes the link exactly as it closes one whose frames it read itself. The switch happens when `ws`'s
   * receiver is between frames or inside a data frame's payload (its state is taken over: what it buffered
   * is read again here, earlier fragments of the message are delivered first); in the middle of a frame
   * header it is retried after the next read. Where `ws`'s internals are not as expected (another `ws`
   * version), nothing changes: `ws` goes on delivering whole messages.
   */
  streamFrames(maxMessageBytes: number): void {
    if (this.#frames !== undefined || this.#streamRetry !== undefined || this.#closed) return;
    const socket = (this.ws as unknown as { _socket?: Socket | null })._socket;
    if (socket === undefined || socket === null) return;
    if (this.#takeOver(socket, maxMessageBytes)) return;
    const retry = (): void => {
      if (this.#closed || this.#takeOver(socket, maxMessageBytes)) {
        socket.removeListener('data', retry);
        this.#streamRetry = undefined;
      }
    };
    this.#streamRetry = retry;
    socket.on('data', retry);
  }
  #streamRetry: (() => void) | undefined;

  /** Takes the data frames over from `ws`'s receiver when its state allows (see streamFrames). */
  #takeOver(socket: Socket, maxMessageBytes: number): boolean {
    const rx = (this.ws as unknown as { _receiver?: WsReceiverInternals })._receiver;
    const wsOnData = socket.listeners('data').find((f) => f.name === 'socketOnData') as ((chunk: Buffer) => void) | undefined;
    if (rx === undefined || wsOnData === undefined || this.ws.readyState !== this.ws.OPEN) return true; // not ours to take: leave it
    if (!Array.isArray(rx._buffers) || !Array.isArray(rx._fragments) || rx._compressed !== false || rx._loop !== false || rx._opcode === 0x08) return true;
    // 0: GET_INFO (between frames, or fewer than 2 header bytes in), 4: GET_DATA (header read, payload not consumed).
    if (rx._state !== 0 && rx._state !== 4) return false;
    const frames = new WsDataFrames(maxMessageBytes, this.#frameSink(rx), UNMASK);
    const fragmentedOpcode = rx._fragmented;
    frames.adopt({
      fragmentedOpcode,
      messageBytes: rx._totalPayloadLength,
      ...(rx._state === 4 && rx._mask !== undefined ? { frame: { opcode: rx._opcode, fin: rx._fin, payloadBytes: rx._payloadLength, mask: rx._mask } } : {}),
    });
    const earlier = rx._fragments;
    const buffered = rx._buffers;
    // `ws`'s receiver starts over between frames: from now on it only sees control frames.
    rx._buffers = [];
    rx._bufferedBytes = 0;
    rx._state = 0;
    rx._fragmented = 0;
    rx._fragments = [];
    rx._totalPayloadLength = 0;
    rx._messageLength = 0;
    rx._numFragments = 0;
    rx._payloadLength = 0;
    rx._opcode = 0;
    socket.removeListener('data', wsOnData);
    this.#frames = frames;
    socket.on('data', (chunk: Buffer) => {
      try {
        frames.push(chunk);
      } catch (err) {
        this.fault(err);
      }
    });
    const binary = fragmentedOpcode === 2;
    for (const piece of earlier) this.#deliver(piece, binary);
    for (const chunk of buffered) frames.push(chunk);
    this.#startBuffers();
    return true;
  }

  #frameSink(rx: WsReceiverInternals): ConstructorParameters<typeof WsDataFrames>[1] {
    return {
      data: (piece, binary) => this.#deliver(piece, binary),
      control: (frame) => {
        rx.write(frame);
        if ((frame[0]! & 0x0f) === 0x08) this.#peerEnded();
      },
      // `ws` refuses a frame of the same kind with the same code and runs its own failure path (close
      // frame, then the socket ends), as if it had read the violation itself.
      fail: (code) => {
        rx.write(code === 1009 ? REFUSED_1009 : REFUSED_1002);
        this.#peerEnded();
      },
    };
  }

  /**
   * The peer's close frame (or a violation) ends its sending: the owner hears `end` at once, after every
   * data byte before it. `ws` only reports `close` once the peer has also closed its TCP side, up to 30 s
   * later (its close timeout), and a peer that never does would hold its tunnel partner open that long.
   */
  #peerEnded(): void {
    if (this.#endSent || this.#closed) return;
    this.#endSent = true;
    dispatch(this.h, () => this.h.end());
  }
  #endSent = false;

  #deliver(piece: Buffer, binary: boolean): void {
    if (piece.length === 0) return;
    if (binary) this.#peerTextOnly = false;
    this.#delivered += piece.length;
    try {
      this.h.data(piece, binary);
    } catch (err) {
      this.fault(err);
    }
  }

  pause(): void {
    this.ws.pause();
  }
  resume(): void {
    this.ws.resume();
  }

  finish(close: { code: number; reason: string } = { code: 1000, reason: '' }, lingerMs = this.closeFlushMs): void {
    if (this.#finishing || this.#closed) return;
    this.#finishing = true;
    if (this.#carry !== undefined && this.ws.readyState === this.ws.OPEN) this.ws.send(this.#carry, { binary: true });
    this.#carry = undefined;
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(close.code, close.reason);
    this.#flushTimer = setTimeout(() => this.ws.terminate(), lingerMs);
    this.#flushTimer.unref();
  }

  destroy(): void {
    this.ws.terminate();
  }

  detachForMove(): SocketHandle | undefined {
    if (this.kind !== 'ws' || this.#finishing || this.#closed || this.#frames !== undefined || this.#streamRetry !== undefined) return undefined;
    const ws = this.ws as unknown as { _receiver?: Partial<WsReceiverInternals> & { _fragments?: unknown[] }; _socket?: Socket | null; _extensions?: object };
    const r = ws._receiver;
    const socket = ws._socket;
    // Between messages only: nothing of a frame held, nothing queued to send, no extension state.
    if (r === undefined || socket === undefined || socket === null || r._bufferedBytes !== 0 || r._state !== 0 || r._fragmented !== 0 || (r._fragments?.length ?? 0) !== 0) return undefined;
    if (this.ws.bufferedAmount !== 0 || this.#carry !== undefined || Object.keys(ws._extensions ?? {}).length !== 0) return undefined;
    return detachHandle(socket);
  }
}

/** The parts of `ws`'s (8.x) Receiver that WsLink.streamFrames reads and resets. */
interface WsReceiverInternals {
  _buffers: Buffer[];
  _bufferedBytes: number;
  _state: number;
  _loop?: boolean;
  _compressed?: boolean;
  _fragmented: number;
  _fragments: Buffer[];
  _totalPayloadLength: number;
  _messageLength: number;
  _numFragments: number;
  _payloadLength: number;
  _opcode: number;
  _fin: boolean;
  _mask: Buffer | undefined;
  write(chunk: Buffer): boolean;
}

/**
 * How long the start of a UTF-8 sequence cut at a chunk's end waits for its end before it is sent alone
 * (WsLink.sendData). A text sender's next bytes follow within a read or two, or a TCP retransmission
 * (at least 200 ms on Linux) when a segment was lost: a stock client would not read a binary frame in
 * the middle of its text. Only bytes that are not UTF-8 at all wait this long.
 */
const UTF8_CARRY_WAIT_MS = 500;

/** A masked binary frame announcing a payload of 2^64 - 1 bytes: `ws` refuses it with 1009. */
const REFUSED_1009 = Buffer.from([0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
/** A frame with RSV2 set: `ws` refuses it with 1002. */
const REFUSED_1002 = Buffer.from([0xa2, 0x80, 0, 0, 0, 0]);

/** `bufferutil`'s unmask (the native XOR `ws` uses) where it is installed, else the JavaScript loop. */
const UNMASK: Unmask = (() => {
  try {
    const bu = createRequire(import.meta.url)('bufferutil') as { unmask?: unknown };
    return typeof bu.unmask === 'function' ? (bu.unmask as Unmask) : unmaskJs;
  } catch {
    return unmaskJs;
  }
})();

/** Length of a trailing UTF-8 sequence that is cut off (0 when the buffer ends on a boundary). */
export function incompleteUtf8Tail(buf: Buffer): number {
  const n = buf.length;
  for (let back = 1; back <= Math.min(3, n); back++) {
    const b = buf[n - back]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}
