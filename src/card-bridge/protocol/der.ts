/**
 * A minimal DER reader and writer (pure): enough to size a certificate read from a card file, to pull out
 * its subject, issuer and CA flag, and (for the simulator) to build certificates. Not a general ASN.1 library.
 */

export interface Tlv {
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly start: number;
  /** Offset of the first content byte. */
  readonly contentStart: number;
  /** Offset one past the last content byte. */
  readonly end: number;
}

/** Reads one TLV at `offset`. Returns undefined when the bytes are truncated or not DER. */
export function readTlv(buf: Uint8Array, offset = 0): Tlv | undefined {
  if (offset + 2 > buf.length) return undefined;
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) return undefined;
  let len = buf[offset + 1]!;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > buf.length) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  if (p + len > buf.length) return undefined;
  return { tag, start: offset, contentStart: p, end: p + len };
}

/** Total encoded size of the TLV that starts the header bytes `head` (tag + length + content), if decodable. */
export function derTotalLength(head: Uint8Array): number | undefined {
  if (head.length < 2) return undefined;
  let len = head[1]!;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || head.length < 2 + n) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + head[2 + i]!;
    hdr += n;
  }
  return hdr + len;
}

/** The child TLVs inside a constructed TLV. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let p = parent.contentStart;
  while (p < parent.end) {
    const t = readTlv(buf, p);
    if (t === undefined || t.end > parent.end) break;
    out.push(t);
    p = t.end;
  }
  return out;
}

/** Dotted OID text from the content bytes of an OBJECT IDENTIFIER. */
export function decodeOid(bytes: Uint8Array): string {
  if (bytes.length === 0) return '';
  const first = bytes[0]!;
  const parts = [Math.min(2, Math.floor(first / 40)), first - Math.min(2, Math.floor(first / 40)) * 40];
  let v = 0;
  for (let i = 1; i < bytes.length; i++) {
    const b = bytes[i]!;
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

/**
 * Attribute names for the subject string (`"<attribute name>: <value>"`), as foxyproxy prints them. A Map:
 * the OID comes from certificate bytes on the card.
 */
export const ATTRIBUTE_NAMES: ReadonlyMap<string, string> = new Map([
  ['2.5.4.3', 'commonName'],
  ['2.5.4.4', 'surname'],
  ['2.5.4.5', 'serialNumber'],
  ['2.5.4.6', 'countryName'],
  ['2.5.4.7', 'localityName'],
  ['2.5.4.8', 'stateOrProvinceName'],
  ['2.5.4.9', 'streetAddress'],
  ['2.5.4.10', 'organizationName'],
  ['2.5.4.11', 'organizationalUnitName'],
  ['2.5.4.12', 'title'],
  ['2.5.4.42', 'givenName'],
  ['2.5.4.97', 'organizationIdentifier'],
  ['1.2.840.113549.1.9.1', 'emailAddress'],
]);

function decodeString(buf: Uint8Array, t: Tlv): string {
  const bytes = Buffer.from(buf.subarray(t.contentStart, t.end));
  if (t.tag === 0x1e) {
    // BMPString: UTF-16BE
    const swapped = Buffer.from(bytes);
    swapped.swap16();
    return swapped.toString('utf16le');
  }
  return t.tag === 0x0c ? bytes.toString('utf8') : bytes.toString('latin1');
}

/** The (name, value) pairs of an X.501 Name TLV. */
export function nameAttributes(buf: Uint8Array, name: Tlv): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  for (const rdn of children(buf, name)) {
    for (const atv of children(buf, rdn)) {
      const [oid, val] = children(buf, atv);
      if (oid?.tag !== 0x06 || val === undefined) continue;
      const o = decodeOid(buf.subarray(oid.contentStart, oid.end));
      out.push({ type: ATTRIBUTE_NAMES.get(o) ?? o, value: decodeString(buf, val) });
    }
  }
  return out;
}

export interface CertificateInfo {
  readonly subject: string;
  readonly issuer: string;
  /** Raw DER of the subject and issuer names, to link a chain. */
  readonly subjectDer: Buffer;
  readonly issuerDer: Buffer;
  readonly isCa: boolean;
}

/** Sorted `"<attribute name>: <value>"` pairs joined by `", "`. */
export function formatName(attrs: readonly { type: string; value: string }[]): string {
  return attrs
    .map((a) => `${a.type}: ${a.value}`)
    .sort()
    .join(', ');
}

/** Reads subject, issuer and the basicConstraints CA flag of a DER certificate; undefined if unparsable. */
export function certificateInfo(der: Uint8Array): CertificateInfo | undefined {
  const cert = readTlv(der);
  if (cert?.tag !== 0x30) return undefined;
  const tbs = children(der, cert)[0];
  if (tbs?.tag !== 0x30) return undefined;
  const f = children(der, tbs);
  let i = 0;
  if (f[0]?.tag === 0xa0) i++; // version
  const issuer = f[i + 2];
  const subject = f[i + 4];
  if (issuer?.tag !== 0x30 || subject?.tag !== 0x30) return undefined;
  let isCa = false;
  const ext = f.find((t) => t.tag === 0xa3);
  if (ext !== undefined) {
    const seq = children(der, ext)[0];
    for (const e of seq === undefined ? [] : children(der, seq)) {
      const parts = children(der, e);
      const oid = parts[0];
      if (oid?.tag !== 0x06 || decodeOid(der.subarray(oid.contentStart, oid.end)) !== '2.5.29.19') continue;
      const octets = parts[parts.length - 1];
      if (octets?.tag !== 0x04) continue;
      const bc = readTlv(der, octets.contentStart);
      const first = bc === undefined ? undefined : children(der, bc)[0];
      if (first?.tag === 0x01) isCa = der[first.contentStart] !== 0;
    }
  }
  return {
    subject: formatName(nameAttributes(der, subject)),
    issuer: formatName(nameAttributes(der, issuer)),
    subjectDer: Buffer.from(der.subarray(subject.start, subject.end)),
    issuerDer: Buffer.from(der.subarray(issuer.start, issuer.end)),
    isCa,
  };
}

// ---- writer ----

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  while (n > 0) {
    out.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return [0x80 | out.length, ...out];
}

/** Encodes one TLV. */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag, ...lengthBytes(body.length)]), body]);
}

