/**
 * Forwarding between nodes: three relay servers (three nodes, one test process) on one real redis-server,
 * each with its forward listener. A client whose partner waits on another node gets the same tunnel as a
 * local pair: exact handshake bytes, data both ways, half-close, the kernel relay on both nodes, duplicate
 * uuids closed on both sides; a partner that left is not paired; over tcp, tls, ws and wss. The
 * handshake itself: a peer without the cluster key, a malformed or oversized claim, a stalled one.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { loadTlsFiles } from '../../src/core/tls.ts';
import { RedisRendezvous } from '../../src/relay/cluster/rendezvous-redis.ts';
import { clusterForwardSetup, forwardConnect, forwardKey, parseForwardAddress, MAX_LINE } from '../../src/relay/cluster/forward.ts';
import { Secret } from '../../src/core/config/secret.ts';
import type { Logger } from '../../src/core/log.ts';
import type { Session } from '../../src/relay/session.ts';
import { startRelay, rawClient, authenticate, lines, selfSignedCert, tempDir, captureLog, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay, type RawClient } from '../helpers/relay.ts';
import { startRedis, skipUnlessRedis, testRendezvous, redisCommand, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
const SECRET = 'forward-test-cluster-secret-0123';
let redis: TestRedis;
const nodes: StartedRelay[] = [];
const rvs: { close(): Promise<void> }[] = [];
const logs = [captureLog(), captureLog(), captureLog()];
const clients: RawClient[] = [];

async function client(url: string): Promise<RawClient> {
  const c = await rawClient(url);
  clients.push(c);
  return c;
}

function rendezvous<P = Session>(nodeId: string, log: Logger): RedisRendezvous<P> {
  const rv = testRendezvous<P>(redis, nodeId, { secret: new Secret(SECRET), log });
  rvs.push(rv);
  return rv;
}

const cluster = { forwardListen: '127.0.0.1:0', forwardHandshakeMs: 2000 };

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
  const dir = tempDir();
  const tls = selfSignedCert(dir);
  const listeners = [
    { kind: 'tcp', host: '127.0.0.1', port: 0 },
    { kind: 'tls', host: '127.0.0.1', port: 0 },
    { kind: 'ws', host: '127.0.0.1', port: 0 },
    { kind: 'wss', host: '127.0.0.1', port: 0 },
  ];
  for (const [i, id] of ['node-a', 'node-b', 'node-c'].entries()) {
    const rv = rendezvous(id, logs[i]!.log);
    await rv.start();
    // node-c forwards over a unix socket, the others over TCP; node-b hands tunnels to the kernel early.
    const fwd = i === 2 ? { ...cluster, forwardListen: `${dir}/fwd-c.sock` } : cluster;
    nodes.push(
      await startRelay(
        { listeners, tls, splice: { enabled: true, afterBytes: i === 1 ? 4096 : 262144 } },
        { rendezvous: rv, log: logs[i]!.log, forward: clusterForwardSetup(fwd, SECRET, id) },
      ),
    );
  }
});
after(async () => {
  for (const c of clients) c.destroy();
  for (const n of nodes) await n.close();
  await Promise.all(rvs.map((r) => r.close()));
  await redis?.stop();
});

const [n1, n2, n3] = [0, 1, 2].map((i) => ({ url: (k: string) => nodes[i]!.url(k), get server() { return nodes[i]!.server; } }));

test('a partner on another node: the exact handshake bytes of a local pair, data both ways, half-close', { skip, timeout: 15000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const a = await client(n1!.url('tcp'));
  a.send(`{"id":0,"method":"Authentication.Authenticate","params":{"name":"alpha","token":"${token}","uuid":"{E1D4D9B0-1C2A-4F51-9C1E-0A0B0C0D0E0F}"}}\n`);
  await a.waitFor(NO_ERROR);
  const b = await client(n2!.url('tcp'));
  b.send(`{"id":7,"method":"Authentication.Authenticate","params":{"name":"beta","token":"${token}","uuid":"5f0c3c2e-0000-4000-8000-000000000001"}}\n`);
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  const aLines = lines(a.received());
  const bLines = lines(b.received());
  assert.equal(aLines[0], '{"id":0,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}');
  assert.match(aLines[1]!, /^\{"id":\d+,"notification":"RemoteProxy.TunnelEstablished","params":\{"name":"beta","uuid":"5f0c3c2e-0000-4000-8000-000000000001"\}\}$/);
  assert.equal(bLines[0], '{"id":7,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}');
  assert.match(bLines[1]!, /^\{"id":\d+,"notification":"RemoteProxy.TunnelEstablished","params":\{"name":"alpha","uuid":"e1d4d9b0-1c2a-4f51-9c1e-0a0b0c0d0e0f"\}\}$/);
  assert.equal(aLines.length, 2);
  assert.equal(bLines.length, 2);
  const aOff = a.received().length;
  const bOff = b.received().length;
  const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x7d, 0x0a, 0x7b]);
  a.send(bytes);
  assert.deepEqual((await b.waitForBytes(bOff + 8)).subarray(bOff), bytes);
  b.send('pong');
  assert.equal((await a.waitForBytes(aOff + 4)).subarray(aOff).toString(), 'pong');
  // Each node shows its half of the tunnel, with the partner's monitor id and name.
  const t1 = [...n1!.server.tunnels].find((t) => t.a.name === 'alpha');
  const t2 = [...n2!.server.tunnels].find((t) => t.b.name === 'beta');
  assert.ok(t1 !== undefined && t2 !== undefined);
  assert.equal(t1.b.connectionId, t2.b.connectionId);
  assert.equal(t2.a.connectionId, t1.a.connectionId);
  assert.equal(t1.b.name, 'beta');
  // a half-closes: b gets the rest and then FIN; b may still answer until it ends too.
  a.send('last');
  a.end();
  await b.closed();
  assert.ok(b.received().subarray(bOff).toString().endsWith('last'));
  b.send('reply after half-close');
  await a.waitFor('reply after half-close');
  b.end();
  await a.closed();
});

test('every transport on either side: tls, ws and wss clients on different nodes pair and relay exact bytes', { skip, timeout: 20000 }, async () => {
  const combos: [typeof n1, string, typeof n1, string][] = [
    [n1, 'tls', n2, 'wss'],
    [n2, 'ws', n3, 'tcp'],
    [n3, 'wss', n1, 'tls'],
    [n1, 'ws', n3, 'ws'],
  ];
  for (const [na, ka, nb, kb] of combos) {
    const token = `tok-${crypto.randomUUID()}`;
    const a = await client(na!.url(ka));
    a.send(authenticate(token, { name: `a-${ka}` }));
    await a.waitFor(NO_ERROR);
    const b = await client(nb!.url(kb));
    b.send(authenticate(token, { name: `b-${kb}` }));
    await a.waitFor(`"name":"b-${kb}"`);
    await b.waitFor(`"name":"a-${ka}"`);
    const aOff = a.received().length;
    const bOff = b.received().length;
    const big = Buffer.alloc(300 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    a.send(big, { binary: true });
    const got = await b.waitForBytes(bOff + big.length, 10000);
    assert.ok(got.subarray(bOff).equals(big), `${ka} → ${kb}: bytes relayed exactly`);
    b.send('ok');
    assert.equal((await a.waitForBytes(aOff + 2)).subarray(aOff).toString(), 'ok');
    a.end();
    await b.closed();
    await a.closed();
  }
});

test('a forwarded TCP tunnel runs on the kernel relay on both nodes when it can', { skip, timeout: 15000 }, async (t) => {
  if (nodes[1]!.server.dataPaths === undefined) return t.skip('no data paths');
  const token = `tok-${crypto.randomUUID()}`;
  const a = await client(n2!.url('tcp'));
  a.send(authenticate(token, { name: 'k1' }));
  await a.waitFor(NO_ERROR);
  const b = await client(n3!.url('tcp'));
  b.send(authenticate(token, { name: 'k2' }));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  const bOff = b.received().length;
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  for (let i = 0; i < 16; i++) a.send(chunk);
  await b.waitForBytes(bOff + 16 * chunk.length, 10000);
  // node-b hands a tunnel to the kernel after 4 KiB (when the addon is built; else both stay in JS).
  const spliced = [...nodes[1]!.server.tunnels].some((x) => x.spliced);
  const addon = (await import('../../src/relay/splice.ts')).loadSplice() !== undefined;
  assert.equal(spliced, addon, 'the node-b side of the forwarded tunnel is on the kernel path');
  a.end();
  await b.closed();
  b.end();
  await a.closed();
});

test('a forwarded tunnel is logged as a local one is: established on both nodes, closed at info once (where the pair was made), both halves matched', { skip, timeout: 10000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  // a waits on node-c (its forward listener is a unix socket), b arrives on node-a, which makes the pair.
  const a = await client(n3!.url('tcp'));
  a.send(authenticate(token, { name: 'log-a' }));
  await a.waitFor(NO_ERROR);
  const b = await client(n1!.url('tcp'));
  b.send(authenticate(token, { name: 'log-b' }));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  const tA = [...n1!.server.tunnels].find((t) => t.b.name === 'log-b');
  const tC = [...n3!.server.tunnels].find((t) => t.a.name === 'log-a');
  assert.ok(tA !== undefined && tC !== undefined);
  const connections = [tA.a.connectionId, tA.b.connectionId];
  a.end();
  await b.closed();
  b.end();
  await a.closed();
  const line = async (node: number, tunnel: number, msg: string) => {
    for (let n = 0; n < 100; n++) {
      const hit = logs[node]!.records().filter((r) => r.msg === msg && r.tunnel === tunnel);
      if (hit.length > 0) {
        assert.equal(hit.length, 1, `one ${msg} line on node ${node}`);
        return hit[0]!;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return assert.fail(`no ${msg} line for tunnel ${tunnel} on node ${node}`);
  };
  const estA = await line(0, tA.id, 'tunnel established');
  const estC = await line(2, tC.id, 'tunnel established');
  const closedA = await line(0, tA.id, 'tunnel closed');
  const closedC = await line(2, tC.id, 'tunnel closed');
  // Both halves name the partner's node and the same two connection ids (the waiting client's first).
  assert.equal(estA.partnerNode, 'node-c');
  assert.equal(estC.partnerNode, 'node-a');
  assert.deepEqual(estA.connections, connections);
  assert.deepEqual(estC.connections, connections);
  assert.deepEqual(closedA.connections, connections);
  // The clients' own addresses, not the node-to-node stream's (node-c's side of it is a unix socket).
  assert.deepEqual(estA.remotes, ['127.0.0.1', '127.0.0.1']);
  assert.deepEqual(estC.remotes, ['127.0.0.1', '127.0.0.1']);
  // Established at info on both nodes; the end at info once in the cluster: on node-a, with the totals.
  assert.equal(estA.level, 'info');
  assert.equal(estC.level, 'info');
  assert.equal(closedA.level, 'info');
  assert.equal(closedC.level, 'debug');
  assert.ok(Array.isArray(closedA.bytes) && typeof closedA.seconds === 'number');
});

test('a claim that overtakes the answer to the waiting party\'s own offer still pairs (the partner is not stranded)', { skip, timeout: 15000 }, async () => {
  // Node "slow" reaches Redis through a proxy that holds every reply 300 ms: its client's entry is in Redis
  // at once, but the node learns that it waits only later. A partner arriving on node-b meanwhile finds the
  // entry and claims it from "slow" before that answer: the claim must wait for it, not be told `gone`.
  const { createServer } = await import('node:net');
  const proxyPath = join(tempDir(), 'slow-redis.sock');
  const proxy = createServer((down) => {
    const up = connect(redis.socket);
    down.on('data', (b: Buffer) => up.write(b));
    up.on('data', (b: Buffer) => setTimeout(() => down.write(b), 300));
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    down.on('close', () => up.destroy());
    up.on('close', () => setTimeout(() => down.destroy(), 300));
  });
  await new Promise<void>((r) => proxy.listen(proxyPath, r));
  const rv = new RedisRendezvous<Session>({ redisUrl: proxyPath, secret: new Secret(SECRET), nodeId: 'slow', aloneMs: 8000, maxWaitingPerToken: 64, tunnelLeaseMs: 30000, keyPrefix: 'gatehouse:', commandTimeoutMs: 3000, log: logs[0]!.log });
  await rv.start();
  const slow = await startRelay({}, { rendezvous: rv, log: logs[0]!.log, forward: clusterForwardSetup(cluster, SECRET, 'slow') });
  try {
    const token = `tok-${crypto.randomUUID()}`;
    const entries = async () => (await redisCommand(redis, 'KEYS', 'gatehouse:rv:k:*')).split('\r\n').filter((l) => l.startsWith('gatehouse:')).length;
    const before = await entries();
    const a = await client(slow.url('tcp'));
    a.send(authenticate(token, { name: 'early' }));
    // Its entry is in Redis (the answer is still on its way to "slow").
    for (let i = 0; i < 100 && (await entries()) === before; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(a.received().length, 0);
    const b = await client(n2!.url('tcp'));
    b.send(authenticate(token, { name: 'overtaking' }));
    await a.waitFor(TUNNEL_ESTABLISHED, 3000);
    await b.waitFor(TUNNEL_ESTABLISHED, 3000);
    assert.equal(lines(a.received())[0], '{"id":0,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}');
    a.end();
    await b.closed();
    b.end();
    await a.closed();
  } finally {
    await slow.close();
    await rv.close();
    proxy.close();
  }
});

test('the same uuid on two nodes: both clients closed as in a local pair (Client loop with a nonce)', { skip, timeout: 10000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const uuid = crypto.randomUUID();
  const a = await client(n1!.url('tcp'));
  a.send(authenticate(token, { uuid, nonce: 'n1' }));
  await a.waitFor(NO_ERROR);
  const b = await client(n2!.url('tcp'));
  b.send(authenticate(token, { id: 4, uuid, nonce: 'n1' }));
  await b.closed();
  await a.closed();
  // As nymea: the second client is closed before its reply is written.
  assert.equal(b.received().toString(), '');
  assert.ok(logs[0]!.records().some((r) => r.code === 'RELAY_CLIENT_LOOP'));
});

test('a partner that left just before the claim is not paired: the newcomer waits instead', { skip, timeout: 10000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const a = await client(n1!.url('tcp'));
  a.send(authenticate(token, { name: 'leaver' }));
  await a.waitFor(NO_ERROR);
  a.destroy();
  // The withdrawal may not have reached Redis yet: either the claim finds it gone, or the entry is gone.
  const b = await client(n2!.url('tcp'));
  b.send(authenticate(token, { name: 'newcomer' }));
  await b.waitFor(NO_ERROR);
  const c = await client(n3!.url('ws'));
  c.send(authenticate(token, { name: 'third' }));
  await b.waitFor('"name":"third"');
  await c.waitFor('"name":"newcomer"');
  assert.ok(!b.received().toString().includes('leaver'));
  b.end();
  await c.closed();
});

test('a node that cannot be reached: ProxyError and RELAY_FORWARD_FAILED, the key is free again', { skip, timeout: 10000 }, async () => {
  // A rendezvous entry that names a forward address where nothing listens (a node that died right after
  // its client authenticated): the claim fails, the newcomer is answered, and the key is usable again.
  const ghost = rendezvous<string>('node-ghost', logs[0]!.log);
  await ghost.start();
  ghost.advertise('127.0.0.1:1');
  const token = `tok-${crypto.randomUUID()}`;
  assert.equal((await ghost.offer({ token, nonce: '' }, 'a client of the dead node')).kind, 'waiting');
  const b = await client(n1!.url('tcp'));
  b.send(authenticate(token, { id: 11 }));
  await b.closed();
  assert.equal(b.received().toString(), '{"id":11,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n');
  assert.ok(logs[0]!.records().some((r) => r.code === 'RELAY_FORWARD_FAILED'));
  const x = await client(n1!.url('tcp'));
  x.send(authenticate(token));
  await x.waitFor(NO_ERROR);
  const y = await client(n2!.url('tcp'));
  y.send(authenticate(token));
  await x.waitFor(TUNNEL_ESTABLISHED);
  await y.waitFor(TUNNEL_ESTABLISHED);
  x.end();
  await y.closed();
});

/** The raw handshake against node-a's forward listener. */
async function rawForward(localAddress = '127.0.0.1', address = nodes[0]!.server.forwardAddress!): Promise<{ hello: string; socket: import('node:net').Socket; received: () => Buffer; closed: Promise<void> }> {
  const addr = parseForwardAddress(address);
  assert.ok(!('path' in addr));
  const socket = connect({ host: addr.host, port: addr.port, localAddress });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  let isClosed = false;
  const closed = new Promise<void>((r) =>
    socket.once('close', () => {
      isClosed = true;
      r();
    }),
  );
  for (let i = 0; i < 200 && !isClosed && Buffer.concat(chunks).indexOf(0x0a) < 0; i++) await new Promise((r) => setTimeout(r, 10));
  return { hello: Buffer.concat(chunks).toString(), socket, received: () => Buffer.concat(chunks), closed };
}

