/**
 * Reused read buffers of the JavaScript data path (src/relay/read-buffers.ts, the links' readIntoBuffers):
 * the pool's policy, and exact bytes through tunnels whose receivers stall now and then, so that views of
 * the large buffers sit in write queues while the next reads happen (the case where reusing one would
 * corrupt data): plain readers with and without a kernel-relay hand-off in the middle, WebSocket readers
 * (frames unmasked in place, headers not handed on), TLS and WSS readers (records filling one buffer).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { ReadBuffers, TUNNEL_TLS_READ_BUFFERS } from '../../src/relay/read-buffers.ts';
import { countLargeBuffers } from '../helpers/read-buffers.ts';
import { startRelay, pair, rawClient, authenticate, selfSignedCert, tempDir, NO_ERROR, TUNNEL_ESTABLISHED, type RawClient } from '../helpers/relay.ts';

test('pool: one shared small buffer; large buffers come back only when released, up to keepFree', () => {
  const pool = new ReadBuffers(1024, 64, 1);
  assert.equal(pool.small, pool.small);
  assert.equal(pool.small.length, 64);
  const a = pool.large();
  const b = pool.large();
  assert.notEqual(a, b);
  assert.equal(a.length, 1024);
  pool.release(a);
  pool.release(b); // over keepFree: dropped
  assert.equal(pool.large(), a);
  assert.notEqual(pool.large(), b);
});

test('pool: buffers dropped (past keepFree, or still held when their reader ended) ask for a collection once per dropLimit', () => {
  const pool = new ReadBuffers(1024, 64, 1);
  pool.dropLimit = 4096;
  let asked = 0;
  pool.onDropped = () => asked++;
  pool.release(pool.large()); // kept
  for (let i = 0; i < 3; i++) pool.release(Buffer.alloc(1024)); // over keepFree: dropped, 3 KiB
  assert.equal(asked, 0);
  pool.drop(Buffer.alloc(1024)); // 4 KiB dropped: one collection
  assert.equal(asked, 1);
  for (let i = 0; i < 3; i++) pool.drop(Buffer.alloc(1024));
  assert.equal(asked, 1, 'the count starts again');
  pool.drop(Buffer.alloc(1024));
  assert.equal(asked, 2);
});

/** Stalls `c`'s reading for `ms` every `everyMs` until `stop` is set (its socket's buffers fill up meanwhile). */
function stutter(c: RawClient, everyMs: number, ms: number): { stop: () => void } {
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    c.pause();
    setTimeout(() => {
      c.resume();
      if (!stopped) setTimeout(tick, everyMs);
    }, ms);
  };
  setTimeout(tick, everyMs);
  return { stop: () => (stopped = true) };
}

for (const [name, splice] of [
  ['JS path', { enabled: false }],
  ['handed to the kernel relay mid-stream', { afterBytes: 3_000_000 }],
] as const) {
  test(`${name}: 16 MiB each way through receivers that stall, exactly`, { timeout: 60_000 }, async () => {
    const relay = await startRelay({ splice });
    try {
      const { a, b, aOffset, bOffset } = await pair(relay.url('tcp'), relay.url('tcp'));
      const one = randomBytes(16 * 1024 * 1024);
      const two = randomBytes(16 * 1024 * 1024);
      const stalls = [stutter(a, 30, 20), stutter(b, 25, 20)];
      // Several writes, so reads of every size happen (a whole 256 KiB read, a part of one).
      for (let i = 0; i < one.length; i += 1_000_000) a.send(one.subarray(i, i + 1_000_000));
      for (let i = 0; i < two.length; i += 700_000) b.send(two.subarray(i, i + 700_000));
      const gotB = (await b.waitForBytes(bOffset + one.length, 40_000)).subarray(bOffset);
      const gotA = (await a.waitForBytes(aOffset + two.length, 40_000)).subarray(aOffset);
      for (const s of stalls) s.stop();
      assert.ok(gotB.equals(one), 'a -> b');
      assert.ok(gotA.equals(two), 'b -> a');
    } finally {
      await relay.close();
    }
  });
}

