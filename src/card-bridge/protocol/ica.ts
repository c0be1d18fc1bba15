/**
 * The I.CA eIDAS card dialogue behind ALIASES / CHAIN / SIGN (pure: runs over a `transmit` callback, no I/O
 * of its own). Both the bridge (as the client) and the simulator (as the card) follow this file's layout.
 *
 * Certificates (our reading of the reference card's layout, see docs/card-bridge.md):
 *   SELECT MF `00A4000C023F00` → SELECT DF `00A4010C023F50` → SELECT EF `00A4020C023F10` (the directory:
 *   linear records, READ RECORD `00B2 nn 04 00`, each `FID(2) KIND(1)`, KIND 01 = end-user signing
 *   certificate, 02 = CA certificate; `6A83` ends the list) → per entry SELECT EF `00A4020C02 FID` and
 *   READ BINARY `00B0 off Le` in chunks until the DER length is read. End-user certificates live in 5630.
 * SIGN: reset; `00A4000C023F00`; `00A4010C020604`; with a PIN `00200086 Lc PIN` and on 9000
 *   `00200081 Lc PIN` (63Cx = wrong PIN); `002241AA04890214{10|30}`; `002241B60A840380{kid}0089031323{10|30}`
 *   (unknown kid: try 15 down to 0); `002A90A0{len+2}90{len}{hash}`; `002A9E9A00` → signature + 9000.
 */
import { GatewayError } from '../../core/errors.ts';
import { derTotalLength } from './der.ts';
import { statusWord, toHex } from './apdu.ts';

export type Transmit = (apdu: Buffer) => Promise<Buffer>;

export const SW_OK = 0x9000;
export const SELECT_MF = Buffer.from('00A4000C023F00', 'hex');
export const SELECT_CERT_DF = Buffer.from('00A4010C023F50', 'hex');
export const SELECT_CERT_DIR = Buffer.from('00A4020C023F10', 'hex');
export const SELECT_SIGN_DF = Buffer.from('00A4010C020604', 'hex');
export const CERT_KIND_END_USER = 0x01;
export const CERT_KIND_CA = 0x02;
export const READ_CHUNK = 0xe0;
/** Largest certificate file we read (bounds the READ BINARY loop). */
export const MAX_CERT_BYTES = 16384;
const MAX_RECORDS = 32;

export interface CardCertificates {
  readonly endUser: Buffer | undefined;
  readonly cas: readonly Buffer[];
}

function sw(resp: Buffer): number {
  return statusWord(resp);
}

function data(resp: Buffer): Buffer {
  return resp.subarray(0, Math.max(0, resp.length - 2));
}

/** Sends an APDU and follows 61xx with GET RESPONSE (the dialogue needs whole answers whatever the reader does). */
async function send(tx: Transmit, apdu: Buffer): Promise<Buffer> {
  let resp = await tx(apdu);
  const parts: Buffer[] = [];
  for (let i = 0; i < 64 && (sw(resp) >> 8) === 0x61; i++) {
    parts.push(data(resp));
    resp = await tx(Buffer.from([apdu[0]! & 0x03, 0xc0, 0, 0, sw(resp) & 0xff]));
  }
  return parts.length === 0 ? resp : Buffer.concat([...parts, resp]);
}

async function readFile(tx: Transmit): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let got = 0;
  let total: number | undefined;
  while (total === undefined || got < total) {
    const le = total === undefined ? READ_CHUNK : Math.min(READ_CHUNK, total - got);
    const resp = await send(tx, Buffer.from([0x00, 0xb0, (got >> 8) & 0x7f, got & 0xff, le]));
    if (sw(resp) !== SW_OK && sw(resp) !== 0x6282) return got > 0 ? Buffer.concat(chunks) : undefined;
    const d = data(resp);
    if (d.length === 0) break;
    chunks.push(d);
    got += d.length;
    if (total === undefined) {
      total = derTotalLength(Buffer.concat(chunks));
      if (total === undefined || total > MAX_CERT_BYTES) return undefined;
    }
    if (sw(resp) === 0x6282) break;
  }
  const all = Buffer.concat(chunks);
  return total === undefined ? all : all.subarray(0, total);
}

