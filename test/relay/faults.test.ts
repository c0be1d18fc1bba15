/**
 * Fault isolation and deadlines of the relay's dependencies: a bug met while serving one client closes
 * that client only; a rendezvous that stalls or fails closes the client it was asked for, at a deadline;
 * refused connections end whatever the peer does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startRelay, rawClient, pair, authenticate, NO_ERROR, deadline, captureLog } from '../helpers/relay.ts';
import { MemoryRendezvous, type OfferResult, type Rendezvous, type RendezvousKey } from '../../src/relay/rendezvous.ts';
import type { Authenticator } from '../../src/relay/authenticators/types.ts';
import type { Session } from '../../src/relay/session.ts';

/** The mock authenticator's rule, except for one token whose answer is malformed (a buggy plug-in). */
const buggyAuthenticator: Authenticator = {
  kind: 'buggy',
  authenticate(req) {
    if (req.token === 'crash') return Promise.resolve(null as never);
    if (req.token === 'throw') throw new Error('authenticator threw synchronously');
    return Promise.resolve({ error: 'AuthenticationErrorNoError' });
  },
};

test('a bug while serving one client closes that client with CORE_INTERNAL (logged once with its stack); others go on', async () => {
  const cap = captureLog();
  const relay = await startRelay({}, { authenticator: buggyAuthenticator, log: cap.log });
  try {
    const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url('ws'));
    const victim = await rawClient(relay.url('ws'));
    victim.send(authenticate('crash'));
    assert.deepEqual(await victim.closed(), { code: 1011, reason: 'Internal server error.' });
    const tcpVictim = await rawClient(relay.url('tcp'));
    tcpVictim.send(authenticate('crash'));
    await tcpVictim.closed();
    const errors = cap.records().filter((r) => r.level === 'error');
    assert.equal(errors.length, 2, 'one error line per faulty connection');
    for (const e of errors) {
      assert.equal(e.code, 'CORE_INTERNAL');
      assert.match(String((e.err as { stack?: string }).stack), /TypeError/);
    }
    // The tunnel opened before is untouched, and new clients are served.
    a.send('still here');
    await b.waitFor('still here');
    assert.equal(b.received().subarray(bOffset).toString(), 'still here');
    const next = await rawClient(relay.url('tcp'));
    next.send(authenticate('fine'));
    await next.waitFor(NO_ERROR);
  } finally {
    await relay.close();
  }
});

