/**
 * Hostile unauthenticated clients of the relay's legacy (rendezvous) mode that the other files do not
 * play: requests sent faster than their answers are read, prototype keys everywhere, messages at and past
 * maxMessageBytes cut at every byte, WebSocket frames a stock client never sends, TLS handshakes that
 * never finish. The process and the other clients must go on, every socket must end, and what is held for
 * a client that does not read must stay bounded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { startRelay, rawClient, request, authenticate, selfSignedCert, tempDir, type StartedRelay } from '../helpers/relay.ts';
import { hostileJsonValue } from '../helpers/hostile.ts';
import { toIndentedJson } from '../../src/relay/protocol/json.ts';
import { MAX_ECHOED_PARAMS_CHARS, decodeRequest } from '../../src/relay/protocol/jsonrpc.ts';
import { decodeTunnelProxyRequest } from '../../src/relay/protocol/tunnel-proxy-api.ts';

const BUFFER = 65536;
let relay: StartedRelay;
before(async () => {
  const dir = tempDir();
  relay = await startRelay({
    listeners: [
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { kind: 'tls', host: '127.0.0.1', port: 0 },
      { kind: 'ws', host: '127.0.0.1', port: 0 },
      { kind: 'wss', host: '127.0.0.1', port: 0 },
    ],
    tls: selfSignedCert(dir),
    limits: { tunnelBufferBytes: BUFFER },
  });
});
after(() => relay.close());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KINDS = ['tcp', 'tls', 'ws', 'wss'] as const;
const INTROSPECT = request(1, 'RemoteProxy.Introspect');

/** Opens a client and finds its session (a TLS client is connected before the server's side is). */
async function clientWithSession(kind: (typeof KINDS)[number]) {
  const known = new Set(relay.server.sessions);
  const c = await rawClient(relay.url(kind));
  for (let i = 0; i < 200; i++) {
    const s = [...relay.server.sessions].find((x) => !known.has(x));
    if (s !== undefined) return { c, session: s };
    await sleep(5);
  }
  throw new Error('no session for the new client');
}

/** A fresh client on `kind` is answered Hello: the relay and its other clients go on. */
async function stillServes(kind: (typeof KINDS)[number]): Promise<void> {
  const ok = await rawClient(relay.url(kind));
  ok.send(request(7, 'RemoteProxy.Hello'));
  await ok.waitFor('"id":7');
  ok.destroy();
}

for (const kind of KINDS) {
  for (const phase of ['handshake', 'authenticating'] as const) {
    test(`${kind}, ${phase}: a client that floods Introspect and never reads is dropped once its unread answers pass tunnelBufferBytes`, { timeout: 15000 }, async () => {
      const { c, session } = await clientWithSession(kind);
      c.pause();
      // The mock authenticator holds the answer for 5 s: Introspect is still answered meanwhile.
      if (phase === 'authenticating') c.send(authenticate('mock:5000:AuthenticationErrorNoError'));
      let maxPending = 0;
      const batch = INTROSPECT.repeat(100);
      // Up to ~22 MB of answers asked for (each about 2.2 KiB), in 4 KiB writes.
      for (let i = 0; i < 100 && session.state !== 'closed'; i++) {
        c.send(batch);
        await sleep(5);
        maxPending = Math.max(maxPending, session.link.pendingBytes);
      }
      assert.equal(session.state, 'closed', `still ${session.state} with ${session.link.pendingBytes} bytes unread`);
      // The limit plus the answer that crossed it.
      assert.ok(maxPending <= BUFFER + 4096, `unread answers reached ${maxPending} bytes`);
      for (let i = 0; i < 100 && !session.link.closed; i++) await sleep(10);
      assert.ok(session.link.closed, 'the socket is gone at once, not left to flush');
      await stillServes(kind);
    });
  }
}

// Params are echoed back indented in `Invalid params` answers (nymea's text): 4 spaces per level, so a
// deep nest costs the square of its depth. 8 KiB of nested arrays asked for a 16 MB answer.
const DEEP = '['.repeat(1000) + ']'.repeat(1000);
const DEEP_PARAMS = `{"id":3,"method":"RemoteProxy.Hello","params":{"x":[${[DEEP, DEEP, DEEP, DEEP].join(',')}]}}\n`;

