/**
 * vpcd's card-side wire format (pure): every message, both directions, is a 2-byte big-endian length and
 * that many bytes. From vpcd, a 1-byte payload is a control code (00 power off, 01 power on, 02 reset,
 * 04 get ATR); anything else is a command APDU. The card answers get-ATR with its ATR and an APDU with the
 * response APDU; power and reset codes get no answer. Messages are at most 65535 bytes by construction.
 */

export const VPCD_POWER_OFF = 0x00;
export const VPCD_POWER_ON = 0x01;
export const VPCD_RESET = 0x02;
export const VPCD_GET_ATR = 0x04;

export type VpcdMessage = { readonly kind: 'control'; readonly code: number } | { readonly kind: 'apdu'; readonly apdu: Buffer };

/** Incremental decoder: push bytes, get whole messages (never more than one partial message buffered). */
export class VpcdDecoder {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): VpcdMessage[] {
    this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk]);
    const out: VpcdMessage[] = [];
    while (this.#buf.length >= 2) {
      const len = this.#buf.readUInt16BE(0);
      if (this.#buf.length < 2 + len) break;
      const body = Buffer.from(this.#buf.subarray(2, 2 + len));
      this.#buf = this.#buf.subarray(2 + len);
      out.push(len === 1 ? { kind: 'control', code: body[0]! } : { kind: 'apdu', apdu: body });
    }
    return out;
  }
}

/** Frames one message. @throws RangeError over 65535 bytes. */
export function vpcdFrame(payload: Uint8Array): Buffer {
  if (payload.length > 0xffff) throw new RangeError('vpcd message over 65535 bytes');
  const head = Buffer.alloc(2);
  head.writeUInt16BE(payload.length, 0);
  return Buffer.concat([head, payload]);
}
