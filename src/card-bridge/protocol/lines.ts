/**
 * The line protocol's byte → request decoder (pure: bytes in, whole requests out; no sockets).
 *
 * Wire format (foxyproxy, see docs/card-bridge.md):
 *   `>READER[:PIN]|` then `>ID:COMMAND[:DATA[:OBJECT]]|` lines, then (usually) an empty line.
 * Lines end in `\n`, `\r\n` or `\r` (a `\r\n` split across chunks is still one line end) and are trimmed.
 * Lines starting with `>` or `#` are protocol lines; other non-empty lines are ignored. `:` and `|` are
 * both field separators; empty trailing fields are ignored (so the trailing `|` of APDUPlay's notes field
 * disappears). A one-field line after the reader line replaces the reader.
 *
 * When a request is complete (foxyproxy 2.x's rule, without its loss of lines split across segments):
 * - at an empty line once the reader line was read;
 * - at the end of a read (`endOfRead()`, called by the session after each chunk the socket delivers) that
 *   leaves no unfinished line, once at least one command line was read, unless the request named
 *   `EMPTYLINE` (exact case): then only the empty line (or EOF) ends it. JSignPdf sends one line pair with
 *   no empty line and waits; APDUPlay ends its requests with an empty line.
 *
 * Ids are echoed byte for byte: a command's id is the latin1 decoding of its bytes on the wire (between
 * `>` plus any whitespace and the first `:` or `|`), so `formatAnswers` can write them back unchanged
 * whatever their encoding (`12,345`, `12 345` with U+00A0 in UTF-8 or windows-1250, …).
 *
 * Bounded decoding: `push(chunk, maxRequests)` stops after `maxRequests` requests; the rest of that read is
 * kept as raw bytes (one copy, its size in `heldBytes`) and decoded, in order, by `resume(maxRequests)`. The
 * read is not over until its rest is decoded: `endOfRead()` does nothing while bytes are held. So the
 * caller's bound on queued requests holds within one read, and a read of tiny requests is held at its size
 * on the wire, not as thousands of decoded requests.
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

/** The command name that makes a request wait for its empty line (foxyproxy 2.x; exact case; no answer). */
export const EMPTYLINE = 'EMPTYLINE';

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const BAR = 0x7c;
/** Longest id a limit error echoes (the line it came from may be huge and is discarded). */
const MAX_LIMIT_ID_BYTES = 64;

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

/**
 * A command with a given id: `COMMAND[:DATA[:OBJECT]]` (`:` or `|` separated; the foxyproxy HTTP API's
 * `line`). The id is kept exactly as given.
 */
export function parseCommandFields(id: string, rest: string): RequestItem & { kind: 'command' } {
  const fields = splitFields(rest);
  return {
    kind: 'command',
    id,
    command: fields[0] ?? '',
    data: (fields[1] ?? '').replace(/\s+/g, ''),
    object: fields[2] ?? '',
    fields: fields.length + 1,
  };
}

/** Parses a command line body (after `>`). One field = a new reader; otherwise `ID:COMMAND[:DATA[:OBJECT]]`. */
export function parseCommandLine(body: string): RequestItem {
  const fields = splitFields(body);
  if (fields.length <= 1) return { kind: 'reader', reader: parseReaderLine(body) };
  const sep = body.search(/[:|]/);
  return parseCommandFields(fields[0] ?? '', body.slice(sep + 1));
}

const isSpace = (b: number): boolean => b === 0x20 || b === 0x09 || b === 0x0b || b === 0x0c || b === LF || b === CR;

/**
 * The id bytes of a command line as a latin1 string: after the leading `>`/`#` and whitespace, up to the
 * first `:` or `|` (trailing whitespace kept, as foxyproxy echoes it). undefined when the line is not a
 * protocol line or no separator was seen within `maxBytes`.
 */
export function wireId(line: Uint8Array, maxBytes = Number.MAX_SAFE_INTEGER): string | undefined {
  let i = 0;
  while (i < line.length && isSpace(line[i]!)) i++;
  if (line[i] !== 0x3e /* > */ && line[i] !== 0x23 /* # */) return undefined;
  i++;
  while (i < line.length && isSpace(line[i]!)) i++;
  const start = i;
  const stop = Math.min(line.length, start + maxBytes + 1);
  for (; i < stop; i++) {
    const b = line[i];
    if (b === COLON || b === BAR) return Buffer.from(line.buffer, line.byteOffset + start, i - start).toString('latin1');
  }
  return undefined;
}

/** First size of the unfinished-line buffer; it doubles as needed, up to maxLineBytes. */
const PARTIAL_START_BYTES = 256;

