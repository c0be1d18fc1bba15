/**
 * Hostile peers of the tunnel-proxy listeners that the other files do not play: connections that send
 * requests and never read the answers (before registration, and on a server's control channel), SLIP
 * frames cut at every byte, ids and names taken from Object.prototype. The process and the other
 * connections must go on; what is buffered for a connection that does not read must stay bounded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rawClient, request } from '../../helpers/relay.ts';
import { startTp, tpServer, tpClient, type StartedTp } from './harness.ts';
import { encodeFrame } from '../../../src/relay/protocol/slip.ts';
import { PROTOTYPE_KEYS } from '../../helpers/hostile.ts';

const BUFFER = 65536;
let tp: StartedTp;
before(async () => {
  tp = await startTp({ limits: { clientBufferBytes: BUFFER, serverBufferBytes: BUFFER } });
});
after(() => tp.close());

const uuid = () => crypto.randomUUID();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const INTROSPECT = request(1, 'RemoteProxy.Introspect');

/** Pre-registration tests: every transport, and a short inactive deadline (the phase's deadline). */
const PHASE_MS = 800;
let pre: StartedTp;
before(async () => {
  pre = await startTp({ limits: { clientBufferBytes: BUFFER, serverBufferBytes: BUFFER }, timeouts: { inactiveMs: PHASE_MS } }, { kinds: ['tcp', 'tls', 'ws', 'wss'], relay: { limits: { maxUnreadAnswerBytes: BUFFER / 4 } } });
});
after(() => pre.close());

for (const kind of ['tcp', 'tls', 'ws', 'wss'] as const) {
  test(`before registration, ${kind}: a peer that floods requests and never reads is not read either (its unread answers stay within maxUnreadAnswerBytes plus one answer), then dropped at the deadline; others are served`, { timeout: 15000 }, async () => {
    const known = new Set(pre.server.tunnelProxy!.connections);
    const c = await rawClient(pre.tpUrl(kind));
    c.pause();
    let conn = [...pre.server.tunnelProxy!.connections].find((x) => !known.has(x));
    for (let i = 0; i < 200 && conn === undefined; i++) {
      await sleep(5);
      conn = [...pre.server.tunnelProxy!.connections].find((x) => !known.has(x));
    }
    assert.ok(conn !== undefined, 'the connection is known');
    let maxPending = 0;
    const batch = INTROSPECT.repeat(200);
    // About 16 MiB of answers asked for (each Introspect answer is a few KiB), in 45 KiB writes.
    for (let i = 0; i < 40 && !c.isClosed && conn.role !== 'closed'; i++) {
      c.send(batch);
      await sleep(5);
      maxPending = Math.max(maxPending, conn.link.pendingBytes);
    }
    const answeredAt = conn.txBytes;
    await sleep(PHASE_MS / 2);
    maxPending = Math.max(maxPending, conn.link.pendingBytes);
    assert.equal(conn.txBytes, answeredAt, 'nothing more is answered while it does not read');
    // The limit plus one answer (the answer that crosses it).
    assert.ok(maxPending <= BUFFER / 4 + 16384, `unread answers reached ${maxPending} bytes`);
    for (let i = 0; i < 200 && conn.role !== 'closed'; i++) await sleep(10);
    assert.equal(conn.role, 'closed', 'dropped at the deadline');
    c.destroy();
    // Another connection is served as usual.
    const ok = await rawClient(pre.tpUrl(kind));
    ok.send(request(2, 'TunnelProxy.Ping', { timestamp: 5 }));
    await ok.waitFor('"timestamp":5');
    ok.destroy();
  });

  test(`before registration, ${kind}: a peer that reads gets every answer to 200 requests sent in one write, in order`, { timeout: 15000 }, async () => {
    const c = await rawClient(pre.tpUrl(kind));
    const n = 200;
    c.send(Array.from({ length: n }, (_, i) => request(i + 1, 'RemoteProxy.Introspect')).join(''));
    await c.waitFor(`"id":${n},`, 10000);
    const ids = [...c.received().toString().matchAll(/\{"id":(\d+),/g)].map((m) => Number(m[1]));
    assert.deepEqual(ids, Array.from({ length: n }, (_, i) => i + 1));
    assert.equal(c.isClosed, false, 'still connected');
    c.destroy();
  });
}

test('a server that floods control requests and never reads: its unread answers stay bounded, then it is dropped', { timeout: 15000 }, async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const leg = tp.server.tunnelProxy!.registry.servers.get(sid)!;
  s.raw.pause();
  const frames = Buffer.concat(Array.from({ length: 200 }, () => encodeFrame(0, Buffer.from(INTROSPECT))));
  let maxPending = 0;
  for (let i = 0; i < 40 && leg.conn.role !== 'closed'; i++) {
    s.sendRaw(frames);
    await sleep(5);
    maxPending = Math.max(maxPending, leg.conn.link.pendingBytes);
  }
  maxPending = Math.max(maxPending, leg.conn.link.pendingBytes);
  // At most the buffer plus one answer wait in user space toward it; the queue behind them is bounded
  // by the buffer too, and a server past it is dropped (kernel buffers hold the rest, unread).
  assert.ok(maxPending <= BUFFER + 16384, `unread answers toward the server reached ${maxPending} bytes`);
  assert.equal(leg.conn.role, 'closed');
  assert.equal(tp.server.tunnelProxy!.registry.servers.has(sid), false);
  s.raw.destroy();
});