// A plain reader whose partner writes slower (TLS encrypts, WebSocket frames): its buffers sit in that
// writer's queue, and come back into use once the writer is past them (before, every read took a new
// 256 KiB buffer). Reusing one a byte too early would corrupt the stream: exact bytes, with stalls.
for (const far of ['tls', 'ws'] as const) {
  test(`a plain reader, a ${far} writer that stalls: 24 MiB exactly, buffers reused`, { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const relay = await startRelay({
      splice: { enabled: false },
      listeners: [
        { kind: 'tcp', host: '127.0.0.1', port: 0 },
        { kind: far, host: '127.0.0.1', port: 0 },
      ],
      ...(far === 'tls' ? { tls: selfSignedCert(dir) } : {}),
    });
    try {
      const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url(far));
      const one = randomBytes(24 * 1024 * 1024);
      const stall = stutter(b, 25, 20);
      const made = countLargeBuffers();
      for (let i = 0; i < one.length; i += 1_000_000) a.send(one.subarray(i, i + 1_000_000));
      const got = await b.waitForBytes(bOffset + one.length, 40_000);
      stall.stop();
      assert.ok(got.subarray(bOffset).equals(one), `tcp -> ${far}`);
      // 96 reads of 256 KiB: with reuse, a handful of buffers serve them all.
      assert.ok(made.count() < 24, `large buffers made: ${made.count()}`);
      made.stop();
    } finally {
      await relay.close();
    }
  });
}

// A WebSocket reader (ws, not wss) reads into the same reused buffers once its frames are read by the link
// itself: headers are not handed on, payloads are unmasked in place and handed on as views. Messages of
// every size (headers of 2, 4 and 10 bytes, split wherever the reads fall), fragmented messages and pings
// between them; each writer stalls, so views sit in its queue while the next reads happen.
for (const far of ['tcp', 'ws', 'tls'] as const) {
  test(`a ws reader, a ${far} writer that stalls: 24 MiB of frames exactly, the reads go into reused buffers`, { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const kinds = far === 'ws' ? (['ws'] as const) : (['ws', far] as const);
    const relay = await startRelay({
      splice: { enabled: false },
      listeners: kinds.map((kind) => ({ kind, host: '127.0.0.1', port: 0 })),
      ...(far === 'tls' ? { tls: selfSignedCert(dir) } : {}),
    });
    try {
      const { a, b, bOffset } = await pair(relay.url('ws'), relay.url(far));
      const one = randomBytes(24 * 1024 * 1024);
      const stall = stutter(b, 25, 20);
      const made = countLargeBuffers();
      const ws = a.ws!;
      const sizes = [1_000_000, 1, 125, 126, 65_535, 65_536, 300_001, 7, 262_144, 4096];
      for (let i = 0, k = 0; i < one.length; k++) {
        const n = Math.min(sizes[k % sizes.length]!, one.length - i);
        const msg = one.subarray(i, i + n);
        if (k % 7 === 3 && n > 2) {
          // One message in three frames, a ping between two of them.
          const cut = Math.floor(n / 3);
          ws.send(msg.subarray(0, cut), { binary: true, fin: false });
          ws.ping(Buffer.from('mid-message'));
          ws.send(msg.subarray(cut, 2 * cut), { binary: true, fin: false });
          ws.send(msg.subarray(2 * cut), { binary: true, fin: true });
        } else {
          ws.send(msg, { binary: true });
        }
        if (k % 5 === 0) ws.ping();
        i += n;
      }
      const got = await b.waitForBytes(bOffset + one.length, 40_000);
      stall.stop();
      assert.ok(got.subarray(bOffset).equals(one), `ws -> ${far}`);
      // The WS side's reads use the pool (before, none did), and a handful of buffers serve ~100 reads.
      assert.ok(made.count() >= 1 && made.count() < 24, `large buffers made: ${made.count()}`);
      made.stop();
    } finally {
      await relay.close();
    }
  });
}

