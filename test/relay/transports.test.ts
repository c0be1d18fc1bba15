/** TLS, WSS and unix listeners; WebSocket specifics (ping, binary frames, text/binary choice); bind errors. */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { WebSocket } from 'ws';
import { startRelay, rawClient, authenticate, pair, request, selfSignedCert, tempDir, deadline, TUNNEL_ESTABLISHED, type StartedRelay, everyListener } from '../helpers/relay.ts';
import { isGatewayError } from '../../src/core/errors.ts';

let relay: StartedRelay;
before(async () => {
  const dir = tempDir();
  const tls = selfSignedCert(dir);
  relay = await startRelay({
    tls,
    listeners: everyListener(dir),
  });
});
after(() => relay.close());

test('TLS with a self-signed certificate: Hello', async () => {
  const c = await rawClient(relay.url('tls'));
  c.send(request(0, 'RemoteProxy.Hello'));
  await c.waitFor('"status":"success"}\n');
  assert.match(c.received().toString(), /^\{"id":0,"params":\{"apiVersion":"5",/);
  c.destroy();
});

for (const [x, y] of [['tls', 'wss'], ['unix', 'tcp'], ['wss', 'unix'], ['tls', 'tcp'], ['ws', 'wss']] as const) {
  test(`mixed tunnel ${x} ↔ ${y}: 256 KiB of every byte value each way, exactly`, async () => {
    const { a, b, aOffset, bOffset } = await pair(relay.url(x), relay.url(y));
    const data = Buffer.alloc(256 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
    a.send(data, { binary: true });
    b.send(data, { binary: true });
    assert.ok((await b.waitForBytes(bOffset + data.length, 10000)).subarray(bOffset).equals(data));
    assert.ok((await a.waitForBytes(aOffset + data.length, 10000)).subarray(aOffset).equals(data));
    a.destroy();
    await b.closed();
  });
}

test('WebSocket ping is answered with pong', async () => {
  const c = await rawClient(relay.url('ws'));
  const pong = new Promise<Buffer>((resolve) => c.ws!.once('pong', resolve));
  c.ws!.ping(Buffer.from('are-you-there'));
  assert.equal((await pong).toString(), 'are-you-there');
  c.destroy();
});

test('WebSocket binary frame before the tunnel: close 1011 "Binary message not expected."', async () => {
  const c = await rawClient(relay.url('ws'));
  c.send(Buffer.from(request(0, 'RemoteProxy.Hello')), { binary: true });
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'Binary message not expected.' });
  assert.equal(c.received().length, 0);
});

test('WS peer that only sent text gets relayed UTF-8 as text frames; NUL/invalid UTF-8 as binary (FIX)', async () => {
  const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url('ws'));
  const before = b.frames().length;
  a.send(Buffer.from('plain text ✓'));
  await b.waitFor('✓');
  assert.equal(b.frames()[before]?.binary, false);
  a.send(Buffer.from([0x41, 0x00, 0xff, 0x42]));
  const got = await b.waitForBytes(bOffset + Buffer.byteLength('plain text ✓') + 4);
  assert.deepEqual(got.subarray(-4), Buffer.from([0x41, 0x00, 0xff, 0x42]));
  assert.equal(b.frames().at(-1)?.binary, true);
  a.destroy();
});

test('a UTF-8 sequence split across chunks is held back and sent whole as text', async () => {
  const { a, b } = await pair(relay.url('tcp'), relay.url('ws'));
  const before = b.frames().length;
  const euro = Buffer.from('€'); // e2 82 ac
  a.send(Buffer.concat([Buffer.from('price: '), euro.subarray(0, 1)]));
  await b.waitFor('price: ');
  await new Promise((r) => setTimeout(r, 30));
  a.send(euro.subarray(1));
  await b.waitFor('€');
  const frames = b.frames().slice(before);
  assert.ok(frames.every((f) => !f.binary));
  assert.equal(Buffer.concat(frames.map((f) => f.data)).toString(), 'price: €');
  a.destroy();
});

test('a WS peer that sent binary gets binary frames back', async () => {
  const { a, b } = await pair(relay.url('ws'), relay.url('tcp'));
  a.send(Buffer.from('bin'), { binary: true });
  await b.waitFor('bin');
  const before = a.frames().length;
  b.send('text back');
  await a.waitFor('text back');
  assert.equal(a.frames()[before]?.binary, true);
  a.destroy();
});