test('an authenticator that throws instead of rejecting answers AuthenticationErrorProxyError', async () => {
  const relay = await startRelay({}, { authenticator: buggyAuthenticator });
  try {
    const c = await rawClient(relay.url('tcp'));
    c.send(authenticate('throw', { id: 4 }));
    await c.waitFor('AuthenticationErrorProxyError');
    await c.closed();
    c.destroy();
    for (let i = 0; i < 100 && relay.server.sessions.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(relay.server.sessions.size, 0);
  } finally {
    await relay.close();
  }
});

/** The in-memory table with a switch for how offer() behaves: as usual, never settling, or rejecting. */
class FaultyRendezvous implements Rendezvous<Session> {
  mode: 'ok' | 'stall' | 'reject' | 'throw' = 'ok';
  readonly inner = new MemoryRendezvous<Session>(64);
  readonly #stalled: ((r: OfferResult<Session>) => void)[] = [];
  get size() {
    return this.inner.size;
  }
  offer(key: RendezvousKey, party: Session): Promise<OfferResult<Session>> {
    if (this.mode === 'stall') return new Promise((resolve) => this.#stalled.push(resolve));
    if (this.mode === 'reject') return Promise.reject(new Error('rendezvous store unreachable'));
    if (this.mode === 'throw') throw new Error('rendezvous threw');
    return this.inner.offer(key, party);
  }
  /** Lets stalled offers finish late (as a slow store would), each as "waiting". */
  releaseStalled(): void {
    for (const r of this.#stalled.splice(0)) r({ kind: 'waiting' });
  }
  withdraw(key: RendezvousKey, party: Session): Promise<void> {
    if (this.mode === 'reject') return Promise.reject(new Error('withdraw failed'));
    return this.inner.withdraw(key, party);
  }
  release(key: RendezvousKey): Promise<void> {
    if (this.mode === 'reject') return Promise.reject(new Error('release failed'));
    return this.inner.release(key);
  }
}

test('a rendezvous that stalls: the client gets "Command timed out" at jsonRpcMs; a late answer is undone', async () => {
  const rv = new FaultyRendezvous();
  const relay = await startRelay({ timeouts: { jsonRpcMs: 300 } }, { rendezvous: rv });
  try {
    rv.mode = 'stall';
    const c = await rawClient(relay.url('tcp'));
    const t0 = Date.now();
    c.send(authenticate('stalled', { id: 9 }));
    await c.closed(3000);
    assert.ok(Date.now() - t0 >= 250, 'closed at the deadline, not before');
    assert.equal(c.received().toString(), '{"error":"Command timed out","id":9,"status":"error"}\n');
    rv.releaseStalled();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(rv.size, { waiting: 0, tunnels: 0 });
    rv.mode = 'ok';
    const { a, b } = await pair(relay.url('tcp'), relay.url('tcp'));
    a.send('x');
    await b.waitFor('x');
  } finally {
    await relay.close();
  }
});

for (const mode of ['reject', 'throw'] as const) {
  test(`a rendezvous that fails (${mode}): AuthenticationErrorProxyError and close; the process goes on`, async () => {
    const rv = new FaultyRendezvous();
    const cap = captureLog();
    const relay = await startRelay({}, { rendezvous: rv, log: cap.log });
    try {
      rv.mode = mode;
      const c = await rawClient(relay.url('ws'));
      c.send(authenticate('tok', { id: 2 }));
      assert.deepEqual(await c.closed(), { code: 1011, reason: 'Proxy error.' });
      assert.equal(c.received().toString(), '{"id":2,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n');
      assert.ok(cap.records().some((r) => r.code === 'RELAY_RENDEZVOUS_FAILED' && r.level === 'error'));
      rv.mode = 'ok';
      const { a, b } = await pair(relay.url('tcp'), relay.url('ws'));
      a.send('y');
      await b.waitFor('y');
    } finally {
      await relay.close();
    }
  });
}

test('a refused WebSocket upgrade whose client keeps its side open is destroyed after closeFlushMs; close({graceMs:0}) does not wait for it', async () => {
  const relay = await startRelay({ limits: { maxConnectionsPerIp: 1 }, timeouts: { closeFlushMs: 200 } });
  try {
    const holder = await rawClient(relay.url('tcp'));
    const port = relay.port('ws');
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let received = '';
    s.on('data', (d: Buffer) => (received += d.toString('latin1')));
    let ended = false;
    s.on('end', () => (ended = true)); // half-open: we never end our side
    const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
    s.on('error', () => undefined);
    s.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    // The server ends its side at once and destroys the socket after closeFlushMs: a write after that
    // meets a reset (a socket the server still held would take it silently).
    await deadline(new Promise<void>((resolve) => s.once('end', () => resolve())), 2000, 'the refusal');
    await new Promise((r) => setTimeout(r, 400));
    s.on('error', () => undefined);
    s.write('still there?');
    s.write('still there?');
    await deadline(closed, 3000, 'the refused socket to be destroyed');
    assert.ok(ended);
    assert.match(received, /^HTTP\/1\.1 429 Too Many Requests\r\n/);
    assert.match(received, /X-Gatehouse-Error: CORE_LIMIT_CONNECTIONS_PER_IP/);
    holder.destroy();
    for (let i = 0; i < 200 && relay.server.sessions.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
    // Now the same with shutdown: a half-open refused client does not hold close().
    const s2 = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    s2.on('error', () => undefined);
    const holder2 = await rawClient(relay.url('tcp'));
    s2.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(holder2.isClosed, false);
    await deadline(relay.server.close({ graceMs: 0 }), 2000, 'close({graceMs: 0})');
    s2.destroy();
  } finally {
    await relay.close();
  }
});

test('pre-tunnel WebSocket messages are limited to maxMessageBytes; inside a tunnel, up to tunnelBufferBytes pass', async () => {
  const relay = await startRelay({ limits: { maxMessageBytes: 1024 } });
  try {
    const over = await rawClient(relay.url('ws'));
    over.send(`{"id":1,"method":"RemoteProxy.Hello","params":{},"p":"${'x'.repeat(1100)}"}`);
    assert.deepEqual(await over.closed(), { code: 1011, reason: 'Data buffer size violation.' });
    const { a, b, bOffset } = await pair(relay.url('ws'), relay.url('ws'));
    const big = Buffer.alloc(200_000, 0x61);
    a.send(big);
    await b.waitForBytes(bOffset + big.length, 5000);
    assert.ok(b.received().subarray(bOffset).equals(big));
  } finally {
    await relay.close();
  }
});