test('the forward handshake refuses what is not a node of ours: wrong key, malformed, oversized, stalled', { skip, timeout: 15000 }, async () => {
  const address = nodes[0]!.server.forwardAddress!;
  // A wrong key: the claim is dropped without an answer.
  const party = { name: 'x', uuid: crypto.randomUUID(), connectionId: '{x}', remote: '127.0.0.1', user: '', node: 'evil' };
  await assert.rejects(forwardConnect(address, forwardKey('not-the-cluster-secret-at-all'), { kind: 'rv', ref: 'abc.1', party }, 2000), /closed the forward stream/);
  // The right key but nobody waiting under that ref: a signed refusal.
  assert.deepEqual(await forwardConnect(address, forwardKey(SECRET), { kind: 'rv', ref: 'abc.1', party }, 2000), { ok: false, code: 'gone' });
  assert.deepEqual(await forwardConnect(address, forwardKey(SECRET), { kind: 'zz', ref: 'abc.1', party }, 2000), { ok: false, code: 'unknown_kind' });
  // Malformed lines, a prototype key as kind, invalid UTF-8, an oversized line: dropped, nothing answered.
  const bad = ['CLAIM\n', 'CLAIM a b c d e\n', `CLAIM ${'0'.repeat(32)} __proto__ constructor e30 ${'0'.repeat(64)}\n`, Buffer.concat([Buffer.from('CLAIM \xff\xfe'), Buffer.from([0xc3, 0x28]), Buffer.from('\n')]), 'x'.repeat(MAX_LINE + 1)];
  for (const line of bad) {
    const r = await rawForward();
    assert.match(r.hello, /^GATEHOUSE-FWD 1 [0-9a-f]{32}\n$/);
    r.socket.write(line);
    await r.closed;
    assert.equal(r.received().toString(), r.hello);
  }
  // A peer that says nothing is dropped after forwardHandshakeMs.
  const idle = await rawForward();
  const t0 = Date.now();
  await idle.closed;
  assert.ok(Date.now() - t0 >= 1500, 'held until the handshake deadline');
  assert.ok(logs[0]!.records().some((r) => r.code === 'RELAY_FORWARD_FAILED' && /longer than/.test(String(r.err))));
  // Node-a still serves.
  const token = `tok-${crypto.randomUUID()}`;
  const a = await client(n1!.url('tcp'));
  a.send(authenticate(token));
  await a.waitFor(NO_ERROR);
  const b = await client(n2!.url('ws'));
  b.send(authenticate(token));
  await b.waitFor(TUNNEL_ESTABLISHED);
  a.end();
  await b.closed();
});

