/**
 * SLIP framing of nymea's tunnel-proxy server connection (pure: bytes in, frames out; no sockets).
 *
 * Wire format (RFC 1055 bytes, nymea's frame layout):
 *   END 0xC0 ends a frame; ESC 0xDB starts an escape: ESC ESC_END (0xDB 0xDC) is a literal 0xC0, ESC ESC_ESC
 *   (0xDB 0xDD) a literal 0xDB. A frame, once unescaped, is `[addr_hi][addr_lo][payload…]`: a 16-bit socket
 *   address (0x0000 the JSON-RPC channel, 0xFFFF reserved) and the payload. Empty frames (leading or
 *   repeated ENDs) are ignored.
 *
 * `encodeFrame` builds one escaped frame with its END. `SlipDecoder` is incremental: it takes chunks as they
 * arrive and reports payload pieces through a sink, without buffering a frame (a large frame costs no
 * memory beyond the chunk that carries it; runs without escapes are passed on as views of the chunk, not
 * copies). The address is read after unescaping (nymea reads it before, so 0x00C0 and 0x00DB break there).
 * A frame with an ESC followed by anything but ESC_END/ESC_ESC, or that ends before its two address bytes,
 * is malformed: the sink hears `invalid` once and the rest of that frame is skipped. Nothing here throws on
 * any input. `decodeFrames` is the same decoder over a whole buffer, collecting frames (tests, tools).
 */

export const SLIP_END = 0xc0;
export const SLIP_ESC = 0xdb;
export const SLIP_ESC_END = 0xdc;
export const SLIP_ESC_ESC = 0xdd;

/** The JSON-RPC channel of a server connection. */
export const CONTROL_ADDRESS = 0x0000;
/** Never given to a client (nymea uses it for "no address"). */
export const RESERVED_ADDRESS = 0xffff;

/** One escaped frame `[addr][payload]` followed by END. */
export function encodeFrame(address: number, payload: Uint8Array): Buffer {
  const hi = (address >>> 8) & 0xff;
  const lo = address & 0xff;
  let specials = 0;
  // Two scans with memchr are faster than one byte loop for payloads that rarely need escaping.
  for (let i = payload.indexOf(SLIP_END); i >= 0; i = payload.indexOf(SLIP_END, i + 1)) specials++;
  for (let i = payload.indexOf(SLIP_ESC); i >= 0; i = payload.indexOf(SLIP_ESC, i + 1)) specials++;
  const addrExtra = (hi === SLIP_END || hi === SLIP_ESC ? 1 : 0) + (lo === SLIP_END || lo === SLIP_ESC ? 1 : 0);
  const out = Buffer.allocUnsafe(2 + addrExtra + payload.length + specials + 1);
  let o = putByte(out, 0, hi);
  o = putByte(out, o, lo);
  if (specials === 0) {
    out.set(payload, o);
    o += payload.length;
  } else {
    for (let i = 0; i < payload.length; i++) o = putByte(out, o, payload[i]!);
  }
  out[o++] = SLIP_END;
  return o === out.length ? out : out.subarray(0, o);
}

function putByte(out: Buffer, o: number, b: number): number {
  if (b === SLIP_END) {
    out[o] = SLIP_ESC;
    out[o + 1] = SLIP_ESC_END;
    return o + 2;
  }
  if (b === SLIP_ESC) {
    out[o] = SLIP_ESC;
    out[o + 1] = SLIP_ESC_ESC;
    return o + 2;
  }
  out[o] = b;
  return o + 1;
}

/** Receives what a `SlipDecoder` finds, in stream order. */
export interface SlipSink {
  /** Payload bytes of the current frame (after its address); called any number of times per frame. */
  payload(address: number, bytes: Buffer): void;
  /** The current frame for `address` ended (END seen); every frame whose address was read ends here or in `invalid`. */
  end(address: number): void;
  /**
   * The current frame is malformed; its remaining bytes up to the next END are skipped. `address` is
   * undefined when the frame broke (or ended) before its two address bytes.
   */
  invalid(address: number | undefined, reason: 'bad-escape' | 'short-frame'): void;
}

const enum State {
  /** Between frames, or reading the address. */
  Address,
  Payload,
  /** Skipping a malformed frame until END. */
  Skip,
}

/** Incremental SLIP decoder; see the file header. */
export class SlipDecoder {
  #state = State.Address;
  /** Address bytes read so far (0, 1) and their value. */
  #addrBytes = 0;
  #addr = 0;
  /** The previous chunk ended in ESC. */
  #escaped = false;

