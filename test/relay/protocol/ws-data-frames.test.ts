import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import { WsDataFrames, unmaskJs } from '../../../src/relay/protocol/ws-data-frames.ts';

/** `ws`'s frame reader (exported at run time; its typings do not declare it). */
const { Receiver } = createRequire(import.meta.url)('ws') as { Receiver: new (options: object) => Writable };

/** One client frame: FIN, opcode, payload, masked with `mask` (RFC 6455 §5.2). */
function frame(fin: boolean, opcode: number, payload: Buffer, mask = Buffer.from([0x12, 0x34, 0x56, 0x78]), extra: { rsv?: number; unmasked?: boolean; len64?: boolean } = {}): Buffer {
  const n = payload.length;
  const lenBytes = extra.len64 === true || n > 0xffff ? 8 : n > 125 ? 2 : 0;
  const head = Buffer.alloc(2 + lenBytes);
  head[0] = (fin ? 0x80 : 0) | (extra.rsv ?? 0) | opcode;
  head[1] = (extra.unmasked === true ? 0 : 0x80) | (lenBytes === 8 ? 127 : lenBytes === 2 ? 126 : n);
  if (lenBytes === 2) head.writeUInt16BE(n, 2);
  if (lenBytes === 8) head.writeBigUInt64BE(BigInt(n), 2);
  if (extra.unmasked === true) return Buffer.concat([head, payload]);
  const body = Buffer.from(payload);
  unmaskJs(body, mask); // XOR is its own inverse
  return Buffer.concat([head, mask, body]);
}

interface Out {
  data: { bytes: Buffer; binary: boolean }[];
  control: Buffer[];
  fail: number[];
}

function reader(max = 1 << 20): { frames: WsDataFrames; out: Out } {
  const out: Out = { data: [], control: [], fail: [] };
  const frames = new WsDataFrames(max, {
    // The piece is a view of the pushed chunk: copy it, as a relay would have written it by now.
    data: (piece, binary) => out.data.push({ bytes: Buffer.from(piece), binary }),
    control: (f) => out.control.push(Buffer.from(f)),
    fail: (code) => out.fail.push(code),
  });
  return { frames, out };
}

/** Splits `buf` at the given cut points and pushes each piece (a fresh copy, as a socket read is). */
function pushChunked(frames: WsDataFrames, buf: Buffer, cuts: number[]): void {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  for (const p of [...points, buf.length]) {
    if (p > at) frames.push(Buffer.from(buf.subarray(at, p)));
    at = Math.max(at, p);
  }
}

test('a masked binary frame: payload unmasked, delivered as binary', () => {
  const { frames, out } = reader();
  const payload = Buffer.from('hello, tunnel');
  frames.push(frame(true, 2, payload));
  assert.equal(out.data.length, 1);
  assert.ok(out.data[0]!.bytes.equals(payload));
  assert.equal(out.data[0]!.binary, true);
  assert.deepEqual(out.fail, []);
});

