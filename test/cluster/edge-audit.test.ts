/**
 * The cluster's network-facing edges under hostile input: the forward listener (plain and mutual TLS)
 * against strangers that never start or finish TLS, and a node reading records from Redis that are
 * corrupt or not written by a node of ours (presence values, rendezvous entries, the tunnel-proxy
 * directory). Each case checks the process keeps serving real clients and that the bad input ends.
 * Real relay servers and a real redis-server (test/cluster/redis-server.ts), loopback only.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import { loadTlsFiles } from '../../src/core/tls.ts';
import { clusterForwardSetup, parseForwardAddress } from '../../src/relay/cluster/forward.ts';
import { Secret } from '../../src/core/config/secret.ts';
import type { Session } from '../../src/relay/session.ts';
import type { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { startRelay, rawClient, authenticate, selfSignedCert, tempDir, captureLog, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay, type RawClient } from '../helpers/relay.ts';
import { WorkerQuestions, type WorkerHandle } from '../../src/ops/workers.ts';
import { RedisSharedState } from '../../src/core/cluster/shared-state.ts';
import { RedisTpDirectory } from '../../src/relay/cluster/tp-directory.ts';
import { PresencePublisher, readClusterView } from '../../src/relay/cluster/presence.ts';
import { createRedisClient, closeRedisClient } from '../../src/core/redis.ts';
import { silentLogger } from '../../src/core/log.ts';
import { startRedis, skipUnlessRedis, testRendezvous, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
const SECRET = 'edge-audit-cluster-secret-0123456789';
let redis: TestRedis;
const closers: (() => Promise<void>)[] = [];
const clients: RawClient[] = [];
const log = captureLog();
/** Two nodes whose forward streams are mutual TLS (the handshake deadline long: nothing times out by itself). */
const tlsNodes: StartedRelay[] = [];
/** A node with plain forward streams and a short handshake deadline (500 ms). */
let plainNode: StartedRelay;

async function client(url: string): Promise<RawClient> {
  const c = await rawClient(url);
  clients.push(c);
  return c;
}

async function node(id: string, forward: Parameters<typeof clusterForwardSetup>[0], tls?: Awaited<ReturnType<typeof loadTlsFiles>>): Promise<StartedRelay> {
  const rv: RedisRendezvous<Session> = testRendezvous<Session>(redis, id, { secret: new Secret(SECRET), log: log.log });
  await rv.start();
  const relay = await startRelay({ listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }] }, { rendezvous: rv, log: log.log, forward: clusterForwardSetup(forward, SECRET, id, undefined, tls) });
  closers.push(async () => {
    await relay.close();
    await rv.close();
  });
  return relay;
}

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  const dir = tempDir();
  const files = selfSignedCert(dir);
  const tls = await loadTlsFiles({ ...files, clientCaFile: files.certFile, minVersion: 'TLSv1.2' }, dir);
  for (const id of ['edge-tls-1', 'edge-tls-2']) tlsNodes.push(await node(id, { forwardListen: '127.0.0.1:0', forwardHandshakeMs: 20_000 }, tls));
  plainNode = await node('edge-plain', { forwardListen: '127.0.0.1:0', forwardHandshakeMs: 500 });
});
after(async () => {
  for (const c of clients) c.destroy();
  for (const c of closers.reverse()) await c();
  await redis?.stop();
});

/** A raw TCP connection from `localAddress`; resolves once connected. */
function rawTcp(address: string, localAddress: string): Promise<{ socket: Socket; received: () => Buffer; closed: Promise<void> }> {
  const addr = parseForwardAddress(address);
  assert.ok(!('path' in addr));
  const socket = connect({ host: addr.host, port: addr.port, localAddress });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve({ socket, received: () => Buffer.concat(chunks), closed }));
    socket.once('error', reject);
  });
}

