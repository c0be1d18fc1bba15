/**
 * JSON as nymea-remoteproxy writes and reads it (pure).
 *
 * - `toCompactJson`: Qt's compact form: object keys sorted (by UTF-16 code units, as QJsonObject keeps
 *   them), no spaces, integers without a fraction.
 * - `toIndentedJson`: Qt's indented form (4 spaces, `": "` between key and value), used by the monitor.
 * - `parseJsonMessage`: JSON.parse for speed; on failure, a Qt-style error string (QJsonParseError's
 *   wording) so `Failed to parse JSON data: <message>` reads as nymea's does.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function sortedKeys(obj: object): string[] {
  // Default sort compares UTF-16 code units, matching QString's ordering in QJsonObject.
  return Object.keys(obj).sort();
}

/** Qt's compact JSON with sorted keys. `undefined` members are dropped. */
export function toCompactJson(value: unknown): string {
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

/** Qt's indented JSON (QJsonDocument::Indented): 4 spaces per level, sorted keys, trailing newline. */
export function toIndentedJson(value: unknown): string {
  return `${indented(value, '')}\n`;
}

function indented(value: unknown, pad: string): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  const inner = `${pad}    `;
  if (Array.isArray(value)) {
    if (value.length === 0) return '[\n' + `${pad}]`;
    return `[\n${value.map((v) => inner + indented(v, inner)).join(',\n')}\n${pad}]`;
  }
  const rec = value as Record<string, unknown>;
  const keys = sortedKeys(rec).filter((k) => rec[k] !== undefined);
  if (keys.length === 0) return '{\n' + `${pad}}`;
  return `{\n${keys.map((k) => `${inner}${JSON.stringify(k)}: ${indented(rec[k], inner)}`).join(',\n')}\n${pad}}`;
}

export type ParseResult = { ok: true; value: unknown } | { ok: false; message: string };

/** Parses one message; the error message follows QJsonParseError's wording. */
export function parseJsonMessage(text: string): ParseResult {
  try {
    const value: unknown = JSON.parse(text);
    // Qt only accepts an object or an array at the top level.
    if (value === null || typeof value !== 'object') return { ok: false, message: 'illegal value' };
    return { ok: true, value };
  } catch {
    return { ok: false, message: qtJsonError(text) };
  }
}

/**
 * Classifies why `text` is not valid JSON, in Qt 5's words. Only called on failure, so it favours
 * clarity over speed. Bounded: it walks the text once with an explicit depth limit.
 */
export function qtJsonError(text: string): string {
  const p = new QtScanner(text);
  return p.run();
}

class QtError extends Error {}

const MAX_DEPTH = 1024;

class QtScanner {
  private i = 0;
  constructor(private readonly s: string) {}

  run(): string {
    try {
      this.ws();
      const c = this.s[this.i];
      if (c === '{') this.object(0);
      else if (c === '[') this.array(0);
      else throw new QtError('illegal value');
      this.ws();
      if (this.i < this.s.length) throw new QtError('garbage at the end of the document');
      return 'no error occurred';
    } catch (err) {
      if (err instanceof QtError) return err.message;
      throw err;
    }
  }

  private ws(): void {
    while (this.i < this.s.length && ' \t\n\r'.includes(this.s[this.i]!)) this.i++;
  }

  // Qt 5's parseObject: members while the next token is a quote; after a member only `,` continues;
  // anything but `}` then is an unterminated object; `,` followed by `}` is a missing object.
  private object(depth: number): void {
    if (depth > MAX_DEPTH) throw new QtError('too deeply nested document');
    this.i++; // {
    this.ws();
    while (this.s[this.i] === '"') {
      this.string();
      this.ws();
      if (this.s[this.i] !== ':') throw new QtError('missing name separator');
      this.i++;
      this.ws();
      if (this.i >= this.s.length) throw new QtError('unterminated object');
      this.value(depth);
      this.ws();
      if (this.s[this.i] !== ',') break;
      this.i++;
      this.ws();
      if (this.s[this.i] === '}') throw new QtError('object is missing after a comma');
    }
    if (this.s[this.i] !== '}') throw new QtError('unterminated object');
    this.i++;
  }

  private array(depth: number): void {
    if (depth > MAX_DEPTH) throw new QtError('too deeply nested document');
    this.i++; // [
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return;
    }
    for (;;) {
      this.value(depth);
      this.ws();
      if (this.i >= this.s.length) throw new QtError('unterminated array');
      const c = this.s[this.i];
      if (c === ']') {
        this.i++;
        return;
      }
      if (c !== ',') throw new QtError('missing value separator');
      this.i++;
    }
  }

  private value(depth: number): void {
    this.ws();
    if (this.i >= this.s.length) throw new QtError('illegal value');
    const c = this.s[this.i]!;
    // Qt reports a closing bracket where a value belongs as a missing object (`{"a":}`, `[1,]`).
    if (c === '}' || c === ']') throw new QtError('object is missing after a comma');
    if (c === '{') return this.object(depth + 1);
    if (c === '[') return this.array(depth + 1);
    if (c === '"') return this.string();
    for (const lit of ['true', 'false', 'null']) {
      if (this.s.startsWith(lit, this.i)) {
        this.i += lit.length;
        return;
      }
    }
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    throw new QtError('illegal value');
  }

  private number(): void {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(this.s.slice(this.i, this.i + 512));
    if (m === null) throw new QtError('illegal number');
    this.i += m[0].length;
    if (this.i >= this.s.length) throw new QtError('invalid termination by number');
  }

  private string(): void {
    this.i++; // opening quote
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c === 0x22) {
        this.i++;
        return;
      }
      if (c === 0x5c) {
        const e = this.s[this.i + 1];
        if (e === undefined) break;
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(this.s.slice(this.i + 2, this.i + 6))) throw new QtError('invalid escape sequence');
          this.i += 6;
          continue;
        }
        if (!'"\\/bfnrt'.includes(e)) throw new QtError('invalid escape sequence');
        this.i += 2;
        continue;
      }
      if (c < 0x20) throw new QtError('illegal value');
      if (c === 0xfffd) throw new QtError('invalid UTF8 string');
      this.i++;
    }
    throw new QtError('unterminated string');
  }
}
