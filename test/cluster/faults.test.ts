/**
 * Cluster faults (issue 11, item 6) with real gateway PROCESSES: three `gatehouse serve` nodes (each its
 * own nodeId and forward listener on 127.0.0.1:0) on one real redis-server, and one `serve --workers 2`
 * without Redis. Clients over tcp, tls, ws and wss on different nodes. What each test proves:
 *   1. a node SIGKILLed: its forwarded tunnels close on the surviving nodes, its waiting entry and its
 *      tunnel lease expire in Redis (aloneMs, tunnelLeaseMs), and the keys pair again afterwards;
 *   2. Redis killed: open tunnels (local and forwarded) keep flowing both ways, a new Authenticate gets
 *      ProxyError at once (exact bytes), a RELAY_RENDEZVOUS_FAILED log line and a metric; Redis back:
 *      pairing across nodes works again by itself;
 *   3. Redis restarted empty while clients wait: nothing pairs across different (token, nonce), every
 *      waiting client either pairs with the right partner or runs into its alone timeout;
 *   4. a worker of `serve --workers 2` SIGKILLed: the forwarded tunnels it carried close, tunnels of the
 *      other worker flow on, the keys it held (a waiting client, a tunnel) pair again at once, the primary
 *      starts a replacement, and new pairs across workers work.
 * Timeouts are short in the nodes' configs (aloneMs 1.5 s, tunnelLeaseMs 1 s, redisCommandTimeoutMs
 * 300 ms) so the file stays well under 25 s.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import { rawClient, authenticate, selfSignedCert, tempDir, destroyAllClients, NO_ERROR, TUNNEL_ESTABLISHED, type RawClient } from '../helpers/relay.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';
import { startNode, ownerPid, until, type GatewayNode } from './gateway-nodes.ts';

const skip = skipUnlessRedis();
const SECRET = 'faults-test-cluster-secret-0123456789';
const ALONE_MS = 1500;
const LEASE_MS = 1000;
const REDIS_COMMAND_MS = 300;

const proxyError = (id: number) => `{"id":${id},"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n`;
const noError = (id: number) => `{"id":${id},"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}\n`;

let redis: TestRedis | undefined;
let dir: string;
let n1: GatewayNode;
let n2: GatewayNode;
let n3: GatewayNode;
let workers: GatewayNode | undefined;
const started: GatewayNode[] = [];

function listenersToml(cert: { certFile: string; keyFile: string }): string {
  const kinds = ['tcp', 'tls', 'ws', 'wss'].map((k) => `{ kind = "${k}", host = "127.0.0.1", port = 0 }`).join(', ');
  return `[shutdown]\ngraceMs = 0\n[relay]\nlisteners = [${kinds}]\nauthenticator = { kind = "dev" }\n[relay.tls]\ncertFile = ${JSON.stringify(cert.certFile)}\nkeyFile = ${JSON.stringify(cert.keyFile)}\n[relay.timeouts]\naloneMs = ${ALONE_MS}\n[relay.monitor]\nenabled = false\n`;
}

function nodeToml(nodeId: string, cert: { certFile: string; keyFile: string }, redisSocket: string): string {
  return `${listenersToml(cert)}[cluster]\nredisUrl = ${JSON.stringify(redisSocket)}\nsecret = "${SECRET}"\nnodeId = "${nodeId}"\ntunnelLeaseMs = ${LEASE_MS}\nredisCommandTimeoutMs = ${REDIS_COMMAND_MS}\nforwardListen = "127.0.0.1:0"\nforwardHandshakeMs = 1000\n[ops]\nhost = "127.0.0.1"\nport = 0\n`;
}

// Starting six processes takes 2-4 s on an idle 2-core machine; the deadline allows for a loaded one.
before(async () => {
  dir = tempDir('gatehouse-faults-');
  const cert = selfSignedCert(dir);
  // All processes start at once (each loads the CLI through tsx: the slow part).
  const pending: Promise<GatewayNode>[] = [startNode('workers', dir, `${listenersToml(cert)}[cluster]\nmoveClients = false\n`, ['--workers', '2'], 40000)];
  if (skip === false) {
    redis = await startRedis();
    const socket = redis.socket;
    pending.push(...['node-1', 'node-2', 'node-3'].map((id) => startNode(id, dir, nodeToml(id, cert, socket), [], 40000)));
  }
  const results = await Promise.allSettled(pending);
  for (const r of results) if (r.status === 'fulfilled') started.push(r.value);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  workers = started[0];
  [, n1, n2, n3] = started as [GatewayNode, GatewayNode, GatewayNode, GatewayNode];
}, { timeout: 45000 });

after(async () => {
  destroyAllClients();
  await Promise.all(started.map((n) => n.stop()));
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Authenticates on `url` and waits for the NoError answer (the client now waits for its partner). */
async function waiting(url: string, token: string, opts: { name?: string; nonce?: string; id?: number } = {}): Promise<RawClient> {
  const c = await rawClient(url);
  c.send(authenticate(token, { name: opts.name ?? 'waiter', ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }), ...(opts.id === undefined ? {} : { id: opts.id }) }));
  await c.waitFor(NO_ERROR);
  return c;
}