test('a 200 KiB frame split over reads comes out piece by piece, each read at once', () => {
  const { frames, out } = reader();
  const payload = Buffer.alloc(200 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
  const wire = frame(true, 1, payload);
  // Four reads of 64 KiB: a piece after each, none waits for the frame's end.
  for (let at = 0; at < wire.length; at += 65536) {
    const before = out.data.length;
    frames.push(Buffer.from(wire.subarray(at, at + 65536)));
    assert.equal(out.data.length, before + 1);
  }
  assert.ok(Buffer.concat(out.data.map((d) => d.bytes)).equals(payload));
  assert.ok(out.data.every((d) => !d.binary));
});

test('control frames pass whole and as received, also between fragments; a close frame ends the stream', () => {
  const { frames, out } = reader();
  const ping = frame(true, 9, Buffer.from('p'));
  const close = frame(true, 8, Buffer.from([0x03, 0xe8]));
  frames.push(Buffer.concat([frame(false, 2, Buffer.from('ab')), ping, frame(true, 0, Buffer.from('cd')), close, frame(true, 2, Buffer.from('after'))]));
  assert.deepEqual(
    out.data.map((d) => [d.bytes.toString(), d.binary]),
    [
      ['ab', true],
      ['cd', true],
    ],
  );
  assert.deepEqual(out.control, [ping, close]);
  assert.equal(frames.done, true);
});

test('the message limit counts every frame of a message, and is checked on the header (no byte of the frame is delivered)', () => {
  const { frames, out } = reader(10);
  frames.push(frame(true, 2, Buffer.alloc(10, 1)));
  frames.push(frame(false, 2, Buffer.alloc(6, 2)));
  frames.push(frame(true, 0, Buffer.alloc(5, 3)));
  assert.deepEqual(out.fail, [1009]);
  assert.deepEqual(
    out.data.map((d) => d.bytes.length),
    [10, 6],
  );
  frames.push(frame(true, 2, Buffer.alloc(1)));
  assert.equal(out.data.length, 2, 'nothing after a failure');
});

/**
 * What `ws`'s own server-side receiver reports for the same bytes: its messages (at once), and its error's
 * close code (set once the error event has run: after a setImmediate).
 */
function wsOracle(wire: Buffer, max: number): { messages: Buffer[]; code: number | undefined } {
  const rx = new Receiver({ isServer: true, maxPayload: max, skipUTF8Validation: true });
  const messages: Buffer[] = [];
  let code: number | undefined;
  rx.on('message', (m: Buffer) => messages.push(Buffer.from(m)));
  rx.on('error', (e: Error & { [k: symbol]: unknown }) => {
    const sym = Object.getOwnPropertySymbols(e).find((s) => s.description === 'status-code');
    code ??= sym === undefined ? -1 : (e[sym] as number);
  });
  rx.on('conclude', () => undefined);
  rx.on('ping', () => undefined);
  rx.on('pong', () => undefined);
  rx.write(wire);
  return {
    messages,
    get code() {
      return code;
    },
  };
}

test('violations are refused with the code `ws` gives them', async () => {
  const p = Buffer.from('xy');
  const cases: [string, Buffer][] = [
    ['RSV1', frame(true, 2, p, undefined, { rsv: 0x40 })],
    ['RSV2', frame(true, 2, p, undefined, { rsv: 0x20 })],
    ['unmasked', frame(true, 2, p, undefined, { unmasked: true })],
    ['continuation first', frame(true, 0, p)],
    ['new message inside a fragmented one', Buffer.concat([frame(false, 2, p), frame(true, 1, p)])],
    ['opcode 3', frame(true, 3, p)],
    ['opcode 0xb', frame(true, 0xb, p)],
    ['ping without FIN', frame(false, 9, p)],
    ['ping of 126 bytes', frame(true, 9, Buffer.alloc(126))],
    ['close of 1 byte', frame(true, 8, Buffer.alloc(1))],
    ['64-bit length past 2^53', Buffer.from([0x82, 0xff, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])],
    ['over the limit', frame(true, 2, Buffer.alloc(65))],
  ];
  for (const [name, wire] of cases) {
    const { frames, out } = reader(64);
    frames.push(Buffer.from(wire));
    const oracle = wsOracle(Buffer.from(wire), 64);
    await new Promise((r) => setImmediate(r));
    assert.equal(out.fail.length, 1, name);
    assert.equal(out.fail[0], oracle.code, name);
  }
});

test('property: any chunking of valid frames gives the bytes `ws` delivers, in order, and every control frame', () => {
  const message = fc.record({
    binary: fc.boolean(),
    parts: fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 4 }),
    mask: fc.uint8Array({ minLength: 4, maxLength: 4 }),
    pingAfterFirst: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(message, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 20 }), (messages, cuts) => {
      const wires: Buffer[] = [];
      const pings: Buffer[] = [];
      for (const m of messages) {
        m.parts.forEach((part, i) => {
          wires.push(frame(i === m.parts.length - 1, i === 0 ? (m.binary ? 2 : 1) : 0, Buffer.from(part), Buffer.from(m.mask)));
          if (i === 0 && m.pingAfterFirst) {
            const ping = frame(true, 9, Buffer.from('ping'), Buffer.from(m.mask));
            pings.push(ping);
            wires.push(ping);
          }
        });
      }
      const wire = Buffer.concat(wires);
      const { frames, out } = reader();
      pushChunked(frames, wire, cuts);
      const oracle = wsOracle(Buffer.from(wire), 1 << 20);
      assert.deepEqual(out.fail, []);
      assert.ok(Buffer.concat(out.data.map((d) => d.bytes)).equals(Buffer.concat(oracle.messages)));
      assert.deepEqual(out.control, pings);
      // Each piece carries its message's kind.
      const kinds = messages.flatMap((m) => (m.parts.some((p) => p.length > 0) ? [m.binary] : []));
      let k = 0;
      let got = 0;
      for (const m of messages) {
        const len = m.parts.reduce((s, p) => s + p.length, 0);
        if (len === 0) continue;
        let seen = 0;
        while (seen < len) {
          const d = out.data[got++]!;
          assert.equal(d.binary, kinds[k]);
          seen += d.bytes.length;
        }
        k++;
      }
    }),
    { numRuns: 300 },
  );
});

test('property: no input throws; a failure is reported at most once', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const { frames, out } = reader(256);
      pushChunked(frames, Buffer.from(bytes), cuts);
      assert.ok(out.fail.length <= 1);
    }),
    { numRuns: 500 },
  );
});