/** Two clients of one fresh token, one on each node: resolves once both are in their tunnel. */
async function pairAcross(a: StartedRelay, b: StartedRelay): Promise<void> {
  const token = `tok-${crypto.randomUUID()}`;
  const x = await client(a.url('tcp'));
  x.send(authenticate(token, { name: 'x' }));
  await x.waitFor(NO_ERROR);
  const y = await client(b.url('tcp'));
  y.send(authenticate(token, { name: 'y' }));
  await x.waitFor(TUNNEL_ESTABLISHED);
  await y.waitFor(TUNNEL_ESTABLISHED);
  x.end();
  await y.closed();
}

test('forwardTls: connections that never start TLS count against the handshake limits; the 257th from one address is dropped at once, nodes still claim', { skip, timeout: 15000 }, async () => {
  const at = tlsNodes[0]!.server.forwardAddress!;
  const idle: Awaited<ReturnType<typeof rawTcp>>[] = [];
  try {
    for (let i = 0; i < 256; i += 64) idle.push(...(await Promise.all(Array.from({ length: 64 }, () => rawTcp(at, '127.0.0.3')))));
    // Let the listener see every accept before the one past the limit.
    await new Promise((r) => setTimeout(r, 200));
    const extra = await rawTcp(at, '127.0.0.3');
    const t0 = Date.now();
    await extra.closed;
    assert.ok(Date.now() - t0 < 5000, 'closed at once, not at the TLS handshake deadline (20 s)');
    assert.equal(extra.received().length, 0, 'not a byte to a connection past the limit');
    assert.ok(idle.every((x) => !x.socket.destroyed), 'the 256 within the limit are still held');
    assert.ok(log.records().some((r) => r.code === 'RELAY_FORWARD_BUSY'));
    // Another address (a node of ours: 127.0.0.1) still claims through mutual TLS.
    await pairAcross(tlsNodes[0]!, tlsNodes[1]!);
  } finally {
    for (const x of idle) x.socket.destroy();
  }
});

test('forwardTls: a claim gives its handshake slot back once its tunnel runs (a held slot per open tunnel would refuse claims past 256)', { skip, timeout: 15000 }, async () => {
  const at = tlsNodes[0]!.server.forwardAddress!;
  const idle: Awaited<ReturnType<typeof rawTcp>>[] = [];
  const open: RawClient[] = [];
  try {
    // 254 silent connections from the nodes' own address: two slots of 256 are left for claims.
    for (let i = 0; i < 254; i += 127) idle.push(...(await Promise.all(Array.from({ length: 127 }, () => rawTcp(at, '127.0.0.1')))));
    await new Promise((r) => setTimeout(r, 200));
    // Four tunnels whose partner waits on node 1, all kept open: claims three and four need freed slots.
    for (let i = 0; i < 4; i++) {
      const token = `tok-${crypto.randomUUID()}`;
      const x = await client(tlsNodes[0]!.url('tcp'));
      x.send(authenticate(token, { name: `x${i}` }));
      await x.waitFor(NO_ERROR);
      const y = await client(tlsNodes[1]!.url('tcp'));
      y.send(authenticate(token, { name: `y${i}` }));
      await y.waitFor(TUNNEL_ESTABLISHED, 3000).catch(() => assert.fail(`claim ${i + 1}: ${y.received().toString()}`));
      open.push(x, y);
    }
  } finally {
    for (const x of idle) x.socket.destroy();
    for (const c of open) c.destroy();
  }
});

