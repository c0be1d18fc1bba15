/**
 * The tunnel-proxy JSON-RPC API as a black box, ported from nymea 1.13's tests/test-tunnelproxy
 * (getHello, getIntrospect, apiBasicCalls, apiBasicCallsTcp, registerServer, registerClient,
 * registerServerDuplicated, registerClientDuplicated, crossRegisterServerClient, websocketBinaryData,
 * websocketPing, serverPortBlocked), with the exact bytes we answer.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { WebSocket } from 'ws';
import { rawClient, request, deadline } from '../../helpers/relay.ts';
import { startTp, tpServer, firstAnswer, registerServerRequest, registerClientRequest, type StartedTp } from './harness.ts';
import { isGatewayError } from '../../../src/core/errors.ts';
import { decodeTunnelProxyRequest } from '../../../src/relay/protocol/tunnel-proxy-api.ts';

let tp: StartedTp;
before(async () => {
  tp = await startTp();
});
after(() => tp.close());

const KINDS = ['tcp', 'ws'] as const;
const uuid = () => crypto.randomUUID();

for (const kind of KINDS) {
  test(`getHello (${kind}): nymea 1.13's Hello, byte for byte`, async () => {
    const c = await rawClient(tp.tpUrl(kind));
    c.send(request(42, 'RemoteProxy.Hello'));
    const got = await c.waitFor('}\n');
    assert.equal(got.toString(), '{"id":42,"params":{"apiVersion":"6","name":"gatehouse","server":"nymea-remoteproxy","version":"1.13.0"},"status":"success"}\n');
    c.destroy();
  });

  test(`getIntrospect (${kind}): methods, notifications and types of the tunnel-proxy API`, async () => {
    const c = await rawClient(tp.tpUrl(kind));
    c.send(request(1, 'RemoteProxy.Introspect'));
    const r = await firstAnswer(c);
    assert.equal(r.status, 'success');
    const p = r.params as { methods: Record<string, { params: unknown }>; notifications: Record<string, unknown>; types: Record<string, string[]> };
    assert.deepEqual(Object.keys(p.methods).sort(), ['RemoteProxy.Hello', 'RemoteProxy.Introspect', 'TunnelProxy.DisconnectClient', 'TunnelProxy.Ping', 'TunnelProxy.RegisterClient', 'TunnelProxy.RegisterServer']);
    assert.deepEqual(p.methods['TunnelProxy.RegisterClient']!.params, { clientName: 'String', clientUuid: 'Uuid', serverUuid: 'Uuid' });
    assert.deepEqual(Object.keys(p.notifications).sort(), ['RemoteProxy.TunnelEstablished', 'TunnelProxy.ClientConnected', 'TunnelProxy.ClientDisconnected']);
    assert.equal(p.types.TunnelProxyError!.length, 8);
    c.destroy();
  });
}

/** nymea's apiBasicCalls rows, with the exact error answers and closes. */
const BASIC: [string, string, string][] = [
  ['valid call', '{"id":42, "method":"RemoteProxy.Hello"}', '{"id":42,"params":{"apiVersion":"6",'],
  ['missing id', '{"method":"RemoteProxy.Hello"}', `{"error":"Error parsing command. Missing 'id'","id":-1,"status":"error"}\n`],
  ['missing method', '{"id":42}', `{"error":"Error parsing method. Got: ''', Expected: 'Namespace.method'","id":42,"status":"error"}\n`],
  ['invalid json', '{"id":42, "method":"RemoteProx}', '{"error":"Failed to parse JSON data: unterminated string","id":-1,"status":"error"}\n'],
  ['invalid function', '{"id":42, "method":"RemoteProxy.Explode"}', '{"error":"No such method","id":42,"status":"error"}\n'],
  ['invalid namespace', '{"id":42, "method":"ProxyRemote.Hello"}', '{"error":"No such namespace","id":42,"status":"error"}\n'],
  ['missing dot', '{"id":42, "method":"RemoteProxyHello"}', `{"error":"Error parsing method. Got: 'RemoteProxyHello'', Expected: 'Namespace.method'","id":42,"status":"error"}\n`],
  ['invalid params', '{"id":42, "method":"RemoteProxy.Hello", "params":{"törööö":"chooo-chooo"}}', '{"error":"Invalid params: Forbidden key \\"törööö\\" in {\\n    \\"törööö\\": \\"chooo-chooo\\"\\n}\\n","id":42,"status":"error"}\n'],
  // The legacy relay's namespace does not exist on these listeners.
  ['invalid authentication params', '{"id":42, "method":"Authentication.Authenticate", "params":{"your":"mamma"}}', '{"error":"No such namespace","id":42,"status":"error"}\n'],
];

