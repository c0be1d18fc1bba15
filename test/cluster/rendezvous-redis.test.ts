/**
 * RedisRendezvous against a real redis-server: atomic pairing under a race, TTL expiry when a node dies,
 * the per-token limit across nodes, a Redis restarted empty, and no token or nonce stored in clear.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { startRedis, skipUnlessRedis, testRendezvous, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const open: RedisRendezvous<string>[] = [];

function node(nodeId: string, over: { aloneMs?: number; maxWaitingPerToken?: number; tunnelLeaseMs?: number } = {}): RedisRendezvous<string> {
  const rv = testRendezvous<string>(redis, nodeId, { ...over, keyPrefix: `t${Math.random().toString(36).slice(2)}:` });
  open.push(rv);
  return rv;
}

/** Nodes of one cluster share the prefix. */
function cluster(n: number, over: Parameters<typeof node>[1] = {}): RedisRendezvous<string>[] {
  const prefix = `c${Math.random().toString(36).slice(2)}:`;
  return Array.from({ length: n }, (_, i) => {
    const rv = testRendezvous<string>(redis, `node-${i}`, { ...over, keyPrefix: prefix });
    open.push(rv);
    return rv;
  });
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
});
after(async () => {
  await Promise.all(open.map((rv) => rv.close()));
  await redis?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('50 concurrent offers on one key on one node: exactly one pairing, one waiting, the rest refused', { skip, timeout: 10000 }, async () => {
  const [rv] = cluster(1);
  await rv!.start();
  const key = { token: 'race-token', nonce: 'n' };
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => rv!.offer(key, `p${i}`)));
  const kinds = results.map((r) => r.kind);
  assert.equal(kinds.filter((k) => k === 'paired').length, 1);
  assert.equal(kinds.filter((k) => k === 'waiting').length, 1);
  assert.equal(kinds.filter((k) => k === 'tunnel-exists').length, 48);
  assert.deepEqual(rv!.size, { waiting: 0, tunnels: 1 });
});

test('50 concurrent offers on one key across 5 nodes: one entry wins, at most one pairing', { skip, timeout: 10000 }, async () => {
  const nodes = cluster(5);
  await Promise.all(nodes.map((n) => n.start()));
  const key = { token: 'race-token-5', nonce: '' };
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => nodes[i % 5]!.offer(key, `p${i}`)));
  const kinds = results.map((r) => r.kind);
  assert.equal(kinds.filter((k) => k === 'waiting').length, 1);
  assert.ok(kinds.filter((k) => k === 'paired').length <= 1);
  assert.equal(kinds.filter((k) => k === 'waiting' || k === 'paired' || k === 'tunnel-exists' || k === 'partner-elsewhere').length, 50);
  const waitingNode = nodes.findIndex((n) => n.size.waiting + n.size.tunnels === 1);
  assert.ok(waitingNode >= 0);
});

test('same node pairs; a partner on another node is refused and keeps waiting', { skip, timeout: 10000 }, async () => {
  const [a, b] = cluster(2);
  await Promise.all([a!.start(), b!.start()]);
  const key = { token: 'tok', nonce: 'x' };
  assert.deepEqual(await a!.offer(key, 'first'), { kind: 'waiting' });
  assert.deepEqual(await b!.offer(key, 'other'), { kind: 'partner-elsewhere', node: 'node-0' });
  assert.deepEqual(await a!.offer(key, 'second'), { kind: 'paired', partner: 'first' });
  assert.deepEqual(await b!.offer(key, 'third'), { kind: 'tunnel-exists' });
  await a!.release(key);
  assert.deepEqual(await b!.offer(key, 'fourth'), { kind: 'waiting' });
  await b!.withdraw(key, 'fourth');
  assert.deepEqual(await a!.offer(key, 'fifth'), { kind: 'waiting' });
});