test('backpressure crosses nodes: a receiver that stops reading stops the sender, memory stays bounded on both nodes', { skip, timeout: 20000 }, async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const a = await client(n1!.url('ws'));
  a.send(authenticate(token, { name: 'fast' }));
  await a.waitFor(NO_ERROR);
  const b = await client(n3!.url('tcp'));
  b.send(authenticate(token, { name: 'slow' }));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  b.pause();
  // 128 MiB: more than the kernel's socket buffers along the way can take. With tcp_rmem's maximum at 32
  // MiB (this machine) a paused receiver's buffer alone grows to 32 MiB, and so can the first node's for
  // the sender's socket; 32 MiB sent was all absorbed in some runs once the data path got faster.
  const chunk = Buffer.alloc(256 * 1024, 0x41);
  let sent = 0;
  for (let i = 0; i < 512; i++) {
    a.send(chunk, { binary: true });
    sent += chunk.length;
  }
  await new Promise((r) => setTimeout(r, 1500));
  const pending = (n: typeof n1) => [...n!.server.tunnels].filter((t) => t.a.name === 'fast' || t.b.name === 'slow').reduce((sum, t) => sum + t.a.link.pendingBytes + t.b.link.pendingBytes, 0);
  const held = pending(n1) + pending(n3);
  const limit = nodes[0]!.config.limits.tunnelBufferBytes;
  // Each node holds at most about one buffer per direction (plus one message in flight); the rest waits in the sender.
  assert.ok(held <= 4 * limit + 2 * chunk.length, `bytes held by both nodes: ${held}`);
  assert.ok(a.ws!.bufferedAmount > 24 * 1024 * 1024, `the sender is held back (buffered ${a.ws!.bufferedAmount} of ${sent})`);
  b.resume();
  await b.waitForBytes(b.received().length + 1);
  a.end();
  b.destroy();
});

