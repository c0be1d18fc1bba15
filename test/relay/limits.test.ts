/** Every relay limit, one past it: its own error code and wire answer. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { WebSocket } from 'ws';
import { errorSpec } from '../../src/core/errors.ts';
import { startRelay, rawClient, authenticate, pair, request, NO_ERROR, deadline, selfSignedCert, tempDir, captureLog } from '../helpers/relay.ts';

test('total connections: one past maxConnections is refused with its own error (TCP bytes, WS 503)', async () => {
  const relay = await startRelay({ limits: { maxConnections: 3 } });
  try {
    const held = [await rawClient(relay.url('tcp')), await rawClient(relay.url('tcp')), await rawClient(relay.url('ws'))];
    const over = await rawClient(relay.url('tcp'));
    await over.closed();
    assert.equal(over.received().toString(), '{"error":"Too many connections.","id":-1,"status":"error"}\n');
    const ws = new WebSocket(relay.url('ws'));
    const status = await new Promise<number>((resolve) => ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
    assert.equal(status, 503);
    // A slot frees when a client leaves.
    held[0]!.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const again = await rawClient(relay.url('tcp'));
    again.send(request(0, 'RemoteProxy.Hello'));
    await again.waitFor('success');
  } finally {
    await relay.close();
  }
});

test('connections per IP: one past the limit is refused; another address is not affected', async () => {
  const relay = await startRelay({ limits: { maxConnectionsPerIp: 2 } });
  try {
    await rawClient(relay.url('tcp'));
    await rawClient(relay.url('tcp'));
    const over = await rawClient(relay.url('tcp'));
    await over.closed();
    assert.equal(over.received().toString(), '{"error":"Too many connections from this address.","id":-1,"status":"error"}\n');
    const ws = new WebSocket(relay.url('ws'));
    const res = await new Promise<{ status: number; code: string }>((resolve) =>
      ws.once('unexpected-response', (_req, r) => resolve({ status: r.statusCode ?? 0, code: String(r.headers['x-gatehouse-error']) })),
    );
    assert.deepEqual(res, { status: 429, code: 'CORE_LIMIT_CONNECTIONS_PER_IP' });
    // 127.0.0.2 is another address on loopback.
    const other = connect({ host: '127.0.0.1', port: relay.port('tcp'), localAddress: '127.0.0.2' });
    const answer = await deadline(new Promise<string>((resolve) => {
      other.on('connect', () => other.write(request(0, 'RemoteProxy.Hello')));
      other.on('data', (d: Buffer) => resolve(d.toString()));
    }), 3000, 'hello from 127.0.0.2');
    assert.match(answer, /"status":"success"/);
    other.destroy();
  } finally {
    await relay.close();
  }
});

test('waiting clients per token: one past the limit gets its own error, then close', async () => {
  const relay = await startRelay({ limits: { maxWaitingPerToken: 2 } });
  try {
    for (const nonce of ['n1', 'n2']) {
      const c = await rawClient(relay.url('tcp'));
      c.send(authenticate('tok-many', { nonce }));
      await c.waitFor(NO_ERROR);
    }
    const over = await rawClient(relay.url('ws'));
    over.send(authenticate('tok-many', { nonce: 'n3', id: 5 }));
    assert.deepEqual(await over.closed(), { code: 1011, reason: 'Too many clients waiting for this token.' });
    assert.equal(over.received().toString(), '{"error":"Too many clients waiting for this token.","id":5,"status":"error"}\n');
    // Other tokens are not affected, and pairing with a waiting one still works.
    await pair(relay.url('tcp'), relay.url('tcp'));
    const partner = await rawClient(relay.url('tcp'));
    partner.send(authenticate('tok-many', { nonce: 'n1' }));
    await partner.waitFor('TunnelEstablished');
  } finally {
    await relay.close();
  }
});

test('failed authentications per IP: after the limit, Authenticate is refused until the window passes', async () => {
  const relay = await startRelay({ limits: { maxAuthFailuresPerIp: 2, authFailureWindowMs: 600 } });
  try {
    for (let i = 0; i < 2; i++) {
      const c = await rawClient(relay.url('tcp'));
      c.send(authenticate('mock:0:AuthenticationErrorAuthenticationFailed'));
      await c.closed();
      assert.match(c.received().toString(), /AuthenticationErrorAuthenticationFailed/);
    }
    const blocked = await rawClient(relay.url('ws'));
    blocked.send(authenticate('good-token', { id: 3 }));
    assert.deepEqual(await blocked.closed(), { code: 1011, reason: 'Too many failed authentications from this address.' });
    assert.equal(blocked.received().toString(), '{"error":"Too many failed authentications from this address. Retry later.","id":3,"status":"error"}\n');
    await new Promise((r) => setTimeout(r, 700));
    const later = await rawClient(relay.url('tcp'));
    later.send(authenticate('good-token'));
    await later.waitFor(NO_ERROR);
  } finally {
    await relay.close();
  }
});

test('10240 bytes of incomplete JSON are held; one byte more closes without any reply', async () => {
  const relay = await startRelay();
  try {
    const ok = await rawClient(relay.url('tcp'));
    const head = '{"id":1,"method":"RemoteProxy.Hello","params":{},"pad":"';
    ok.send(head + 'x'.repeat(10240 - head.length));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(ok.isClosed, false);
    const over = await rawClient(relay.url('ws'));
    over.send(head + 'x'.repeat(10241 - head.length));
    assert.deepEqual(await over.closed(), { code: 1011, reason: 'Data buffer size violation.' });
    assert.equal(over.received().length, 0);
    const tcpOver = await rawClient(relay.url('tcp'));
    tcpOver.send(head + 'x'.repeat(10241 - head.length));
    await tcpOver.closed();
    assert.equal(tcpOver.received().length, 0);
  } finally {
    await relay.close();
  }
});

test('backpressure: a receiver that does not read pauses the sender; the relay buffers at most tunnelBufferBytes', async () => {
  const cap = 256 * 1024;
  const relay = await startRelay({ limits: { tunnelBufferBytes: cap } });
  try {
    const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url('tcp'));
    b.pause();
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const total = 64 * 1024 * 1024;
    // Write until the sender's own socket refuses more (the relay stopped reading).
    let stopped = false;
    await new Promise<void>((resolve) => {
      const pump = () => {
        while (sent < total && !stopped) {
          sent += chunk.length;
          if (!a.socket!.write(chunk)) return setTimeout(pump, 20);
        }
        resolve();
      };
      pump();
      setTimeout(() => {
        stopped = true;
        resolve();
      }, 1500);
    });
    await new Promise((r) => setTimeout(r, 200));
    const sessions = [...relay.server.sessions];
    const maxPending = Math.max(...sessions.map((s) => s.link.pendingBytes));
    assert.ok(maxPending <= cap + 2 * chunk.length, `relay buffered ${maxPending} bytes toward the paused receiver`);
    const relayed = Math.max(...sessions.map((s) => s.rxBytes));
    assert.ok(relayed < total / 2, `relay read ${relayed} of ${total} bytes although the receiver was paused`);
    // Resume: everything sent so far arrives, exactly.
    b.resume();
    a.socket!.end();
    await b.waitForBytes(bOffset + sent, 20000);
    assert.equal(b.received().length - bOffset, sent);
  } finally {
    await relay.close();
  }
});

test('a WebSocket message one byte over tunnelBufferBytes is refused with close 1009', async () => {
  const cap = 16384;
  const relay = await startRelay({ limits: { tunnelBufferBytes: cap } });
  try {
    const { a, b, bOffset } = await pair(relay.url('ws'), relay.url('tcp'));
    a.send(Buffer.alloc(cap, 0x61), { binary: true });
    await b.waitForBytes(bOffset + cap);
    a.send(Buffer.alloc(cap + 1, 0x62), { binary: true });
    const how = await a.closed();
    assert.deepEqual(how, errorSpec('RELAY_WS_MESSAGE_TOO_LARGE').close);
    await b.closed();
    assert.equal(b.received().length - bOffset, cap);
  } finally {
    await relay.close();
  }
});

test('tls, ws and wss: connections count from the TCP accept; one address past maxConnectionsPerIp + 16 unfinished handshakes is closed at accept, unanswered; another address is served; closed ones give their slots back', { timeout: 20000 }, async () => {
  const dir = tempDir();
  const capture = captureLog();
  const relay = await startRelay(
    {
      listeners: [
        { kind: 'tcp', host: '127.0.0.1', port: 0 },
        { kind: 'tls', host: '127.0.0.1', port: 0 },
        { kind: 'ws', host: '127.0.0.1', port: 0 },
        { kind: 'wss', host: '127.0.0.1', port: 0 },
      ],
      tls: selfSignedCert(dir),
      limits: { maxConnectionsPerIp: 2 },
    },
    { log: capture.log },
  );
  const open = (port: number, localAddress = '127.0.0.1') =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, localAddress }, () => resolve(s));
      s.on('error', () => undefined);
      s.once('close', () => reject(new Error('closed before connecting')));
    });
  const endsWithin = (s: Socket, ms: number) =>
    deadline(new Promise<Buffer>((resolve) => {
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.once('close', () => resolve(Buffer.concat(got)));
    }), ms, 'closed at accept');
  /** A client that finishes its handshake and is answered Hello, from `localAddress`. */
  const served = async (kind: 'tls' | 'ws' | 'wss', localAddress: string) => {
    const port = relay.port(kind);
    if (kind === 'tls') {
      const t = tlsConnect({ socket: connect({ host: '127.0.0.1', port, localAddress }), rejectUnauthorized: false });
      await deadline(new Promise<void>((resolve) => t.once('secureConnect', () => resolve())), 3000, 'tls handshake');
      t.write(request(0, 'RemoteProxy.Hello'));
      await deadline(new Promise<void>((resolve) => t.once('data', () => resolve())), 3000, 'tls hello');
      t.destroy();
      return;
    }
    const ws = new WebSocket(`${kind}://127.0.0.1:${port}`, { localAddress, rejectUnauthorized: false });
    await deadline(new Promise<void>((resolve) => ws.once('open', () => resolve())), 3000, `${kind} open`);
    ws.send(request(0, 'RemoteProxy.Hello'));
    await deadline(new Promise<void>((resolve) => ws.once('message', () => resolve())), 3000, `${kind} hello`);
    ws.terminate();
  };
  try {
    for (const kind of ['tls', 'ws', 'wss'] as const) {
      const port = relay.port(kind);
      // Silent connections: no TLS ClientHello, no upgrade request. maxConnectionsPerIp + 16 are held...
      const held: Socket[] = [];
      for (let i = 0; i < 2 + 16; i++) held.push(await open(port));
      await new Promise((r) => setTimeout(r, 50));
      // ...one more is closed at once (the handshake deadline is 8 s), with nothing written to it.
      const over = await open(port);
      assert.equal((await endsWithin(over, 2000)).length, 0, `${kind}: nothing written to a connection closed at accept`);
      // Another address is not affected.
      await served(kind, '127.0.0.2');
      // Closed connections give their slots back: the address is served again. (Reset: a TLS listener
      // keeps a connection that only half-closed before its handshake until the handshake deadline.)
      for (const s of held) s.resetAndDestroy();
      await new Promise((r) => setTimeout(r, 100));
      await served(kind, '127.0.0.1');
    }
    const lines = capture.records().filter((r) => r.code === 'CORE_LIMIT_CONNECTIONS_PER_IP' && r.phase === 'accept');
    assert.equal(lines.length, 1, 'logged once (refusals are rate-limited)');
  } finally {
    await relay.close();
  }
});
