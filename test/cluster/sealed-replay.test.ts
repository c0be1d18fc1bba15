/**
 * The sealed API's replay cache across nodes: two sealed API instances (two nodes sharing one state dir,
 * so one server key and one registry) on one real redis-server. A request accepted by one node and
 * replayed to the other gets the same answer as a local replay (401 unauthorized). Redis away: the
 * request is refused with the sealed 503 SEALED_REPLAY_STORE_FAILED and its action never runs. Redis
 * restarted empty: requests issued before are refused on every node (their replay status is unknown).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisSharedState } from '../../src/core/cluster/shared-state.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { silentLogger } from '../../src/core/log.ts';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { startSealed, tempDir, UNAUTHORIZED, type StartedSealed, type TestClient } from '../sealed-api/helpers.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const states: RedisSharedState[] = [];
let a: StartedSealed;
let b: StartedSealed;
let onA: TestClient;

function shared(nodeId: string): RedisSharedState {
  const s = new RedisSharedState({ redisUrl: redis.socket, secret: new Secret('sealed-test-cluster-secret'), nodeId, keyPrefix: 'gatehouse:', commandTimeoutMs: 500, log: silentLogger() });
  states.push(s);
  return s;
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  const dir = tempDir();
  const sa = shared('node-a');
  const sb = shared('node-b');
  await Promise.all([sa.start(), sb.start()]);
  a = await startSealed({}, { dir, deps: { shared: sa } });
  b = await startSealed({}, { dir, deps: { shared: sb } });
  onA = await a.client('alice');
  await b.server.reload();
});
after(async () => {
  await a?.close();
  await b?.close();
  await Promise.all(states.map((s) => s.close()));
  await redis?.stop();
});

async function post(url: string, body: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/jose' } });
  return { status: res.status, body: await res.text() };
}

test('a request accepted by node A and replayed to node B is refused as a local replay is (401)', { skip, timeout: 10000 }, async () => {
  const prepared = await onA.prepare('ping');
  const first = await post(a.server.url, prepared.jwe);
  assert.equal(first.status, 200);
  const toB = await post(b.server.url, prepared.jwe);
  assert.deepEqual(toB, { status: 401, body: UNAUTHORIZED }, 'replay on the other node');
  const toA = await post(a.server.url, prepared.jwe);
  assert.deepEqual(toA, { status: 401, body: UNAUTHORIZED }, 'replay on the same node');
  assert.ok(b.lines.some((l) => typeof l.reason === 'string' && l.reason.startsWith('replayed jti')), 'node B logs why');
  // The (client, jti) is in Redis only as a keyed hash, with the request's expiry as TTL.
  const keys = await states[0]!.client.keys('gatehouse:once:replay:*');
  assert.ok(keys.length >= 1);
  assert.ok(!keys.some((k) => k.includes(onA.kid) || k.includes(prepared.jti)));
  const ttl = await states[0]!.client.pttl(keys[0]!);
  assert.ok(ttl > 60_000 && ttl <= 60_000 + 120_000 + 30_000, `ttl ${ttl}`);
  // A fresh request is accepted by either node.
  const fresh = await onA.prepare('ping');
  assert.equal((await post(b.server.url, fresh.jwe)).status, 200);
});

test('Redis away: sealed 503 SEALED_REPLAY_STORE_FAILED; Redis back empty: requests issued before are refused on both nodes', { skip, timeout: 10000 }, async () => {
  const before = await onA.prepare('ping');
  assert.equal((await post(a.server.url, before.jwe)).status, 200);
  const old = await onA.prepare('ping');
  await redis.kill();
  const during = await onA.prepare('time');
  await assert.rejects(
    onA.open(during, await onA.send(during.jwe)),
    (e: unknown) => e instanceof SealedCallError && e.sealed && e.status === 503 && e.code === 'SEALED_REPLAY_STORE_FAILED',
  );
  await redis.restart();
  const until = Date.now() + 5000;
  while (!states.every((s) => s.ready) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 50));
  // Accepted before the restart, now unknown to Redis: still refused, on both nodes.
  assert.deepEqual(await post(a.server.url, before.jwe), { status: 401, body: UNAUTHORIZED });
  assert.deepEqual(await post(b.server.url, before.jwe), { status: 401, body: UNAUTHORIZED });
  // Never accepted, but issued before the loss: refused too (the client retries with a fresh request).
  assert.deepEqual(await post(b.server.url, old.jwe), { status: 401, body: UNAUTHORIZED });
  // Issued after: served.
  assert.deepEqual(await onA.call('ping'), { pong: true });
});