test('the tunnel idle timeout closes both halves of a forwarded tunnel', { skip, timeout: 15000 }, async () => {
  const quiet: StartedRelay[] = [];
  try {
    for (const id of ['idle-1', 'idle-2']) {
      const rv = rendezvous(id, logs[0]!.log);
      await rv.start();
      quiet.push(await startRelay({ timeouts: { tunnelIdleMs: 600 } }, { rendezvous: rv, forward: clusterForwardSetup(cluster, SECRET, id) }));
    }
    const token = `tok-${crypto.randomUUID()}`;
    const a = await client(quiet[0]!.url('ws'));
    a.send(authenticate(token));
    await a.waitFor(NO_ERROR);
    const b = await client(quiet[1]!.url('tcp'));
    b.send(authenticate(token));
    await a.waitFor(TUNNEL_ESTABLISHED);
    await b.waitFor(TUNNEL_ESTABLISHED);
    const t0 = Date.now();
    const [ca] = await Promise.all([a.closed(5000), b.closed(5000)]);
    assert.ok(Date.now() - t0 >= 500);
    // The WebSocket side gets the idle reason, as in a local tunnel; the TCP side a FIN.
    assert.equal(ca.code, 1011);
  } finally {
    for (const q of quiet) await q.close();
  }
});

/** A CA and node certificates signed by it (openssl), for mutual TLS between nodes. */
function clusterCa(dir: string, names: string[], caName = 'ca'): { ca: string; nodes: { certFile: string; keyFile: string }[] } {
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const ca = join(dir, `${caName}.pem`);
  const caKey = join(dir, `${caName}.key`);
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${caName}`, '-keyout', caKey, '-out', ca]);
  const nodeFiles = names.map((n) => {
    const keyFile = join(dir, `${n}.key`);
    const csr = join(dir, `${n}.csr`);
    const certFile = join(dir, `${n}.pem`);
    run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${n}`, '-keyout', keyFile, '-out', csr]);
    run(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-days', '2', '-out', certFile]);
    return { certFile, keyFile };
  });
  return { ca, nodes: nodeFiles };
}

