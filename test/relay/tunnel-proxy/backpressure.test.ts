/**
 * Backpressure per client on one multiplexed server connection (policy in src/relay/tunnel-proxy/server-leg.ts):
 * a client that stops reading holds at most its buffer and stalls its siblings for at most slowClientMs,
 * then it is dropped; a server that stops reading pauses its clients, so nothing grows without bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTp, tpServer, tpClient } from './harness.ts';
import { countLargeBuffers } from '../../helpers/read-buffers.ts';
import { TUNNEL_READ_BUFFERS, TUNNEL_TLS_READ_BUFFERS } from '../../../src/relay/read-buffers.ts';

const MiB = 1024 * 1024;

test('a slow client beside a fast one: bounded buffer, siblings stall at most slowClientMs, the slow one is dropped', { timeout: 30000 }, async () => {
  const t = await startTp({ limits: { clientBufferBytes: 65536 }, timeouts: { slowClientMs: 1000 } });
  try {
    const sid = crypto.randomUUID();
    const s = await tpServer(t.tpUrl('tcp'), sid);
    const slow = await tpClient(t.tpUrl('tcp'), sid, 'slow');
    const fast = await tpClient(t.tpUrl('tcp'), sid, 'fast');
    const aSlow = await s.waitClient('slow');
    const aFast = await s.waitClient('fast');
    slow.raw.pause();
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    // 16 MiB toward the slow client: more than every kernel buffer on the way can hold.
    for (let i = 0; i < 256; i++) s.send(aSlow, chunk);
    const fastData = Buffer.alloc(MiB, 0x62);
    const started = Date.now();
    s.send(aFast, fastData);
    let maxPending = 0;
    const leg = [...t.server.tunnelProxy!.registry.clients.values()].find((c) => c.name === 'slow')!;
    const sampler = setInterval(() => (maxPending = Math.max(maxPending, leg.conn.link.pendingBytes)), 5);
    const got = await fast.raw.waitForBytes(fast.offset + fastData.length, 10000);
    clearInterval(sampler);
    const took = Date.now() - started;
    assert.ok(got.subarray(fast.offset).equals(fastData));
    // The sibling waited for the slow client's timeout at most (plus transfer time).
    assert.ok(took < 1000 + 2500, `fast client waited ${took} ms`);
    // User-space buffer toward the slow client: its limit plus one read of the server connection.
    assert.ok(maxPending <= 65536 + 256 * 1024, `pending toward the slow client reached ${maxPending}`);
    const gone = await s.waitControl((m) => m.notification === 'TunnelProxy.ClientDisconnected');
    assert.deepEqual(gone.params, { socketAddress: aSlow });
    // A paused socket does not see its end: read what the kernel still holds, then the end comes.
    slow.raw.resume();
    await slow.raw.closed(5000);
    // The server connection reads again: more data for the fast client flows.
    s.send(aFast, 'after');
    await fast.raw.waitFor('after');
    s.raw.destroy();
  } finally {
    await t.close();
  }
});

test('a slow reader that keeps draining is not dropped: it throttles, and every byte arrives', { timeout: 30000 }, async () => {
  const t = await startTp({ limits: { clientBufferBytes: 16384 }, timeouts: { slowClientMs: 2000 } });
  try {
    const sid = crypto.randomUUID();
    const s = await tpServer(t.tpUrl('tcp'), sid);
    const c = await tpClient(t.tpUrl('tcp'), sid, 'steady');
    const a = await s.waitClient('steady');
    const data = Buffer.alloc(8 * MiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 10)) & 0xff;
    for (let off = 0; off < data.length; off += 60000) s.send(a, data.subarray(off, off + 60000));
    // Read in bursts with pauses shorter than slowClientMs.
    const reader = setInterval(() => {
      c.raw.pause();
      setTimeout(() => c.raw.resume(), 100);
    }, 200);
    const got = await c.raw.waitForBytes(c.offset + data.length, 20000);
    clearInterval(reader);
    assert.ok(got.subarray(c.offset).equals(data));
    s.raw.destroy();
  } finally {
    await t.close();
  }
});

test('a server that stops reading pauses its clients: the buffer toward it stays bounded', { timeout: 30000 }, async () => {
  const t = await startTp({ limits: { serverBufferBytes: 65536 } });
  try {
    const sid = crypto.randomUUID();
    const s = await tpServer(t.tpUrl('tcp'), sid);
    const clients = [await tpClient(t.tpUrl('tcp'), sid, 'p1'), await tpClient(t.tpUrl('tcp'), sid, 'p2')];
    await s.waitClient('p1');
    await s.waitClient('p2');
    s.raw.pause();
    const chunk = Buffer.alloc(64 * 1024, 0x63);
    for (let i = 0; i < 128; i++) for (const c of clients) c.raw.send(chunk);
    const leg = t.server.tunnelProxy!.registry.servers.get(sid)!;
    let maxPending = 0;
    for (let i = 0; i < 100; i++) {
      maxPending = Math.max(maxPending, leg.conn.link.pendingBytes);
      await new Promise((r) => setTimeout(r, 10));
    }
    // Its limit plus one read per client (each may deliver a chunk before its pause takes effect).
    assert.ok(maxPending <= 65536 + 2 * 256 * 1024, `pending toward the server reached ${maxPending}`);
    assert.ok(maxPending > 0);
    s.raw.resume();
    // Everything arrives once the server reads again (16 MiB in total).
    const a1 = await s.waitClient('p1');
    await s.waitData(a1, 128 * chunk.length, 20000);
    s.raw.destroy();
  } finally {
    await t.close();
  }
});

// A client's reads go into one reused buffer (client-leg.ts): its bytes are copied into a SLIP frame before
// the next read, so reusing the buffer at once must never change a byte that reaches the server. 12 clients
// over tcp and tls send 2 MiB each at once (data full of the bytes SLIP escapes), the server stalls now and
// then: every client's bytes arrive exactly, and the pools' large buffers serve every busy client.
test('clients reading into reused buffers: 12 clients x 2 MiB to a stalling server, every byte exact', { timeout: 60000 }, async () => {
  const made = { plain: countLargeBuffers(TUNNEL_READ_BUFFERS), tls: countLargeBuffers(TUNNEL_TLS_READ_BUFFERS) };
  const t = await startTp({}, { kinds: ['tcp', 'tls'] });
  try {
    const sid = crypto.randomUUID();
    const s = await tpServer(t.tpUrl('tcp'), sid);
    const clients = [];
    for (let i = 0; i < 12; i++) {
      const name = `c${i}`;
      const c = await tpClient(t.tpUrl(i % 2 === 0 ? 'tcp' : 'tls'), sid, name);
      const data = Buffer.alloc(2 * MiB);
      for (let k = 0; k < data.length; k++) data[k] = k % 7 === 0 ? 0xc0 : k % 11 === 0 ? 0xdb : (k * 131 + i) & 0xff;
      clients.push({ c, address: await s.waitClient(name), data });
    }
    const stall = setInterval(() => {
      s.raw.pause();
      setTimeout(() => s.raw.resume(), 30);
    }, 60);
    for (const { c, data } of clients) for (let off = 0; off < data.length; off += 300_001) c.raw.send(data.subarray(off, off + 300_001));
    try {
      for (const { address, data } of clients) assert.ok((await s.waitData(address, data.length, 40000)).equals(data), `client at ${address}`);
    } finally {
      clearInterval(stall);
    }
    assert.ok(made.plain.count() >= 1 && made.tls.count() >= 1, `large buffers made: plain ${made.plain.count()}, tls ${made.tls.count()}`);
    s.raw.destroy();
  } finally {
    made.plain.stop();
    made.tls.stop();
    await t.close();
  }
});
