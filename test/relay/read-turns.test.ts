/**
 * The turn scheduler of the JavaScript data path (src/relay/read-turns.ts): shares of a turn, and at most
 * `turnBytes / minShareBytes` yielded readers resumed per turn, oldest first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReadTurns } from '../../src/relay/read-turns.ts';

const endOfTurn = () => new Promise((r) => setImmediate(r));
const KIB = 1024;

test('a lone reader yields once it delivered the whole turn', { timeout: 5000 }, async () => {
  const turns = new ReadTurns(1024 * KIB, 64 * KIB);
  const r = turns.reader();
  for (let i = 0; i < 15; i++) assert.equal(turns.charge(r, 64 * KIB), false);
  assert.equal(turns.charge(r, 64 * KIB), true);
  let resumed = false;
  turns.yieldTurn(() => (resumed = true));
  await endOfTurn();
  assert.equal(resumed, true);
});

test('64 busy readers: 16 resumed per turn, first come first served, so every turn stays near turnBytes', { timeout: 5000 }, async () => {
  const turns = new ReadTurns(1024 * KIB, 64 * KIB);
  const readers = Array.from({ length: 64 }, () => turns.reader());
  const order: number[] = [];
  // Turn 1: everyone reads once (the share is at least one read) and yields.
  readers.forEach((r, i) => {
    assert.equal(turns.charge(r, 64 * KIB), i >= 15, `reader ${i}`);
    turns.yieldTurn(() => order.push(i));
  });
  await endOfTurn();
  assert.deepEqual(order, Array.from({ length: 16 }, (_, i) => i));
  assert.equal(turns.waiting, 48);
  // The resumed ones read again in the next turn and go to the back of the queue.
  for (const i of [...order]) {
    assert.equal(turns.charge(readers[i]!, 64 * KIB), true);
    turns.yieldTurn(() => order.push(100 + i));
  }
  await endOfTurn();
  assert.deepEqual(order.slice(16), Array.from({ length: 16 }, (_, i) => 16 + i));
  await endOfTurn();
  await endOfTurn();
  await endOfTurn();
  // Turns 3-5: the rest of the first round (32-63), then the second round's first (100-115).
  assert.deepEqual(order.slice(32), [...Array.from({ length: 32 }, (_, i) => 32 + i), ...Array.from({ length: 16 }, (_, i) => 100 + i)]);
  assert.equal(turns.waiting, 0);
});

test('a full turn: a reader past lightBytes yields at once, a light one (a ping) never does', { timeout: 5000 }, async () => {
  const turns = new ReadTurns(1024 * KIB, 256 * KIB);
  const busy = turns.reader();
  const slow = turns.reader();
  const ping = turns.reader();
  assert.equal(turns.charge(busy, 1024 * KIB), true);
  // The turn is full: 100 KiB (under its 256 KiB share) is enough to yield now; 64 bytes is not.
  assert.equal(turns.charge(slow, 100 * KIB), true);
  assert.equal(turns.charge(ping, 64), false);
  await endOfTurn();
  // A new turn: the same 100 KiB is within the share again.
  assert.equal(turns.charge(slow, 100 * KIB), false);
});

test('resumes per turn follow what readers delivered: four 256 KiB readers fill a 1 MiB turn, sixteen cut short too', { timeout: 5000 }, async () => {
  const turns = new ReadTurns(1024 * KIB, 64 * KIB);
  const resumed: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = turns.reader(256 * KIB);
    turns.charge(r, 256 * KIB);
    turns.yieldTurn(() => resumed.push(i), r);
  }
  await endOfTurn();
  assert.deepEqual(resumed, [0, 1, 2, 3]);
  await endOfTurn();
  assert.equal(turns.waiting, 0);
  resumed.length = 0;
  // Readers cut short by a full turn after 16 KiB count as one ordinary read (64 KiB): 16 make the turn.
  const filler = turns.reader();
  turns.charge(filler, 1024 * KIB);
  for (let i = 0; i < 100; i++) {
    const r = turns.reader(256 * KIB);
    assert.equal(turns.charge(r, 16 * KIB), true);
    turns.yieldTurn(() => resumed.push(i), r);
  }
  turns.yieldTurn(() => resumed.push(-1), filler);
  await endOfTurn();
  assert.equal(resumed.length, 16);
});