test('mutual TLS between nodes: a forwarded tunnel runs inside it, half-close included; a node with another CA is refused', { skip, timeout: 20000 }, async () => {
  const dir = tempDir();
  const good = clusterCa(dir, ['tls-1', 'tls-2']);
  const rogue = clusterCa(dir, ['tls-rogue'], 'other-ca');
  const files = [
    { ...good.nodes[0]!, clientCaFile: good.ca },
    { ...good.nodes[1]!, clientCaFile: good.ca },
    { ...rogue.nodes[0]!, clientCaFile: rogue.ca },
  ];
  const started: StartedRelay[] = [];
  const log = captureLog();
  try {
    for (const [i, id] of ['tls-1', 'tls-2', 'tls-rogue'].entries()) {
      const rv = rendezvous(id, log.log);
      await rv.start();
      const tls = await loadTlsFiles({ ...files[i]!, minVersion: 'TLSv1.2' }, dir);
      started.push(await startRelay({}, { rendezvous: rv, log: log.log, forward: clusterForwardSetup(cluster, SECRET, id, undefined, tls) }));
    }
    const token = `tok-${crypto.randomUUID()}`;
    const a = await client(started[0]!.url('tcp'));
    a.send(authenticate(token, { name: 'tls-a' }));
    await a.waitFor(NO_ERROR);
    const b = await client(started[1]!.url('ws'));
    b.send(authenticate(token, { name: 'tls-b' }));
    await a.waitFor('"name":"tls-b"');
    await b.waitFor('"name":"tls-a"');
    assert.equal([...started[0]!.server.tunnels][0]!.b.link.kind, 'tls');
    const aOff = a.received().length;
    const bOff = b.received().length;
    a.send('over mutual tls');
    assert.equal((await b.waitForBytes(bOff + 15)).subarray(bOff).toString(), 'over mutual tls');
    b.send('back');
    assert.equal((await a.waitForBytes(aOff + 4)).subarray(aOff).toString(), 'back');
    a.send('bye');
    a.end();
    await b.closed();
    assert.ok(b.received().subarray(bOff).toString().endsWith('bye'));
    await a.closed();
    // A node whose certificate another CA signed cannot claim: its client gets ProxyError.
    const token2 = `tok-${crypto.randomUUID()}`;
    const c = await client(started[0]!.url('tcp'));
    c.send(authenticate(token2));
    await c.waitFor(NO_ERROR);
    const d = await client(started[2]!.url('tcp'));
    d.send(authenticate(token2, { id: 3 }));
    await d.closed();
    assert.equal(d.received().toString(), '{"id":3,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n');
    assert.ok(log.records().some((r) => r.code === 'RELAY_FORWARD_FAILED'));
  } finally {
    for (const s of started) await s.close();
  }
});