test('WebSocket upgrade is accepted on any path; plain HTTP gets 426', async () => {
  const url = `${relay.url('ws')}/some/path?x=1`;
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.terminate();
  const res = await fetch(relay.url('ws').replace('ws://', 'http://'));
  assert.equal(res.status, 426);
});

test('unix socket listener speaks the same protocol', async () => {
  const a = await rawClient(relay.url('unix'));
  a.send(authenticate('tok-unix'));
  const b = await rawClient(relay.url('tcp'));
  b.send(authenticate('tok-unix'));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  a.destroy();
  b.destroy();
});

test('a listener that cannot bind is a clear start-up error and nothing stays bound', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as { port: number }).port;
  try {
    await assert.rejects(
      startRelay({ listeners: [{ kind: 'ws', host: '127.0.0.1', port: 0 }, { kind: 'tcp', host: '127.0.0.1', port }] }),
      (err) => isGatewayError(err, 'CORE_LISTEN_FAILED') && err.message.includes(`127.0.0.1:${port}`) && err.message.includes('address already in use'),
    );
  } finally {
    blocker.close();
  }
});

test('missing TLS files are a clear start-up error', async () => {
  await assert.rejects(
    startRelay({ tls: { certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem' }, listeners: [{ kind: 'tls', host: '127.0.0.1', port: 0 }] }),
    (err) => isGatewayError(err, 'CORE_TLS_MATERIAL') && err.message.includes('/nonexistent/cert.pem'),
  );
});

test('a client that never finishes its TLS handshake is dropped after inactiveMs (tls and wss)', async () => {
  const dir = tempDir();
  const r = await startRelay({
    tls: selfSignedCert(dir),
    timeouts: { inactiveMs: 300 },
    listeners: [{ kind: 'tls', host: '127.0.0.1', port: 0 }, { kind: 'wss', host: '127.0.0.1', port: 0 }],
  });
  try {
    for (const kind of ['tls', 'wss']) {
      const port = r.port(kind);
      const t0 = Date.now();
      const sock = connect({ host: '127.0.0.1', port });
      sock.on('error', () => undefined);
      await deadline(new Promise<void>((resolve) => sock.on('close', () => resolve())), 5000, `${kind} silent client dropped`);
      assert.ok(Date.now() - t0 >= 250, kind);
    }
  } finally {
    await r.close();
  }
});

test('a WS text frame carrying invalid UTF-8 inside a tunnel is relayed byte for byte (FIX)', async () => {
  const { a, b, bOffset } = await pair(relay.url('ws'), relay.url('tcp'));
  const raw = Buffer.from([0x68, 0x69, 0xff, 0xfe, 0x00, 0xc3, 0x28]);
  // The ws client refuses to build such a text frame itself; write the frame by hand (masked, FIN, opcode 1).
  const mask = Buffer.from([1, 2, 3, 4]);
  const payload = Buffer.from(raw.map((byte, i) => byte ^ mask[i % 4]!));
  const frame = Buffer.concat([Buffer.from([0x81, 0x80 | raw.length]), mask, payload]);
  (a.ws as unknown as { _socket: import('node:net').Socket })._socket.write(frame);
  const got = await b.waitForBytes(bOffset + raw.length);
  assert.deepEqual(got.subarray(bOffset), raw);
  assert.equal(a.isClosed, false);
});

test('IPv6 loopback listeners work (and count as loopback for the dev authenticator)', async () => {
  const r = await startRelay({ authenticator: { kind: 'dev' }, listeners: [{ kind: 'tcp', host: '::1', port: 0 }, { kind: 'ws', host: '::1', port: 0 }] });
  try {
    assert.match(r.url('tcp'), /^tcp:\/\/\[::1\]:\d+$/);
    const { a, b, bOffset } = await pair(r.url('tcp'), r.url('ws'));
    a.send('over ipv6');
    assert.equal((await b.waitForBytes(bOffset + 9)).subarray(bOffset).toString(), 'over ipv6');
  } finally {
    await r.close();
  }
});