for (const kind of KINDS) {
  test(`${kind}: deeply nested params within maxMessageBytes get an Invalid params answer of bounded size, then close`, { timeout: 15000 }, async () => {
    assert.ok(DEEP_PARAMS.length < 10240);
    const c = await rawClient(relay.url(kind));
    c.send(DEEP_PARAMS);
    const end = await c.closed(10000);
    const got = c.received().toString();
    assert.ok(got.length <= 20000, `answer of ${got.length} bytes`);
    const answer = JSON.parse(got) as { error: string; id: number; status: string };
    assert.equal(answer.id, 3);
    assert.equal(answer.status, 'error');
    assert.ok(answer.error.startsWith('Invalid params: Forbidden key "x" in {\n    "x": [\n        [\n'), answer.error.slice(0, 80));
    if (kind === 'ws' || kind === 'wss') assert.deepEqual(end, { code: 1011, reason: 'Invalid params passed.' });
    await stillServes(kind);
  });
}

test('the bounded indented echo is a prefix of the whole text plus `…`, and the whole text when it fits', () => {
  fc.assert(
    fc.property(hostileJsonValue(), fc.integer({ min: 0, max: 400 }), (value, max) => {
      const whole = toIndentedJson(value);
      const cut = toIndentedJson(value, max);
      if (whole.length <= max) assert.equal(cut, whole);
      else assert.equal(cut, `${whole.slice(0, max)}…`);
    }),
    { numRuns: 300 },
  );
});

test('both JSON-RPC APIs echo at most MAX_ECHOED_PARAMS_CHARS of refused params (Missing key and Forbidden key)', () => {
  const missing = `{"id":1,"method":"Authentication.Authenticate","params":{"a":[${[DEEP, DEEP].join(',')}]}}`;
  for (const [decoded, prefix] of [
    [decodeRequest(DEEP_PARAMS), 'Invalid params: Forbidden key "x" in {'],
    [decodeRequest(missing), 'Invalid params: Missing key name in {'],
    [decodeTunnelProxyRequest(DEEP_PARAMS), 'Invalid params: Forbidden key "x" in {'],
    [decodeTunnelProxyRequest(missing.replace('Authentication.Authenticate', 'TunnelProxy.Ping')), 'Invalid params: Missing key timestamp in {'],
  ] as const) {
    assert.equal(decoded.ok, false);
    if (decoded.ok) continue;
    const text = decoded.failure.text;
    assert.ok(text.startsWith(prefix), text.slice(0, 60));
    assert.ok(text.endsWith('…'));
    assert.ok(text.length <= prefix.length + MAX_ECHOED_PARAMS_CHARS + 100, `${text.length}`);
  }
});

/** Resolves with how long `socket` stayed open from now (rejects past `ms`). */
function closesWithin(socket: Socket, ms: number): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`still open after ${ms} ms`));
    }, ms);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
}

const UPGRADE = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

test('every listener: a connection that sends nothing, or dribbles its handshake, ends after inactiveMs (ws/wss before the upgrade too)', { timeout: 15000 }, async () => {
  const dir = tempDir();
  const quick = await startRelay({
    listeners: KINDS.map((kind) => ({ kind, host: '127.0.0.1', port: 0 })),
    tls: selfSignedCert(dir),
    timeouts: { inactiveMs: 300 },
  });
  try {
    const plain = (kind: (typeof KINDS)[number]) => netConnect({ host: '127.0.0.1', port: quick.port(kind) });
    const secure = (kind: 'tls' | 'wss') => tlsConnect({ host: '127.0.0.1', port: quick.port(kind), rejectUnauthorized: false });
    const cases: [string, () => Socket, string | undefined][] = [];
    for (const kind of KINDS) cases.push([`${kind}: TCP connect, nothing sent`, () => plain(kind), undefined]);
    for (const kind of ['tls', 'wss'] as const) cases.push([`${kind}: TLS handshake done, nothing sent`, () => secure(kind), undefined]);
    cases.push(['ws: upgrade request dribbled', () => plain('ws'), UPGRADE + 'X-Pad: ' + 'a'.repeat(200)]);
    cases.push(['wss: upgrade request dribbled', () => secure('wss'), UPGRADE + 'X-Pad: ' + 'a'.repeat(200)]);
    cases.push(['tls: ClientHello dribbled', () => plain('tls'), '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + 'r'.repeat(200)]);
    const results = await Promise.allSettled(
      cases.map(async ([, open, dribble]) => {
        const socket = open();
        const closed = closesWithin(socket, 4000);
        if (dribble !== undefined) {
          let i = 0;
          const timer = setInterval(() => {
            if (socket.destroyed || i >= dribble.length) return clearInterval(timer);
            socket.write(Buffer.from(dribble[i++]!, 'latin1'));
          }, 50);
          socket.once('close', () => clearInterval(timer));
        }
        return closed;
      }),
    );
    const failed = results.map((r, i) => [cases[i]![0], r] as const).filter(([, r]) => r.status === 'rejected');
    assert.deepEqual(failed.map(([name, r]) => `${name}: ${String((r as PromiseRejectedResult).reason)}`), []);
  } finally {
    await quick.close();
  }
});
