/**
 * The failed-auth back-off across nodes: two relay servers (distinct node ids, one test process) on one
 * real redis-server count an address's failures together, so failures spread over both nodes trip the
 * limit on both, and the attempt past it is refused with the existing code. Redis going away: the local
 * count decides (logged once), nobody is let in for free and nobody is locked out.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisSharedState } from '../../src/core/cluster/shared-state.ts';
import { SharedFailureBackoff } from '../../src/core/backoff.ts';
import { Secret } from '../../src/core/config/secret.ts';
import type { Logger } from '../../src/core/log.ts';
import { startRelay, rawClient, authenticate, captureLog, NO_ERROR, type StartedRelay } from '../helpers/relay.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const states: RedisSharedState[] = [];
const relays: StartedRelay[] = [];

function sharedState(nodeId: string, log: Logger): RedisSharedState {
  const s = new RedisSharedState({ redisUrl: redis.socket, secret: new Secret('backoff-test-cluster-secret'), nodeId, keyPrefix: 'gatehouse:', commandTimeoutMs: 500, log });
  states.push(s);
  return s;
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
});
after(async () => {
  for (const r of relays) await r.close();
  await Promise.all(states.map((s) => s.close()));
  await redis?.stop();
});

const BAD = 'mock:0:AuthenticationErrorAuthenticationFailed';
const REFUSED = '{"error":"Too many failed authentications from this address. Retry later.","id":3,"status":"error"}\n';

async function failOnce(relay: StartedRelay): Promise<void> {
  const c = await rawClient(relay.url('tcp'));
  c.send(authenticate(BAD));
  await c.closed();
  assert.match(c.received().toString(), /AuthenticationErrorAuthenticationFailed/);
}

async function refused(relay: StartedRelay, kind: 'tcp' | 'ws'): Promise<void> {
  const c = await rawClient(relay.url(kind));
  c.send(authenticate('good-token', { id: 3 }));
  await c.closed();
  assert.equal(c.received().toString(), REFUSED);
}

test('failures spread over two nodes trip the limit on both; one past the limit is refused with RELAY_LIMIT_AUTH_BACKOFF', { skip, timeout: 10000 }, async () => {
  const limits = { limits: { maxAuthFailuresPerIp: 4, authFailureWindowMs: 1000 } };
  const logs = [captureLog(), captureLog()];
  const a = await startRelay(limits, { shared: sharedState('node-a', logs[0]!.log), log: logs[0]!.log });
  const b = await startRelay(limits, { shared: sharedState('node-b', logs[1]!.log), log: logs[1]!.log });
  relays.push(a, b);
  await Promise.all(states.map((s) => s.start()));
  // 3 failures (2 on A, 1 on B): below the limit everywhere; each node alone has seen at most 2.
  await failOnce(a);
  await failOnce(b);
  await failOnce(a);
  const ok = await rawClient(a.url('tcp'));
  ok.send(authenticate('good-token'));
  await ok.waitFor(NO_ERROR);
  ok.end();
  // The 4th, on B: 4 in the window across the cluster (B alone has seen 2, A 2).
  await failOnce(b);
  // The verdict reaches A in one Redis round trip (pub/sub); give it a generous bound.
  await new Promise((r) => setTimeout(r, 200));
  await refused(a, 'tcp');
  await refused(b, 'ws');
  await refused(a, 'ws');
  assert.ok(logs[0]!.records().some((r) => r.code === 'RELAY_LIMIT_AUTH_BACKOFF' || r.msg === 'refused'), 'node A logs the refusal');
  // The address is never in Redis in clear (keys, members).
  const keys = await states[0]!.client.keys('*');
  assert.ok(keys.some((k) => k.startsWith('gatehouse:bo:relay:')), `a back-off key: ${keys.join(' ')}`);
  assert.ok(!keys.some((k) => k.includes('127.0.0.1')));
  for (const k of keys.filter((x) => x.startsWith('gatehouse:bo:'))) {
    const members = await states[0]!.client.zrange(k, '0', '-1');
    assert.equal(members.length, 4, 'at most maxFailures members per address');
    assert.ok(!members.some((m) => m.includes('127.0.0.1')));
  }
  // After the window both nodes let the address in again.
  await new Promise((r) => setTimeout(r, 1100));
  for (const node of [a, b]) {
    const later = await rawClient(node.url('tcp'));
    later.send(authenticate('good-token'));
    await later.waitFor(NO_ERROR);
    later.end();
  }
});

test('Redis away: the local count decides (logged once), then the shared count again when Redis is back', { skip, timeout: 10000 }, async () => {
  const { log, records } = captureLog();
  const shared = sharedState('node-c', log);
  await shared.start();
  const t0 = Date.now();
  const backoff = new SharedFailureBackoff({ maxFailures: 3, windowMs: 5000, shared, scope: 'unit', log });
  await redis.kill();
  for (let i = 0; i < 2; i++) backoff.fail('192.0.2.7', t0);
  await backoff.settled();
  assert.equal(backoff.blocked('192.0.2.7', t0), false, 'below the limit locally: not locked out');
  assert.equal(backoff.blocked('192.0.2.8', t0), false, 'another address: not locked out');
  backoff.fail('192.0.2.7', t0);
  await backoff.settled();
  assert.equal(backoff.blocked('192.0.2.7', t0), true, 'the local count still blocks');
  const lines = records().filter((r) => r.code === 'CORE_CLUSTER_STATE_UNAVAILABLE' && r.msg === 'shared failed-auth back-off unreachable: failures are counted in this process only until it is back');
  assert.equal(lines.length, 1, 'logged once while it lasts');
  await redis.restart();
  const until = Date.now() + 5000;
  while (!shared.ready && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  assert.ok(shared.ready, 'reconnected by itself');
  // A second node counts the same address: two failures there and one here reach 3 in Redis.
  const other = new SharedFailureBackoff({ maxFailures: 3, windowMs: 5000, shared: sharedState('node-d', log), scope: 'unit', log });
  await states.at(-1)!.start();
  other.fail('198.51.100.9');
  other.fail('198.51.100.9');
  await other.settled();
  assert.equal(backoff.blocked('198.51.100.9'), false);
  backoff.fail('198.51.100.9');
  await backoff.settled();
  assert.equal(backoff.blocked('198.51.100.9'), true, 'the shared count blocks here');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(other.blocked('198.51.100.9'), true, 'and the verdict reached the other node');
  assert.ok(records().some((r) => r.msg === 'shared failed-auth back-off works again'));
  backoff.detach();
  other.detach();
});
