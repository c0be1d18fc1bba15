/**
 * WireGuard `wg0.conf` files, our own line-preserving parser following wg-quick's rules:
 * keys and section names are case-insensitive; `#` anywhere starts a comment and `;` does not; the key is
 * the text before the first `=` and the value the rest, both trimmed of ASCII whitespace only (bash `read`
 * and `[[:space:]]`); `Address`, `DNS`, `AllowedIPs` and `PreUp`…`PostDown` may repeat. Peers are
 * addressed by `PublicKey` (repeated `[Peer]` sections are the norm). Unedited files serialise byte for
 * byte; edits touch only the lines they change.
 *
 * Non-ASCII whitespace and invisible format characters (NBSP, U+202F, U+FEFF, U+3000, …) outside comments
 * are refused: whether wg-quick's `[[:space:]]` trims them depends on its locale, so such a line could run
 * another command than the one it shows.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { FormatError, dominantEol, joinLines, splitLines, terminateLast, type Line } from './lines.ts';

type Kind = 'blank' | 'comment' | 'section' | 'kv';

interface Parsed {
  readonly kind: Kind;
  /** Lower-cased key (kv) or section name without brackets (section). */
  readonly key?: string;
  readonly value?: string;
}

interface Section {
  readonly kind: 'interface' | 'peer';
  /** Index of the `[...]` line. */
  readonly header: number;
  /** Index after the section's last own line (comments directly above the next header belong to it). */
  readonly end: number;
}

const INTERFACE_KEYS = [
  'PrivateKey',
  'ListenPort',
  'FwMark',
  'Address',
  'DNS',
  'MTU',
  'Table',
  'PreUp',
  'PostUp',
  'PreDown',
  'PostDown',
  'SaveConfig',
];
const PEER_KEYS = ['PublicKey', 'PresharedKey', 'AllowedIPs', 'Endpoint', 'PersistentKeepalive'];
const REPEATABLE = new Set(['address', 'dns', 'allowedips', 'preup', 'postup', 'predown', 'postdown']);
const CANONICAL = new Map([...INTERFACE_KEYS, ...PEER_KEYS].map((k) => [k.toLowerCase(), k]));
const INTERFACE_SET = new Set(INTERFACE_KEYS.map((k) => k.toLowerCase()));
const PEER_SET = new Set(PEER_KEYS.map((k) => k.toLowerCase()));
const WG_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$/;

/** wg-quick's whitespace: bash's default IFS plus `[[:space:]]` in the C locale. */
const ASCII_SPACE = ' \t\n\v\f\r';

/** Trims ASCII whitespace only (String#trim would also remove NBSP, U+3000, U+FEFF, …). */
export function trimAscii(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && ASCII_SPACE.includes(s[start]!)) start++;
  while (end > start && ASCII_SPACE.includes(s[end - 1]!)) end--;
  return s.slice(start, end);
}

/** Whitespace and invisible characters beyond ASCII that a reader of the file would not see as different. */
const UNICODE_SPACE = /[\u0085\u00a0\u1680\u180e\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]/;

/** The part of a line wg-quick reads: everything before the first `#`. */
function uncommented(text: string): string {
  const hash = text.indexOf('#');
  return hash < 0 ? text : text.slice(0, hash);
}

/** Parses one line as wg-quick does (key lower-cased; only ASCII whitespace trimmed). */
export function parseLine(text: string): Parsed {
  const hash = text.indexOf('#');
  const stripped = trimAscii(uncommented(text));
  if (stripped === '') return { kind: hash < 0 ? 'blank' : 'comment' };
  if (stripped.startsWith('[')) return { kind: 'section', key: stripped.toLowerCase() };
  const eq = stripped.indexOf('=');
  if (eq < 0) return { kind: 'kv', key: '', value: stripped };
  return {
    kind: 'kv',
    key: trimAscii(stripped.slice(0, eq)).toLowerCase(),
    value: trimAscii(stripped.slice(eq + 1)),
  };
}

/** A parsed WireGuard file: its lines plus the section map. */
export class WgFile {
  lines: Line[];
  parsed: Parsed[] = [];
  sections: Section[] = [];

  constructor(text: string) {
    this.lines = splitLines(text);
    this.reindex();
  }

  toString(): string {
    return joinLines(this.lines);
  }

  reindex(): void {
    this.parsed = this.lines.map((l) => parseLine(l.text));
    const headers: number[] = [];
    this.parsed.forEach((p, i) => {
      if (p.kind === 'section') headers.push(i);
    });
    this.sections = headers.map((h, n) => {
      const next = headers[n + 1] ?? this.lines.length;
      let end = next;
      if (n + 1 < headers.length) while (end - 1 > h && this.parsed[end - 1]!.kind === 'comment') end--;
      const name = this.parsed[h]!.key!;
      return { kind: name === '[interface]' ? 'interface' : 'peer', header: h, end };
    });
  }