interface Pair {
  readonly a: RawClient;
  readonly b: RawClient;
}

/** `a` waits on `urlA`, `b` arrives on `urlB` under the same (token, nonce): both see the other's name. */
async function pairOn(urlA: string, urlB: string, opts: { token?: string; nonce?: string; nameA?: string; nameB?: string } = {}): Promise<Pair> {
  const token = opts.token ?? `tok-${crypto.randomUUID()}`;
  const nameA = opts.nameA ?? `a-${crypto.randomUUID().slice(0, 8)}`;
  const nameB = opts.nameB ?? `b-${crypto.randomUUID().slice(0, 8)}`;
  const a = await waiting(urlA, token, { name: nameA, ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }) });
  const b = await rawClient(urlB);
  b.send(authenticate(token, { id: 2, name: nameB, ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }) }));
  await a.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"${nameB}"`);
  await b.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"${nameA}"`);
  return { a, b };
}

/** `size` bytes each way, exactly; resolves when both arrived. */
async function flows(p: Pair, size = 64 * 1024, ms = 5000): Promise<void> {
  const aOff = p.a.received().length;
  const bOff = p.b.received().length;
  const ab = Buffer.alloc(size);
  const ba = Buffer.alloc(size);
  for (let i = 0; i < size; i++) {
    ab[i] = (i * 31 + 7) & 0xff;
    ba[i] = (i * 17 + 3) & 0xff;
  }
  p.a.send(ab, { binary: true });
  p.b.send(ba, { binary: true });
  const [gotB, gotA] = await Promise.all([p.b.waitForBytes(bOff + size, ms), p.a.waitForBytes(aOff + size, ms)]);
  assert.ok(gotB.subarray(bOff).equals(ab), `${p.a.kind} → ${p.b.kind}: exact bytes`);
  assert.ok(gotA.subarray(aOff).equals(ba), `${p.b.kind} → ${p.a.kind}: exact bytes`);
}