/** Reads the certificates of an I.CA-like card; a card without the layout has none (no error). */
export async function readCertificates(tx: Transmit): Promise<CardCertificates> {
  const none: CardCertificates = { endUser: undefined, cas: [] };
  if (sw(await send(tx, SELECT_MF)) !== SW_OK) return none;
  if (sw(await send(tx, SELECT_CERT_DF)) !== SW_OK) return none;
  if (sw(await send(tx, SELECT_CERT_DIR)) !== SW_OK) return none;
  const entries: { fid: Buffer; kind: number }[] = [];
  for (let n = 1; n <= MAX_RECORDS; n++) {
    const resp = await send(tx, Buffer.from([0x00, 0xb2, n, 0x04, 0x00]));
    if (sw(resp) !== SW_OK) break;
    const d = data(resp);
    if (d.length >= 3) entries.push({ fid: Buffer.from(d.subarray(0, 2)), kind: d[2]! });
  }
  let endUser: Buffer | undefined;
  const cas: Buffer[] = [];
  for (const e of entries) {
    if (sw(await send(tx, Buffer.concat([Buffer.from('00A4020C02', 'hex'), e.fid]))) !== SW_OK) continue;
    const der = await readFile(tx);
    if (der === undefined) continue;
    if (e.kind === CERT_KIND_END_USER && endUser === undefined) endUser = der;
    else if (e.kind === CERT_KIND_CA) cas.push(der);
  }
  return { endUser, cas };
}

export type SignOutcome =
  | { readonly ok: true; readonly signature: Buffer; readonly kid: number }
  /** A step failed with this SW; SIGN answers it as is. */
  | { readonly ok: false; readonly sw: string };

export interface SignOptions {
  readonly hash: Buffer;
  readonly pin: string | undefined;
  /** The key id that worked on this card before, if known. */
  readonly kid: number | undefined;
  /** Resets the card (step 1). */
  readonly reset: () => Promise<unknown>;
}

/**
 * Runs the SIGN dialogue.
 * @throws GatewayError CARD_BAD_SIGN_DATA (hash not 20/32 bytes), CARD_WRONG_PIN (63Cx), CARD_SIGN_NO_ANSWER.
 */
export async function signHash(tx: Transmit, opts: SignOptions): Promise<SignOutcome> {
  const alg = opts.hash.length === 20 ? 0x10 : opts.hash.length === 32 ? 0x30 : undefined;
  if (alg === undefined) throw new GatewayError('CARD_BAD_SIGN_DATA');
  const fail = (resp: Buffer): SignOutcome => ({ ok: false, sw: resp.length >= 2 ? toHex(resp.subarray(resp.length - 2)) : 'C086' });
  await opts.reset();
  let r = await send(tx, SELECT_MF);
  if (sw(r) !== SW_OK) return fail(r);
  r = await send(tx, SELECT_SIGN_DF);
  if (sw(r) !== SW_OK) return fail(r);
  if (opts.pin !== undefined) {
    const pin = Buffer.from(opts.pin, 'latin1');
    for (const ref of [0x86, 0x81]) {
      r = await send(tx, Buffer.concat([Buffer.from([0x00, 0x20, 0x00, ref, pin.length]), pin]));
      if ((sw(r) & 0xfff0) === 0x63c0 || sw(r) === 0x6983) throw new GatewayError('CARD_WRONG_PIN');
      if (sw(r) !== SW_OK) return fail(r);
    }
  }
  r = await send(tx, Buffer.from([0x00, 0x22, 0x41, 0xaa, 0x04, 0x89, 0x02, 0x14, alg]));
  if (sw(r) !== SW_OK) return fail(r);
  const kids = opts.kid === undefined ? Array.from({ length: 16 }, (_, i) => 15 - i) : [opts.kid];
  let kid: number | undefined;
  for (const k of kids) {
    r = await send(tx, Buffer.from([0x00, 0x22, 0x41, 0xb6, 0x0a, 0x84, 0x03, 0x80, k, 0x00, 0x89, 0x03, 0x13, 0x23, alg]));
    if (sw(r) === SW_OK) {
      kid = k;
      break;
    }
  }
  if (kid === undefined) throw new GatewayError('CARD_SIGN_NO_ANSWER', 'no key id accepted by the card');
  r = await send(tx, Buffer.concat([Buffer.from([0x00, 0x2a, 0x90, 0xa0, opts.hash.length + 2, 0x90, opts.hash.length]), opts.hash]));
  if (sw(r) !== SW_OK) return fail(r);
  r = await send(tx, Buffer.from('002A9E9A00', 'hex'));
  if (sw(r) !== SW_OK) return fail(r);
  const signature = data(r);
  if (signature.length === 0) throw new GatewayError('CARD_SIGN_NO_ANSWER', 'empty signature');
  return { ok: true, signature: Buffer.from(signature), kid };
}
