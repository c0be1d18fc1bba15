/**
 * Two relay servers (two nodes, distinct ids, one test process) sharing a real redis-server: clients on
 * the same node pair, a partner on the other node is refused cleanly, and Redis going away mid-run fails
 * new Authenticates with ProxyError and a log line while the open tunnel flows, then recovers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import type { Logger } from '../../src/core/log.ts';
import type { Session } from '../../src/relay/session.ts';
import { startRelay, rawClient, authenticate, pair, captureLog, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay } from '../helpers/relay.ts';
import { startRedis, skipUnlessRedis, testRendezvous, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
let n1: StartedRelay;
let n2: StartedRelay;
const rvs: RedisRendezvous<Session>[] = [];
const logs = [captureLog(), captureLog()];

function rendezvous(nodeId: string, log: Logger): RedisRendezvous<Session> {
  const rv = testRendezvous<Session>(redis, nodeId, { log });
  rvs.push(rv);
  return rv;
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  const r1 = rendezvous('node-a', logs[0]!.log);
  const r2 = rendezvous('node-b', logs[1]!.log);
  await Promise.all([r1.start(), r2.start()]);
  n1 = await startRelay({}, { rendezvous: r1, log: logs[0]!.log });
  n2 = await startRelay({}, { rendezvous: r2, log: logs[1]!.log });
});
after(async () => {
  await n1?.close();
  await n2?.close();
  await Promise.all(rvs.map((r) => r.close()));
  await redis?.stop();
});

test('two nodes on one Redis: clients on the same node pair (tcp and ws), data both ways', { skip, timeout: 10000 }, async () => {
  for (const node of [n1, n2]) {
    const { a, b, aOffset, bOffset } = await pair(node.url('tcp'), node.url('ws'));
    a.send('ping');
    assert.equal((await b.waitForBytes(bOffset + 4)).subarray(bOffset).toString(), 'ping');
    b.send('pong');
    assert.equal((await a.waitForBytes(aOffset + 4)).subarray(aOffset).toString(), 'pong');
    a.end();
    await b.closed();
  }
});

test('partner waiting on the other node: ProxyError and RELAY_PARTNER_ON_OTHER_NODE; the waiting one still pairs locally', { skip, timeout: 10000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const a = await rawClient(n1.url('tcp'));
  a.send(authenticate(token, { name: 'alpha' }));
  await a.waitFor(NO_ERROR);
  const b = await rawClient(n2.url('tcp'));
  b.send(authenticate(token, { id: 3, name: 'beta' }));
  await b.closed();
  assert.equal(b.received().toString(), '{"id":3,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n');
  assert.ok(logs[1]!.records().some((r) => r.code === 'RELAY_PARTNER_ON_OTHER_NODE'));
  const c = await rawClient(n1.url('ws'));
  c.send(authenticate(token, { name: 'gamma' }));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await c.waitFor(TUNNEL_ESTABLISHED);
  a.end();
  await c.closed();
});

test('Redis killed mid-run: new Authenticate gets ProxyError and a log line, the open tunnel flows; Redis back: pairing works', { skip, timeout: 20000 }, async () => {
  const { a, b, bOffset } = await pair(n1.url('tcp'), n1.url('tcp'));
  await redis.kill();
  const c = await rawClient(n1.url('tcp'));
  c.send(authenticate(`tok-${crypto.randomUUID()}`, { id: 9 }));
  await c.closed();
  assert.equal(c.received().toString(), '{"id":9,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n');
  assert.ok(logs[0]!.records().some((r) => r.code === 'RELAY_RENDEZVOUS_FAILED' && r.level === 'error'));
  // The tunnel made before is untouched.
  const big = Buffer.alloc(256 * 1024, 7);
  a.send(big);
  const got = await b.waitForBytes(bOffset + big.length);
  assert.equal(got.length - bOffset, big.length);
  await redis.restart();
  // The client reconnects by itself; pairing works again.
  let paired = false;
  for (let i = 0; i < 100 && !paired; i++) {
    const token = `tok-${crypto.randomUUID()}`;
    const x = await rawClient(n1.url('tcp'));
    x.send(authenticate(token));
    const first = await x.waitFor('\n');
    if (first.toString().includes(NO_ERROR)) {
      const y = await rawClient(n1.url('ws'));
      y.send(authenticate(token));
      await x.waitFor(TUNNEL_ESTABLISHED);
      await y.waitFor(TUNNEL_ESTABLISHED);
      x.end();
      await y.closed();
      paired = true;
    } else {
      await x.closed();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  assert.ok(paired, 'pairing works again after Redis returned');
  a.end();
  await b.closed();
});
