/**
 * The line protocol's byte → request decoder (pure: bytes in, whole requests out; no sockets).
 *
 * Wire format (foxyproxy, see docs/card-bridge.md):
 *   `>READER[:PIN]|` then `>ID:COMMAND[:DATA[:OBJECT]]|` lines, then an empty line.
 * Lines end in `\n`, `\r\n` or `\r` (a `\r\n` split across chunks is still one line end) and are trimmed.
 * Lines starting with `>` or `#` are protocol lines; other non-empty lines are ignored. `:` and `|` are
 * both field separators; empty trailing fields are ignored (so the trailing `|` of APDUPlay's notes field
 * disappears). A one-field line after the reader line replaces the reader.
 *
 * Limits: a line over `maxLineBytes`, a request with more than `maxCommands` command lines, or more than
 * `maxRequestBytes` in total, yields a `limit` event (the decoder then discards everything; the session
 * answers and closes). Every byte sequence decodes without throwing.
 */

/** One command of a request, or a reader change in the middle of one. */
export type RequestItem =
  | { readonly kind: 'command'; readonly id: string; readonly command: string; readonly data: string; readonly object: string; readonly fields: number }
  | { readonly kind: 'reader'; readonly reader: ReaderSpec };

/** The reader line: the whole text, and the same text split at its last `:` (name, PIN) when it has one. */
export interface ReaderSpec {
  readonly text: string;
  readonly name: string;
  readonly pin: string | undefined;
}

export interface Request {
  readonly reader: ReaderSpec | undefined;
  readonly items: readonly RequestItem[];
}

export type DecoderEvent =
  | { readonly kind: 'request'; readonly request: Request }
  | { readonly kind: 'limit'; readonly code: 'CARD_LIMIT_LINE' | 'CARD_LIMIT_COMMANDS' | 'CARD_LIMIT_REQUEST'; readonly id: string };

export interface DecoderLimits {
  /** Longest line, in bytes, without its line end. */
  readonly maxLineBytes: number;
  /** Most command lines (and reader changes) in one request. */
  readonly maxCommands: number;
  /** Most bytes one request may span, line ends included. */
  readonly maxRequestBytes: number;
}

const LF = 0x0a;
const CR = 0x0d;

/** Splits fields on `:` and `|`, trims each, drops empty trailing fields. */
export function splitFields(text: string): string[] {
  const fields = text.split(/[:|]/).map((f) => f.trim());
  while (fields.length > 0 && fields[fields.length - 1] === '') fields.pop();
  return fields;
}

/** Parses a reader line body (after `>`): drops everything from the last `|`, splits a PIN off the last `:`. */
export function parseReaderLine(body: string): ReaderSpec {
  const bar = body.lastIndexOf('|');
  const text = (bar >= 0 ? body.slice(0, bar) : body).trim();
  const colon = text.lastIndexOf(':');
  if (colon < 0) return { text, name: text, pin: undefined };
  const pin = text.slice(colon + 1).trim();
  return { text, name: text.slice(0, colon).trim(), pin: pin === '' ? undefined : pin };
}

/** Parses a command line body (after `>`). One field = a new reader; otherwise `ID:COMMAND[:DATA[:OBJECT]]`. */
export function parseCommandLine(body: string): RequestItem {
  const fields = splitFields(body);
  if (fields.length <= 1) return { kind: 'reader', reader: parseReaderLine(body) };
  return {
    kind: 'command',
    id: fields[0] ?? '',
    command: fields[1] ?? '',
    data: (fields[2] ?? '').replace(/\s+/g, ''),
    object: fields[3] ?? '',
    fields: fields.length,
  };
}