for (const kind of KINDS) {
  for (const [name, input, answer] of BASIC) {
    test(`apiBasicCalls${kind === 'tcp' ? 'Tcp' : ''} "${name}" (${kind})`, async () => {
      const c = await rawClient(tp.tpUrl(kind));
      c.send(input);
      const got = await c.waitFor('\n');
      assert.ok(got.toString().startsWith(answer), got.toString());
      if (name !== 'valid call') {
        // Every error closes the connection (before registration, as nymea).
        await c.closed();
      }
      c.destroy();
    });
  }
}

const REGISTER_SERVER_ROWS: [string, string, string][] = [
  ['valid call', `{${uuid()}}`, 'TunnelProxyErrorNoError'],
  ['valid uuid with brackets', '{00323a95-d1ab-4752-88d4-dbc8b9015b0f}', 'TunnelProxyErrorNoError'],
  ['valid uuid without brackets', '00323a95-d1ab-4752-88d4-dbc8b9015b0f', 'TunnelProxyErrorNoError'],
  ['invalid null uuid', '{00000000-0000-0000-0000-000000000000}', 'TunnelProxyErrorInvalidUuid'],
  ['invalid uuid text', 'foo', 'TunnelProxyErrorInvalidUuid'],
];

for (const [name, serverUuid, expected] of REGISTER_SERVER_ROWS) {
  test(`registerServer "${name}": ws, then tcp with the same uuid once ws is gone`, async () => {
    for (const kind of KINDS) {
      const c = await rawClient(tp.tpUrl(kind));
      c.send(registerServerRequest(serverUuid, 'valid server'));
      const got = await c.waitFor('}\n');
      const ok = expected === 'TunnelProxyErrorNoError';
      assert.equal(got.toString(), `{"id":1,"params":{"slipEnabled":${ok},"tunnelProxyError":"${expected}"},"status":"success"}\n`);
      if (!ok) {
        // An invalid uuid leaves the connection open: it can still register.
        c.send(request(2, 'RemoteProxy.Hello'));
        await c.waitFor('"id":2');
      }
      c.destroy();
      await c.closed();
      // The registry forgets the server once its link is gone.
      await deadline((async () => { while (tp.server.tunnelProxy!.registry.servers.size > 0) await new Promise((r) => setTimeout(r, 5)); })(), 2000, 'server forgotten');
    }
  });
}

const REGISTER_CLIENT_ROWS: [string, string, string, boolean, string, string][] = [
  ['valid client: valid server', `{${uuid()}}`, 'TunnelProxyErrorNoError', true, `{${uuid()}}`, 'TunnelProxyErrorNoError'],
  ['valid client: no server', `{${uuid()}}`, 'TunnelProxyErrorServerNotFound', false, `{${uuid()}}`, 'TunnelProxyErrorNoError'],
  ['valid client: invalid server uuid', `{${uuid()}}`, 'TunnelProxyErrorInvalidUuid', true, '{00000000-0000-0000-0000-000000000000}', 'TunnelProxyErrorInvalidUuid'],
  ['invalid client uuid: valid server uuid', '{00000000-0000-0000-0000-000000000000}', 'TunnelProxyErrorInvalidUuid', true, `{${uuid()}}`, 'TunnelProxyErrorNoError'],
  ['invalid client uuid: invalid server uuid', 'hello again', 'TunnelProxyErrorInvalidUuid', true, "it's me", 'TunnelProxyErrorInvalidUuid'],
];

