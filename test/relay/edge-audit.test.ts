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
import { startRelay, rawClient, request, authenticate, pair, selfSignedCert, tempDir, deadline as deadlineOf, NO_ERROR, type StartedRelay, everyListener } from '../helpers/relay.ts';
import { PROTOTYPE_KEYS, hostileJsonValue, hostileName, objectWithOwnKeys } from '../helpers/hostile.ts';
import { toIndentedJson } from '../../src/relay/protocol/json.ts';
import { MAX_ECHOED_PARAMS_CHARS, decodeRequest } from '../../src/relay/protocol/jsonrpc.ts';
import { decodeTunnelProxyRequest } from '../../src/relay/protocol/tunnel-proxy-api.ts';
import { MAX_SHOWN_NAME_CHARS, monitorDocument } from '../../src/relay/monitor.ts';

const BUFFER = 65536;
const PHASE_MS = 800;
let relay: StartedRelay;
before(async () => {
  const dir = tempDir();
  relay = await startRelay({
    listeners: everyListener(dir),
    tls: selfSignedCert(dir),
    limits: { tunnelBufferBytes: BUFFER, maxUnreadAnswerBytes: BUFFER },
    // Short phase deadlines: a client that stops reading its answers is dropped when its phase's passes.
    timeouts: { inactiveMs: PHASE_MS, jsonRpcMs: PHASE_MS },
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

/** Every answer line a raw stream client got, parsed. */
const answers = (c: { received(): Buffer }) =>
  c.received().toString().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
/** A fresh client on `kind` is answered Hello: the relay and its other clients go on. */
async function stillServes(kind: (typeof KINDS)[number]): Promise<void> {
  const ok = await rawClient(relay.url(kind));
  ok.send(request(7, 'RemoteProxy.Hello'));
  await ok.waitFor('"id":7');
  ok.destroy();
}

for (const phase of ['handshake', 'authenticating'] as const) {
  test(`${phase}, every transport: a client that floods Introspect and never reads is not read either (unread answers stay within tunnelBufferBytes), then dropped at the phase deadline`, { timeout: 15000 }, async () => {
    await Promise.all(
      KINDS.map(async (kind) => {
        const { c, session } = await clientWithSession(kind);
        c.pause();
        // The mock authenticator would answer after 5 s: Introspect is answered meanwhile.
        if (phase === 'authenticating') c.send(authenticate('mock:5000:AuthenticationErrorNoError', { nonce: crypto.randomUUID() }));
        let maxPending = 0;
        const batch = INTROSPECT.repeat(100);
        // Up to ~9 MB of answers asked for (each about 2.2 KiB), in 4 KiB writes.
        for (let i = 0; i < 40 && session.state !== 'closed'; i++) {
          c.send(batch);
          await sleep(5);
          maxPending = Math.max(maxPending, session.link.pendingBytes);
        }
        const sent = session.txBytes;
        for (let i = 0; i < 300 && session.state !== 'closed'; i++) {
          maxPending = Math.max(maxPending, session.link.pendingBytes);
          await sleep(10);
        }
        // The limit plus the answer that crossed it.
        assert.ok(maxPending <= BUFFER + 4096, `${kind}: unread answers reached ${maxPending} bytes`);
        assert.equal(session.state, 'closed', `${kind}: still ${session.state} with ${session.link.pendingBytes} bytes unread`);
        assert.equal(session.txBytes, sent, `${kind}: nothing more was answered while the client did not read`);
        for (let i = 0; i < 100 && !session.link.closed; i++) await sleep(10);
        assert.ok(session.link.closed, `${kind}: the socket is gone at once, not left to flush`);
        await stillServes(kind);
      }),
    );
  });
}

for (const kind of KINDS) {
  test(`${kind}: a client that reads, pipelining hundreds of Introspects in one write, gets every answer`, { timeout: 15000 }, async () => {
    const c = await rawClient(relay.url(kind));
    // A WebSocket message stays within maxMessageBytes.
    const n = kind === 'ws' || kind === 'wss' ? 200 : 1000;
    c.send(Array.from({ length: n }, (_, i) => request(i, 'RemoteProxy.Introspect')).join(''), { binary: false });
    await c.waitFor('"status":"success"', 10000, n);
    assert.deepEqual(answers(c).map((a) => a.id), Array.from({ length: n }, (_, i) => i));
    c.destroy();
  });
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

test('the echo limit, exactly: a text of maxChars is whole, one more character is cut', () => {
  const value = { a: 'x'.repeat(100) };
  const whole = toIndentedJson(value);
  assert.equal(toIndentedJson(value, whole.length), whole);
  assert.equal(toIndentedJson(value, whole.length - 1), `${whole.slice(0, -1)}…`);
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


test('Object.prototype keys as namespaces, methods, param keys, top-level keys, ids and param values: coded answers as for any unknown name', { timeout: 15000 }, async () => {
  for (const k of PROTOTYPE_KEYS) {
    const cases: [string, Record<string, unknown>][] = [
      [`{"id":1,"method":"${k}.${k}"}`, { error: 'No such namespace', id: 1, status: 'error' }],
      [`{"id":1,"method":"RemoteProxy.${k}"}`, { error: 'No such method', id: 1, status: 'error' }],
      [`{"id":1,"method":"Authentication.${k}","params":{"${k}":{"${k}":[]}}}`, { error: 'No such method', id: 1, status: 'error' }],
      [`{"id":{"${k}":1},"method":"RemoteProxy.Hello"}`, { error: "Error parsing command. Missing 'id'", id: -1, status: 'error' }],
      [`{"id":"${k}","method":"RemoteProxy.Hello"}`, { error: "Error parsing command. Missing 'id'", id: -1, status: 'error' }],
      [`{"id":1,"method":{"${k}":"RemoteProxy.Hello"}}`, { error: "Error parsing method. Got: ''', Expected: 'Namespace.method'", id: 1, status: 'error' }],
      [`{"id":1,"method":"RemoteProxy.Hello","params":{"${k}":1}}`, { error: `Invalid params: Forbidden key "${k}" in {\n    "${k}": 1\n}\n`, id: 1, status: 'error' }],
    ];
    for (const [message, expected] of cases) {
      const c = await rawClient(relay.url('tcp'));
      c.send(`${message}\n`);
      await c.closed();
      assert.deepEqual(answers(c), [expected], message);
    }
    // Ignored top-level keys, and names as values: a normal Hello, then a normal Authenticate.
    const c = await rawClient(relay.url('tcp'));
    c.send(`{"${k}":{"${k}":1},"id":4,"method":"RemoteProxy.Hello","params":null}\n`);
    await c.waitFor('"id":4');
    c.send(`{"id":5,"method":"Authentication.Authenticate","params":{"name":"${k}","nonce":"${k}","token":"${k}-${crypto.randomUUID()}","uuid":"${k}"}}\n`);
    await c.waitFor('"id":5');
    assert.deepEqual(answers(c).map((a) => [a.id, a.status, (a.params as Record<string, unknown>).authenticationError]), [
      [4, 'success', undefined],
      [5, 'success', 'AuthenticationErrorNoError'],
    ]);
    c.destroy();
  }
  await stillServes('tcp');
});

test('ids of every JSON type and at the number edges, answered as Qt converts them', { timeout: 15000 }, async () => {
  // 'missing': not convertible (answered id -1, then closed); 2^63 - 1 keeps its low 32 bits: -1.
  const cases: [string, number | 'missing' | 'invalid'][] = [
    ['{}', 'missing'], ['[]', 'missing'], ['[1]', 'missing'], ['null', 'missing'], ['true', 1], ['false', 0], ['-0', 0], ['-0.0', 0], ['9007199254740993', 1],
    ['9223372036854775807', -1], ['9223372036854775808', 0], ['1e19', 0], ['-2.5', -2], ['2.5', 3], ['"  42 "', 42], ['"\\ufeff42"', 'missing'],
    ['1e309', 'invalid'], ['-1e400', 'invalid'], ['1e-400', 'invalid'], ['01', 'invalid'], ['0x10', 'invalid'], ['NaN', 'invalid'],
  ];
  for (const [id, expected] of cases) {
    const c = await rawClient(relay.url('tcp'));
    c.send(`{"id":${id},"method":"RemoteProxy.Hello"}\n`);
    const [answer] = await c.waitFor('\n').then(() => answers(c));
    if (expected === 'invalid') assert.match(String(answer!.error), /^Failed to parse JSON data: /, id);
    else if (expected === 'missing') assert.deepEqual(answer, { error: "Error parsing command. Missing 'id'", id: -1, status: 'error' }, id);
    else assert.deepEqual([answer!.id, answer!.status], [expected, 'success'], id);
    c.destroy();
  }
});

test('NUL bytes and invalid UTF-8: inside strings on streams (accepted / refused as Qt), on WebSocket 1007; the process goes on', { timeout: 15000 }, async () => {
  const nulInName = Buffer.from(`{"id":1,"method":"Authentication.Authenticate","params":{"name":"a\u0000b","token":"nul-${crypto.randomUUID()}","uuid":"u"}}\n`);
  const tcp = await rawClient(relay.url('tcp'));
  tcp.send(nulInName);
  await tcp.waitFor('AuthenticationErrorNoError');
  tcp.destroy();
  const bad = Buffer.concat([Buffer.from('{"id":2,"method":"RemoteProxy.Hello","params":{"a":"'), Buffer.from([0xc0, 0xaf, 0x00, 0xff]), Buffer.from('"}}\n')]);
  for (const kind of ['tcp', 'tls'] as const) {
    const c = await rawClient(relay.url(kind));
    c.send(bad);
    await c.closed();
    assert.deepEqual(answers(c), [{ error: 'Failed to parse JSON data: invalid UTF8 string', id: -1, status: 'error' }]);
  }
  for (const kind of ['ws', 'wss'] as const) {
    const c = await rawClient(relay.url(kind));
    c.send(bad, { binary: false });
    assert.deepEqual(await c.closed(), { code: 1007, reason: 'Invalid UTF-8 code encountered.' });
    assert.equal(c.received().length, 0);
  }
  // A NUL outside any string is an unknown token.
  const nul = await rawClient(relay.url('tcp'));
  nul.send(Buffer.from('{"id":3,\u0000"method":"RemoteProxy.Hello"}\n'));
  await nul.closed();
  assert.deepEqual(answers(nul), [{ error: 'Failed to parse JSON data: unterminated object', id: -1, status: 'error' }]);
  await stillServes('ws');
});

test('many messages in one read are all answered in order; an Authenticate sent twice before its answer closes as data before the tunnel', { timeout: 15000 }, async () => {
  for (const kind of KINDS) {
    const c = await rawClient(relay.url(kind));
    // On WebSocket the burst is one text message (within maxMessageBytes): split as on a stream.
    const n = kind === 'tcp' || kind === 'tls' ? 300 : 100;
    const burst = Array.from({ length: n }, (_, i) => request(i, 'RemoteProxy.Hello')).join('');
    c.send(burst, { binary: false });
    await c.waitFor('"status":"success"', 5000, n);
    assert.deepEqual(answers(c).map((a) => a.id), Array.from({ length: n }, (_, i) => i), kind);
    c.destroy();
    const twice = await rawClient(relay.url(kind));
    const token = `twice-${crypto.randomUUID()}`;
    twice.send(authenticate(`mock:200:AuthenticationErrorNoError`, { id: 1 }) + authenticate(token, { id: 2 }), { binary: false });
    const end = await twice.closed();
    if (kind === 'ws' || kind === 'wss') assert.deepEqual(end, { code: 1011, reason: 'Data received while authenticated but not remote connected.' });
    assert.equal(twice.received().length, 0, 'no answer to either Authenticate');
  }
});

/** A client frame: FIN/RSV/opcode byte, then the payload, masked unless `unmasked`; lengths up to 64 KiB. */
function frame(b0: number, payload: Buffer | string, opts: { unmasked?: boolean; len7?: number } = {}): Buffer {
  const p = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const maskBit = opts.unmasked === true ? 0 : 0x80;
  const head = p.length < 126 && opts.len7 === undefined ? Buffer.from([b0, maskBit | p.length]) : Buffer.from([b0, maskBit | 126, p.length >> 8, p.length & 0xff]);
  if (opts.unmasked === true) return Buffer.concat([head, p]);
  const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
  return Buffer.concat([head, mask, Buffer.from(p.map((x, i) => x ^ mask[i & 3]!))]);
}
const closePayload = (code: number, reason: Buffer = Buffer.alloc(0)) => Buffer.concat([Buffer.from([code >> 8, code & 0xff]), reason]);

/** Server frames (unmasked) in `bytes` after the HTTP response: [opcode, payload]. */
function serverFrames(bytes: Buffer): [number, Buffer][] {
  let i = bytes.indexOf('\r\n\r\n') + 4;
  const out: [number, Buffer][] = [];
  while (i + 2 <= bytes.length) {
    let len = bytes[i + 1]! & 0x7f;
    let at = i + 2;
    if (len === 126) {
      len = bytes.readUInt16BE(at);
      at += 2;
    }
    if (at + len > bytes.length) break;
    out.push([bytes[i]! & 0x0f, bytes.subarray(at, at + len)]);
    i = at + len;
  }
  return out;
}

/** A WebSocket handshake by hand (ws or wss), then the raw socket: frames are ours to write. */
async function rawWebSocket(kind: 'ws' | 'wss'): Promise<{ socket: Socket; got: () => Buffer; closed: Promise<void> }> {
  const port = relay.port(kind);
  const socket = kind === 'ws' ? netConnect({ host: '127.0.0.1', port }) : tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false });
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(`${UPGRADE}\r\n`);
  const got = () => Buffer.concat(chunks);
  for (let i = 0; i < 200 && !got().includes('\r\n\r\n'); i++) await sleep(10);
  assert.match(got().toString('latin1'), /^HTTP\/1\.1 101 /);
  return { socket, got, closed };
}

test('WebSocket frames a stock client never sends, before authenticating: each closes that client with its code; others go on', { timeout: 15000 }, async () => {
  const HELLO = '{"id":1,"method":"RemoteProxy.Hello"}';
  const cases: [string, Buffer, number, string][] = [
    ['unmasked text frame', frame(0x81, HELLO, { unmasked: true }), 1002, ''],
    ['ping with 126 bytes', frame(0x89, Buffer.alloc(126, 0x70)), 1002, ''],
    ['fragmented ping', frame(0x09, 'p'), 1002, ''],
    ['close with code 999', frame(0x88, closePayload(999)), 1002, ''],
    ['close with code 1005', frame(0x88, closePayload(1005)), 1002, ''],
    ['close with a 1-byte payload', frame(0x88, Buffer.from([3])), 1002, ''],
    ['RSV1 set (no extension agreed)', frame(0xc1, HELLO), 1002, ''],
    ['continuation without a message', frame(0x80, HELLO), 1002, ''],
    ['unknown opcode 3', frame(0x83, HELLO), 1002, ''],
    ['text frame inside a fragmented text message', Buffer.concat([frame(0x01, '{"id":1,'), frame(0x81, HELLO)]), 1002, ''],
    ['binary frame before the tunnel', frame(0x82, HELLO), 1011, 'Binary message not expected.'],
    ['fragments past maxMessageBytes', Buffer.concat([frame(0x01, `{"a":"${'x'.repeat(6000)}`), frame(0x80, `${'x'.repeat(6000)}"}`)]), 1011, 'Data buffer size violation.'],
    ['close with a reason that is not UTF-8', frame(0x88, closePayload(4000, Buffer.from([0xff, 0xfe]))), 4000, '\ufffd\ufffd'],
  ];
  for (const kind of ['ws', 'wss'] as const) {
    for (const [name, bytes, code, reason] of cases) {
      const c = await rawWebSocket(kind);
      c.socket.write(bytes);
      for (let i = 0; i < 300 && !serverFrames(c.got()).some(([op]) => op === 8); i++) await sleep(10);
      // The close handshake: our close frame answers the relay's (a protocol error needs none).
      if (!c.socket.destroyed) c.socket.write(frame(0x88, closePayload(1000)));
      await deadlineOf(c.closed, 5000, `${kind} ${name}: the relay closes`);
      const close = serverFrames(c.got()).find(([op]) => op === 8);
      assert.ok(close !== undefined, `${kind} ${name}: a close frame`);
      assert.equal(close[1].readUInt16BE(0), code, `${kind} ${name}`);
      if (reason !== '') assert.equal(close[1].subarray(2).toString(), reason, `${kind} ${name}`);
      assert.equal(serverFrames(c.got()).some(([op]) => op === 1), false, `${kind} ${name}: no answer`);
    }
    await stillServes(kind);
  }
});

test('WebSocket: a fragmented text message is one message; pings are answered while the handshake goes on; a close frame ends it; a ping flood ends the connection', { timeout: 15000 }, async () => {
  for (const kind of ['ws', 'wss'] as const) {
    const c = await rawWebSocket(kind);
    const pings = Buffer.concat(Array.from({ length: 50 }, (_, i) => frame(0x89, `p${i}`)));
    c.socket.write(Buffer.concat([frame(0x01, '{"id":7,"method":"Remote'), pings, frame(0x00, 'Proxy.Hel'), frame(0x80, 'lo"}')]));
    for (let i = 0; i < 200 && !serverFrames(c.got()).some(([op]) => op === 1); i++) await sleep(10);
    const frames = serverFrames(c.got());
    assert.equal(frames.filter(([op]) => op === 10).length, 50);
    const texts = frames.filter(([op]) => op === 1).map(([, p]) => JSON.parse(p.toString()) as { id: number; status: string });
    assert.deepEqual(texts.map((t) => [t.id, t.status]), [[7, 'success']]);
    c.socket.write(frame(0x88, closePayload(1000)));
    await deadlineOf(c.closed, 5000, 'close');
    assert.equal(serverFrames(c.got()).find(([op]) => op === 8)?.[1].readUInt16BE(0), 1000);
    // More pings in flight than `ws` keeps pongs for (60): the connection is dropped, not buffered for.
    const flood = await rawWebSocket(kind);
    flood.socket.write(Buffer.concat(Array.from({ length: 500 }, () => frame(0x89, Buffer.alloc(125, 0x70)))));
    await deadlineOf(flood.closed, 5000, 'ping flood: the relay drops the connection');
    await stillServes(kind);
  }
});

test('maxMessageBytes on every transport: exactly 10240 bytes of incomplete JSON are held (whatever the cuts), one more closes without a reply', { timeout: 15000 }, async () => {
  const head = '{"id":9,"method":"RemoteProxy.Hello","params":{},"pad":"';
  const atLimit = Buffer.from(head + 'x'.repeat(10240 - head.length));
  const tail = Buffer.from('"}');
  for (const kind of ['tcp', 'tls', 'unix', 'ws', 'wss'] as const) {
    const ws = kind === 'ws' || kind === 'wss';
    for (const cuts of [[], [1], [10239], [1, 2, 5000, 10239]]) {
      const c = await rawClient(relay.url(kind));
      let from = 0;
      for (const at of [...cuts, atLimit.length]) {
        c.send(atLimit.subarray(from, at), { binary: false });
        from = at;
        await sleep(2);
      }
      // Completing it (a complete message may be longer than the limit): answered.
      c.send(tail, { binary: false });
      await c.waitFor('"id":9', 5000);
      assert.equal(answers(c)[0]!.status, 'success', `${kind} cut at ${cuts.join(',')}`);
      c.destroy();
    }
    // One byte more, arriving alone or with the rest: closed, nothing answered.
    for (const alone of [true, false]) {
      const over = await rawClient(relay.url(kind));
      if (alone) {
        over.send(atLimit, { binary: false });
        await sleep(5);
        over.send('x', { binary: false });
      } else over.send(Buffer.concat([atLimit, Buffer.from('x')]), { binary: false });
      const end = await over.closed(6000);
      if (ws) assert.deepEqual(end, { code: 1011, reason: 'Data buffer size violation.' }, kind);
      assert.equal(over.received().length, 0, kind);
    }
  }
});

test('a client that half-closes during its handshake is forgotten: the next client of its token waits, and pairs with the one after', { timeout: 15000 }, async () => {
  const cases = (['tcp', 'tls', 'ws'] as const).flatMap((kind) => (['while authenticating', 'while waiting'] as const).map((when) => [kind, when] as const));
  await Promise.all(
    cases.map(async ([kind, when]) => {
      // The mock authenticator decides `mock:…` tokens after their delay; the nonce makes the key unique.
      const token = 'mock:100:AuthenticationErrorNoError';
      const nonce = crypto.randomUUID();
      const ghost = await rawClient(relay.url(kind));
      ghost.send(authenticate(token, { id: 1, nonce }));
      // While authenticating, the FIN (or close frame) arrives before the authenticator decides.
      if (when === 'while waiting') await ghost.waitFor(NO_ERROR);
      ghost.end();
      await ghost.closed();
      await sleep(150);
      const second = await rawClient(relay.url(kind));
      second.send(authenticate(token, { id: 2, nonce }));
      await second.waitFor(NO_ERROR);
      await sleep(100);
      assert.equal(second.received().includes('TunnelEstablished'), false, `${kind} ${when}: paired with a client that had left`);
      const third = await rawClient(relay.url(kind));
      third.send(authenticate(token, { id: 3, nonce }));
      await third.waitFor('TunnelEstablished');
      await second.waitFor('TunnelEstablished');
      second.destroy();
      third.destroy();
    }),
  );
});

test('requests after Authenticate, before its answer, are answered at once; the Authenticate answer follows', { timeout: 15000 }, async () => {
  for (const kind of KINDS) {
    const c = await rawClient(relay.url(kind));
    c.send(authenticate('mock:150:AuthenticationErrorNoError', { id: 1, nonce: crypto.randomUUID() }) + request(2, 'RemoteProxy.Hello') + request(3, 'RemoteProxy.Introspect'), { binary: false });
    await c.waitFor(NO_ERROR);
    assert.deepEqual(answers(c).map((a) => a.id), [2, 3, 1], kind);
    c.destroy();
  }
});

test('a client name as long as a message: the monitor document shows its first MAX_SHOWN_NAME_CHARS; the partner gets it whole', { timeout: 15000 }, async () => {
  const name = `${'n'.repeat(9000)}-end`;
  const token = `long-name-${crypto.randomUUID()}`;
  const a = await rawClient(relay.url('ws'));
  a.send(authenticate(token, { name }));
  await a.waitFor(NO_ERROR);
  const doc = monitorDocument(relay.server, relay.config) as { proxyStatistic: { clients: { name: string }[] } };
  const shown = doc.proxyStatistic.clients.map((c) => c.name).find((n) => n.startsWith('nnnn'));
  assert.equal(shown, `${'n'.repeat(MAX_SHOWN_NAME_CHARS)}…`);
  // At the limit a name is shown whole; one character more is cut.
  const edge = await Promise.all([MAX_SHOWN_NAME_CHARS, MAX_SHOWN_NAME_CHARS + 1].map(async (n) => {
    const c = await rawClient(relay.url('tcp'));
    c.send(authenticate(`edge-${crypto.randomUUID()}`, { name: 'e'.repeat(n) }));
    await c.waitFor(NO_ERROR);
    return c;
  }));
  const edgeNames = (monitorDocument(relay.server, relay.config) as { proxyStatistic: { clients: { name: string }[] } }).proxyStatistic.clients.map((c) => c.name).filter((n) => n.startsWith('eee')).sort();
  assert.deepEqual(edgeNames, ['e'.repeat(MAX_SHOWN_NAME_CHARS), `${'e'.repeat(MAX_SHOWN_NAME_CHARS)}…`]);
  for (const c of edge) c.destroy();
  const b = await rawClient(relay.url('tcp'));
  b.send(authenticate(token, { name: 'b' }));
  await b.waitFor('TunnelEstablished');
  assert.ok(b.received().includes(`"name":"${name}"`), 'the partner hears the whole name');
  a.destroy();
  b.destroy();
});

test('hostile requests over a real socket: each is answered exactly as the pure decoder says, then closed on error; the relay goes on', { timeout: 15000 }, async () => {
  const method = fc.oneof(fc.constantFrom('RemoteProxy.Hello', 'RemoteProxy.Introspect', 'Authentication.Authenticate'), hostileName(), fc.tuple(hostileName(), hostileName()).map(([a, b]) => `${a}.${b}`));
  const message = fc
    .tuple(hostileJsonValue(), method, fc.oneof(hostileJsonValue(), fc.constant(undefined)), fc.array(fc.tuple(hostileName(), hostileJsonValue()), { maxLength: 2 }))
    .map(([id, m, params, extra]) => JSON.stringify(objectWithOwnKeys([...extra, ['id', id], ['method', m], ...(params === undefined ? [] : [['params', params] as const])])));
  await fc.assert(
    fc.asyncProperty(message, async (text) => {
      const decoded = decodeRequest(text);
      const c = await rawClient(relay.url('tcp'));
      try {
        c.send(`${text}\n`);
        await c.waitFor('\n', 3000);
        const [answer] = answers(c);
        if (!decoded.ok) {
          assert.deepEqual(answer, { error: decoded.failure.text, id: decoded.failure.id, status: 'error' });
          await c.closed(3000);
        } else {
          assert.deepEqual([answer!.id, answer!.status], [decoded.request.id, 'success']);
        }
      } finally {
        c.destroy();
      }
    }),
    { numRuns: 120 },
  );
  await stillServes('tcp');
});

test('ws/wss: the handshake deadline ends with the upgrade: a tunnel idle for longer still relays', { timeout: 15000 }, async () => {
  const quick = await startRelay({
    listeners: [{ kind: 'ws', host: '127.0.0.1', port: 0 }, { kind: 'wss', host: '127.0.0.1', port: 0 }],
    tls: selfSignedCert(tempDir()),
    timeouts: { inactiveMs: 200 },
  });
  try {
    const { a, b, bOffset } = await pair(quick.url('ws'), quick.url('wss'));
    await sleep(700);
    a.send('still here');
    await b.waitFor('still here');
    assert.equal(b.received().subarray(bOffset).toString(), 'still here');
    assert.equal(a.isClosed || b.isClosed, false);
  } finally {
    await quick.close();
  }
});