// TLS hands over one record (at most 16 KiB) per read: a TLS or WSS reader fills a large buffer record
// after record while the writer holds part of it, and starts it over once the writer is past it. Exact
// bytes through writers that stall, and a handful of the TLS pool's 64 KiB buffers for ~1,500 reads.
for (const [near, far] of [['tls', 'tcp'], ['tls', 'tls'], ['tls', 'ws'], ['wss', 'tcp'], ['wss', 'wss'], ['wss', 'tls']] as const) {
  test(`a ${near} reader, a ${far} writer that stalls: 24 MiB exactly, records read into reused buffers`, { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const kinds = near === far ? [near] : [near, far];
    const relay = await startRelay({
      splice: { enabled: false },
      listeners: kinds.map((kind) => ({ kind, host: '127.0.0.1', port: 0 })),
      tls: selfSignedCert(dir),
    });
    try {
      const { a, b, bOffset } = await pair(relay.url(near), relay.url(far));
      const one = randomBytes(24 * 1024 * 1024);
      const stall = stutter(b, 25, 20);
      const made = countLargeBuffers(TUNNEL_TLS_READ_BUFFERS);
      const sizes = [1_000_000, 1, 16_384, 16_385, 300_001, 7, 262_144];
      for (let i = 0, k = 0; i < one.length; k++) {
        const n = Math.min(sizes[k % sizes.length]!, one.length - i);
        a.send(one.subarray(i, i + n), { binary: true });
        i += n;
      }
      const got = await b.waitForBytes(bOffset + one.length, 40_000);
      stall.stop();
      assert.ok(got.subarray(bOffset).equals(one), `${near} -> ${far}`);
      assert.ok(made.count() >= 1 && made.count() < 24, `large buffers made: ${made.count()}`);
      made.stop();
    } finally {
      await relay.close();
    }
  });
}

/** A client frame (RFC 6455): FIN, `opcode`, a 64-bit length when asked (else the shortest), masked. */
function clientFrame(opcode: number, payload: Buffer, long = false): Buffer {
  const mask = randomBytes(4);
  const n = payload.length;
  const head = long ? Buffer.alloc(10) : n < 126 ? Buffer.alloc(2) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (head.length === 2) head[1] = 0x80 | n;
  else if (head.length === 4) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(n, 2);
  } else {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  const body = Buffer.from(payload);
  for (let i = 0; i < n; i++) body[i]! ^= mask[i & 3]!;
  return Buffer.concat([head, mask, body]);
}

test('a ws frame cut inside its header when the tunnel starts: taken over at the next read, reused buffers from then on, every byte exact', { timeout: 30_000 }, async () => {
  const relay = await startRelay({ splice: { enabled: false }, listeners: [{ kind: 'ws', host: '127.0.0.1', port: 0 }, { kind: 'tcp', host: '127.0.0.1', port: 0 }] });
  const port = Number(new URL(relay.url('ws')).port);
  const socket = connect({ host: '127.0.0.1', port });
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('error', () => undefined);
  const seen = async (needle: string) => {
    for (let i = 0; i < 500 && !Buffer.concat(got).includes(needle); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(Buffer.concat(got).includes(needle), `waited for ${needle}`);
  };
  try {
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    await seen('\r\n\r\n');
    const token = `token-${crypto.randomUUID()}`;
    socket.write(clientFrame(1, Buffer.from(authenticate(token, { name: 'raw' }))));
    await seen(NO_ERROR);
    // Five header bytes of a 1,000,000-byte binary frame (a 64-bit length, not all of it in): `ws` holds them
    // in the middle of the header, where the link cannot take its frames over yet.
    const payload = randomBytes(1_000_000);
    const frame = clientFrame(2, payload, true);
    socket.write(frame.subarray(0, 5));
    const b = await rawClient(relay.url('tcp'));
    const made = countLargeBuffers();
    b.send(authenticate(token, { name: 'beta' }));
    await b.waitFor(TUNNEL_ESTABLISHED);
    await seen(TUNNEL_ESTABLISHED);
    const bOffset = b.received().length;
    // The rest of that frame, then 6 MiB more in frames of 200,000 bytes: reads of 256 KiB from here on.
    socket.write(frame.subarray(5));
    const more = randomBytes(6 * 1024 * 1024);
    for (let i = 0; i < more.length; i += 200_000) socket.write(clientFrame(2, more.subarray(i, i + 200_000)));
    const all = Buffer.concat([payload, more]);
    const received = await b.waitForBytes(bOffset + all.length, 20_000);
    assert.ok(received.subarray(bOffset).equals(all), 'ws -> tcp, exactly');
    assert.ok(made.count() >= 1, `large buffers made: ${made.count()}`);
    made.stop();
  } finally {
    socket.destroy();
    await relay.close();
  }
});