for (const [name, clientUuid, expected, serverExists, serverUuid, expectedServer] of REGISTER_CLIENT_ROWS) {
  test(`registerClient "${name}"`, async () => {
    let server: Awaited<ReturnType<typeof rawClient>> | undefined;
    if (serverExists) {
      server = await rawClient(tp.tpUrl('tcp'));
      server.send(registerServerRequest(serverUuid, 'dummy server'));
      await server.waitFor(`"tunnelProxyError":"${expectedServer}"`);
    }
    for (const kind of KINDS) {
      const c = await rawClient(tp.tpUrl(kind));
      c.send(registerClientRequest(serverUuid, { name: 'Friendly client', uuid: clientUuid }));
      const got = await c.waitFor('}\n');
      assert.equal(got.toString(), `{"id":1,"params":{"tunnelProxyError":"${expected}"},"status":"success"}\n`);
      if (expected === 'TunnelProxyErrorServerNotFound') await c.closed();
      c.destroy();
      await c.closed();
      await deadline((async () => { while (tp.server.tunnelProxy!.registry.clients.size > 0) await new Promise((r) => setTimeout(r, 5)); })(), 2000, 'client forgotten');
    }
    server?.destroy();
  });
}

test('registerServerDuplicated: a second RegisterServer on the same socket is AlreadyRegistered and closes; the uuid is free again after', async () => {
  const id = `{${uuid()}}`;
  const s = await tpServer(tp.tpUrl('tcp'), id, 'tunnel proxy server awesome nymea installation');
  // Now in SLIP: the second request goes on address 0.
  s.send(0, registerServerRequest(id));
  const m = await s.waitControl((x) => x.id === 1);
  assert.deepEqual(m, { id: 1, params: { slipEnabled: false, tunnelProxyError: 'TunnelProxyErrorAlreadyRegistered' }, status: 'success' });
  await s.raw.closed();
  await deadline((async () => { while (tp.server.tunnelProxy!.registry.servers.size > 0) await new Promise((r) => setTimeout(r, 5)); })(), 2000, 'server forgotten');
  const again = await tpServer(tp.tpUrl('ws'), id);
  again.raw.destroy();
});

test('a duplicate server uuid on another connection: AlreadyRegistered, then close (1.8.4 replaced the old one)', async () => {
  const id = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), id);
  const c = await rawClient(tp.tpUrl('ws'));
  c.send(registerServerRequest(`{${id.toUpperCase()}}`));
  assert.equal((await c.waitFor('}\n')).toString(), '{"id":1,"params":{"slipEnabled":false,"tunnelProxyError":"TunnelProxyErrorAlreadyRegistered"},"status":"success"}\n');
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'Already registered' });
  // The first server is untouched.
  s.send(0, request(5, 'TunnelProxy.Ping', { timestamp: 7 }));
  assert.deepEqual(await s.waitControl((x) => x.id === 5), { id: 5, params: { timestamp: 7 }, status: 'success' });
  s.raw.destroy();
});

test('registerClientDuplicated: a client uuid in use is AlreadyRegistered, then close', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid, 'creative server name');
  const cid = `{${uuid()}}`;
  const a = await rawClient(tp.tpUrl('tcp'));
  a.send(registerClientRequest(sid, { uuid: cid }));
  await a.waitFor('TunnelProxyErrorNoError');
  const b = await rawClient(tp.tpUrl('tcp'));
  b.send(registerClientRequest(sid, { uuid: cid }));
  assert.equal((await b.waitFor('}\n')).toString(), '{"id":1,"params":{"tunnelProxyError":"TunnelProxyErrorAlreadyRegistered"},"status":"success"}\n');
  await b.closed();
  assert.equal(a.isClosed, false);
  a.destroy();
  s.raw.destroy();
});

test('crossRegisterServerClient: RegisterClient on a server connection is AlreadyRegistered and closes it', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  s.send(0, registerClientRequest(sid, { id: 9 }));
  assert.deepEqual(await s.waitControl((x) => x.id === 9), { id: 9, params: { tunnelProxyError: 'TunnelProxyErrorAlreadyRegistered' }, status: 'success' });
  await s.raw.closed();
});