test('a dead node: its waiting entry and its tunnel lease expire, the key and the token limit are free again', { skip, timeout: 10000 }, async () => {
  const [dead, alive] = cluster(2, { aloneMs: 300, tunnelLeaseMs: 300, maxWaitingPerToken: 2 });
  await Promise.all([dead!.start(), alive!.start()]);
  const key = { token: 'tok-dead', nonce: '1' };
  assert.equal((await dead!.offer(key, 'w1')).kind, 'waiting');
  assert.equal((await dead!.offer({ token: 'tok-dead', nonce: '2' }, 'w2')).kind, 'waiting');
  // The per-token limit holds across nodes.
  assert.deepEqual(await alive!.offer({ token: 'tok-dead', nonce: '3' }, 'w3'), { kind: 'too-many-waiting' });
  // A tunnel on the node that dies.
  const tkey = { token: 'tok-dead-t', nonce: '' };
  assert.equal((await dead!.offer(tkey, 't1')).kind, 'waiting');
  assert.equal((await dead!.offer(tkey, 't2')).kind, 'paired');
  // The node dies: no withdraw, no release, no renewal.
  await dead!.close();
  assert.equal((await alive!.offer(tkey, 'x')).kind, 'tunnel-exists');
  await sleep(450);
  assert.deepEqual(await alive!.offer({ token: 'tok-dead', nonce: '3' }, 'w3'), { kind: 'waiting' });
  assert.deepEqual(await alive!.offer(key, 'w4'), { kind: 'waiting' });
  assert.deepEqual(await alive!.offer(tkey, 'y'), { kind: 'waiting' });
});

test('a live node renews its tunnel leases: the key stays held past the lease', { skip, timeout: 10000 }, async () => {
  const [a, b] = cluster(2, { tunnelLeaseMs: 300 });
  await Promise.all([a!.start(), b!.start()]);
  const key = { token: 'tok-lease', nonce: '' };
  await a!.offer(key, 'p1');
  assert.equal((await a!.offer(key, 'p2')).kind, 'paired');
  await sleep(700);
  assert.equal((await b!.offer(key, 'p3')).kind, 'tunnel-exists');
});

test('Redis restarted empty: no pairing across different (token, nonce)', { skip, timeout: 15000 }, async () => {
  const [a] = cluster(1);
  await a!.start();
  assert.equal((await a!.offer({ token: 'tok-r', nonce: 'n1' }, 'r1')).kind, 'waiting');
  await redis.restart();
  // Reconnected by itself.
  let r: Awaited<ReturnType<RedisRendezvous<string>['offer']>> | undefined;
  for (let i = 0; i < 100 && r === undefined; i++) {
    try {
      r = await a!.offer({ token: 'tok-r', nonce: 'n2' }, 'r2');
    } catch {
      await sleep(50);
    }
  }
  assert.deepEqual(r, { kind: 'waiting' });
  assert.deepEqual(await a!.offer({ token: 'tok-r2', nonce: 'n1' }, 'r3'), { kind: 'waiting' });
  assert.deepEqual(await a!.offer({ token: 'tok-r', nonce: 'n2' }, 'r4'), { kind: 'paired', partner: 'r2' });
});

test('Redis down: offers reject at once; back: they work again', { skip, timeout: 15000 }, async () => {
  const a = node('solo');
  await a.start();
  await redis.kill();
  const t0 = Date.now();
  await assert.rejects(a.offer({ token: 'down', nonce: '' }, 'd1'));
  assert.ok(Date.now() - t0 < 1500, 'rejects without waiting for a deadline');
  await redis.restart();
  let r: unknown;
  for (let i = 0; i < 100 && r === undefined; i++) {
    try {
      r = await a.offer({ token: 'down', nonce: '' }, 'd2');
    } catch {
      await sleep(50);
    }
  }
  assert.deepEqual(r, { kind: 'waiting' });
});

test('tokens and nonces are never in Redis in clear (keys, string values, set members)', { skip, timeout: 10000 }, async () => {
  const [a, b] = cluster(2);
  await Promise.all([a!.start(), b!.start()]);
  const token = 'SECRET-TOKEN-c0ffee';
  const nonce = 'NONCE-beef';
  await a!.offer({ token, nonce }, 'p1');
  await b!.offer({ token, nonce: 'other-NONCE-beef' }, 'p2');
  await a!.offer({ token: `${token}-2`, nonce }, 'p3');
  await a!.offer({ token: `${token}-2`, nonce }, 'p4');
  const c = new Redis({ path: redis.socket, lazyConnect: true });
  await c.connect();
  try {
    const keys = await c.keys('*');
    assert.ok(keys.length >= 3);
    const dump: string[] = [];
    for (const k of keys) {
      dump.push(k);
      const type = await c.type(k);
      if (type === 'string') dump.push((await c.get(k)) ?? '');
      else if (type === 'zset') dump.push(...(await c.zrange(k, '0', '-1')));
      else dump.push(`unexpected type ${type}`);
    }
    const all = dump.join('\n');
    assert.doesNotMatch(all, /unexpected type/);
    assert.ok(!all.includes('SECRET-TOKEN'), 'token in clear');
    assert.ok(!all.includes('NONCE-beef'), 'nonce in clear');
    assert.ok(!all.includes('c0ffee'));
  } finally {
    c.disconnect();
  }
});