/** The id a line would answer under, for limit errors: the text between `>` and the first separator. */
function idOf(head: string): string {
  const m = /^\s*[>#]\s*([^:|\r\n]*)[:|]/.exec(head);
  return m === null ? '' : m[1]!.trim().slice(0, 64);
}

export class RequestDecoder {
  #partial: Buffer[] = [];
  #partialBytes = 0;
  #skipLf = false;
  #dead = false;
  #reader: ReaderSpec | undefined;
  #haveReader = false;
  #items: RequestItem[] = [];
  #requestBytes = 0;
  #lastId = '';

  constructor(private readonly limits: DecoderLimits) {}

  /** True while a request has started (a protocol line was seen) and its empty line has not come yet. */
  get inRequest(): boolean {
    return this.#haveReader || this.#partialBytes > 0;
  }

  /** The id of the latest command line of the request in progress ('' if none). */
  get lastId(): string {
    return this.#lastId;
  }

  /** Appends bytes; returns every request now complete, in order, or a final `limit` event. Never throws. */
  push(chunk: Uint8Array): DecoderEvent[] {
    const out: DecoderEvent[] = [];
    if (this.#dead) return out;
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (b === LF && this.#skipLf && i === start && this.#partialBytes === 0) {
        this.#skipLf = false;
        start = i + 1;
        continue;
      }
      this.#skipLf = false;
      if (b !== LF && b !== CR) continue;
      const line = this.#take(chunk, start, i);
      this.#skipLf = b === CR;
      start = i + 1;
      const ev = this.#line(line.toString('utf8'), line.length);
      if (ev !== undefined) {
        out.push(ev);
        if (ev.kind === 'limit') return out;
      }
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.#partialBytes + rest.length > this.limits.maxLineBytes) {
        const head = Buffer.concat([...this.#partial, rest.subarray(0, 80)]).toString('latin1');
        return [...out, this.#die('CARD_LIMIT_LINE', idOf(head) || this.#lastId)];
      }
      this.#partial.push(Buffer.from(rest));
      this.#partialBytes += rest.length;
    }
    return out;
  }

  #take(chunk: Uint8Array, start: number, end: number): Buffer {
    const piece = chunk.subarray(start, end);
    let buf: Buffer;
    if (this.#partialBytes === 0) buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    else buf = Buffer.concat([...this.#partial, piece]);
    this.#partial = [];
    this.#partialBytes = 0;
    return buf;
  }

  #die(code: 'CARD_LIMIT_LINE' | 'CARD_LIMIT_COMMANDS' | 'CARD_LIMIT_REQUEST', id: string): DecoderEvent {
    this.#dead = true;
    this.#partial = [];
    this.#partialBytes = 0;
    return { kind: 'limit', code, id };
  }

  /** `bytes` is the line's length on the wire (invalid UTF-8 decodes to longer text). */
  #line(raw: string, bytes: number): DecoderEvent | undefined {
    if (bytes > this.limits.maxLineBytes) return this.#die('CARD_LIMIT_LINE', idOf(raw.slice(0, 80)) || this.#lastId);
    const text = raw.trim();
    if (this.#haveReader || text !== '') this.#requestBytes += bytes + 1;
    if (this.#requestBytes > this.limits.maxRequestBytes) return this.#die('CARD_LIMIT_REQUEST', idOf(raw.slice(0, 80)) || this.#lastId);
    if (text === '') {
      if (!this.#haveReader) return undefined;
      const request: Request = { reader: this.#reader, items: this.#items };
      this.#reader = undefined;
      this.#haveReader = false;
      this.#items = [];
      this.#requestBytes = 0;
      this.#lastId = '';
      return { kind: 'request', request };
    }
    const first = text.charCodeAt(0);
    if (first !== 0x3e /* > */ && first !== 0x23 /* # */) return undefined;
    const body = text.slice(1);
    if (!this.#haveReader) {
      this.#haveReader = true;
      this.#reader = parseReaderLine(body);
      return undefined;
    }
    const item = parseCommandLine(body);
    if (item.kind === 'command') this.#lastId = item.id;
    if (this.#items.length >= this.limits.maxCommands) return this.#die('CARD_LIMIT_COMMANDS', this.#lastId);
    this.#items.push(item);
    return undefined;
  }
}