test('one address cannot hold every handshake slot: the 257th silent connection from it is dropped at once, a node still claims', { skip, timeout: 20000 }, async () => {
  const idle: { hello: string; socket: import('node:net').Socket; closed: Promise<void> }[] = [];
  try {
    // From 127.0.0.2: the nodes themselves connect from 127.0.0.1.
    for (let i = 0; i < 256; i += 32) idle.push(...(await Promise.all(Array.from({ length: 32 }, () => rawForward('127.0.0.2')))));
    for (const x of idle) assert.match(x.hello, /^GATEHOUSE-FWD 1 /);
    const extra = await rawForward('127.0.0.2');
    await extra.closed;
    assert.equal(extra.hello, '', 'dropped before the greeting');
    assert.ok(idle.every((x) => !x.socket.destroyed));
    // A node's claim from another loopback address is served meanwhile.
    const token = `tok-${crypto.randomUUID()}`;
    const a = await client(n1!.url('tcp'));
    a.send(authenticate(token));
    await a.waitFor(NO_ERROR);
    const b = await client(n2!.url('tcp'));
    b.send(authenticate(token));
    await b.waitFor(TUNNEL_ESTABLISHED);
    a.end();
    await b.closed();
  } finally {
    for (const x of idle) x.socket.destroy();
  }
});