  /** Lines of section `s` holding `key` (lower-case). */
  keyLines(s: Section, key: string): number[] {
    const out: number[] = [];
    for (let i = s.header + 1; i < s.end; i++)
      if (this.parsed[i]!.kind === 'kv' && this.parsed[i]!.key === key) out.push(i);
    return out;
  }

  value(s: Section, key: string): string | undefined {
    const i = this.keyLines(s, key)[0];
    return i === undefined ? undefined : this.parsed[i]!.value;
  }

  peers(): Section[] {
    return this.sections.filter((s) => s.kind === 'peer');
  }

  findPeer(publicKey: string): Section | undefined {
    return this.peers().find((s) => this.value(s, 'publickey') === publicKey);
  }
}

function checkCidrList(value: string, key: string, line: number, allowBare: boolean): string[] {
  const out: string[] = [];
  for (const part of value.split(',').map(trimAscii)) {
    if (part === '') throw new FormatError(`${key}: empty entry`, line);
    const [ip, prefix, extra] = part.split('/');
    const v = isIP(ip ?? '');
    if (v === 0 || extra !== undefined)
      throw new FormatError(`${key}: ${part} is not an IP address or CIDR`, line);
    if (prefix === undefined) {
      if (!allowBare) throw new FormatError(`${key}: ${part} needs a /prefix`, line);
    } else if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > (v === 4 ? 32 : 128)) {
      throw new FormatError(`${key}: ${part} has a bad prefix length`, line);
    }
    out.push(routeKey(ip!, v, prefix === undefined ? (v === 4 ? 32 : 128) : Number(prefix)));
  }
  return out;
}

/**
 * The route an address/prefix stands for, as WireGuard sees it: host bits cleared and one spelling per
 * address, so `10.0.0.2` = `10.0.0.2/32`, `10.0.0.9/24` = `10.0.0.0/24`, `fd00::2` = `fd00:0:0::2/128`.
 */
function routeKey(ip: string, version: number, prefix: number): string {
  const bits = version === 4 ? 32 : 128;
  let n = 0n;
  if (version === 4) {
    for (const o of ip.split('.')) n = (n << 8n) | BigInt(Number(o));
  } else {
    const addr = ip.split('%')[0]!.toLowerCase();
    const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
    const groups = (t: string | undefined): number[] => {
      if (t === undefined || t === '') return [];
      const out: number[] = [];
      for (const g of t.split(':')) {
        if (g.includes('.')) {
          const [a, b, c, d] = g.split('.').map(Number);
          out.push((a! << 8) | b!, (c! << 8) | d!);
        } else out.push(parseInt(g, 16));
      }
      return out;
    };
    const h = groups(head);
    const t = groups(tail);
    const all = [...h, ...new Array<number>(Math.max(0, 8 - h.length - t.length)).fill(0), ...t];
    for (const g of all) n = (n << 16n) | BigInt(g);
  }
  const mask = prefix === 0 ? 0n : ((1n << BigInt(bits)) - 1n) ^ ((1n << BigInt(bits - prefix)) - 1n);
  return `${version}:${(n & mask).toString(16)}/${prefix}`;
}

function checkInt(
  value: string,
  key: string,
  line: number,
  max: number,
  extra: readonly string[] = [],
): void {
  if (extra.includes(value.toLowerCase())) return;
  if (!/^\d+$/.test(value) || Number(value) > max)
    throw new FormatError(`${key}: ${value} is not an integer 0..${max}`, line);
}

function checkValue(key: string, value: string, line: number): void {
  const name = CANONICAL.get(key) ?? key;
  switch (key) {
    case 'privatekey':
    case 'publickey':
    case 'presharedkey':
      if (!WG_KEY.test(value))
        throw new FormatError(`${name} is not a base64 WireGuard key (32 bytes)`, line);
      return;
    case 'listenport':
      checkInt(value, name, line, 65535);
      return;
    case 'persistentkeepalive':
      checkInt(value, name, line, 65535, ['off']);
      return;
    case 'mtu':
      checkInt(value, name, line, 65535);
      return;
    case 'fwmark':
      if (!/^(0x[0-9a-fA-F]{1,8}|\d{1,10}|off)$/.test(value))
        throw new FormatError(`${name}: ${value} is not a mark`, line);
      return;
    case 'address':
      checkCidrList(value, name, line, true);
      return;
    case 'allowedips':
      checkCidrList(value, name, line, true);
      return;
    case 'endpoint': {
      const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/.exec(value);
      if (m === null || Number(m[2]) > 65535)
        throw new FormatError(`Endpoint: ${value} is not host:port`, line);
      return;
    }
    case 'saveconfig':
      if (!/^(true|false)$/i.test(value)) throw new FormatError('SaveConfig must be true or false', line);
      return;
    default:
      if (value === '') throw new FormatError(`${name}: empty value`, line);
  }
}

