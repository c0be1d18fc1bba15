/**
 * ISO 7816-4 command APDU checks and hex helpers (pure).
 *
 * Hex only, even length, whitespace already removed, the size capped before decoding. Cases: 4 bytes =
 * case 1; 5 = case 2 short; short Lc + data (+ Le); extended (byte 5 = 00) 2E / 3E / 4E; anything else is
 * malformed. A short command is at most 261 bytes, an extended one 65544.
 */
import { GatewayError } from '../../core/errors.ts';

export const MAX_SHORT_APDU_BYTES = 261;
export const MAX_EXTENDED_APDU_BYTES = 65544;
export const MIN_APDU_BYTES = 4;

export type ApduCase = '1' | '2S' | '3S' | '4S' | '2E' | '3E' | '4E';

const HEX = /^[0-9a-fA-F]*$/;

/** Upper-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex').toUpperCase();
}

/**
 * Decodes hex (no whitespace) of at most `maxBytes` bytes.
 * @throws GatewayError `code` when not even-length hex or too long.
 */
export function fromHex(hex: string, maxBytes: number, code: 'CARD_BAD_APDU' | 'CARD_BAD_SIGN_DATA' = 'CARD_BAD_APDU'): Buffer {
  if (hex.length > maxBytes * 2) throw new GatewayError(code, `hex data over ${maxBytes} bytes`);
  if (hex.length % 2 !== 0 || !HEX.test(hex)) throw new GatewayError(code, 'data is not even-length hex');
  return Buffer.from(hex, 'hex');
}

/** Classifies a command APDU. @throws GatewayError CARD_BAD_APDU for any malformed length structure. */
export function apduCase(apdu: Uint8Array): ApduCase {
  const n = apdu.length;
  if (n < MIN_APDU_BYTES) throw new GatewayError('CARD_BAD_APDU', `APDU of ${n} bytes (minimum 4)`);
  if (n > MAX_EXTENDED_APDU_BYTES) throw new GatewayError('CARD_BAD_APDU', `APDU of ${n} bytes (maximum ${MAX_EXTENDED_APDU_BYTES})`);
  if (n === 4) return '1';
  if (n === 5) return '2S';
  const b4 = apdu[4]!;
  if (b4 !== 0) {
    if (n === 5 + b4) return '3S';
    if (n === 6 + b4) return '4S';
    throw new GatewayError('CARD_BAD_APDU', `APDU length ${n} does not match Lc ${b4}`);
  }
  if (n === 7) return '2E';
  const lc = (apdu[5]! << 8) | apdu[6]!;
  if (lc === 0) throw new GatewayError('CARD_BAD_APDU', 'extended APDU with Lc 0');
  if (n === 7 + lc) return '3E';
  if (n === 9 + lc) return '4E';
  throw new GatewayError('CARD_BAD_APDU', `extended APDU length ${n} does not match Lc ${lc}`);
}

/**
 * Parses and validates a command APDU given as hex.
 * @throws GatewayError CARD_BAD_APDU (bad hex, under 4 bytes, over the limits, malformed).
 */
export function parseApdu(hex: string): Buffer {
  const apdu = fromHex(hex, MAX_EXTENDED_APDU_BYTES);
  const c = apduCase(apdu);
  if ((c === '1' || c.endsWith('S')) && apdu.length > MAX_SHORT_APDU_BYTES) throw new GatewayError('CARD_BAD_APDU', 'short APDU over 261 bytes');
  return apdu;
}

/** The status word (last two bytes) of a response APDU, or -1 when shorter than 2 bytes. */
export function statusWord(resp: Uint8Array): number {
  if (resp.length < 2) return -1;
  return (resp[resp.length - 2]! << 8) | resp[resp.length - 1]!;
}

/** Builds a short command APDU `CLA INS P1 P2 [Lc data] [Le]`. */
export function buildApdu(cla: number, ins: number, p1: number, p2: number, data?: Uint8Array, le?: number): Buffer {
  const parts: number[] = [cla, ins, p1, p2];
  if (data !== undefined && data.length > 0) parts.push(data.length, ...data);
  if (le !== undefined) parts.push(le & 0xff);
  return Buffer.from(parts);
}
