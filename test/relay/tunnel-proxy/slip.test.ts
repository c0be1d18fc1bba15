/** The SLIP codec of the tunnel-proxy server connection: byte fixtures (nymea's own), chunking, hostile input. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SlipDecoder, decodeFrames, encodeFrame, SLIP_END, SLIP_ESC } from '../../../src/relay/protocol/slip.ts';
import { hostileName } from '../../helpers/hostile.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('fixture: client data on address 1 (as observed on the wire)', () => {
  assert.deepEqual(encodeFrame(1, Buffer.from('hello')), hex('00 01 68 65 6c 6c 6f c0'));
  assert.deepEqual(decodeFrames(hex('00 01 68 65 6c 6c 6f c0')).frames, [{ address: 1, payload: Buffer.from('hello') }]);
});

test('fixture: END and ESC in the payload are escaped (41 C0 DB 42)', () => {
  assert.deepEqual(encodeFrame(2, hex('41 c0 db 42')), hex('00 02 41 db dc db dd 42 c0'));
  // nymea 1.13 forwards the escaped form to the client; we unescape.
  assert.deepEqual(decodeFrames(hex('00 02 41 db dc db dd 42 c0')).frames[0]!.payload, hex('41 c0 db 42'));
});

test('fixture: an address containing C0 or DB is escaped and read after unescaping', () => {
  assert.deepEqual(encodeFrame(0x00c0, hex('01')), hex('00 db dc 01 c0'));
  assert.deepEqual(encodeFrame(0xdbc0, hex('')), hex('db dd db dc c0'));
  assert.deepEqual(decodeFrames(hex('00 db dc 01 c0')).frames, [{ address: 0x00c0, payload: hex('01') }]);
  assert.deepEqual(decodeFrames(hex('db dd db dc c0')).frames, [{ address: 0xdbc0, payload: hex('') }]);
});

test("nymea's testSlip rows: a lot of special characters, END runs, plain text round-trip", () => {
  for (const data of [
    hex('C0AABBCCDDEEFF12A1B2C3D4E5FFC0DBDCDDAA'),
    hex('C0C0C0C0C0C0C0C0C0C0DDDDCDCDCDCDCDCD'),
    Buffer.from('Foo Bar text describing 123456770ß2123#+@$%/(!"W=$*\'*'),
  ]) {
    const wire = encodeFrame(0x1234, data);
    assert.equal(wire.at(-1), SLIP_END);
    assert.equal(wire.subarray(0, -1).includes(SLIP_END), false);
    assert.deepEqual(decodeFrames(wire).frames, [{ address: 0x1234, payload: data }]);
  }
});

test("nymea's testSlip row: ESC followed by a byte that is not ESC_END/ESC_ESC is invalid", () => {
  // AA DB 12 FF C0: the frame is dropped (nymea: deserializeData gives an empty array).
  const r = decodeFrames(hex('AA DB 12 FF C0'));
  assert.deepEqual(r.frames, []);
  assert.equal(r.invalid, 1);
  // The frame after it is intact.
  const s = decodeFrames(hex('00 05 DB 12 FF C0 00 06 61 C0'));
  assert.deepEqual(s.frames, [{ address: 6, payload: Buffer.from('a') }]);
  // ESC directly before END: that END ends the broken frame.
  const t = decodeFrames(hex('00 05 61 DB C0 00 06 62 C0'));
  assert.deepEqual(t.frames, [{ address: 6, payload: Buffer.from('b') }]);
  assert.equal(t.invalid, 1);
});

test('leading and repeated ENDs are empty frames and ignored; a 1-byte frame is malformed', () => {
  assert.deepEqual(decodeFrames(hex('C0 C0 C0 00 01 41 C0 C0')).frames, [{ address: 1, payload: Buffer.from('A') }]);
  const r = decodeFrames(hex('07 C0 00 02 42 C0'));
  assert.equal(r.invalid, 1);
  assert.deepEqual(r.frames, [{ address: 2, payload: Buffer.from('B') }]);
});

/** Frames with any address and payload, biased toward END/ESC bytes. */
const framesArb = fc.array(
  fc.record({
    address: fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 0xc0, 0xdb, 0xc0db, 0xdbc0, 0xffff)),
    payload: fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u.map((b) => (b % 5 === 0 ? SLIP_END : b % 7 === 0 ? SLIP_ESC : b)))),
  }),
  { maxLength: 20 },
);

/** Splits `buf` at the given cut points. */
function chunked(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out;
}

test('property: encode then decode gives the frames back, under any chunking', () => {
  fc.assert(
    fc.property(framesArb, fc.array(fc.nat(), { maxLength: 40 }), fc.boolean(), (frames, cuts, leadingEnd) => {
      const wire = Buffer.concat([leadingEnd ? Buffer.from([SLIP_END]) : Buffer.alloc(0), ...frames.map((f) => encodeFrame(f.address, f.payload))]);
      const decoder = new SlipDecoder();
      const got: { address: number; payload: Buffer }[] = [];
      let parts: Buffer[] = [];
      for (const c of chunked(wire, cuts)) {
        decoder.push(c, {
          payload: (_a, b) => parts.push(Buffer.from(b)),
          end: (address) => {
            got.push({ address, payload: Buffer.concat(parts) });
            parts = [];
          },
          invalid: () => assert.fail('no frame is invalid'),
        });
      }
      assert.deepEqual(got, frames.map((f) => ({ address: f.address, payload: f.payload })));
    }),
    { numRuns: 300 },
  );
});

test('property: any bytes, any chunking: never throws, and the same frames as in one piece', () => {
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 400 }),
    fc.array(fc.constantFrom(SLIP_END, SLIP_ESC, 0xdc, 0xdd, 0x00, 0x41), { maxLength: 200 }).map((a) => Uint8Array.from(a)),
    // Client-chosen names inside frames, as a server might relay them.
    fc.array(hostileName(), { maxLength: 8 }).map((names) => Buffer.concat(names.map((n, i) => encodeFrame(i, Buffer.from(n))))),
  );
  fc.assert(
    fc.property(bytes, fc.array(fc.nat(), { maxLength: 30 }), (input, cuts) => {
      const whole = decodeFrames(input);
      const decoder = new SlipDecoder();
      let frames: { address: number; payload: Buffer }[] = [];
      let invalid = 0;
      let parts: Buffer[] = [];
      for (const c of chunked(Buffer.from(input), cuts)) {
        decoder.push(c, {
          payload: (_a, b) => parts.push(Buffer.from(b)),
          end: (address) => {
            frames.push({ address, payload: Buffer.concat(parts) });
            parts = [];
          },
          invalid: () => {
            invalid++;
            parts = [];
          },
        });
      }
      assert.deepEqual(frames, whole.frames);
      assert.equal(invalid, whole.invalid);
      frames = [];
    }),
    { numRuns: 500 },
  );
});
