/**
 * JSON as nymea-remoteproxy writes and reads it (pure).
 *
 * - `toCompactJson`: Qt's compact form: object keys sorted (by UTF-16 code units, as QJsonObject keeps
 *   them), no spaces, integers without a fraction.
 * - `toIndentedJson`: Qt's indented form (4 spaces, `": "` between key and value), used by the monitor.
 * - `parseJsonMessage`: Qt 5.15's QJsonDocument::fromJson reproduced over the message's *bytes*, step for
 *   step, so the same inputs succeed and fail, in the same order and with QJsonParseError's wording:
 *   UTF-8 is checked inside strings only (`invalid UTF8 string`; a stray byte outside a string is just an
 *   unexpected token), unknown escapes such as `\q` yield the escaped character, raw control characters
 *   inside strings are accepted, a UTF-8 byte order mark is skipped, numbers that overflow or underflow a
 *   double are `illegal number`, nesting deeper than 1024 is `too deeply nested document`. Integers that
 *   fit 64 bits but not a double exactly come back as `bigint` (Qt keeps integer texts as qint64).
 *   Objects are plain objects whose keys are all own properties (`__proto__` too, as JSON.parse makes
 *   them): read them with `Object.hasOwn`, never by a bare lookup.
 */

export type Json = null | boolean | number | bigint | string | Json[] | { [key: string]: Json };

function sortedKeys(obj: object): string[] {
  // Default sort compares UTF-16 code units, matching QString's ordering in QJsonObject.
  return Object.keys(obj).sort();
}