/** One sample of the node's /metrics (0 when absent). */
async function metric(node: GatewayNode, series: string): Promise<number> {
  const text = await (await fetch(`${node.opsUrl!}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** Every rendezvous key in Redis now: value and remaining TTL. */
async function redisEntries(): Promise<{ key: string; value: string; pttl: number }[]> {
  const r = new Redis({ path: redis!.socket, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  try {
    await r.connect();
    const keys = await r.keys('gatehouse:rv:k:*');
    const out: { key: string; value: string; pttl: number }[] = [];
    for (const key of keys) {
      const [value, pttl] = await Promise.all([r.get(key), r.pttl(key)]);
      if (value !== null) out.push({ key, value, pttl });
    }
    return out;
  } finally {
    r.disconnect();
  }
}

test('a node SIGKILLed: forwarded tunnels close on the surviving nodes; its waiting entry and tunnel lease expire; every key pairs again', { skip, timeout: 12000 }, async () => {
  // T1: waits on node-1 (tcp), its partner arrives on node-2 (wss): node-2 holds the key's tunnel lease.
  const t1 = await pairOn(n1.url('tcp'), n2.url('wss'), { token: 'tok-t1' });
  await flows(t1);
  // T2: waits on node-2 (ws), its partner arrives on node-1 (tls): node-1 holds the lease.
  const t2 = await pairOn(n2.url('ws'), n1.url('tls'), { token: 'tok-t2' });
  await flows(t2);
  // A client waiting on node-2 when it dies.
  await waiting(n2.url('tcp'), 'tok-w', { nonce: 'n-w' });
  const mine = (e: { value: string }) => / node-2 /.test(e.value);
  const before = (await redisEntries()).filter(mine);
  assert.deepEqual(before.map((e) => e.value.split(' ')[0]).sort(), ['t', 'w'], 'node-2 holds one lease (T1) and one waiting entry');

  await n2.crash();
  // The surviving ends of both forwarded tunnels see their stream end (FIN for tcp, close for tls).
  const t1Had = t1.a.received().length;
  await t1.a.closed(3000);
  await t2.b.closed(3000);
  assert.equal(t1.a.received().length, t1Had, 'nothing but the end after the partner node died');
  // Nothing of node-2 was released (it could not): both entries run out by their TTL.
  const orphaned = (await redisEntries()).filter(mine);
  assert.equal(orphaned.length, 2, 'the dead node left its entries');
  for (const e of orphaned) assert.ok(e.pttl > 0 && e.pttl <= (e.value.startsWith('t') ? LEASE_MS : ALONE_MS), `${e.value.split(' ')[0]} expires by itself (${e.pttl} ms left)`);
  const t0 = Date.now();
  await until(async () => ((await redisEntries()).some(mine) ? undefined : true), ALONE_MS + 1500, 'node-2 entries to expire');
  assert.ok(Date.now() - t0 <= ALONE_MS + 1000);

  // No key stays blocked: T1's key (leased by the dead node), T2's key (leased by node-1, released when
  // its tunnel closed) and the dead node's waiting key all pair again, across the surviving nodes.
  const again1 = await pairOn(n1.url('ws'), n3.url('tcp'), { token: 'tok-t1' });
  await flows(again1, 4096);
  const again2 = await pairOn(n3.url('wss'), n1.url('tcp'), { token: 'tok-t2' });
  await flows(again2, 4096);
  const again3 = await pairOn(n3.url('tls'), n1.url('wss'), { token: 'tok-w', nonce: 'n-w' });
  await flows(again3, 4096);
  for (const p of [again1, again2, again3]) {
    p.a.end();
    await p.b.closed();
  }
});

test('Redis killed: open tunnels (local and forwarded) flow both ways; Authenticate gets ProxyError at once, a log line and a metric; Redis back: pairing across nodes recovers by itself', { skip, timeout: 15000 }, async () => {
  const local = await pairOn(n1.url('tcp'), n1.url('ws'));
  const forwarded = await pairOn(n3.url('wss'), n1.url('tls'));
  const PROXY_METRIC = 'gatehouse_relay_authentications_total{result="AuthenticationErrorProxyError"}';
  const proxyErrorsBefore = await metric(n1, PROXY_METRIC);
  await redis!.kill();
  // A new Authenticate on either node is answered ProxyError and closed, well within the command timeout.
  for (const [node, kind, id] of [[n1, 'tcp', 9], [n3, 'ws', 10]] as const) {
    const c = await rawClient(node.url(kind));
    const t0 = Date.now();
    c.send(authenticate(`tok-${crypto.randomUUID()}`, { id }));
    await c.closed(3000);
    assert.equal(c.received().toString(), proxyError(id));
    assert.ok(Date.now() - t0 < REDIS_COMMAND_MS + 500, `answered at once (${Date.now() - t0} ms)`);
  }
  await n1.waitForRecord((r) => r.code === 'RELAY_RENDEZVOUS_FAILED' && r.level === 'error');
  await n3.waitForRecord((r) => r.code === 'RELAY_RENDEZVOUS_FAILED' && r.level === 'error');
  // The Authenticate answer is what the metric counts (not the authenticator's NoError before the offer).
  assert.equal(await metric(n1, PROXY_METRIC), proxyErrorsBefore + 1);
  // Both tunnels keep flowing both ways while Redis is away (and past a lease period without renewal).
  await flows(local, 256 * 1024);
  await flows(forwarded, 256 * 1024);
  await new Promise((r) => setTimeout(r, LEASE_MS));
  await flows(local, 1024);
  await flows(forwarded, 1024);

  await redis!.restart();
  // Nodes reconnect by themselves (no restart): a pair across node-1 and node-3 works again.
  const t0 = Date.now();
  const recovered = await until(async () => {
    const token = `tok-${crypto.randomUUID()}`;
    const x = await rawClient(n3.url('tcp'));
    x.send(authenticate(token, { name: 'x' }));
    const first = (await x.waitFor('\n', 3000)).toString();
    if (first.includes('ProxyError')) return undefined;
    const y = await rawClient(n1.url('wss'));
    y.send(authenticate(token, { name: 'y' }));
    // node-3 may be back before node-1 (each reconnects on its own schedule): then try again.
    if ((await y.waitFor('\n', 3000)).toString().includes('ProxyError')) {
      x.destroy();
      return undefined;
    }
    await x.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"y"`);
    await y.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"x"`);
    return { a: x, b: y };
  }, 6000, 'pairing across nodes after Redis returned');
  assert.ok(Date.now() - t0 < 3000, `recovered within a few reconnect attempts (${Date.now() - t0} ms)`);
  await flows(recovered, 4096);
  await flows(local, 1024);
  await flows(forwarded, 1024);
  for (const p of [recovered, local, forwarded]) {
    p.a.end();
    await p.b.closed();
  }
});

test('Redis restarted empty while clients wait: no pair across different (token, nonce); the waiting either pair correctly or time out alone', { skip, timeout: 12000 }, async () => {
  const T = `tok-${crypto.randomUUID()}`;
  const T2 = `tok-${crypto.randomUUID()}`;
  // Waiting when Redis loses everything: two nonces of one token on two nodes, and another token.
  const w1 = await waiting(n1.url('tcp'), T, { nonce: 'n1', name: 'w1', id: 1 });
  const w2 = await waiting(n3.url('ws'), T, { nonce: 'n2', name: 'w2', id: 2 });
  const w3 = await waiting(n1.url('wss'), T2, { name: 'w3', id: 3 });
  const waitedAt = Date.now();
  // And a tunnel across the nodes (its lease, held by node-3, is lost with the rest).
  const leasesBefore = new Set((await redisEntries()).map((e) => e.key));
  const tunnel = await pairOn(n1.url('tls'), n3.url('tcp'), { token: T, nonce: 'tunnel' });
  const tunnelKey = (await redisEntries()).find((e) => !leasesBefore.has(e.key) && e.value.startsWith('t node-3 '))?.key;
  assert.ok(tunnelKey !== undefined, 'node-3 holds the tunnel key');
  const readyBefore = [n1, n3].map((n) => n.records().filter((r) => r.msg === 'redis rendezvous connected').length);
  await redis!.restart();
  // Each node's client reconnects by itself (one "connected" line each).
  await Promise.all([n1, n3].map((n, i) => n.waitForRecord((r) => r.msg === 'redis rendezvous connected', 3000, readyBefore[i]! + 1)));
  // Newcomers under the same keys as the waiting ones, on the other node: the table no longer knows
  // w1, w2, so each newcomer waits; the next arrival of the same key pairs with the newcomer, and with
  // nobody of another key.
  const x1 = await waiting(n3.url('tls'), T, { nonce: 'n1', name: 'x1' });
  const x2 = await waiting(n1.url('tcp'), T, { nonce: 'n2', name: 'x2' });
  const x3 = await waiting(n3.url('tcp'), T2, { nonce: 'other', name: 'x3' });
  const y1 = await rawClient(n1.url('ws'));
  y1.send(authenticate(T, { nonce: 'n1', name: 'y1' }));
  const y2 = await rawClient(n3.url('wss'));
  y2.send(authenticate(T, { nonce: 'n2', name: 'y2' }));
  await x1.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"y1"`);
  await y1.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"x1"`);
  await x2.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"y2"`);
  await y2.waitFor(`${TUNNEL_ESTABLISHED},"params":{"name":"x2"`);
  await flows({ a: x1, b: y1 }, 4096);
  await flows({ a: x2, b: y2 }, 4096);
  // The open tunnel's node writes its lease again at its next renewal: a third client of that
  // (token, nonce) is refused as before the restart (RELAY_TUNNEL_EXISTS: closed without an answer),
  // not left waiting for a fourth to make a second tunnel of one key.
  await until(async () => ((await redisEntries()).some((e) => e.key === tunnelKey) ? true : undefined), LEASE_MS + 1000, 'the lease written again');
  const third = await rawClient(n1.url('ws'));
  third.send(authenticate(T, { nonce: 'tunnel', name: 'third' }));
  const how = await third.closed(3000);
  assert.equal(third.received().toString(), '');
  assert.deepEqual(how, { code: 1011, reason: 'Tunnel already exists for this token nonce combination.' });
  await flows(tunnel, 4096);
  // The ones that waited before the restart: closed by their alone timeout, having seen only their answer.
  for (const [w, id] of [[w1, 1], [w2, 2], [w3, 3]] as const) {
    await w.closed(ALONE_MS + 2000);
    assert.equal(w.received().toString(), noError(id), 'no partner, no notification');
  }
  assert.ok(Date.now() - waitedAt >= ALONE_MS - 100, 'they waited their alone timeout');
  // x3 (T2, another nonce) was never paired with w3 (T2, no nonce): it times out alone too.
  await x3.closed(ALONE_MS + 2000);
  assert.ok(!x3.received().toString().includes(TUNNEL_ESTABLISHED));
  for (const [a, b] of [[x1, y1], [x2, y2], [tunnel.a, tunnel.b]] as const) {
    a.end();
    await b.closed();
  }
});