test('UUID cross registration: a client uuid equal to a server uuid, and a server uuid equal to a client uuid', async () => {
  const sid = uuid();
  const s = await tpServer(tp.tpUrl('tcp'), sid);
  const c = await rawClient(tp.tpUrl('ws'));
  c.send(registerClientRequest(sid, { uuid: sid }));
  await c.waitFor('TunnelProxyErrorAlreadyRegistered');
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'UUID cross registeration' });
  const cid = uuid();
  const a = await rawClient(tp.tpUrl('tcp'));
  a.send(registerClientRequest(sid, { uuid: cid }));
  await a.waitFor('TunnelProxyErrorNoError');
  const d = await rawClient(tp.tpUrl('ws'));
  d.send(registerServerRequest(cid));
  await d.waitFor('TunnelProxyErrorAlreadyRegistered');
  assert.deepEqual(await d.closed(), { code: 1011, reason: 'UUID cross registeration' });
  a.destroy();
  s.raw.destroy();
});

test('DisconnectClient before registering: AlreadyRegistered and close (as nymea 1.13)', async () => {
  const c = await rawClient(tp.tpUrl('tcp'));
  c.send(request(3, 'TunnelProxy.DisconnectClient', { socketAddress: 1 }));
  assert.equal((await c.waitFor('}\n')).toString(), '{"id":3,"params":{"tunnelProxyError":"TunnelProxyErrorAlreadyRegistered"},"status":"success"}\n');
  await c.closed();
});

test('Ping echoes the timestamp as sent, before and after registration; bad params are nymea texts', async () => {
  const c = await rawClient(tp.tpUrl('tcp'));
  c.send(request(1, 'TunnelProxy.Ping', { timestamp: 1700000000123 }));
  assert.equal((await c.waitFor('}\n')).toString(), '{"id":1,"params":{"timestamp":1700000000123},"status":"success"}\n');
  c.send(request(2, 'TunnelProxy.Ping', { timestamp: {} }));
  await c.waitFor('"id":2');
  assert.ok(c.received().toString().endsWith('{"error":"Invalid params: Param  is not a int.","id":2,"status":"error"}\n'));
  await c.closed();
  const d = await rawClient(tp.tpUrl('tcp'));
  d.send(request(4, 'TunnelProxy.RegisterServer', { serverName: 'x', serverUuid: 5 }));
  assert.equal((await d.waitFor('\n')).toString(), '{"error":"Invalid params: Param 5 is not a uuid.","id":4,"status":"error"}\n');
  await d.closed();
});

test('websocketBinaryData: a binary frame before registration closes (1011 "Binary message not expected.")', async () => {
  const c = await rawClient(tp.tpUrl('ws'));
  c.send(Buffer.from('trying to upload stuff...stuff...more stuff... other stuff'), { binary: true });
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'Binary message not expected.' });
});

test('websocketPing: a WebSocket ping is answered with its payload', async () => {
  const ws = new WebSocket(tp.tpUrl('ws'));
  await new Promise((r) => ws.once('open', r));
  const pong = new Promise<Buffer>((r) => ws.once('pong', r));
  ws.ping(Buffer.from('ping!'));
  assert.equal((await deadline(pong, 2000, 'pong')).toString(), 'ping!');
  ws.terminate();
});

test('serverPortBlocked: a tunnel-proxy listener that cannot bind fails start with CORE_LISTEN_FAILED naming it', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as { port: number }).port;
  await assert.rejects(
    startTp({ listeners: [{ kind: 'tcp', host: '127.0.0.1', port }] }),
    (err: unknown) => isGatewayError(err, 'CORE_LISTEN_FAILED') && /tunnel-proxy tcp listener/.test(err.message),
  );
  await new Promise((r) => blocker.close(r));
});

test('Invalid params names the first forbidden key in sorted order, whatever order the request gives', () => {
  const refused = decodeTunnelProxyRequest('{"id":7,"method":"TunnelProxy.Ping","params":{"zz":1,"timestamp":1,"b":2,"a_":3}}');
  assert.ok(!refused.ok && refused.failure.text.startsWith('Invalid params: Forbidden key "a_" in {'), JSON.stringify(refused));
  const missing = decodeTunnelProxyRequest('{"id":7,"method":"TunnelProxy.RegisterClient","params":{"serverUuid":"x","zz":1}}');
  assert.ok(!missing.ok && missing.failure.text.startsWith('Invalid params: Missing key clientName in {'), JSON.stringify(missing));
  const ok = decodeTunnelProxyRequest('{"id":7,"method":"TunnelProxy.Ping","params":{"timestamp":1}}');
  assert.ok(ok.ok && ok.request.method === 'TunnelProxy.Ping');
});