test('200 claims under way at once from one node address are all answered (a busy peer node is not refused as a flood)', { skip, timeout: 20000 }, async () => {
  // A node's claims all come from its address, and while this listener is busy they are all under way at
  // once: here every connection is greeted first, then each sends a signed claim for a party that is not
  // waiting and gets the signed refusal (the MAC as cluster/forward.ts defines it: length-prefixed fields).
  const key = forwardKey(SECRET);
  const mac = (...parts: string[]) => {
    const h = createHmac('sha256', key);
    for (const p of parts) h.update(`${p.length}:${p}`);
    return h.digest('hex');
  };
  const info = Buffer.from(JSON.stringify({ name: 'x', uuid: 'u', connectionId: '{x}', remote: '127.0.0.1', user: '', node: 'burst' })).toString('base64url');
  const held: Awaited<ReturnType<typeof rawForward>>[] = [];
  try {
    for (let i = 0; i < 200; i += 50) held.push(...(await Promise.all(Array.from({ length: 50 }, () => rawForward('127.0.0.7')))));
    const answers = held.map(async (x, i) => {
      const cw = /^GATEHOUSE-FWD 1 ([0-9a-f]{32})\n$/.exec(x.hello)?.[1];
      assert.ok(cw !== undefined, `connection ${i} greeted`);
      const cp = randomBytes(16).toString('hex');
      const ref = `burst.${i}`;
      x.socket.write(`CLAIM ${cp} rv ${ref} ${info} ${mac('claim', cw, cp, 'rv', ref, info)}\n`);
      await x.closed;
      return { text: x.received().toString().slice(x.hello.length), want: `NO gone ${mac('no', cp, cw, 'gone')}\n` };
    });
    for (const a of await Promise.all(answers)) assert.equal(a.text, a.want);
  } finally {
    for (const x of held) x.socket.destroy();
  }
});

