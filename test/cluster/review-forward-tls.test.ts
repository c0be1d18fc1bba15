/**
 * Review (issue 11): `[cluster] forwardTls` (mutual TLS on forward streams) carries both kinds of
 * forwarded connection: a relay tunnel whose partner waits on another node, and a tunnel-proxy client of
 * a server on another node. Two relay servers (one test process) on a real redis-server, each node's
 * forward listener TLS with the same self-signed certificate as its own CA.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { RedisTpDirectory } from '../../src/relay/cluster/tp-directory.ts';
import { clusterForwardSetup } from '../../src/relay/cluster/forward.ts';
import { createRelayServer, type RelayServer } from '../../src/relay/server.ts';
import { relayConfigSchema } from '../../src/relay/config.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { Secret } from '../../src/core/config/secret.ts';
import type { Session } from '../../src/relay/session.ts';
import { rawClient, captureLog, tempDir, destroyAllClients, authenticate, selfSignedCert, NO_ERROR, TUNNEL_ESTABLISHED } from '../helpers/relay.ts';
import { tpServer, tpClient } from '../relay/tunnel-proxy/harness.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
const SECRET = 'review-tls-cluster-secret-0123456789';
let redis: TestRedis;
const logs = [captureLog(), captureLog()];
const closers: (() => Promise<void>)[] = [];
const servers: RelayServer[] = [];

async function startNode(id: string, i: number, tls: { cert: Buffer; key: Buffer; ca: Buffer; minVersion: 'TLSv1.2' }): Promise<RelayServer> {
  const log = logs[i]!.log;
  const rv = new RedisRendezvous<Session>({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: id, aloneMs: 8000, maxWaitingPerToken: 64, tunnelLeaseMs: 30000, keyPrefix: 'rtls:', commandTimeoutMs: 500, log });
  await rv.start();
  const dir = new RedisTpDirectory({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: id, leaseMs: 3000, keyPrefix: 'rtls:', commandTimeoutMs: 500, log });
  await dir.start();
  const config = validateConfig(relayConfigSchema, {
    listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }],
    authenticator: { kind: 'mock' },
    monitor: { enabled: false },
    tunnelProxy: { enabled: true, listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }] },
  });
  const forward = clusterForwardSetup({ forwardListen: '127.0.0.1:0', forwardHandshakeMs: 2000 }, SECRET, id, undefined, tls);
  const server = createRelayServer(config, { log, baseDir: tempDir(), rendezvous: rv, forward, tpDirectory: dir });
  await server.start();
  closers.push(async () => {
    await server.close({ graceMs: 0 });
    await dir.close();
    await rv.close();
  });
  return server;
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  const files = selfSignedCert(tempDir());
  const cert = readFileSync(files.certFile);
  const tls = { cert, key: readFileSync(files.keyFile), ca: cert, minVersion: 'TLSv1.2' as const };
  servers.push(await startNode('tls-a', 0, tls), await startNode('tls-b', 1, tls));
});
after(async () => {
  destroyAllClients();
  for (const c of closers) await c();
  await redis?.stop();
});

const url = (i: number, tp = false) => (tp ? servers[i]!.tunnelProxyListeners[0]! : servers[i]!.listeners[0]!).url;

test('forwardTls: a relay client pairs with its partner on another node and bytes flow', { skip, timeout: 8000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const a = await rawClient(url(0));
  a.send(authenticate(token, { name: 'a' }));
  await a.waitFor(NO_ERROR);
  const b = await rawClient(url(1));
  b.send(authenticate(token, { name: 'b' }));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  const off = b.received().length;
  a.send('over tls');
  assert.equal((await b.waitForBytes(off + 8)).subarray(off).toString(), 'over tls');
  a.end();
  await b.closed();
});

test('forwardTls: a tunnel-proxy client on node B reaches its server on node A', { skip, timeout: 8000 }, async () => {
  const sid = crypto.randomUUID();
  const s = await tpServer(url(0, true), sid, 'nymea on A');
  const c = await tpClient(url(1, true), sid, 'app on B');
  const addr = await s.waitClient('app on B');
  s.send(addr, 'hello');
  assert.equal((await c.raw.waitForBytes(c.offset + 5)).subarray(c.offset).toString(), 'hello');
  c.raw.send('back');
  assert.equal((await s.waitData(addr, 4)).toString(), 'back');
});