test('forwardTls: a client with no certificate, or one that dribbles its handshake, is ended; nodes still claim', { skip, timeout: 15000 }, async () => {
  const at = parseForwardAddress(tlsNodes[0]!.server.forwardAddress!);
  assert.ok(!('path' in at));
  // No client certificate: refused by the TLS layer, the socket ends.
  const noCert = tlsConnect({ host: at.host, port: at.port, rejectUnauthorized: false });
  noCert.on('error', () => undefined);
  await new Promise<void>((r) => noCert.once('close', () => r()));
  // A certificate of another CA (a self-signed one of its own).
  const other = selfSignedCert(tempDir());
  const rogue = tlsConnect({ host: at.host, port: at.port, rejectUnauthorized: false, cert: readFileSync(other.certFile), key: readFileSync(other.keyFile) });
  rogue.on('error', () => undefined);
  await new Promise<void>((r) => rogue.once('close', () => r()));
  // Byte-by-byte garbage where a ClientHello belongs: ended by TLS, the node keeps serving.
  const dribble = await rawTcp(tlsNodes[0]!.server.forwardAddress!, '127.0.0.4');
  for (let i = 0; i < 20 && !dribble.socket.destroyed; i++) {
    dribble.socket.write(Buffer.from([0x16 + (i % 3)]));
    await new Promise((r) => setTimeout(r, 5));
  }
  dribble.socket.write('GET / HTTP/1.1\r\n\r\n');
  await dribble.closed;
  await pairAcross(tlsNodes[1]!, tlsNodes[0]!);
});


const redisClient = () => createRedisClient({ redisUrl: redis.socket, commandTimeoutMs: 1000, log: silentLogger(), errorCode: 'RELAY_PRESENCE_FAILED', errorMessage: 'test' });

test('presence records that are not a node of ours: each one is counted unreadable, the live nodes are still listed', { skip, timeout: 10000 }, async () => {
  const prefix = 'ea-presence:';
  const pub = new PresencePublisher({ redis: redisClient(), nodeId: 'real-node', keyPrefix: prefix, intervalMs: 1000, version: 'test', summary: () => undefined, log: silentLogger() });
  const r = redisClient();
  try {
    await pub.start();
    await r.connect();
    let real: string | null = null;
    for (let i = 0; i < 50 && real === null; i++) {
      real = await r.get(`${prefix}node:real-node`);
      if (real === null) await new Promise((res) => setTimeout(res, 20));
    }
    assert.ok(real !== null);
    const good = JSON.parse(real) as Record<string, unknown>;
    const list = async (id: string, write: () => Promise<unknown>) => {
      await write();
      await r.zadd(`${prefix}nodes`, Date.now() + 60_000, id);
    };
    // A key of another type under a listed id (Redis answers WRONGTYPE to reading it as a string).
    await list('as-hash', () => r.hset(`${prefix}node:as-hash`, 'node', 'as-hash'));
    // Truncated JSON, wrong field types, prototype keys, a huge number where a count belongs.
    await list('truncated', () => r.set(`${prefix}node:truncated`, real.slice(0, real.length - 7)));
    await list('wrong-types', () => r.set(`${prefix}node:wrong-types`, JSON.stringify({ ...good, node: 'wrong-types', pid: 'one', relay: 7 })));
    await list('proto', () => r.set(`${prefix}node:proto`, `{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}},"node":"proto"}`));
    // A value under one id that names another node: it would list real-node twice.
    await list('impostor', () => r.set(`${prefix}node:impostor`, JSON.stringify({ ...good, forward: '127.0.0.1:1' })));
    const view = await readClusterView(r, prefix);
    assert.deepEqual(view.nodes.map((n) => n.node), ['real-node']);
    assert.equal(view.nodes[0]!.forward, good.forward);
    assert.equal(view.unreadable, 5);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  } finally {
    await pub.close();
    await closeRedisClient(r);
  }
});

/** The Redis key of a (token, nonce) slot, as every node computes it (rendezvous-redis.ts). */
function slotKey(token: string, nonce = ''): string {
  const h = createHmac('sha256', SECRET).update('slot');
  for (const p of [token, nonce]) h.update(`${Buffer.byteLength(p)}:${p}`);
  return `gatehouse:rv:k:${h.digest('hex')}`;
}

