/**
 * Reader-name normalisation (pure). Backends name readers by terminal id: `/<IP>@<slot>` for CloudFoxy
 * hardware, or the PC/SC (or simulator) reader name. Clients may write any of:
 *   `/ip@n`, `CloudFoxy ip@n`, `CloudFoxy NET ip-n`, `Foxy NET ip-n` (any case, `-` → `@`),
 *   `Foxy USB <name>` / `CloudFoxy USB <name>` → `<name>`, a plain name, or base64 of any of these.
 * Listings encode names in a configurable style (foxyproxy's: `Foxy NET ip-n` / `Foxy USB <name>`).
 */

export type ReaderNameStyle = 'foxy' | 'cloudfoxy' | 'raw';

const NET = /^(?:cloud)?foxy\s+net\s+(\S+?)-(\d+)$/i;
const CLOUDFOXY_AT = /^cloudfoxy\s+(\S+)@(\d+)$/i;
const USB = /^(?:cloud)?foxy\s+usb\s+(.+)$/i;
const SLASH = /^\/(\S+)@(\d+)$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$|^(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$/;

/** Maps one textual form to its terminal id (no base64 decoding). */
export function normaliseReaderName(input: string): string {
  const s = input.trim();
  let m = SLASH.exec(s);
  if (m !== null) return `/${m[1]!}@${m[2]!}`;
  m = NET.exec(s);
  if (m !== null) return `/${m[1]!}@${m[2]!}`;
  m = CLOUDFOXY_AT.exec(s);
  if (m !== null) return `/${m[1]!}@${m[2]!}`;
  m = USB.exec(s);
  if (m !== null) return m[1]!.trim();
  return s;
}

/** True for CloudFoxy hardware terminal ids (`/ip@n`), which only ever match exactly. */
export function isNetTerminal(terminal: string): boolean {
  return SLASH.test(terminal);
}

/** Decodes `s` as base64 when it is canonical base64 of printable UTF-8; otherwise undefined. */
export function decodeBase64Name(s: string): string | undefined {
  if (s.length < 4 || !BASE64.test(s)) return undefined;
  const bytes = Buffer.from(s, 'base64');
  if (bytes.toString('base64') !== s) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  // eslint-disable-next-line no-control-regex
  if (text.trim() === '' || /[\u0000-\u001f\u007f]/.test(text)) return undefined;
  return text;
}

/**
 * The longest text that may still stand for a name of at most `longestChars` characters: base64 makes a
 * text 4/3 longer (plus padding), and a `CloudFoxy USB ` / `NET` prefix and whitespace around it come off in
 * normalisation; 256 characters of slack cover those. Longer texts can name no such reader and are not
 * tried (a hostile reader line must not cost a base64 decode per `:` it holds).
 */
export function maxReaderTextChars(longestChars: number): number {
  return 4 * Math.ceil((longestChars + 256) / 3) + 4;
}

/** Every terminal id `input` may stand for, most literal first (the text itself, then its base64 decoding). */
export function readerCandidates(input: string): string[] {
  const out = [normaliseReaderName(input)];
  const decoded = decodeBase64Name(input.trim());
  if (decoded !== undefined) {
    const n = normaliseReaderName(decoded);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

/** The name a listing shows for a terminal id, in the given style. */
export function displayReaderName(terminal: string, style: ReaderNameStyle): string {
  if (style === 'raw') return terminal;
  const prefix = style === 'foxy' ? 'Foxy' : 'CloudFoxy';
  const m = SLASH.exec(terminal);
  if (m !== null) return `${prefix} NET ${m[1]!}-${m[2]!}`;
  return `${prefix} USB ${terminal}`;
}

/** base64 of the UTF-8 text, as listings carry names. */
export function encodeName(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64');
}