/**
 * Checks a file as wg-quick would read it, plus our own rules: one [Interface] with a PrivateKey, every
 * [Peer] with exactly one valid PublicKey, PublicKeys unique, AllowedIPs not claimed twice, values well formed.
 * @throws FormatError
 */
export function validateWireGuard(text: string): WgFile {
  const f = new WgFile(text);
  let current: Section | undefined;
  let sectionIndex = -1;
  f.parsed.forEach((p, i) => {
    const line = i + 1;
    const odd = UNICODE_SPACE.exec(uncommented(f.lines[i]!.text));
    if (odd !== null)
      throw new FormatError(
        `U+${odd[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')} (non-ASCII whitespace or an invisible character) outside a comment: wg-quick trims only ASCII whitespace, so the line would not mean what it shows`,
        line,
      );
    if (p.kind === 'section') {
      if (p.key !== '[interface]' && p.key !== '[peer]')
        throw new FormatError(`unknown section ${f.lines[i]!.text.trim()}`, line);
      current = f.sections[++sectionIndex];
      return;
    }
    if (p.kind !== 'kv') return;
    if (current === undefined) throw new FormatError('key outside a section', line);
    if (p.key === '') throw new FormatError('line is neither a section, a key = value nor a comment', line);
    const allowed = current.kind === 'interface' ? INTERFACE_SET : PEER_SET;
    if (!allowed.has(p.key!))
      throw new FormatError(
        `unknown key ${p.key!} in [${current.kind === 'interface' ? 'Interface' : 'Peer'}]`,
        line,
      );
    checkValue(p.key!, p.value!, line);
    if (!REPEATABLE.has(p.key!) && f.keyLines(current, p.key!)[0] !== i)
      throw new FormatError(`${CANONICAL.get(p.key!)!} repeated in one section`, line);
  });
  const interfaces = f.sections.filter((s) => s.kind === 'interface');
  if (interfaces.length !== 1)
    throw new FormatError(`expected exactly one [Interface], found ${interfaces.length}`);
  if (f.value(interfaces[0]!, 'privatekey') === undefined)
    throw new FormatError('[Interface] has no PrivateKey');
  const keys = new Set<string>();
  const routes = new Map<string, string>();
  for (const s of f.peers()) {
    const pk = f.value(s, 'publickey');
    if (pk === undefined) throw new FormatError('[Peer] without PublicKey', s.header + 1);
    if (keys.has(pk)) throw new FormatError(`PublicKey ${pk} used by two peers`, s.header + 1);
    keys.add(pk);
    for (const i of f.keyLines(s, 'allowedips')) {
      const value = f.parsed[i]!.value!;
      const parts = value.split(',').map(trimAscii);
      checkCidrList(value, 'AllowedIPs', i + 1, true).forEach((route, n) => {
        if (routes.has(route))
          throw new FormatError(`AllowedIPs ${parts[n]!.toLowerCase()} claimed by two peers`, i + 1);
        routes.set(route, pk);
      });
    }
  }
  return f;
}

// PreUp…PostDown are shell commands wg-quick runs as root; SaveConfig = true makes wg-quick overwrite the
// file with the live state on shutdown, behind every check and backup of ours.
const HOOKS = new Set(['preup', 'postup', 'predown', 'postdown', 'saveconfig']);

/**
 * The server-side lines of a file (`PreUp`…`PostDown`, `SaveConfig`), as `key=value` in file order, read
 * as wg-quick reads them: comments, ASCII spacing, key case and line ends do not count; any other
 * character (a Unicode space included) does.
 */
export function wireGuardHooks(text: string): string[] {
  const out: string[] = [];
  for (const l of splitLines(text)) {
    const p = parseLine(l.text);
    if (p.kind === 'kv' && HOOKS.has(p.key!)) out.push(`${p.key!}=${p.value!}`);
  }
  return out;
}

const valueSchema = z.union([z.string(), z.array(z.string()).min(1), z.null()]);
const setSchema = z.record(z.string().min(1), valueSchema);
export const wireGuardOpSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('peer.upsert'), publicKey: z.string(), set: setSchema.default({}) }),
  z.strictObject({ op: z.literal('peer.remove'), publicKey: z.string() }),
  z.strictObject({ op: z.literal('interface.set'), set: setSchema }),
]);
export type WireGuardOp = z.output<typeof wireGuardOpSchema>;