  /** Decodes `chunk`, reporting to `sink`. Never throws (unless the sink does). */
  push(chunk: Uint8Array, sink: SlipSink): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const n = buf.length;
    let i = 0;
    while (i < n) {
      if (this.#state === State.Skip) {
        const end = buf.indexOf(SLIP_END, i);
        if (end < 0) return;
        this.#reset();
        i = end + 1;
        continue;
      }
      if (this.#state === State.Address) {
        let b = buf[i++]!;
        if (this.#escaped) {
          this.#escaped = false;
          if (b === SLIP_ESC_END) b = SLIP_END;
          else if (b === SLIP_ESC_ESC) b = SLIP_ESC;
          else {
            this.#invalid(sink, undefined, 'bad-escape', b === SLIP_END);
            continue;
          }
        } else if (b === SLIP_END) {
          if (this.#addrBytes === 1) sink.invalid(undefined, 'short-frame');
          this.#reset();
          continue;
        } else if (b === SLIP_ESC) {
          this.#escaped = true;
          continue;
        }
        this.#addr = (this.#addr << 8) | b;
        if (++this.#addrBytes === 2) this.#state = State.Payload;
        continue;
      }
      // Payload: a pending escape from the previous chunk first.
      if (this.#escaped) {
        this.#escaped = false;
        const b = buf[i++]!;
        if (b === SLIP_ESC_END) sink.payload(this.#addr, Buffer.from([SLIP_END]));
        else if (b === SLIP_ESC_ESC) sink.payload(this.#addr, Buffer.from([SLIP_ESC]));
        else this.#invalid(sink, this.#addr, 'bad-escape', b === SLIP_END);
        continue;
      }
      const end = buf.indexOf(SLIP_END, i);
      const segEnd = end < 0 ? n : end;
      const esc = buf.indexOf(SLIP_ESC, i);
      if (esc < 0 || esc >= segEnd) {
        // The common case: no escape up to the end of the frame or chunk, pass a view of the chunk.
        if (segEnd > i) sink.payload(this.#addr, buf.subarray(i, segEnd));
      } else {
        const out = Buffer.allocUnsafe(segEnd - i);
        let o = 0;
        let j = i;
        let bad = false;
        while (j < segEnd) {
          const b = buf[j++]!;
          if (b !== SLIP_ESC) {
            out[o++] = b;
            continue;
          }
          if (j === n) {
            // ESC is the chunk's last byte: its partner arrives with the next chunk.
            this.#escaped = true;
            break;
          }
          const e = buf[j++]!;
          if (e === SLIP_ESC_END) out[o++] = SLIP_END;
          else if (e === SLIP_ESC_ESC) out[o++] = SLIP_ESC;
          else {
            if (o > 0) sink.payload(this.#addr, out.subarray(0, o));
            bad = true;
            // ESC directly before END: that END closes the broken frame; otherwise skip to the next END.
            this.#invalid(sink, this.#addr, 'bad-escape', e === SLIP_END);
            break;
          }
        }
        if (bad) {
          i = j;
          continue;
        }
        if (o > 0) sink.payload(this.#addr, out.subarray(0, o));
      }
      if (end < 0) return;
      const addr = this.#addr;
      this.#reset();
      sink.end(addr);
      i = end + 1;
    }
  }

  /** Reports a malformed frame; `atEnd` when the offending byte was the frame's END itself. */
  #invalid(sink: SlipSink, address: number | undefined, reason: 'bad-escape', atEnd: boolean): void {
    sink.invalid(address, reason);
    if (atEnd) this.#reset();
    else this.#state = State.Skip;
  }

  #reset(): void {
    this.#state = State.Address;
    this.#addrBytes = 0;
    this.#addr = 0;
    this.#escaped = false;
  }
}

export interface DecodedFrame {
  readonly address: number;
  readonly payload: Buffer;
}

/** Decodes a whole buffer: complete frames in order, and how many malformed ones were skipped. */
export function decodeFrames(bytes: Uint8Array, decoder = new SlipDecoder()): { frames: DecodedFrame[]; invalid: number } {
  const frames: DecodedFrame[] = [];
  let parts: Buffer[] = [];
  let invalid = 0;
  decoder.push(bytes, {
    payload: (_a, b) => parts.push(Buffer.from(b)),
    end: (address) => {
      frames.push({ address, payload: Buffer.concat(parts) });
      parts = [];
    },
    invalid: () => {
      invalid++;
      parts = [];
    },
  });
  return { frames, invalid };
}