test('rendezvous entries no node of ours writes (garbage, a fake lease, another key type) are replaced with a warning, not obeyed forever', { skip, timeout: 10000 }, async () => {
  const r = redisClient();
  await r.connect();
  try {
    const cases: [string, (k: string) => Promise<unknown>][] = [
      ['garbage', (k) => r.set(k, 'not an entry \xff')],
      ['fake lease', (k) => r.set(k, 'trash')],
      ['hash', (k) => r.hset(k, 'w', '1')],
      ['no node', (k) => r.set(k, 'w ')],
    ];
    for (const [what, write] of cases) {
      const token = `tok-${crypto.randomUUID()}`;
      await write(slotKey(token)); // no TTL: obeyed, it would hold the key forever
      const x = await client(tlsNodes[0]!.url('tcp'));
      x.send(authenticate(token, { name: 'x' }));
      await x.waitFor(NO_ERROR, 3000).catch(() => assert.fail(`${what}: the first client was refused: ${x.received().toString()}`));
      const y = await client(tlsNodes[1]!.url('tcp'));
      y.send(authenticate(token, { name: 'y' }));
      await x.waitFor(TUNNEL_ESTABLISHED);
      await y.waitFor(TUNNEL_ESTABLISHED);
      x.end();
      await y.closed();
    }
    assert.ok(log.records().filter((rec) => rec.code === 'CORE_CLUSTER_RECORD_INVALID').length >= cases.length);
  } finally {
    await closeRedisClient(r);
  }
});

test('a waiting entry whose forward address is not a node of ours (unparsable, a stranger, silent): the newcomer gets ProxyError, the node serves on', { skip, timeout: 15000 }, async () => {
  const r = redisClient();
  await r.connect();
  // A stranger that answers with garbage, and one that never answers.
  const { createServer } = await import('node:net');
  const held: Socket[] = [];
  const chatty = createServer((s) => {
    held.push(s);
    s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  });
  const silent = createServer((s) => void held.push(s));
  await new Promise<void>((res) => chatty.listen(0, '127.0.0.1', res));
  await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
  const port = (srv: typeof chatty) => (srv.address() as { port: number }).port;
  try {
    for (const address of ['not-an-address', `127.0.0.1:${port(chatty)}`, `127.0.0.1:${port(silent)}`, `127.0.0.1:${'9'.repeat(290)}`]) {
      const token = `tok-${crypto.randomUUID()}`;
      await r.set(slotKey(token), `w other-node 7 ${address}`, 'PX', 8000);
      const y = await client(plainNode.url('tcp'));
      y.send(authenticate(token, { id: 5 }));
      await y.closed(3000);
      assert.equal(y.received().toString(), '{"id":5,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n', address);
    }
    await pairAcross(plainNode, plainNode);
  } finally {
    for (const s of held) s.destroy();
    chatty.close();
    silent.close();
    await closeRedisClient(r);
  }
});

