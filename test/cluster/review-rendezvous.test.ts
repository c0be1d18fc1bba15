/**
 * Review of the shared rendezvous tables (issue 11): what a forged, raced or withdrawn entry does. Real
 * redis-server (test/cluster/redis-server.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { startRedis, skipUnlessRedis, testRendezvous, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const open: RedisRendezvous<string>[] = [];

function node(nodeId: string, prefix: string): RedisRendezvous<string> {
  const rv = testRendezvous<string>(redis, nodeId, { keyPrefix: prefix });
  open.push(rv);
  return rv;
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
});
after(async () => {
  await Promise.all(open.map((rv) => rv.close()));
  await redis?.stop();
});

test('redis rendezvous: a withdrawn party leaves the local table (no leak, monitor count right)', { skip, timeout: 5000 }, async () => {
  const rv = node('n1', 'rw1:');
  await rv.start();
  rv.advertise('127.0.0.1:1');
  const key = { token: 'tok-w', nonce: 'n' };
  assert.deepEqual(await rv.offer(key, 'A'), { kind: 'waiting' });
  await rv.withdraw(key, 'A');
  assert.deepEqual(rv.size, { waiting: 0, tunnels: 0 });
  // And it cannot be claimed by another node any more.
  assert.equal(rv.claimRemote('x.1'), undefined);
});

test('redis rendezvous: an offer that paired with a party withdrawn meanwhile offers again instead of pairing with it', { skip, timeout: 5000 }, async () => {
  const rv = node('n1', 'rw2:');
  await rv.start();
  rv.advertise('127.0.0.1:1');
  const key = { token: 'tok-r', nonce: 'n' };
  assert.deepEqual(await rv.offer(key, 'A'), { kind: 'waiting' });
  // B's script reaches Redis before A's delete: it pairs with A there, but A left here in between.
  const b = rv.offer(key, 'B');
  await rv.withdraw(key, 'A');
  assert.deepEqual(await b, { kind: 'waiting' });
  assert.deepEqual(rv.size, { waiting: 1, tunnels: 0 });
});
