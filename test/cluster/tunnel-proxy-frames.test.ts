/**
 * The pieces of the tunnel-proxy mode across nodes that need no socket: the server node → client node
 * frames of a forwarded client (byte fixtures, any chunking gives the same bytes and close, no input
 * throws), and the primary's directory table for `serve --workers` (one holder per uuid, a worker's
 * entries gone with it, hostile messages refused).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TpForwardDecoder, encodeClose, encodeDataHeader, MAX_REASON } from '../../src/relay/cluster/tp-forward.ts';
import { PrimaryTpTable, isTpRequest } from '../../src/relay/cluster/tp-directory-ipc.ts';

function decode(chunks: Buffer[]): { data: Buffer; close: unknown; invalid: string | undefined } {
  const d = new TpForwardDecoder();
  const data: Buffer[] = [];
  let close: unknown = 'none';
  let invalid: string | undefined;
  for (const c of chunks) d.push(c, { data: (b) => data.push(Buffer.from(b)), close: (x) => (close = x), invalid: (r) => (invalid = r) });
  return { data: Buffer.concat(data), close, invalid };
}

test('forward frames: byte fixtures for data and close', () => {
  assert.deepEqual(encodeDataHeader(3), Buffer.from([0x01, 0, 0, 0, 3]));
  assert.deepEqual(encodeClose({ code: 1011, reason: 'Server disconnected' }), Buffer.concat([Buffer.from([0x02, 0x03, 0xf3, 19]), Buffer.from('Server disconnected')]));
  assert.deepEqual(encodeClose(undefined), Buffer.from([0x02, 0, 0, 0]));
  assert.equal(encodeClose({ code: 1000, reason: 'x'.repeat(200) }).length, 4 + MAX_REASON);
  const stream = Buffer.concat([encodeDataHeader(3), Buffer.from('abc'), encodeDataHeader(2), Buffer.from([0xc0, 0xdb]), encodeClose({ code: 1011, reason: 'Stop server' })]);
  assert.deepEqual(decode([stream]), { data: Buffer.from([0x61, 0x62, 0x63, 0xc0, 0xdb]), close: { code: 1011, reason: 'Stop server' }, invalid: undefined });
  assert.deepEqual(decode([encodeClose(undefined)]).close, undefined);
  assert.equal(decode([Buffer.from([0x07])]).invalid, 'unknown frame type 7');
  assert.equal(decode([Buffer.from([0x01, 0, 0, 0, 0])]).invalid, 'empty data frame');
  assert.equal(decode([Buffer.from([0x02, 0, 0, 200])]).invalid, 'close reason too long');
});

test('forward frames: any chunking gives the same bytes and close; no input throws', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 8 }), fc.string({ maxLength: 40 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }), (payloads, reason, cuts) => {
      const whole = Buffer.concat([...payloads.flatMap((p) => [encodeDataHeader(p.length), Buffer.from(p)]), encodeClose({ code: 4000, reason })]);
      const chunks: Buffer[] = [];
      for (let i = 0, k = 0; i < whole.length; k++) {
        const n = cuts[k % cuts.length]!;
        chunks.push(whole.subarray(i, i + n));
        i += n;
      }
      const got = decode(chunks);
      assert.deepEqual(got.data, Buffer.concat(payloads.map((p) => Buffer.from(p))));
      assert.deepEqual(got.close, { code: 4000, reason: Buffer.from(reason).subarray(0, MAX_REASON).toString() });
      assert.equal(got.invalid, undefined);
    }),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), (chunks) => {
      decode(chunks.map((c) => Buffer.from(c)));
    }),
    { numRuns: 500 },
  );
});

test('the primary directory table: one holder per uuid, lookups, a worker exit frees its servers', () => {
  const t = new PrimaryTpTable();
  const req = (id: number, op: 'register' | 'unregister' | 'lookup', key: string, address = '') => ({ gh: 'tp' as const, id, op, key, address });
  assert.deepEqual(t.handle(1, req(1, 'register', 'k1', '/tmp/w0.sock')), { gh: 'tp', id: 1, ok: true });
  assert.deepEqual(t.handle(2, req(2, 'register', 'k1', '/tmp/w1.sock')), { gh: 'tp', id: 2, ok: false, node: 'worker-1' });
  assert.deepEqual(t.handle(2, req(3, 'lookup', 'k1')), { gh: 'tp', id: 3, ok: true, node: 'worker-1', address: '/tmp/w0.sock' });
  // Another worker cannot free it; its own worker can.
  t.handle(2, req(4, 'unregister', 'k1'));
  assert.equal(t.handle(2, req(5, 'lookup', 'k1')).ok, true);
  t.dropWorker(1);
  assert.deepEqual(t.handle(2, req(6, 'lookup', 'k1')), { gh: 'tp', id: 6, ok: false });
  assert.deepEqual(t.handle(2, req(7, 'register', 'k1', '/tmp/w1.sock')), { gh: 'tp', id: 7, ok: true });
  t.handle(2, req(8, 'unregister', 'k1'));
  assert.equal(t.size, 0);
  // Prototype keys are keys like any other; malformed messages are not requests.
  assert.equal(t.handle(3, req(9, 'lookup', '__proto__')).ok, false);
  for (const bad of [null, 'tp', { gh: 'tp' }, { gh: 'tp', id: 1, op: 'constructor', key: 'k', address: '' }, { gh: 'tp', id: 1, op: 'lookup', key: 'k'.repeat(200), address: '' }, { gh: 'tp', id: '1', op: 'lookup', key: 'k', address: '' }])
    assert.equal(isTpRequest(bad), false);
  assert.equal(isTpRequest(req(1, 'lookup', 'k')), true);
});