/** Qt's compact JSON with sorted keys. `undefined` members are dropped. */
export function toCompactJson(value: unknown): string {
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => toCompactJson(v === undefined ? null : v)).join(',')}]`;
  const parts: string[] = [];
  const rec = value as Record<string, unknown>;
  for (const k of sortedKeys(rec)) {
    const v = rec[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${toCompactJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

/**
 * Qt's indented JSON (QJsonDocument::Indented): 4 spaces per level, sorted keys, trailing newline.
 * `maxChars` bounds the text for echoes of client input (an indented nest costs the square of its depth:
 * 2 KiB of nested arrays is 4 MB indented): past it the text is cut there and ends with `…`, and the
 * rest is never built.
 */
export function toIndentedJson(value: unknown, maxChars = Infinity): string {
  const out = new BoundedText(maxChars);
  try {
    indented(value, '', out);
    out.push('\n');
  } catch (err) {
    if (err !== BoundedText.FULL) throw err;
    return `${out.text()}…`;
  }
  return out.text();
}

/** Collects text up to a budget; the push that would pass it keeps what fits and throws `FULL`. */
class BoundedText {
  static readonly FULL = Symbol('full');
  #parts: string[] = [];
  #left: number;
  constructor(maxChars: number) {
    this.#left = maxChars;
  }
  push(s: string): void {
    if (s.length > this.#left) {
      this.#parts.push(s.slice(0, this.#left));
      this.#left = 0;
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- a private sentinel, caught by toIndentedJson
      throw BoundedText.FULL;
    }
    this.#left -= s.length;
    this.#parts.push(s);
  }
  text(): string {
    return this.#parts.join('');
  }
}

function indented(value: unknown, pad: string, out: BoundedText): void {
  if (typeof value === 'bigint') return out.push(value.toString());
  if (value === null || typeof value !== 'object') return out.push(JSON.stringify(value) ?? 'null');
  const inner = `${pad}    `;
  if (Array.isArray(value)) {
    out.push('[\n');
    value.forEach((v: unknown, i) => {
      out.push(inner);
      indented(v, inner, out);
      out.push(i < value.length - 1 ? ',\n' : '\n');
    });
    return out.push(`${pad}]`);
  }
  const rec = value as Record<string, unknown>;
  const keys = sortedKeys(rec).filter((k) => rec[k] !== undefined);
  out.push('{\n');
  keys.forEach((k, i) => {
    out.push(`${inner}${JSON.stringify(k)}: `);
    indented(rec[k], inner, out);
    out.push(i < keys.length - 1 ? ',\n' : '\n');
  });
  out.push(`${pad}}`);
}

export type ParseResult = { ok: true; value: Record<string, unknown> | unknown[] } | { ok: false; message: string };

/** Parses one message (bytes, or text taken as its UTF-8 bytes) as Qt 5.15 does; see the file header. */
export function parseJsonMessage(input: Uint8Array | string): ParseResult {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  try {
    return { ok: true, value: new QtParser(bytes).document() };
  } catch (err) {
    if (err instanceof QtError) return { ok: false, message: err.message };
    throw err;
  }
}

/** The QJsonParseError text for `input`, or `no error occurred`. */
export function qtJsonError(input: Uint8Array | string): string {
  const r = parseJsonMessage(input);
  return r.ok ? 'no error occurred' : r.message;
}

class QtError extends Error {}

/** Qt's nestingLimit. */
const MAX_DEPTH = 1024;

const SPACE = 0x20;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const BEGIN_ARRAY = 0x5b;
const END_ARRAY = 0x5d;
const BEGIN_OBJECT = 0x7b;
const END_OBJECT = 0x7d;
const NAME_SEP = 0x3a;
const VALUE_SEP = 0x2c;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

const isDigit = (c: number | undefined): boolean => c !== undefined && c >= 0x30 && c <= 0x39;

/** Defines `key` as an own enumerable property, so `__proto__` is a key like any other. */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

/**
 * Qt 5.15's QJsonPrivate::Parser over bytes. Every method follows the Qt function of the same name, so
 * the first fault found is the one Qt reports. Recursion is bounded by MAX_DEPTH.
 */
class QtParser {
  private i = 0;
  private depth = 0;
  private readonly end: number;
  constructor(private readonly b: Uint8Array) {
    this.end = b.length;
  }

  document(): Record<string, unknown> | unknown[] {
    // eatBOM: only when more than the three BOM bytes follow.
    if (this.end > 3 && this.b[0] === 0xef && this.b[1] === 0xbb && this.b[2] === 0xbf) this.i = 3;
    const token = this.nextToken();
    let value: Record<string, unknown> | unknown[];
    if (token === BEGIN_ARRAY) value = this.parseArray();
    else if (token === BEGIN_OBJECT) value = this.parseObject();
    else throw new QtError('illegal value');
    this.eatSpace();
    if (this.i < this.end) throw new QtError('garbage at the end of the document');
    return value;
  }

  /** Skips JSON whitespace; true while bytes remain. */
  private eatSpace(): boolean {
    while (this.i < this.end) {
      const c = this.b[this.i]!;
      if (c !== SPACE && c !== TAB && c !== LF && c !== CR) break;
      this.i++;
    }
    return this.i < this.end;
  }

  /** Consumes one byte: a structural token (then trailing space), a quote, or anything else as 0. */
  private nextToken(): number {
    if (!this.eatSpace()) return 0;
    const token = this.b[this.i++]!;
    switch (token) {
      case BEGIN_ARRAY:
      case BEGIN_OBJECT:
      case NAME_SEP:
      case VALUE_SEP:
      case END_ARRAY:
      case END_OBJECT:
        this.eatSpace();
        return token;
      case QUOTE:
        return token;
      default:
        return 0;
    }
  }

  private parseObject(): Record<string, unknown> {
    if (++this.depth > MAX_DEPTH) throw new QtError('too deeply nested document');
    const obj: Record<string, unknown> = {};
    let token = this.nextToken();
    while (token === QUOTE) {
      const key = this.parseString();
      if (this.nextToken() !== NAME_SEP) throw new QtError('missing name separator');
      if (!this.eatSpace()) throw new QtError('unterminated object');
      setOwn(obj, key, this.parseValue()); // a repeated key: the last one wins, as in Qt
      token = this.nextToken();
      if (token !== VALUE_SEP) break;
      token = this.nextToken();
      if (token === END_OBJECT) throw new QtError('object is missing after a comma');
    }
    if (token !== END_OBJECT) throw new QtError('unterminated object');
    this.depth--;
    return obj;
  }

  private parseArray(): unknown[] {
    if (++this.depth > MAX_DEPTH) throw new QtError('too deeply nested document');
    const values: unknown[] = [];
    if (!this.eatSpace()) throw new QtError('unterminated array');
    if (this.b[this.i] === END_ARRAY) {
      this.nextToken();
    } else {
      for (;;) {
        if (!this.eatSpace()) throw new QtError('unterminated array');
        values.push(this.parseValue());
        const token = this.nextToken();
        if (token === END_ARRAY) break;
        if (token !== VALUE_SEP) throw new QtError(this.eatSpace() ? 'missing value separator' : 'unterminated array');
      }
    }
    this.depth--;
    return values;
  }

  private literal(rest: string, minLeft: number, value: boolean | null): boolean | null {
    if (this.end - this.i < minLeft) throw new QtError('illegal value');
    for (let k = 0; k < rest.length; k++) {
      if (this.b[this.i++] !== rest.charCodeAt(k)) throw new QtError('illegal value');
    }
    return value;
  }

  private parseValue(): unknown {
    const c = this.b[this.i++];
    switch (c) {
      case 0x6e: // n
        return this.literal('ull', 4, null);
      case 0x74: // t
        return this.literal('rue', 4, true);
      case 0x66: // f
        return this.literal('alse', 5, false);
      case QUOTE:
        return this.parseString();
      case BEGIN_ARRAY:
        return this.parseArray();
      case BEGIN_OBJECT:
        return this.parseObject();
      case VALUE_SEP:
        // A missing value after a colon (Qt's own special case).
        throw new QtError('illegal value');
      case END_OBJECT:
      case END_ARRAY:
        throw new QtError('object is missing after a comma');
      default:
        this.i--;
        return this.parseNumber();
    }
  }

  /**
   * Qt's number scan (looser than JSON: `1.`, `.5`, `-` are scanned and then judged by the double
   * conversion), then QByteArray::toLongLong for integer texts and toDouble otherwise.
   */
  private parseNumber(): number | bigint {
    const start = this.i;
    const b = this.b;
    let isInt = true;
    if (b[this.i] === 0x2d) this.i++;
    if (b[this.i] === 0x30) this.i++;
    else while (isDigit(b[this.i])) this.i++;
    if (b[this.i] === 0x2e) {
      this.i++;
      while (isDigit(b[this.i])) {
        isInt = isInt && b[this.i] === 0x30;
        this.i++;
      }
    }
    if (b[this.i] === 0x65 || b[this.i] === 0x45) {
      isInt = false;
      this.i++;
      if (b[this.i] === 0x2d || b[this.i] === 0x2b) this.i++;
      while (isDigit(b[this.i])) this.i++;
    }
    if (this.i >= this.end) throw new QtError('invalid termination by number');
    // Only ASCII bytes were consumed, so latin1 is exact.
    const text = Buffer.from(b.buffer, b.byteOffset + start, this.i - start).toString('latin1');
    if (isInt && /^-?\d+$/.test(text)) {
      const n = BigInt(text);
      if (n >= INT64_MIN && n <= INT64_MAX) return BigInt(Number(n)) === n ? Number(n) : n;
    }
    // double-conversion: a mantissa digit is required, an exponent needs digits.
    const m = /^-?(\d*)(?:\.(\d*))?(?:[eE][+-]?(\d*))?$/.exec(text);
    if (m === null || (m[1] === '' && (m[2] ?? '') === '') || (/[eE]/.test(text) && (m[3] ?? '') === '')) throw new QtError('illegal number');
    const d = Number(text.endsWith('.') ? text.slice(0, -1) : text);
    // Overflow (±Infinity) and underflow (a non-zero mantissa that became 0) are refused by Qt.
    if (!Number.isFinite(d)) throw new QtError('illegal number');
    if (d === 0 && /[1-9]/.test(text.split(/[eE]/)[0]!)) throw new QtError('illegal number');
    // Qt keeps a double that is exactly a 64-bit integer as an integer (so -0 becomes 0).
    return Object.is(d, -0) ? 0 : d;
  }

  /**
   * Qt's parseString, from after the opening quote: UTF-8 is validated character by character, escapes
   * are decoded (unknown ones yield the escaped byte), and the first fault in string order is reported.
   * As in Qt, a closing quote that is the document's last byte still counts as unterminated.
   */
  private parseString(): string {
    const b = this.b;
    let out = '';
    let seg = this.i;
    const flush = (to: number) => {
      if (to > seg) out += Buffer.from(b.buffer, b.byteOffset + seg, to - seg).toString('utf8');
    };
    while (this.i < this.end) {
      const c = b[this.i]!;
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        flush(this.i);
        out += this.scanEscapeSequence();
        seg = this.i;
        continue;
      }
      if (c < 0x80) this.i++;
      else this.i += utf8SequenceLength(b, this.i, this.end);
    }
    flush(this.i);
    this.i++;
    if (this.i >= this.end) throw new QtError('unterminated string');
    return out;
  }

  private scanEscapeSequence(): string {
    this.i++; // backslash
    // Qt's first pass stops at a backslash and finds the string unterminated when it is the last byte.
    if (this.i >= this.end) throw new QtError('unterminated string');
    const e = this.b[this.i++]!;
    switch (e) {
      case 0x62:
        return '\b';
      case 0x66:
        return '\f';
      case 0x6e:
        return '\n';
      case 0x72:
        return '\r';
      case 0x74:
        return '\t';
      case 0x75: {
        if (this.i > this.end - 4) throw new QtError('invalid escape sequence');
        let code = 0;
        for (let k = 0; k < 4; k++) {
          const h = this.b[this.i++]!;
          const v = h >= 0x30 && h <= 0x39 ? h - 0x30 : h >= 0x61 && h <= 0x66 ? h - 0x57 : h >= 0x41 && h <= 0x46 ? h - 0x37 : -1;
          if (v < 0) throw new QtError('invalid escape sequence');
          code = code * 16 + v;
        }
        return String.fromCharCode(code);
      }
      default:
        // `\"`, `\\`, `\/` and every unknown escape (`\q` → `q`): the escaped byte itself. A non-ASCII
        // byte here leaves its continuation bytes stranded, which the next step reports as invalid UTF-8.
        return String.fromCharCode(e);
    }
  }
}

/**
 * Length of the valid UTF-8 sequence at `i` (lead byte ≥ 0x80): no overlong forms, no surrogates,
 * nothing above U+10FFFF, none cut off by the end.
 * @throws QtError `invalid UTF8 string`
 */
function utf8SequenceLength(b: Uint8Array, i: number, end: number): number {
  const c = b[i]!;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c === 0xe0) lo = 0xa0;
    else if (c === 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c === 0xf0) lo = 0x90;
    else if (c === 0xf4) hi = 0x8f;
  } else throw new QtError('invalid UTF8 string');
  if (i + n > end) throw new QtError('invalid UTF8 string');
  const second = b[i + 1]!;
  if (second < lo || second > hi) throw new QtError('invalid UTF8 string');
  for (let k = 2; k < n; k++) {
    const x = b[i + k]!;
    if (x < 0x80 || x > 0xbf) throw new QtError('invalid UTF8 string');
  }
  return n;
}