test('tunnel-proxy directory entries no node of ours writes do not block a server uuid: replaced at its registration, with a warning', { skip, timeout: 10000 }, async () => {
  const r = redisClient();
  const dirLog = captureLog();
  const dir = new RedisTpDirectory({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: 'edge-tp', leaseMs: 3000, keyPrefix: 'ea-tp:', commandTimeoutMs: 1000, log: dirLog.log });
  await r.connect();
  await dir.start();
  try {
    const writes: ((k: string) => Promise<unknown>)[] = [(k) => r.set(k, 'garbage'), (k) => r.set(k, 'x '), (k) => r.sadd(k, 'edge-tp 1 127.0.0.1:1')];
    for (const write of writes) {
      const key = dir.keyOf(crypto.randomUUID());
      await write(`ea-tp:tp:s:${key}`); // no TTL: obeyed, it would refuse this uuid forever
      assert.equal(await dir.lookup(key).catch(() => undefined), undefined);
      assert.deepEqual(await dir.register(key, '127.0.0.1:7'), { ok: true });
      assert.deepEqual(await dir.lookup(key), { node: 'edge-tp', address: '127.0.0.1:7' });
    }
    // An entry of another node in our format is still respected.
    const taken = dir.keyOf(crypto.randomUUID());
    await r.set(`ea-tp:tp:s:${taken}`, 'other-node 3 127.0.0.1:9', 'PX', 5000);
    assert.deepEqual(await dir.register(taken, '127.0.0.1:7'), { ok: false, node: 'other-node' });
    assert.equal(dirLog.records().filter((rec) => rec.code === 'CORE_CLUSTER_RECORD_INVALID' && /replaced/.test(String(rec.msg))).length, writes.length);
    // A held entry turned into another type: the renewal writes it back (it is not another node's), the
    // server is not reported lost, the other entries of the batch are renewed.
    const fast = new RedisTpDirectory({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: 'edge-tp2', leaseMs: 300, keyPrefix: 'ea-tp:', commandTimeoutMs: 1000, log: dirLog.log });
    await fast.start();
    const lost: string[] = [];
    fast.onLost((k) => lost.push(k));
    try {
      const [k1, k2] = [fast.keyOf(crypto.randomUUID()), fast.keyOf(crypto.randomUUID())];
      for (const k of [k1, k2]) assert.deepEqual(await fast.register(k, '127.0.0.1:8'), { ok: true });
      await r.del(`ea-tp:tp:s:${k1}`);
      await r.rpush(`ea-tp:tp:s:${k1}`, 'x');
      await new Promise((res) => setTimeout(res, 700));
      assert.deepEqual(await fast.lookup(k1), { node: 'edge-tp2', address: '127.0.0.1:8' });
      assert.deepEqual(await fast.lookup(k2), { node: 'edge-tp2', address: '127.0.0.1:8' });
      assert.deepEqual(lost, []);
    } finally {
      await fast.close();
    }
  } finally {
    await dir.close();
    await closeRedisClient(r);
  }
});

/** The Redis key of a token's waiting set (rendezvous-redis.ts). */
function tokenSetKey(token: string, prefix = 'gatehouse:'): string {
  return `${prefix}rv:t:${createHmac('sha256', SECRET).update('token').update(`${Buffer.byteLength(token)}:${token}`).digest('hex')}`;
}

test('keys of another type where a node keeps its sets and leases: the token\'s waiting set, a tunnel lease, the presence index; the node keeps pairing, renewing and publishing', { skip, timeout: 10000 }, async () => {
  const r = redisClient();
  await r.connect();
  try {
    // The token's waiting set as a string: every offer under that token failed with WRONGTYPE.
    const token = `tok-${crypto.randomUUID()}`;
    await r.set(tokenSetKey(token), 'not a sorted set');
    const x = await client(tlsNodes[0]!.url('tcp'));
    x.send(authenticate(token, { name: 'x' }));
    await x.waitFor(NO_ERROR, 3000).catch(() => assert.fail(`refused: ${x.received().toString()}`));
    const y = await client(tlsNodes[0]!.url('tcp'));
    y.send(authenticate(token, { name: 'y' }));
    await y.waitFor(TUNNEL_ESTABLISHED);
    x.end();
    await y.closed();

    // Two tunnel leases renewed in one batch; one key turned into a hash: the other is renewed all the same, the hash replaced.
    const rv = testRendezvous<string>(redis, 'edge-leases', { secret: new Secret(SECRET), keyPrefix: 'ea-lease:', tunnelLeaseMs: 600 });
    await rv.start();
    try {
      const keys = [0, 1].map(() => ({ token: `tok-${crypto.randomUUID()}`, nonce: '' }));
      for (const k of keys) {
        assert.equal((await rv.offer(k, 'first')).kind, 'waiting');
        assert.equal((await rv.offer(k, 'second')).kind, 'paired');
      }
      const slots = keys.map((k) => slotKey(k.token).replace('gatehouse:', 'ea-lease:'));
      await r.del(slots[0]!);
      await r.hset(slots[0]!, 'x', '1');
      await new Promise((res) => setTimeout(res, 1200));
      assert.match((await r.get(slots[1]!)) ?? '', /^t edge-leases /, 'the healthy lease is still held after two lease periods');
      // The hash is not a node's: the open tunnel's lease is written back over it (its key stays taken).
      assert.match((await r.get(slots[0]!)) ?? '', /^t edge-leases /);
    } finally {
      await rv.close();
    }

    // The presence index as a string: the node published nothing, ever.
    await r.set('ea-index:nodes', 'not a sorted set');
    const pub = new PresencePublisher({ redis: redisClient(), nodeId: 'indexed', keyPrefix: 'ea-index:', intervalMs: 200, version: 'test', summary: () => undefined, log: silentLogger() });
    try {
      await pub.start();
      let listed: string[] = [];
      for (let i = 0; i < 40 && listed.length === 0; i++) {
        listed = (await readClusterView(r, 'ea-index:').catch(() => ({ nodes: [] }))).nodes.map((n) => n.node);
        if (listed.length === 0) await new Promise((res) => setTimeout(res, 25));
      }
      assert.deepEqual(listed, ['indexed']);
    } finally {
      await pub.close();
    }
  } finally {
    await closeRedisClient(r);
  }
});