export class RequestDecoder {
  /**
   * The unfinished line: one buffer (its first `#partialBytes` bytes), grown by doubling, never past
   * maxLineBytes. One buffer, not a list of the reads it came in: a line sent a byte per read must not hold
   * a hundred times its size in small buffers.
   */
  #partial: Buffer | undefined;
  #partialBytes = 0;
  #skipLf = false;
  #dead = false;
  #reader: ReaderSpec | undefined;
  #haveReader = false;
  #items: RequestItem[] = [];
  #commands = 0;
  #waitEmptyLine = false;
  #requestBytes = 0;
  #lastId = '';
  /** The undecoded rest of the latest read (from `#heldAt` on), when `maxRequests` stopped its decoding. */
  #held: Buffer | undefined;
  #heldAt = 0;

  constructor(private readonly limits: DecoderLimits) {}

  /** True while a request has started (a protocol line was seen) and has not been completed yet. */
  get inRequest(): boolean {
    return this.#haveReader || this.#partialBytes > 0;
  }

  /**
   * Bytes of the request in progress held so far (its lines, and the buffer of the unfinished one, which
   * may be up to twice the bytes in it), plus the buffer of a read's undecoded rest, for memory budgets.
   */
  get heldBytes(): number {
    return this.#requestBytes + (this.#partial?.length ?? 0) + (this.#held?.length ?? 0);
  }

  /** Bytes of the latest read not decoded yet (`resume` decodes them). */
  get undecodedBytes(): number {
    return this.#held === undefined ? 0 : this.#held.length - this.#heldAt;
  }

  /** The id of the latest command line of the request in progress ('' if none). */
  get lastId(): string {
    return this.#lastId;
  }