test('shutdown ends a claim in flight at once: the outgoing forward stream is closed with the relay, not at the handshake deadline', { skip, timeout: 15000 }, async () => {
  // A "node" that accepts and never answers: the claim to it stays in its handshake.
  const { createServer } = await import('node:net');
  let peerClosedAt = 0;
  let accepted = 0;
  const stall = createServer((s) => {
    accepted++;
    s.on('error', () => undefined);
    s.on('close', () => (peerClosedAt = Date.now()));
  });
  await new Promise<void>((r) => stall.listen(0, '127.0.0.1', r));
  const port = (stall.address() as import('node:net').AddressInfo).port;
  const ghost = rendezvous<string>('node-stall', logs[0]!.log);
  await ghost.start();
  ghost.advertise(`127.0.0.1:${port}`);
  const rv = rendezvous('closing', logs[0]!.log);
  await rv.start();
  const node = await startRelay({}, { rendezvous: rv, forward: clusterForwardSetup({ ...cluster, forwardHandshakeMs: 8000 }, SECRET, 'closing') });
  try {
    const token = `tok-${crypto.randomUUID()}`;
    assert.equal((await ghost.offer({ token, nonce: '' }, 'waiting elsewhere')).kind, 'waiting');
    const b = await client(node.url('tcp'));
    b.send(authenticate(token));
    for (let i = 0; i < 100 && accepted === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(accepted, 1, 'the claim is in flight');
    assert.equal(peerClosedAt, 0);
    const t0 = Date.now();
    await node.close();
    await b.closed(3000);
    for (let i = 0; i < 100 && peerClosedAt === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(peerClosedAt > 0 && peerClosedAt - t0 < 2000, `the forward stream closed ${peerClosedAt - t0} ms after close() (deadline 8000)`);
  } finally {
    stall.close();
  }
});

test('the listener holds at most 1,024 handshakes in all: one more, from a fresh address, is dropped at once', { skip, timeout: 30000 }, async () => {
  const idle: { socket: import('node:net').Socket }[] = [];
  // Its own node with a long handshake deadline: no silent handshake may time out (and free a slot) meanwhile.
  const rv = rendezvous('many-handshakes', logs[0]!.log);
  await rv.start();
  const node = await startRelay({}, { rendezvous: rv, log: logs[0]!.log, forward: clusterForwardSetup({ ...cluster, forwardHandshakeMs: 60_000 }, SECRET, 'many-handshakes') });
  const at = node.server.forwardAddress!;
  try {
    // 4 addresses × 256 (each address's own cap) = 1,024 silent handshakes.
    for (let a = 2; a < 6; a++) {
      for (let i = 0; i < 256; i += 64) {
        const batch = await Promise.all(Array.from({ length: 64 }, () => rawForward(`127.0.0.${a}`, at)));
        for (const x of batch) assert.match(x.hello, /^GATEHOUSE-FWD 1 /);
        idle.push(...batch);
      }
    }
    const extra = await rawForward('127.0.0.6', at);
    await extra.closed;
    assert.equal(extra.hello, '', 'dropped before the greeting');
  } finally {
    for (const x of idle) x.socket.destroy();
    await node.close();
  }
});
