/**
 * The relay's JSON message splitter (pure: bytes in, whole messages out; no sockets).
 *
 * nymea-remoteproxy frames JSON-RPC loosely, and stock clients depend on it:
 * - a message ends where the buffer holds `}\n{` (the `}` closes one message, the `{` opens the next);
 * - the buffer is also complete when it ends with `}` or `}\n` (nothing else: `}\r\n` waits);
 * so the newline after a message is optional, fragments are reassembled, several newline-separated
 * messages in one chunk all come out, and `}{` without a newline stays one (unparsable) message.
 * More than `maxBufferedBytes` of incomplete input is a protocol violation (RELAY_MESSAGE_TOO_LARGE).
 * Messages come out as bytes (`pushBytes`): the JSON layer must see invalid UTF-8 to refuse it as Qt does;
 * `push` decodes them for callers that only read well-formed server output.
 */
import { GatewayError } from '../../core/errors.ts';

/** nymea's limit on buffered, incomplete input before a tunnel exists. */
export const MAX_MESSAGE_BYTES = 10240;

const CLOSE_BRACE = 0x7d;
const LF = 0x0a;
const OPEN_BRACE = 0x7b;

export class MessageSplitter {
  #buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly maxBufferedBytes: number = MAX_MESSAGE_BYTES) {}

  /** Bytes held back waiting for the rest of a message. */
  get bufferedBytes(): number {
    return this.#buffer.length;
  }

  /**
   * Appends `chunk` and returns every message now complete (decoded as UTF-8, in order).
   * @throws GatewayError RELAY_MESSAGE_TOO_LARGE when the incomplete remainder exceeds the limit.
   */
  push(chunk: Uint8Array): string[] {
    return this.pushBytes(chunk).map((m) => m.toString('utf8'));
  }

  /**
   * Appends `chunk` and returns every message now complete, as the bytes received, in order.
   * @throws GatewayError RELAY_MESSAGE_TOO_LARGE when the incomplete remainder exceeds the limit.
   */
  pushBytes(chunk: Uint8Array): Buffer[] {
    let buf = this.#buffer.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buffer, chunk]);
    const messages: Buffer[] = [];
    let start = 0;
    // Only new bytes (plus the two before them) can complete a `}\n{` separator.
    let from = Math.max(0, this.#buffer.length - 2);
    for (;;) {
      const at = indexOfSeparator(buf, Math.max(from, start));
      if (at < 0) break;
      messages.push(buf.subarray(start, at + 1));
      start = at + 2;
      from = start;
    }
    if (start > 0) buf = buf.subarray(start);
    const n = buf.length;
    if ((n > 0 && buf[n - 1] === CLOSE_BRACE) || (n > 1 && buf[n - 1] === LF && buf[n - 2] === CLOSE_BRACE)) {
      messages.push(buf);
      buf = Buffer.alloc(0);
    }
    if (buf.length > this.maxBufferedBytes) {
      this.#buffer = Buffer.alloc(0);
      throw new GatewayError('RELAY_MESSAGE_TOO_LARGE', `more than ${this.maxBufferedBytes} bytes of incomplete JSON buffered`, {
        details: { bufferedBytes: buf.length },
      });
    }
    // Copy so a small remainder does not pin a large chunk in memory.
    this.#buffer = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf);
    return messages;
  }

  /** Takes whatever is buffered (used when a tunnel starts: leftover bytes belong to the partner). */
  drain(): Buffer {
    const rest = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    return rest;
  }
}

function indexOfSeparator(buf: Buffer, from: number): number {
  for (let i = buf.indexOf(CLOSE_BRACE, from); i >= 0 && i + 2 < buf.length + 0; i = buf.indexOf(CLOSE_BRACE, i + 1)) {
    if (buf[i + 1] === LF && buf[i + 2] === OPEN_BRACE) return i;
  }
  return -1;
}
