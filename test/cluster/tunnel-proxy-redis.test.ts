/**
 * The tunnel-proxy mode across nodes: three relay servers (three nodes, one test process) with the mode
 * enabled on one real redis-server. A nymea server registers on node A; its clients land on node B (tcp
 * and ws) and behave as if they had landed on A: the exact answer bytes, ClientConnected before the
 * answer, data both ways byte for byte, several clients multiplexed, DisconnectClient and a client that
 * leaves, the server going away. A server uuid is registered once in the cluster. Faults: a node that
 * cannot be reached, an entry left by a dead node expiring, Redis away and back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { RedisTpDirectory } from '../../src/relay/cluster/tp-directory.ts';
import { clusterForwardSetup } from '../../src/relay/cluster/forward.ts';
import { createRelayServer, type RelayServer } from '../../src/relay/server.ts';
import { relayConfigSchema } from '../../src/relay/config.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { Secret } from '../../src/core/config/secret.ts';
import type { Session } from '../../src/relay/session.ts';
import { rawClient, captureLog, tempDir, destroyAllClients, request } from '../helpers/relay.ts';
import { tpServer, tpClient, registerServerRequest, registerClientRequest } from '../relay/tunnel-proxy/harness.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
const SECRET = 'tp-cluster-test-secret-0123456789';
const LEASE_MS = 1200;
let redis: TestRedis;
const logs = [captureLog(), captureLog(), captureLog()];
const closers: (() => Promise<void>)[] = [];

interface Node {
  readonly id: string;
  readonly server: RelayServer;
  tp(kind: string): string;
}
const nodes: Node[] = [];

function directory(nodeId: string, log = logs[0]!.log): RedisTpDirectory {
  return new RedisTpDirectory({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId, leaseMs: LEASE_MS, keyPrefix: 'gatehouse:', commandTimeoutMs: 500, log });
}

async function startNode(id: string, i: number): Promise<Node> {
  const log = logs[i]!.log;
  const rv = new RedisRendezvous<Session>({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: id, aloneMs: 8000, maxWaitingPerToken: 64, tunnelLeaseMs: 30000, keyPrefix: 'gatehouse:', commandTimeoutMs: 500, log });
  await rv.start();
  const dir = directory(id, log);
  await dir.start();
  const tpListeners = [
    { kind: 'tcp', host: '127.0.0.1', port: 0 },
    { kind: 'ws', host: '127.0.0.1', port: 0 },
  ];
  const config = validateConfig(relayConfigSchema, {
    listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }],
    authenticator: { kind: 'mock' },
    monitor: { enabled: false },
    tunnelProxy: { enabled: true, listeners: tpListeners },
  });
  const server = createRelayServer(config, { log, baseDir: tempDir(), rendezvous: rv, forward: clusterForwardSetup({ forwardListen: '127.0.0.1:0', forwardHandshakeMs: 2000 }, SECRET, id), tpDirectory: dir });
  await server.start();
  closers.push(async () => {
    await server.close({ graceMs: 0 });
    await dir.close();
    await rv.close();
  });
  return {
    id,
    server,
    tp: (kind) => {
      const l = server.tunnelProxyListeners.find((x) => x.kind === kind);
      if (l === undefined) throw new Error(`no ${kind} listener`);
      return l.url;
    },
  };
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  for (const [i, id] of ['node-a', 'node-b', 'node-c'].entries()) nodes.push(await startNode(id, i));
});
after(async () => {
  destroyAllClients();
  for (const c of closers) await c();
  await redis?.stop();
});

const A = () => nodes[0]!;
const B = () => nodes[1]!;
const C = () => nodes[2]!;
const uuid = () => crypto.randomUUID();
const CLIENT_OK = (id = 1) => `{"id":${id},"params":{"tunnelProxyError":"TunnelProxyErrorNoError"},"status":"success"}\n`;

test('clients on node B of a server on node A: exact answer, ClientConnected first, bytes both ways, multiplexed, DisconnectClient, a client that leaves, the server gone', { skip, timeout: 10000 }, async () => {
  const sid = uuid();
  const s = await tpServer(A().tp('tcp'), sid, 'nymea on A');
  const viaTcp = await tpClient(B().tp('tcp'), sid, 'tcp on B');
  // The answer is exactly the bytes a client sees from one node, and nothing before it.
  assert.equal(viaTcp.raw.received().subarray(0, viaTcp.offset).toString(), CLIENT_OK());
  const aTcp = await s.waitClient('tcp on B');
  const viaWs = await tpClient(B().tp('ws'), sid, 'ws on B');
  const aWs = await s.waitClient('ws on B');
  const local = await tpClient(A().tp('ws'), sid, 'ws on A');
  const aLocal = await s.waitClient('ws on A');
  assert.equal(new Set([aTcp, aWs, aLocal]).size, 3);
  const connected = s.control().find((m) => (m.params as { clientName?: string } | undefined)?.clientName === 'tcp on B')!;
  assert.equal(connected.notification, 'TunnelProxy.ClientConnected');
  assert.deepEqual(Object.keys(connected.params as object).sort(), ['clientName', 'clientPeerAddress', 'clientUuid', 'socketAddress']);
  assert.equal((connected.params as { clientPeerAddress: string }).clientPeerAddress, '127.0.0.1');
  assert.match((connected.params as { clientUuid: string }).clientUuid, /^\{[0-9a-f-]{36}\}$/);

  // Server → each client, bytes SLIP must escape included; 300 KiB to the forwarded WS client.
  const tricky = Buffer.from([0x41, 0xc0, 0xdb, 0x42, 0x00, 0xdc, 0xdd, 0xff]);
  const big = Buffer.alloc(300 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 13) & 0xff;
  s.send(aTcp, tricky);
  s.send(aWs, big);
  s.send(aLocal, 'local');
  assert.deepEqual((await viaTcp.raw.waitForBytes(viaTcp.offset + tricky.length)).subarray(viaTcp.offset), tricky);
  assert.ok((await viaWs.raw.waitForBytes(viaWs.offset + big.length, 5000)).subarray(viaWs.offset).equals(big));
  assert.equal((await local.raw.waitForBytes(local.offset + 5)).subarray(local.offset).toString(), 'local');
  // Each client → the server, under its own address.
  viaTcp.raw.send(tricky);
  viaWs.raw.send(big, { binary: true });
  assert.deepEqual(await s.waitData(aTcp, tricky.length), tricky);
  assert.ok((await s.waitData(aWs, big.length, 5000)).equals(big));
  // Nothing for one client reached another.
  assert.equal(viaTcp.raw.received().length, viaTcp.offset + tricky.length);

  // DisconnectClient on A closes the client on B with the close a local client gets.
  s.send(0, request(7, 'TunnelProxy.DisconnectClient', { socketAddress: aWs }));
  assert.deepEqual(await s.waitControl((m) => m.id === 7), { id: 7, params: { tunnelProxyError: 'TunnelProxyErrorNoError' }, status: 'success' });
  assert.deepEqual(await viaWs.raw.closed(), { code: 1011, reason: 'Server requested disconnect.' });
  // A client that leaves on B: the server hears ClientDisconnected as for a local one.
  const next = await tpClient(B().tp('ws'), sid, 'leaver');
  const aNext = await s.waitClient('leaver');
  next.raw.destroy();
  assert.deepEqual((await s.waitControl((m) => m.notification === 'TunnelProxy.ClientDisconnected' && (m.params as { socketAddress: number }).socketAddress === aNext)).params, { socketAddress: aNext });
  // The server goes: its clients on every node are closed (a WS client with the local close).
  const last = await tpClient(B().tp('ws'), sid, 'last');
  await s.waitClient('last');
  s.raw.destroy();
  await viaTcp.raw.closed();
  assert.deepEqual(await last.raw.closed(), { code: 1011, reason: 'Server disconnected' });
  await local.raw.closed();
  // Its directory entry is gone: a client now is answered ServerNotFound on any node.
  const late = await rawClient(B().tp('tcp'));
  late.send(registerClientRequest(sid, { id: 3 }));
  await late.closed();
  assert.equal(late.received().toString(), '{"id":3,"params":{"tunnelProxyError":"TunnelProxyErrorServerNotFound"},"status":"success"}\n');
});

test('a server uuid is registered once in the cluster; client uuids are checked on the server node', { skip, timeout: 10000 }, async () => {
  const sid = uuid();
  const s = await tpServer(A().tp('ws'), sid);
  const dup = await rawClient(C().tp('tcp'));
  dup.send(registerServerRequest(sid, 'impostor', 5));
  await dup.closed();
  assert.equal(dup.received().toString(), '{"id":5,"params":{"slipEnabled":false,"tunnelProxyError":"TunnelProxyErrorAlreadyRegistered"},"status":"success"}\n');
  // A client uuid already in use by a client of this server (on another node) is refused.
  const cu = `{${uuid()}}`;
  const first = await rawClient(B().tp('tcp'));
  first.send(registerClientRequest(sid, { uuid: cu, name: 'first' }));
  await first.waitFor(CLIENT_OK());
  const second = await rawClient(C().tp('ws'));
  second.send(registerClientRequest(sid, { uuid: cu, name: 'second', id: 9 }));
  assert.deepEqual(await second.closed(), { code: 1011, reason: 'Already registered' });
  assert.equal(second.received().toString(), '{"id":9,"params":{"tunnelProxyError":"TunnelProxyErrorAlreadyRegistered"},"status":"success"}\n');
  // An unknown server: the same answer as on one node.
  const lost = await rawClient(B().tp('tcp'));
  lost.send(registerClientRequest(uuid(), { id: 4 }));
  await lost.closed();
  assert.equal(lost.received().toString(), '{"id":4,"params":{"tunnelProxyError":"TunnelProxyErrorServerNotFound"},"status":"success"}\n');
  // Once the server leaves, its uuid may register on another node.
  s.raw.destroy();
  await first.closed();
  for (let i = 0; i < 100 && A().server.tunnelProxy!.registry.servers.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  const again = await tpServer(C().tp('tcp'), sid);
  const c = await tpClient(A().tp('tcp'), sid, 'after the move');
  const a = await again.waitClient('after the move');
  c.raw.send('hello');
  assert.equal((await again.waitData(a, 5)).toString(), 'hello');
  again.raw.destroy();
  await c.raw.closed();
});

test('a dead node: its clients elsewhere are closed, its entry refuses nobody for longer than the lease', { skip, timeout: 10000 }, async () => {
  // A node that died right after its server registered: its entry names a forward address where nothing
  // listens. A client elsewhere is answered ServerNotFound (and a log line), the server reconnecting
  // elsewhere is refused until the entry expires, then registers.
  const ghost = directory('node-ghost');
  await ghost.start();
  const sid = uuid();
  assert.deepEqual(await ghost.register(ghost.keyOf(sid), '127.0.0.1:1'), { ok: true });
  await ghost.close();
  const c = await rawClient(B().tp('tcp'));
  c.send(registerClientRequest(sid, { id: 2 }));
  await c.closed();
  assert.equal(c.received().toString(), '{"id":2,"params":{"tunnelProxyError":"TunnelProxyErrorServerNotFound"},"status":"success"}\n');
  assert.ok(logs[1]!.records().some((r) => r.code === 'RELAY_FORWARD_FAILED'));
  const early = await rawClient(A().tp('tcp'));
  early.send(registerServerRequest(sid));
  await early.closed();
  assert.match(early.received().toString(), /TunnelProxyErrorAlreadyRegistered/);
  await new Promise((r) => setTimeout(r, LEASE_MS + 100));
  const s = await tpServer(A().tp('tcp'), sid);
  // The forward stream of a client breaking off without a close (its server's node gone): closed as
  // when the server goes.
  const w = await tpClient(B().tp('ws'), sid, 'orphan');
  await s.waitClient('orphan');
  for (const conn of A().server.tunnelProxy!.connections) if (conn.role === 'client') conn.link.destroy();
  assert.deepEqual(await w.raw.closed(), { code: 1011, reason: 'Server disconnected' });
  s.raw.destroy();
});

test('Redis away: a client for a server elsewhere is answered as for an unknown server, servers cannot register; all comes back with Redis', { skip, timeout: 15000 }, async () => {
  const sid = uuid();
  const s = await tpServer(A().tp('tcp'), sid);
  await redis.kill();
  const c = await rawClient(B().tp('ws'));
  c.send(registerClientRequest(sid, { id: 6 }));
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'Unknown server' });
  assert.equal(c.received().toString(), '{"id":6,"params":{"tunnelProxyError":"TunnelProxyErrorServerNotFound"},"status":"success"}\n');
  assert.ok(logs[1]!.records().some((r) => r.code === 'RELAY_TP_DIRECTORY_FAILED'));
  const refused = await rawClient(C().tp('tcp'));
  refused.send(registerServerRequest(uuid(), 'nymea', 8));
  await refused.closed();
  assert.equal(refused.received().toString(), '{"id":8,"params":{"slipEnabled":false,"tunnelProxyError":"TunnelProxyErrorInternalServerError"},"status":"success"}\n');
  // Clients on the server's own node still reach it.
  const local = await tpClient(A().tp('tcp'), sid, 'local while away');
  await s.waitClient('local while away');
  // Redis restarts empty: node A writes its entry back at its next renewal, and B finds the server again.
  await redis.restart();
  let reached: Awaited<ReturnType<typeof tpClient>> | undefined;
  for (let i = 0; i < 60 && reached === undefined; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const x = await rawClient(B().tp('tcp'));
    x.send(registerClientRequest(sid, { name: `retry ${i}` }));
    const got = await x.waitFor('\n', 2000);
    if (got.toString().includes('NoError')) reached = { raw: x, offset: got.indexOf('\n') + 1 };
    else await x.closed();
  }
  assert.ok(reached !== undefined, 'a client on B reached the server on A once Redis was back');
  const connected = await s.waitControl((m) => m.notification === 'TunnelProxy.ClientConnected' && /retry/.test((m.params as { clientName: string }).clientName));
  s.send((connected.params as { socketAddress: number }).socketAddress, 'back');
  assert.equal((await reached.raw.waitForBytes(reached.offset + 4)).subarray(reached.offset).toString(), 'back');
  s.raw.destroy();
  await local.raw.closed();
});