test('serve --workers 2 (no Redis): a worker SIGKILLed closes the forwarded tunnels it carried, the primary replaces it, new pairs across workers work', { timeout: 15000 }, async () => {
  const gw = workers!;
  const listening = (r: Record<string, unknown>) => r.msg === 'relay listening';
  const pidsNow = () => [...new Set(gw.records().filter(listening).map((r) => Number(r.pid)))];
  await gw.waitForRecord(listening, 5000, 2);
  const [p1, p2] = pidsNow() as [number, number];
  const urls = [gw.url('tcp'), gw.url('wss'), gw.url('tls'), gw.url('ws')];
  // Pairs until some span both workers (forwarded over the workers' unix sockets) and some do not. Each
  // listener hands its connections to the workers in turn: two in a row on one listener land on both.
  const pairs: { p: Pair; pidA: number; pidB: number; urlA: string; urlB: string; token: string }[] = [];
  for (let i = 0; i < 16 && (pairs.filter((x) => x.pidA !== x.pidB).length < 2 || pairs.filter((x) => x.pidA === x.pidB).length < 2); i++) {
    const urlA = urls[i % 4]!;
    const urlB = urls[i % 2 === 0 ? i % 4 : (i + 1) % 4]!;
    const token = `tok-${crypto.randomUUID()}`;
    const p = await pairOn(urlA, urlB, { token });
    const pidA = ownerPid(p.a, urlA, [p1, p2]);
    const pidB = ownerPid(p.b, urlB, [p1, p2]);
    assert.ok(pidA !== undefined && pidB !== undefined, 'each client is served by one of the workers');
    pairs.push({ p, pidA, pidB, urlA, urlB, token });
  }
  const spanning = pairs.filter((x) => x.pidA !== x.pidB);
  assert.ok(spanning.length >= 1, 'some pairs were forwarded between the workers');
  for (const x of pairs) await flows(x.p, 16 * 1024);

  // The victim holds the table's tunnel slot of a forwarded pair (its client arrived second) and a client
  // that waits in it.
  const victim = spanning[0]!.pidB;
  const leased = spanning[0]!.token;
  const waitToken = `tok-${crypto.randomUUID()}`;
  let waiter: RawClient | undefined;
  for (let i = 0; i < 4 && waiter === undefined; i++) {
    const c = await waiting(urls[0]!, waitToken, { nonce: 'n-wait' });
    if (ownerPid(c, urls[0]!, [p1, p2]) === victim) waiter = c;
    else {
      c.destroy();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  assert.ok(waiter !== undefined, 'a client waits in the victim worker');
  process.kill(victim, 'SIGKILL');
  // Every forwarded tunnel loses one end with the worker: its client on the surviving worker sees the end.
  for (const x of spanning) {
    await x.p.a.closed(3000);
    await x.p.b.closed(3000);
  }
  // Tunnels with both ends in the dead worker are gone; tunnels with both ends in the survivor flow on.
  for (const x of pairs.filter((y) => y.pidA === y.pidB)) {
    if (x.pidA === victim) {
      await x.p.a.closed(3000);
      await x.p.b.closed(3000);
    } else await flows(x.p, 16 * 1024);
  }
  await waiter.closed(3000);
  // The primary notices and starts a replacement in the same slot; it listens on the same ports.
  await gw.waitForRecord((r) => r.msg === 'a worker exited; starting a replacement', 3000);
  const p3 = await until(() => pidsNow().find((p) => p !== p1 && p !== p2), 8000, 'the replacement worker listening');
  // The primary dropped the dead worker's entries at once: neither its waiting client's key nor the
  // key of the tunnel it held stays blocked (no expiry to wait for without Redis).
  for (const [token, nonce] of [[waitToken, 'n-wait'], [leased, undefined]] as const) {
    const p = await pairOn(urls[1]!, urls[2]!, { token, ...(nonce === undefined ? {} : { nonce }) });
    await flows(p, 1024);
    p.a.end();
    await p.b.closed();
  }
  // New pairs across the workers work again (the new worker and the survivor forward to each other).
  let across = 0;
  for (let i = 0; i < 8 && across < 2; i++) {
    const urlA = urls[i % 4]!;
    const urlB = urls[i % 4]!;
    const p = await pairOn(urlA, urlB);
    const pidA = ownerPid(p.a, urlA, [p1, p3]);
    const pidB = ownerPid(p.b, urlB, [p1, p3]);
    assert.ok(pidA !== undefined && pidB !== undefined && pidA !== victim && pidB !== victim);
    await flows(p, 16 * 1024);
    if (pidA !== pidB) across++;
    p.a.end();
    await p.b.closed();
  }
  assert.ok(across >= 1, 'a pair spanning the survivor and the replacement was forwarded');
});