function renderValue(v: string | readonly string[]): string {
  const s = typeof v === 'string' ? v : v.join(', ');
  if (/[\r\n#]/.test(s)) throw new FormatError('values cannot contain line breaks or #');
  if (UNICODE_SPACE.test(s))
    throw new FormatError('values cannot contain non-ASCII whitespace (wg-quick trims only ASCII whitespace)');
  return s;
}

/** Sets or deletes `key` in section `s`, keeping the line's own key spelling and trailing comment. */
function setKey(
  f: WgFile,
  s: Section,
  rawKey: string,
  value: string | readonly string[] | null,
  allowed: ReadonlySet<string>,
): void {
  const key = rawKey.toLowerCase();
  if (!allowed.has(key) || key === 'publickey') throw new FormatError(`key ${rawKey} cannot be set here`);
  const at = f.keyLines(s, key);
  const eol = dominantEol(f.lines);
  if (value === null) {
    for (const i of at.reverse()) f.lines.splice(i, 1);
    f.reindex();
    return;
  }
  const rendered = renderValue(value);
  const first = at[0];
  if (first !== undefined) {
    const old = f.lines[first]!.text;
    const hash = old.indexOf('#');
    const comment = hash < 0 ? '' : ` ${old.slice(hash)}`;
    const keyText = trimAscii(old.slice(0, old.indexOf('=')));
    const indent = /^[ \t]*/.exec(old)![0];
    f.lines[first]!.text = `${indent}${keyText} = ${rendered}${comment}`;
    for (const i of at.slice(1).reverse()) f.lines.splice(i, 1);
  } else {
    let last = s.header;
    for (let i = s.header + 1; i < s.end; i++) if (f.parsed[i]!.kind === 'kv') last = i;
    if (last === f.lines.length - 1) terminateLast(f.lines, eol);
    f.lines.splice(last + 1, 0, { text: `${CANONICAL.get(key)!} = ${rendered}`, eol });
  }
  f.reindex();
}

function removePeer(f: WgFile, s: Section): void {
  let start = s.header;
  while (start > 0 && f.parsed[start - 1]!.kind === 'comment') start--;
  let end = s.end;
  while (end > start && f.parsed[end - 1]!.kind === 'blank') end--;
  const blankBefore = start === 0 || f.parsed[start - 1]!.kind === 'blank';
  while (blankBefore && end < f.lines.length && f.parsed[end]!.kind === 'blank') end++;
  f.lines.splice(start, end - start);
  f.reindex();
}

function appendPeer(f: WgFile, publicKey: string): Section {
  const eol = dominantEol(f.lines);
  terminateLast(f.lines, eol);
  const last = f.parsed[f.parsed.length - 1];
  if (last !== undefined && last.kind !== 'blank') f.lines.push({ text: '', eol });
  f.lines.push({ text: '[Peer]', eol }, { text: `PublicKey = ${publicKey}`, eol });
  f.reindex();
  return f.sections[f.sections.length - 1]!;
}

/**
 * The entries of a `set` object; keys are case-insensitive, so one key in two spellings (`AllowedIPs` and
 * `allowedips`) is refused rather than letting whichever comes last silently win.
 */
function setEntries<V>(set: Readonly<Record<string, V>>): [string, V][] {
  const seen = new Set<string>();
  for (const k of Object.keys(set)) {
    const lower = k.toLowerCase();
    if (seen.has(lower)) throw new FormatError(`key ${k} is given twice (keys are case-insensitive)`);
    seen.add(lower);
  }
  return Object.entries(set);
}

/**
 * Applies operations to a valid file and validates the result.
 * @throws FormatError (the file is then left unchanged by the caller)
 */
export function applyWireGuardOps(text: string, ops: readonly WireGuardOp[]): string {
  const f = validateWireGuard(text);
  for (const op of ops) {
    if (op.op === 'interface.set') {
      for (const [k, v] of setEntries(op.set))
        setKey(
          f,
          f.sections.find((s) => s.kind === 'interface')!,
          k,
          v,
          INTERFACE_SET,
        );
      continue;
    }
    if (!WG_KEY.test(op.publicKey)) throw new FormatError('publicKey is not a base64 WireGuard key');
    const found = f.findPeer(op.publicKey);
    if (op.op === 'peer.remove') {
      if (found === undefined) throw new FormatError(`no peer with PublicKey ${op.publicKey}`);
      removePeer(f, found);
      continue;
    }
    let header = (found ?? appendPeer(f, op.publicKey)).header;
    for (const [k, v] of setEntries(op.set)) {
      setKey(
        f,
        f.sections.find((s) => s.header === header)!,
        k,
        v,
        PEER_SET,
      );
      header = f.findPeer(op.publicKey)!.header;
    }
  }
  const out = f.toString();
  validateWireGuard(out);
  return out;
}
