/**
 * The tunnel-proxy data path end to end over real sockets: nymea 1.13's testTunnelProxyServer,
 * testTunnelProxyClient, testTunnelProxyServerSocketDisconnect, tunnelProxyEndToEndTest and monitorServer
 * as black-box cases, one test per nymea bug we fix, timeouts, limits and the allow-list.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { rawClient, request, deadline } from '../../helpers/relay.ts';
import { startTp, tpServer, tpClient, registerServerRequest, registerClientRequest, type StartedTp } from './harness.ts';
import { encodeFrame } from '../../../src/relay/protocol/slip.ts';

let tp: StartedTp;
before(async () => {
  tp = await startTp({}, { kinds: ['tcp', 'ws', 'tls', 'wss', 'unix'] });
});
after(() => tp.close());

const uuid = () => crypto.randomUUID();
const TEST_DATA = Buffer.from('#sdföiabi23u4b34b598gvndafjibnföQIUH34982HRIPURBFÖWLKDÜOQw9h934utbf ljBiH9FBLAJF  RF AF,A§uu)("§)§(u$)($=$(((($((!');
const TEST_DATA2 = Buffer.from('The biggest decision in life is about changing your life through changing your mind. – Albert Schweitzer');

for (const [sk, ck] of [['tcp', 'tcp'], ['ws', 'tcp'], ['tls', 'wss'], ['wss', 'unix'], ['unix', 'ws']] as const) {
  test(`tunnelProxyEndToEndTest: server over ${sk}, two clients over ${ck}: ClientConnected, data both ways exactly, ClientDisconnected`, async () => {
    const sid = uuid();
    const s = await tpServer(tp.tpUrl(sk), sid, 'nymea server');
    const one = await tpClient(tp.tpUrl(ck), sid, 'Client one');
    const a1 = await s.waitClient('Client one');
    const connected = s.control().find((m) => m.notification === 'TunnelProxy.ClientConnected')!;
    const p = connected.params as Record<string, unknown>;
    assert.equal(typeof connected.id, 'number');
    assert.match(p.clientUuid as string, /^\{[0-9a-f-]{36}\}$/);
    assert.equal(p.clientPeerAddress, ck === 'unix' ? '' : '127.0.0.1');
    assert.ok(a1 !== 0 && a1 !== 0xffff);
    const two = await tpClient(tp.tpUrl(ck), sid, 'Client two');
    const a2 = await s.waitClient('Client two');
    assert.notEqual(a1, a2);
    // Socket -> remote connection, then remote connection -> socket, for both clients.
    s.send(a1, TEST_DATA);
    s.send(a2, TEST_DATA2);
    assert.ok((await one.raw.waitForBytes(one.offset + TEST_DATA.length)).subarray(one.offset).equals(TEST_DATA));
    assert.ok((await two.raw.waitForBytes(two.offset + TEST_DATA2.length)).subarray(two.offset).equals(TEST_DATA2));
    one.raw.send(TEST_DATA2, { binary: true });
    two.raw.send(TEST_DATA, { binary: true });
    assert.ok((await s.waitData(a1, TEST_DATA2.length)).equals(TEST_DATA2));
    assert.ok((await s.waitData(a2, TEST_DATA.length)).equals(TEST_DATA));
    // testTunnelProxyServer: a client that leaves is announced.
    one.raw.destroy();
    const gone = await s.waitControl((m) => m.notification === 'TunnelProxy.ClientDisconnected');
    assert.deepEqual(gone.params, { socketAddress: a1 });
    // Server connection goes away: its clients are closed (testTunnelProxyClient).
    s.raw.destroy();
    await two.raw.closed();
  });
}

test('testTunnelProxyServerSocketDisconnect: DisconnectClient closes that client; UnknownSocketAddress for a free address', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await tpClient(tp.tpUrl('ws'), sid, 'Awesome client name');
  const a = await s.waitClient('Awesome client name');
  s.send(0, request(7, 'TunnelProxy.DisconnectClient', { socketAddress: a }));
  assert.deepEqual(await s.waitControl((m) => m.id === 7), { id: 7, params: { tunnelProxyError: 'TunnelProxyErrorNoError' }, status: 'success' });
  assert.deepEqual(await c.raw.closed(), { code: 1011, reason: 'Server requested disconnect.' });
  await s.waitControl((m) => m.notification === 'TunnelProxy.ClientDisconnected');
  s.send(0, request(8, 'TunnelProxy.DisconnectClient', { socketAddress: 4321 }));
  assert.deepEqual(await s.waitControl((m) => m.id === 8), { id: 8, params: { tunnelProxyError: 'TunnelProxyErrorUnknownSocketAddress' }, status: 'success' });
  s.raw.destroy();
});

test('the server connection answers Hello, Introspect and Ping on address 0 as SLIP frames', async () => {
  const s = await tpServer(tp.tpUrl('tcp'), uuid());
  s.send(0, request(11, 'RemoteProxy.Hello'));
  s.send(0, request(12, 'TunnelProxy.Ping', { timestamp: 99 }));
  assert.equal(((await s.waitControl((m) => m.id === 11)).params as { apiVersion: string }).apiVersion, '6');
  assert.deepEqual(await s.waitControl((m) => m.id === 12), { id: 12, params: { timestamp: 99 }, status: 'success' });
  // Exact bytes of a control frame: address 00 00, compact JSON, "\n", END.
  const raw = s.raw.received();
  assert.ok(raw.includes(Buffer.concat([Buffer.from([0x00, 0x00]), Buffer.from('{"id":12,"params":{"timestamp":99},"status":"success"}\n'), Buffer.from([0xc0])])));
  s.raw.destroy();
});

// ---- nymea bugs we fix, one test each -------------------------------------------------------------

test('bug fix: payloads from the server are SLIP-unescaped before they reach the client (41 C0 DB 42)', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await tpClient(tp.tpUrl('tcp'), sid, 'esc');
  const a = await s.waitClient('esc');
  s.sendRaw(Buffer.concat([Buffer.from([a >> 8, a & 0xff]), Buffer.from([0x41, 0xdb, 0xdc, 0xdb, 0xdd, 0x42, 0xc0])]));
  const got = await c.raw.waitForBytes(c.offset + 4);
  assert.deepEqual(got.subarray(c.offset), Buffer.from([0x41, 0xc0, 0xdb, 0x42]));
  // And the other way: client bytes 41 C0 DB 42 reach the server escaped.
  c.raw.send(Buffer.from([0x41, 0xc0, 0xdb, 0x42]));
  await s.waitData(a, 4);
  assert.ok(s.raw.received().includes(Buffer.from([a >> 8, a & 0xff, 0x41, 0xdb, 0xdc, 0xdb, 0xdd, 0x42, 0xc0])));
  s.raw.destroy();
});

test('bug fix: the server role works over WebSocket: SLIP frames go out as binary frames, address 00 00 intact', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('ws'), sid);
  await tpClient(tp.tpUrl('tcp'), sid, 'over-ws');
  await s.waitClient('over-ws');
  const frames = s.raw.frames();
  const slipFrames = frames.slice(1);
  assert.ok(slipFrames.length >= 1);
  assert.ok(slipFrames.every((f) => f.binary));
  assert.deepEqual(slipFrames[0]!.data.subarray(0, 2), Buffer.from([0, 0]));
  s.raw.destroy();
});

test('bug fix: a frame for an unknown address does not lose the frames after it (same read)', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await tpClient(tp.tpUrl('tcp'), sid, 'after-unknown');
  const a = await s.waitClient('after-unknown');
  s.sendRaw(Buffer.concat([encodeFrame(0x7777, Buffer.from('lost')), encodeFrame(a, Buffer.from('kept-1')), encodeFrame(0x7778, Buffer.from('x')), encodeFrame(a, Buffer.from('kept-2'))]));
  const got = await c.raw.waitForBytes(c.offset + 12);
  assert.equal(got.subarray(c.offset).toString(), 'kept-1kept-2');
  s.raw.destroy();
});

test('bug fix: non-JSON on address 0 is answered there and closes nothing (clients keep relaying)', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await tpClient(tp.tpUrl('tcp'), sid, 'survivor');
  const a = await s.waitClient('survivor');
  s.send(0, 'this is not json\n');
  const err = await s.waitControl((m) => m.status === 'error');
  assert.deepEqual(err, { error: 'Failed to parse JSON data: illegal value', id: -1, status: 'error' });
  s.send(a, 'still here');
  const got = await c.raw.waitForBytes(c.offset + 10);
  assert.equal(got.subarray(c.offset).toString(), 'still here');
  assert.equal(s.raw.isClosed, false);
  assert.equal(c.raw.isClosed, false);
  s.raw.destroy();
});

test('bug fix: a malformed frame for one client closes that client only', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const bad = await tpClient(tp.tpUrl('tcp'), sid, 'bad');
  const good = await tpClient(tp.tpUrl('tcp'), sid, 'good');
  const ab = await s.waitClient('bad');
  const ag = await s.waitClient('good');
  s.sendRaw(Buffer.from([ab >> 8, ab & 0xff, 0x41, 0xdb, 0x12, 0x42, 0xc0]));
  s.send(ag, 'fine');
  await bad.raw.closed();
  assert.equal((await good.raw.waitForBytes(good.offset + 4)).subarray(good.offset).toString(), 'fine');
  s.raw.destroy();
});

test('socket addresses are never 0, 0xFFFF or contain a byte SLIP escapes (C0, DB)', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const clients = [];
  for (let i = 0; i < 3; i++) clients.push(await tpClient(tp.tpUrl('tcp'), sid, `c${i}`));
  for (let i = 0; i < 3; i++) {
    const a = await s.waitClient(`c${i}`);
    assert.ok(a !== 0 && a !== 0xffff && ![a >> 8, a & 0xff].some((b) => b === 0xc0 || b === 0xdb));
  }
  s.raw.destroy();
});

// ---- timeouts ---------------------------------------------------------------------------------------

test('inactive timeout runs from connect and is not re-armed by traffic; a registered server idles out without incoming data', async () => {
  const t = await startTp({ timeouts: { inactiveMs: 400, serverIdleMs: 500 } });
  try {
    const c = await rawClient(t.tpUrl('tcp'));
    const started = Date.now();
    const pinger = setInterval(() => c.send(request(1, 'TunnelProxy.Ping', { timestamp: 1 })), 100);
    await c.closed(3000);
    clearInterval(pinger);
    const took = Date.now() - started;
    assert.ok(took >= 350 && took < 1500, `closed after ${took} ms`);
    const w = await rawClient(t.tpUrl('ws'));
    assert.deepEqual(await w.closed(3000), { code: 1011, reason: 'Tunnelproxy client timeout occurred. The socket was inactive.' });
    // A server that pings stays up past the idle timeout; one that stops is dropped.
    const s = await tpServer(t.tpUrl('tcp'), uuid());
    const keep = setInterval(() => s.send(0, request(2, 'TunnelProxy.Ping', { timestamp: 2 })), 150);
    await new Promise((r) => setTimeout(r, 900));
    assert.equal(s.raw.isClosed, false);
    clearInterval(keep);
    await s.raw.closed(3000);
  } finally {
    await t.close();
  }
});

// ---- limits and the allow-list ----------------------------------------------------------------------

test('limits: clients per server, servers in total, servers per address; each its own answer', async () => {
  const t = await startTp({ limits: { maxClientsPerServer: 1, maxServers: 2, maxServersPerIp: 1 } });
  try {
    const sid = uuid();
    const s = await tpServer(t.tpUrl('tcp'), sid);
    await tpClient(t.tpUrl('tcp'), sid, 'first');
    const c = await rawClient(t.tpUrl('tcp'));
    c.send(registerClientRequest(sid));
    assert.equal((await c.waitFor('\n')).toString(), '{"error":"Too many clients for this server.","id":1,"status":"error"}\n');
    await c.closed();
    const d = await rawClient(t.tpUrl('tcp'));
    d.send(registerServerRequest(uuid()));
    assert.equal((await d.waitFor('\n')).toString(), '{"error":"Too many servers registered from this address.","id":1,"status":"error"}\n');
    await d.closed();
    s.raw.destroy();
  } finally {
    await t.close();
  }
});

test('allow-list: a server uuid not on it is answered ForbiddenCall and closed; one on it registers', async () => {
  const allowed = uuid();
  const t = await startTp({ allowServerUuids: [`{${allowed.toUpperCase()}}`] });
  try {
    const c = await rawClient(t.tpUrl('tcp'));
    c.send(registerServerRequest(uuid()));
    assert.equal((await c.waitFor('\n')).toString(), '{"id":1,"params":{"slipEnabled":false,"tunnelProxyError":"TunnelProxyErrorForbiddenCall"},"status":"success"}\n');
    await c.closed();
    const s = await tpServer(t.tpUrl('tcp'), allowed);
    s.raw.destroy();
  } finally {
    await t.close();
  }
});

// ---- monitor and shutdown -----------------------------------------------------------------------------

test('monitorServer: the monitor shows servers, their clients and traffic (1.9 refresh request)', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid, 'monitored');
  const c = await tpClient(tp.tpUrl('tcp'), sid, 'watched');
  const a = await s.waitClient('watched');
  c.raw.send('12345');
  await s.waitData(a, 5);
  const m = connect({ path: tp.server.monitorPath! });
  let text = '';
  m.on('data', (d) => (text += d.toString()));
  m.write('{"method":"refresh","params":{"printAll":true}}\n');
  await deadline((async () => { while (!text.endsWith('\n')) await new Promise((r) => setTimeout(r, 5)); })(), 3000, 'monitor answer');
  m.destroy();
  const doc = JSON.parse(text) as { tunnelProxyStatistic: { serverConnectionsCount: number; tunnelConnections: { name: string; serverUuid: string; clientConnections: { name: string; rxDataCount: number; socketAddress: number }[] }[] } };
  const st = doc.tunnelProxyStatistic;
  assert.ok(st.serverConnectionsCount >= 1);
  const mine = st.tunnelConnections.find((x) => x.serverUuid === `{${sid}}`)!;
  assert.equal(mine.name, 'monitored');
  assert.equal(mine.clientConnections[0]!.name, 'watched');
  assert.equal(mine.clientConnections[0]!.socketAddress, a);
  assert.ok(mine.clientConnections[0]!.rxDataCount >= 5);
  s.raw.destroy();
});

test('shutdown: unregistered connections are told at once; servers and clients are closed with "Stop server"', async () => {
  const t = await startTp();
  const sid = uuid();
  const s = await tpServer(t.tpUrl('ws'), sid);
  const c = await tpClient(t.tpUrl('ws'), sid, 'bye');
  const idle = await rawClient(t.tpUrl('ws'));
  const closing = t.server.close({ graceMs: 100 });
  assert.deepEqual(await idle.closed(), { code: 1000, reason: 'Stop server' });
  assert.deepEqual(await c.raw.closed(), { code: 1000, reason: 'Stop server' });
  await s.raw.closed();
  await deadline(closing, 5000, 'close');
});
