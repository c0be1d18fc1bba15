/**
 * Reused read buffers of the JavaScript data path (src/relay/read-buffers.ts, StreamLink.readIntoBuffers):
 * the pool's policy, and exact bytes through tunnels whose receivers stall now and then, so that views of
 * the large buffers sit in write queues while the next reads happen (the case where reusing one would
 * corrupt data), with and without a kernel-relay hand-off in the middle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ReadBuffers, TUNNEL_READ_BUFFERS } from '../../src/relay/read-buffers.ts';
import { startRelay, pair, selfSignedCert, tempDir, type RawClient } from '../helpers/relay.ts';

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

/** Counts the large buffers the tunnels' pool makes from now on (its `large()` calls that found none free). */
function countLargeBuffers(): { count: () => number; stop: () => void } {
  const pool = TUNNEL_READ_BUFFERS as unknown as { large: () => Buffer; release: (b: Buffer) => void };
  const original = pool.large.bind(pool);
  const seen = new Set<Buffer>();
  pool.large = () => {
    const b = original();
    seen.add(b);
    return b;
  };
  return { count: () => seen.size, stop: () => void (pool.large = original) };
}