export const seq = (...c: Uint8Array[]): Buffer => tlv(0x30, ...c);
export const set = (...c: Uint8Array[]): Buffer => tlv(0x31, ...c);

export function oid(dotted: string): Buffer {
  const p = dotted.split('.').map(Number);
  const out: number[] = [p[0]! * 40 + p[1]!];
  for (const v of p.slice(2)) {
    const b: number[] = [v & 0x7f];
    let x = Math.floor(v / 128);
    while (x > 0) {
      b.unshift((x & 0x7f) | 0x80);
      x = Math.floor(x / 128);
    }
    out.push(...b);
  }
  return tlv(0x06, Buffer.from(out));
}

/** A non-negative INTEGER from big-endian magnitude bytes. */
export function integer(bytes: Uint8Array): Buffer {
  let b = Buffer.from(bytes);
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && (b[i + 1]! & 0x80) === 0) i++;
  b = b.subarray(i);
  if (b.length === 0 || (b[0]! & 0x80) !== 0) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

export const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
export const printable = (s: string): Buffer => tlv(0x13, Buffer.from(s, 'latin1'));
export const nullValue = (): Buffer => Buffer.from([0x05, 0x00]);
export const bitString = (b: Uint8Array): Buffer => tlv(0x03, Buffer.from([0]), b);
export const octetString = (b: Uint8Array): Buffer => tlv(0x04, b);
export const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0]));

/** UTCTime (years 1950–2049) or GeneralizedTime. */
export function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  const y = d.getUTCFullYear();
  return y >= 1950 && y < 2050 ? tlv(0x17, Buffer.from(iso.slice(2), 'latin1')) : tlv(0x18, Buffer.from(iso, 'latin1'));
}

/** A Name from (oid, value) pairs; countryName is PrintableString, the rest UTF8String. */
export function name(attrs: readonly (readonly [string, string])[]): Buffer {
  return seq(...attrs.map(([o, v]) => set(seq(oid(o), o === '2.5.4.6' ? printable(v) : utf8(v)))));
}
