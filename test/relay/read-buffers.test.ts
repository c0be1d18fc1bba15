/**
 * Reused read buffers of the JavaScript data path (src/relay/read-buffers.ts, StreamLink.readIntoBuffers):
 * the pool's policy, and exact bytes through tunnels whose receivers stall now and then, so that views of
 * the large buffers sit in write queues while the next reads happen (the case where reusing one would
 * corrupt data), with and without a kernel-relay hand-off in the middle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ReadBuffers } from '../../src/relay/read-buffers.ts';
import { startRelay, pair, type RawClient } from '../helpers/relay.ts';

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
