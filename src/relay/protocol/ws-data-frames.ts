/**
 * A client's WebSocket frames inside a tunnel, read as they arrive (pure: bytes in, payload pieces out; no
 * sockets). What `ws` does not do: it waits for a frame's whole payload (up to `tunnelBufferBytes`, several
 * socket reads), copies it into one buffer and only then unmasks and delivers it. Here each pushed chunk's
 * payload bytes are unmasked in place and handed on at once, so a relayed WebSocket costs what a TCP
 * stream costs (one piece per socket read, no reassembly copy, no buffer kept from one read to the next).
 * A tunnel relays bytes, not messages (docs/protocols.md), so a message may leave as several pieces.
 *
 * Wire format (RFC 6455 §5.2): byte 0 FIN(0x80) RSV1-3(0x70) opcode(0x0f); byte 1 MASK(0x80) and a 7-bit
 * length (126: a 16-bit length follows, 127: a 64-bit one); then the 4-byte mask (client frames are
 * always masked); then the payload, byte i XORed with mask[i % 4]. Opcodes: 0 continuation, 1 text,
 * 2 binary, 8 close, 9 ping, 10 pong.
 *
 * Checks, as `ws` makes them on a server without extensions: RSV bits clear, a known opcode, MASK set, a
 * continuation only inside a fragmented message and a new message only outside one, control frames with
 * FIN and at most 125 bytes (a close frame not 1 byte), a 64-bit length below 2^53 (1009), and a message
 * (the sum of its frames) of at most `maxMessageBytes` (1009, checked on each frame's header, so no byte of
 * an oversized frame is delivered; earlier frames of a fragmented message were). A violation is reported
 * once through `fail` (1002 or 1009) and everything after it is ignored, as is everything after a close
 * frame. Control frames are not interpreted: each is handed over whole, as received (still masked), for
 * the WebSocket implementation to answer (pong, close handshake). Nothing here throws on any input.
 */

/** Where a data stream's pieces, control frames and its one failure go. */
export interface WsFrameSink {
  /** Unmasked payload bytes of a data message (a view of the pushed chunk); `binary`: the message's opcode is 2. */
  data(piece: Buffer, binary: boolean): void;
  /** One whole control frame (close, ping or pong), header and masked payload, exactly as received. */
  control(frame: Buffer): void;
  /** A protocol violation (1002) or a message or frame over the limit (1009). Reported once; nothing follows. */
  fail(code: 1002 | 1009, reason: string): void;
}

/** XORs `buf` in place with `mask` (4 bytes) starting at mask byte 0. */
export type Unmask = (buf: Buffer, mask: Buffer) => void;

export function unmaskJs(buf: Buffer, mask: Buffer): void {
  for (let i = 0; i < buf.length; i++) buf[i]! ^= mask[i & 3]!;
}

/** State of a message a previous reader had begun (see `adopt`). */
export interface WsMessageState {
  /** Opcode (1 or 2) of a fragmented message in progress; 0 when between messages. */
  fragmentedOpcode: number;
  /** Payload bytes of the current message counted so far (against the limit), the current frame's included. */
  messageBytes: number;
  /** A data frame whose header was read and whose payload has not started. */
  frame?: { opcode: number; fin: boolean; payloadBytes: number; mask: Buffer };
}

const MAX_HEADER = 14;
const TWO_POW_32 = 2 ** 32;

export class WsDataFrames {
  readonly #head = Buffer.alloc(MAX_HEADER);
  #headLen = 0;
  /** Payload bytes left in the current data frame (0 while reading a header). */
  #remaining = 0;
  readonly #mask = Buffer.alloc(4);
  /** Mask rotated to the current payload position. */
  readonly #rotated = Buffer.alloc(4);
  #maskPos = 0;
  #fin = false;
  #binary = false;
  /** Opcode of an unfinished fragmented message, 0 between messages. */
  #fragmented = 0;
  #messageBytes = 0;
  /** A control frame being gathered (header + payload), and how many of its bytes are in. */
  #control: Buffer | undefined;
  #controlLen = 0;
  /** Failed or past a close frame: input is ignored. */
  #done = false;

  /**
   * @param maxMessageBytes The largest message (sum of its frames' payloads) accepted.
   * @param unmask The XOR routine (`bufferutil`'s where available; `unmaskJs` otherwise).
   */
  constructor(
    readonly maxMessageBytes: number,
    private readonly sink: WsFrameSink,
    private readonly unmask: Unmask = unmaskJs,
  ) {}

  /** True once a failure was reported or a close frame passed: nothing more will be reported. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Continues a message another reader had begun (its earlier payload is that reader's to deliver), before
   * the first `push`.
   */
  adopt(state: WsMessageState): void {
    this.#fragmented = state.fragmentedOpcode;
    this.#messageBytes = state.messageBytes;
    const f = state.frame;
    if (f === undefined) return;
    this.#fin = f.fin;
    this.#binary = f.opcode === 2;
    this.#remaining = f.payloadBytes;
    this.#mask.set(f.mask.subarray(0, 4));
    this.#maskPos = 0;
    if (!f.fin) this.#fragmented = f.opcode;
    if (f.payloadBytes === 0) this.#frameDone();
  }