test('a server slow to read, its buffer full of client data: control answers wait in order, nothing is lost once it reads', { timeout: 15000 }, async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await tpClient(tp.tpUrl('tcp'), sid, 'filler');
  const a = await s.waitClient('filler');
  const leg = tp.server.tunnelProxy!.registry.servers.get(sid)!;
  s.raw.pause();
  const chunk = Buffer.alloc(64 * 1024, 0x66);
  let sent = 0;
  // Client data until the relay holds the server's buffer (the kernel buffers on the way fill first).
  for (let i = 0; i < 400 && leg.conn.link.pendingBytes < BUFFER; i++) {
    c.raw.send(chunk);
    sent += chunk.length;
    await sleep(2);
  }
  assert.ok(leg.conn.link.pendingBytes >= BUFFER, 'the buffer toward the server filled');
  for (let i = 0; i < 10; i++) {
    s.send(0, request(100 + 2 * i, 'RemoteProxy.Introspect'));
    s.send(0, request(101 + 2 * i, 'TunnelProxy.Ping', { timestamp: i }));
  }
  for (let i = 0; i < 200 && !leg.paused; i++) await sleep(5);
  assert.ok(leg.paused, 'the server connection is paused while its answers wait');
  assert.notEqual(leg.conn.role, 'closed');
  s.raw.resume();
  await s.waitControl((m) => m.id === 119, 10000);
  const ids = s.control().map((m) => m.id).filter((id) => typeof id === 'number' && id >= 100);
  assert.deepEqual(ids, Array.from({ length: 20 }, (_, i) => 100 + i));
  await s.waitData(a, sent, 10000);
  s.raw.destroy();
});

test('SLIP from the server cut at every byte (escapes at chunk ends): the client gets exactly the payload', { timeout: 15000 }, async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await tpClient(tp.tpUrl('tcp'), sid, 'cut');
  const a = await s.waitClient('cut');
  const payload = Buffer.from([0x41, 0xc0, 0xdb, 0x42, 0xdb, 0xdb, 0xc0, 0xc0, 0x00, 0xdc, 0xdd, 0x43]);
  const frame = encodeFrame(a, payload);
  for (let i = 0; i < frame.length; i++) {
    s.sendRaw(frame.subarray(i, i + 1));
    await sleep(1);
  }
  const got = await c.raw.waitForBytes(c.offset + payload.length);
  assert.deepEqual(got.subarray(c.offset), payload);
  s.raw.destroy();
});

test('Object.prototype keys as names, uuids, ids and param keys: coded answers, nothing else closes', { timeout: 15000 }, async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  for (const k of PROTOTYPE_KEYS) {
    const c = await rawClient(tp.tpUrl('tcp'));
    c.send(`{"id":1,"method":"TunnelProxy.RegisterClient","params":{"clientName":"${k}","clientUuid":"${k}","serverUuid":"${k}"}}\n`);
    assert.match((await c.waitFor('\n')).toString(), /TunnelProxyErrorInvalidUuid/);
    c.send(`{"id":{"${k}":1},"method":"${k}.${k}","params":{"${k}":{}}}\n`);
    await c.closed();
    s.send(0, `{"id":2,"method":"TunnelProxy.${k}","params":{"${k}":1}}\n`);
    s.send(0, `{"id":3,"method":"TunnelProxy.DisconnectClient","params":{"socketAddress":"${k}"}}\n`);
  }
  s.send(0, request(4, 'TunnelProxy.Ping', { timestamp: 1 }));
  await s.waitControl((m) => m.id === 4);
  assert.ok(tp.server.tunnelProxy!.registry.servers.has(sid));
  s.raw.destroy();
});
