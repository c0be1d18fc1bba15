/**
 * Review (issue 11): pairing across nodes under races. Two relay servers (two nodes, one test process) on
 * a real redis-server, forwarding over TCP. A client that leaves while its offer paired it with a partner
 * on another node must not leave that partner stranded (waiting locally, but gone from the table).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { clusterForwardSetup } from '../../src/relay/cluster/forward.ts';
import { Secret } from '../../src/core/config/secret.ts';
import type { Session } from '../../src/relay/session.ts';
import { startRelay, rawClient, authenticate, captureLog, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay, type RawClient } from '../helpers/relay.ts';
import { startRedis, skipUnlessRedis, redisCommand, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
const SECRET = 'review-pairing-cluster-secret-0123';
let redis: TestRedis;
const nodes: StartedRelay[] = [];
const rvs: RedisRendezvous<Session>[] = [];
const logs = [captureLog(), captureLog()];
const clients: RawClient[] = [];

async function client(url: string): Promise<RawClient> {
  const c = await rawClient(url);
  clients.push(c);
  return c;
}


before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  for (const [i, id] of ['pair-a', 'pair-b'].entries()) {
    const rv = new RedisRendezvous<Session>({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: id, aloneMs: 8000, maxWaitingPerToken: 64, tunnelLeaseMs: 30000, keyPrefix: 'rpair:', commandTimeoutMs: 2000, log: logs[i]!.log });
    await rv.start();
    rvs.push(rv);
    nodes.push(await startRelay({ listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }], timeouts: { aloneMs: 8000 } }, { rendezvous: rv, log: logs[i]!.log, forward: clusterForwardSetup({ forwardListen: '127.0.0.1:0', forwardHandshakeMs: 2000 }, SECRET, id) }));
  }
});
after(async () => {
  for (const c of clients) c.destroy();
  for (const n of nodes) await n.close();
  await Promise.all(rvs.map((r) => r.close()));
  await redis?.stop();
});

test('a client that leaves while its offer pairs it with a partner on another node does not strand that partner', { skip, timeout: 8000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const p = await client(nodes[0]!.url('tcp'));
  p.send(authenticate(token, { name: 'partner' }));
  await p.waitFor(NO_ERROR);
  // Redis holds every command for 400 ms: Q's offer is answered (paired with P) only after Q has left.
  assert.match(await redisCommand(redis, 'CLIENT', 'PAUSE', '400', 'ALL'), /^\+OK/);
  const q = await client(nodes[1]!.url('tcp'));
  q.send(authenticate(token, { name: 'leaver' }));
  await new Promise((r) => setTimeout(r, 100));
  q.destroy();
  await new Promise((r) => setTimeout(r, 500));
  // P must not be left waiting where nobody can find it: a newcomer pairs with it (or it was closed).
  const r = await client(nodes[1]!.url('tcp'));
  r.send(authenticate(token, { name: 'newcomer' }));
  const outcome = await Promise.race([
    p.closed().then(() => 'partner closed'),
    new Promise<string>((res) => setTimeout(() => res('stranded'), 1500)),
  ]);
  // As in a local pair whose second client left: the partner is closed, without a TunnelEstablished.
  assert.equal(outcome, 'partner closed', 'the waiting partner is neither paired nor closed (stranded)');
  assert.ok(!p.received().toString().includes(TUNNEL_ESTABLISHED));
  // The newcomer waits for a partner of its own.
  await r.waitFor(NO_ERROR);
  assert.ok(logs[0]!.records().some((x) => x.code === 'RELAY_PARTNER_CLOSED'));
});