  /** Reads `chunk` (its payload bytes are unmasked in place). */
  push(chunk: Buffer): void {
    let i = 0;
    const n = chunk.length;
    while (i < n && !this.#done) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, n - i);
        const piece = chunk.subarray(i, i + take);
        i += take;
        this.#unmaskPiece(piece);
        this.#remaining -= take;
        const last = this.#remaining === 0;
        // State first: the sink may throw (a bug of its own), and the stream must stay consistent.
        const binary = this.#binary;
        if (last) this.#frameDone();
        this.sink.data(piece, binary);
      } else if (this.#control !== undefined) {
        const take = Math.min(this.#control.length - this.#controlLen, n - i);
        chunk.copy(this.#control, this.#controlLen, i, i + take);
        this.#controlLen += take;
        i += take;
        if (this.#controlLen === this.#control.length) {
          const frame = this.#control;
          this.#control = undefined;
          if ((frame[0]! & 0x0f) === 0x08) this.#done = true;
          this.sink.control(frame);
        }
      } else {
        i = this.#readHeader(chunk, i);
      }
    }
  }

  #unmaskPiece(piece: Buffer): void {
    const p = this.#maskPos;
    const m = this.#mask;
    let mask = m;
    if (p !== 0) {
      const r = this.#rotated;
      r[0] = m[p & 3]!;
      r[1] = m[(p + 1) & 3]!;
      r[2] = m[(p + 2) & 3]!;
      r[3] = m[(p + 3) & 3]!;
      mask = r;
    }
    if (piece.length < 32) unmaskJs(piece, mask);
    else this.unmask(piece, mask);
    this.#maskPos = (p + piece.length) & 3;
  }

  #frameDone(): void {
    if (this.#fin) {
      this.#fragmented = 0;
      this.#messageBytes = 0;
    }
  }

  /** Gathers header bytes from `chunk` at `i`; returns where the header's reading stopped. */
  #readHeader(chunk: Buffer, i: number): number {
    const head = this.#head;
    // The first two bytes are checked as soon as they are in (as `ws` does).
    while (this.#headLen < 2 && i < chunk.length) head[this.#headLen++] = chunk[i++]!;
    if (this.#headLen < 2) return i;
    const b0 = head[0]!;
    const b1 = head[1]!;
    const len7 = b1 & 0x7f;
    const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + 4;
    if (this.#headLen === 2) {
      const violation = this.#violation(b0, b1);
      if (violation !== undefined) return this.#fail(1002, violation);
    }
    while (this.#headLen < need && i < chunk.length) head[this.#headLen++] = chunk[i++]!;
    if (this.#headLen < need) return i;
    this.#headLen = 0;
    let payload = len7;
    if (len7 === 126) payload = head.readUInt16BE(2);
    else if (len7 === 127) {
      const hi = head.readUInt32BE(2);
      if (hi > 2 ** 21 - 1) return this.#fail(1009, 'Unsupported WebSocket frame: payload length > 2^53 - 1');
      payload = hi * TWO_POW_32 + head.readUInt32BE(6);
    }
    const opcode = b0 & 0x0f;
    if (opcode >= 0x08) {
      // A control frame (at most 2 + 4 + 125 bytes): handed over whole.
      this.#control = Buffer.allocUnsafe(need + payload);
      head.copy(this.#control, 0, 0, need);
      this.#controlLen = need;
      if (payload === 0) {
        const frame = this.#control;
        this.#control = undefined;
        if (opcode === 0x08) this.#done = true;
        this.sink.control(frame);
      }
      return i;
    }
    this.#messageBytes += payload;
    if (this.#messageBytes > this.maxMessageBytes) return this.#fail(1009, 'Max payload size exceeded');
    this.#fin = (b0 & 0x80) !== 0;
    const msgOpcode = opcode === 0 ? this.#fragmented : opcode;
    this.#binary = msgOpcode === 2;
    if (!this.#fin) this.#fragmented = msgOpcode;
    head.copy(this.#mask, 0, need - 4, need);
    this.#maskPos = 0;
    this.#remaining = payload;
    if (payload === 0) this.#frameDone();
    return i;
  }

  /** The checks of a frame's first two bytes: the violation's reason, or undefined. */
  #violation(b0: number, b1: number): string | undefined {
    const opcode = b0 & 0x0f;
    const len7 = b1 & 0x7f;
    if ((b0 & 0x30) !== 0) return 'RSV2 and RSV3 must be clear';
    if ((b0 & 0x40) !== 0) return 'RSV1 must be clear';
    if (opcode === 0x00) {
      if (this.#fragmented === 0) return 'invalid opcode 0';
    } else if (opcode === 0x01 || opcode === 0x02) {
      if (this.#fragmented !== 0) return `invalid opcode ${opcode}`;
    } else if (opcode >= 0x08 && opcode <= 0x0a) {
      if ((b0 & 0x80) === 0) return 'FIN must be set';
      if (len7 > 125 || (opcode === 0x08 && len7 === 1)) return `invalid payload length ${len7}`;
    } else {
      return `invalid opcode ${opcode}`;
    }
    if ((b1 & 0x80) === 0) return 'MASK must be set';
    return undefined;
  }

  /** Reports the failure once; returns an index past any input (the caller stops reading). */
  #fail(code: 1002 | 1009, reason: string): number {
    this.#done = true;
    this.sink.fail(code, reason);
    return Number.MAX_SAFE_INTEGER;
  }
}