test('worker IPC: a view answer of the wrong shape is left out like one that never came; the others are merged', { timeout: 5000 }, async () => {
  let q: WorkerQuestions | undefined;
  const bad: unknown[] = [
    { metrics: 'junk' },
    { metrics: [[1, 2]] },
    { metrics: [{ name: 'x' }] },
    { doc: 'junk' },
    { traffic: { relay: '5', tunnelProxy: 0 } },
    { traffic: null },
    { error: 42 },
  ];
  const worker = (id: number, answer: () => Record<string, unknown>): WorkerHandle => ({
    id,
    isConnected: () => true,
    send(m: unknown) {
      const qid = (m as { id: number }).id;
      setImmediate(() => q!.onMessage(id, { gh: 'view', id: qid, ...answer() }));
      return true;
    },
  });
  for (const shape of bad) {
    q = new WorkerQuestions(() => [worker(1, () => ({ metrics: [[{ name: 'gatehouse_x', type: 'counter', values: [] }]], traffic: { relay: 10, tunnelProxy: 0 } })), worker(2, () => shape as Record<string, unknown>)]);
    const answers = await q.ask('traffic', 1000);
    assert.equal(answers.length, 1, JSON.stringify(shape));
    assert.equal(answers[0]!.traffic?.relay, 10);
  }
});

test('shared state: an epoch key or a failure counter of another type does not disable the shared replay cache or back-off', { skip, timeout: 10000 }, async () => {
  const r = redisClient();
  await r.connect();
  const stateLog = captureLog();
  const s = new RedisSharedState({ redisUrl: redis.socket, secret: new Secret(SECRET), nodeId: 'edge-ss', keyPrefix: 'ea-ss:', commandTimeoutMs: 1000, log: stateLog.log });
  try {
    // Before this node starts: its first epoch read meets a hash (every `once` then failed: sealed 503s forever).
    await r.hset('ea-ss:epoch', 'x', '1');
    await s.start();
    assert.equal(await s.once('replay', 'k1', 60_000), 'fresh');
    assert.equal(await s.once('replay', 'k1', 60_000), 'duplicate');
    assert.ok(stateLog.records().some((rec) => rec.code === 'CORE_CLUSTER_RECORD_INVALID'));
    // A failure counter of another type: counted in Redis all the same (not only by this process).
    const key = 'a'.repeat(64);
    await r.set(`ea-ss:bo:relay:${key}`, 'x');
    assert.equal(await s.countFailure('relay', key, 2, 10_000), 0);
    assert.ok((await s.countFailure('relay', key, 2, 10_000)) > 0, 'the second failure reaches the limit');
  } finally {
    await s.close();
    await closeRedisClient(r);
  }
});
