/**
 * The young-generation pacer of the JavaScript data path (src/relay/young-gc.ts): it collects exactly
 * every `everyBytes`, and a collection frees dead read buffers (ArrayBuffers) V8 would otherwise keep
 * until 32 MiB of them had piled up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { YoungGc } from '../../src/relay/young-gc.ts';
import { keepFreedMemory } from '../../src/relay/splice.ts';

const endOfTurn = () => new Promise((r) => setImmediate(r));

/** The kinds of the collections V8 reports from now on (entries arrive asynchronously); `obs.disconnect()` ends it. */
function observeGcKinds(): { kinds: number[]; obs: PerformanceObserver } {
  const kinds: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) kinds.push((e as unknown as { detail: { kind: number } }).detail.kind);
  });
  obs.observe({ entryTypes: ['gc'] });
  return { kinds, obs };
}

test('collects once per everyBytes, and V8 reports a minor collection', { timeout: 10_000 }, async () => {
  const { kinds, obs } = observeGcKinds();
  try {
    let prepared = 0;
    const y = new YoungGc(1024, () => prepared++);
    y.charge(1000);
    await endOfTurn();
    assert.equal(y.collections, 0);
    y.charge(24);
    y.charge(5000); // one collection per turn, however much more comes in it
    assert.equal(y.collections, 0, 'not inside the turn');
    await endOfTurn();
    assert.equal(y.collections, 1);
    assert.equal(y.available, true);
    y.charge(1023);
    await endOfTurn();
    assert.equal(y.collections, 1);
    y.charge(1);
    await endOfTurn();
    assert.equal(y.collections, 2);
    assert.equal(prepared, 1);
    // Entries are delivered asynchronously.
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `gc kinds seen: ${kinds.join(',')}`);
  } finally {
    obs.disconnect();
  }
});

test('a collection frees dead 64 KiB read-sized buffers', { timeout: 10_000 }, async () => {
  const y = new YoungGc(1);
  y.charge(1); // settle what the test runner left behind
  await endOfTurn();
  const before = process.memoryUsage().arrayBuffers;
  // 16 MiB of buffers that die at once, as socket reads do once written on.
  let sum = 0;
  for (let i = 0; i < 256; i++) sum += Buffer.allocUnsafeSlow(64 * 1024).length;
  assert.equal(sum, 16 * 1024 * 1024);
  const piled = process.memoryUsage().arrayBuffers - before;
  y.charge(1);
  await endOfTurn();
  // V8 releases the backing stores of the dead buffers on a background sweeper, right after the scavenge.
  await new Promise((r) => setTimeout(r, 100));
  const after = process.memoryUsage().arrayBuffers - before;
  assert.ok(piled >= 12 * 1024 * 1024, `dead buffers before the collection: ${piled}`);
  assert.ok(after < 4 * 1024 * 1024, `left after it: ${after}`);
});

test('glibc keeps freed memory when the native addon is built', { timeout: 10_000 }, (t) => {
  if (process.platform !== 'linux') return t.skip('Linux only');
  const ok = keepFreedMemory(64 * 1024 * 1024, 1024 * 1024);
  // The addon is optional: without it the call says false and changes nothing.
  let built = true;
  try {
    createRequire(import.meta.url)('../../native/build/Release/splice_relay.node');
  } catch {
    built = false;
  }
  assert.equal(ok, built);
});

test('collectAll: one full collection at the end of the turn however often asked; the first use prepares, whichever it is', { timeout: 10_000 }, async () => {
  const { kinds, obs } = observeGcKinds();
  try {
    let prepared = 0;
    const y = new YoungGc(1024, () => prepared++);
    y.collectAll();
    y.collectAll();
    await endOfTurn();
    assert.equal(prepared, 1, 'prepared by a full collection too');
    y.charge(2048);
    await endOfTurn();
    assert.equal(prepared, 1, 'once');
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MAJOR), `gc kinds seen: ${kinds.join(',')}`);
  } finally {
    obs.disconnect();
  }
});