  /**
   * The id to answer a request that stalls now: the unfinished command line's own id when its separator has
   * arrived (`>46:RES` → `46`), else the latest complete command line's, else ''.
   */
  get pendingId(): string {
    if (this.#haveReader && this.#partial !== undefined && this.#partialBytes > 0) {
      const id = wireId(this.#partial.subarray(0, this.#partialBytes));
      if (id !== undefined) return id;
    }
    return this.#lastId;
  }

  /**
   * Appends one read's bytes; returns the requests now complete, in order (at most `maxRequests` of them),
   * or ends with a `limit` event. Bytes after the `maxRequests`-th request are held undecoded (see
   * `resume`). The caller is expected not to push while bytes are held; if it does, the new bytes are
   * appended to the held ones (and count as the same read). Never throws.
   */
  push(chunk: Uint8Array, maxRequests = Number.POSITIVE_INFINITY): DecoderEvent[] {
    if (this.#dead || chunk.length === 0) return [];
    if (this.#held !== undefined) {
      this.#held = Buffer.concat([this.#held.subarray(this.#heldAt), chunk]);
      this.#heldAt = 0;
      return this.resume(maxRequests);
    }
    return this.#decode(chunk, 0, maxRequests, true);
  }

  /** Decodes on into the held rest of the latest read: at most `maxRequests` more requests. Never throws. */
  resume(maxRequests = Number.POSITIVE_INFINITY): DecoderEvent[] {
    const held = this.#held;
    if (this.#dead || held === undefined) return [];
    const at = this.#heldAt;
    this.#held = undefined;
    this.#heldAt = 0;
    return this.#decode(held, at, maxRequests, false);
  }

  /** Drops the held rest of the latest read (the connection is closing and will answer no more). */
  dropHeld(): void {
    this.#held = undefined;
    this.#heldAt = 0;
  }

  /**
   * Decodes `chunk` from `from` on. `copy`: the chunk is the caller's (a socket buffer); a rest to hold is
   * copied out at its own size. Otherwise it is our held buffer, kept as it is with a new offset.
   */
  #decode(chunk: Uint8Array, from: number, maxRequests: number, copy: boolean): DecoderEvent[] {
    const out: DecoderEvent[] = [];
    let requests = 0;
    let start = from;
    if (maxRequests <= 0) {
      this.#hold(chunk, start, copy);
      return out;
    }
    for (let i = from; i < chunk.length; i++) {
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
      const ev = this.#line(line);
      if (ev !== undefined) {
        out.push(ev);
        if (ev.kind === 'limit') return out;
        // The bound: no more requests out of this read until the caller has room (a request just ended, so
        // no line is unfinished and the decoder holds nothing but the rest).
        if (++requests >= maxRequests && start < chunk.length) {
          this.#hold(chunk, start, copy);
          return out;
        }
      }
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.#partialBytes + rest.length > this.limits.maxLineBytes) {
        const head = Buffer.concat([this.#partial?.subarray(0, Math.min(80, this.#partialBytes)) ?? Buffer.alloc(0), rest.subarray(0, 80)]);
        return [...out, this.#die('CARD_LIMIT_LINE', this.#limitId(head))];
      }
      this.#keep(rest);
    }
    return out;
  }

  #hold(chunk: Uint8Array, start: number, copy: boolean): void {
    if (start >= chunk.length) return;
    if (copy) {
      const rest = Buffer.allocUnsafeSlow(chunk.length - start);
      rest.set(chunk.subarray(start));
      this.#held = rest;
      this.#heldAt = 0;
    } else {
      this.#held = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      this.#heldAt = start;
    }
  }

  /**
   * The socket delivered everything it had: a request with at least one command, no unfinished line and no
   * `EMPTYLINE` is complete now (foxyproxy answers after such a read; JSignPdf waits for that answer).
   * While the read's rest is held undecoded the read is not over: nothing happens (call it again once
   * `resume` has decoded the rest).
   */
  endOfRead(): DecoderEvent[] {
    if (this.#dead || this.#held !== undefined || !this.#haveReader || this.#partialBytes > 0 || this.#commands === 0 || this.#waitEmptyLine) return [];
    return [this.#complete()];
  }

  /** Appends to the unfinished line (the caller checked maxLineBytes). */
  #keep(bytes: Uint8Array): void {
    const need = this.#partialBytes + bytes.length;
    if (this.#partial === undefined || this.#partial.length < need) {
      const size = Math.min(this.limits.maxLineBytes, Math.max(need, PARTIAL_START_BYTES, 2 * (this.#partial?.length ?? 0)));
      const grown = Buffer.allocUnsafeSlow(size);
      if (this.#partial !== undefined) this.#partial.copy(grown, 0, 0, this.#partialBytes);
      this.#partial = grown;
    }
    this.#partial.set(bytes, this.#partialBytes);
    this.#partialBytes = need;
  }

  #take(chunk: Uint8Array, start: number, end: number): Buffer {
    const piece = chunk.subarray(start, end);
    let buf: Buffer;
    if (this.#partialBytes === 0 || this.#partial === undefined) buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    else buf = Buffer.concat([this.#partial.subarray(0, this.#partialBytes), piece]);
    this.#partial = undefined;
    this.#partialBytes = 0;
    return buf;
  }

  #die(code: 'CARD_LIMIT_LINE' | 'CARD_LIMIT_COMMANDS' | 'CARD_LIMIT_REQUEST', id: string): DecoderEvent {
    this.#dead = true;
    this.#partial = undefined;
    this.#partialBytes = 0;
    this.dropHeld();
    return { kind: 'limit', code, id };
  }

  /** The id a limit on this line answers under: its own when it is a command line, else the latest one. */
  #limitId(line: Buffer): string {
    return (this.#haveReader ? wireId(line.subarray(0, 80), MAX_LIMIT_ID_BYTES) : undefined) ?? this.#lastId;
  }

  #complete(): DecoderEvent {
    const request: Request = { reader: this.#reader, items: this.#items };
    this.#reader = undefined;
    this.#haveReader = false;
    this.#items = [];
    this.#commands = 0;
    this.#waitEmptyLine = false;
    this.#requestBytes = 0;
    this.#lastId = '';
    return { kind: 'request', request };
  }

  /** One line without its line end; its length is its size on the wire. */
  #line(line: Buffer): DecoderEvent | undefined {
    const bytes = line.length;
    if (bytes > this.limits.maxLineBytes) return this.#die('CARD_LIMIT_LINE', this.#limitId(line));
    const text = line.toString('utf8').trim();
    if (this.#haveReader || text !== '') this.#requestBytes += bytes + 1;
    if (this.#requestBytes > this.limits.maxRequestBytes) return this.#die('CARD_LIMIT_REQUEST', this.#limitId(line));
    if (text === '') return this.#haveReader ? this.#complete() : undefined;
    const first = text.charCodeAt(0);
    if (first !== 0x3e /* > */ && first !== 0x23 /* # */) return undefined;
    const body = text.slice(1);
    if (!this.#haveReader) {
      this.#haveReader = true;
      this.#reader = parseReaderLine(body);
      return undefined;
    }
    let item = parseCommandLine(body);
    if (item.kind === 'command') {
      item = { ...item, id: wireId(line) ?? item.id };
      this.#lastId = item.id;
    }
    if (this.#items.length >= this.limits.maxCommands) return this.#die('CARD_LIMIT_COMMANDS', this.#lastId);
    this.#items.push(item);
    if (item.kind === 'command') {
      if (item.command === EMPTYLINE) this.#waitEmptyLine = true;
      else this.#commands++;
    }
    return undefined;
  }
}
