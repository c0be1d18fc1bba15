/**
 * The JSON-RPC API over TCP and WebSocket, byte for byte: Hello, Introspect, every error row of the spec
 * (answered, then closed with the reason), Authenticate with each AuthenticationError value; hostile names
 * (Object.prototype keys) and the Qt 5 behaviours we reproduce (ids, escapes, null params, invalid UTF-8).
 */
import { test, after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, rawClient, request, lines, type StartedRelay } from '../helpers/relay.ts';
import { introspect, AUTHENTICATION_ERRORS } from '../../src/relay/protocol/api.ts';
import { toCompactJson } from '../../src/relay/protocol/json.ts';
import { PROTOTYPE_KEYS } from '../helpers/hostile.ts';

let relay: StartedRelay;
before(async () => {
  relay = await startRelay({ hello: { name: 'test-relay' } });
});
after(() => relay.close());

for (const transport of ['tcp', 'ws'] as const) {
  describe(`over ${transport}`, () => {
    test('Hello answers the configured strings with the 1.8.4 defaults', async () => {
      const c = await rawClient(relay.url(transport));
      c.send(request(0, 'RemoteProxy.Hello'));
      await c.waitFor('\n');
      assert.equal(
        c.received().toString(),
        '{"id":0,"params":{"apiVersion":"5","name":"test-relay","server":"nymea-remoteproxy","version":"1.8.4"},"status":"success"}\n',
      );
      if (transport === 'ws') assert.equal(c.frames()[0]?.binary, false);
      // Hello any number of times, and the connection stays open.
      c.send(request(1, 'RemoteProxy.Hello'));
      await c.waitFor('"id":1');
      assert.equal(c.isClosed, false);
      c.destroy();
    });

    test('Introspect describes exactly this API', async () => {
      const c = await rawClient(relay.url(transport));
      c.send(request(42, 'RemoteProxy.Introspect', {}));
      await c.waitFor('"status":"success"}\n');
      assert.equal(c.received().toString(), `${toCompactJson({ id: 42, params: introspect(), status: 'success' })}\n`);
      const doc = JSON.parse(c.received().toString()) as { params: { methods: Record<string, unknown>; notifications: Record<string, unknown>; types: { AuthenticationError: string[] } } };
      assert.deepEqual(Object.keys(doc.params.methods).sort(), ['Authentication.Authenticate', 'RemoteProxy.Hello', 'RemoteProxy.Introspect']);
      assert.deepEqual(Object.keys(doc.params.notifications), ['RemoteProxy.TunnelEstablished']);
      assert.deepEqual(doc.params.types.AuthenticationError, [...AUTHENTICATION_ERRORS]);
      // Exact bytes of two entries as nymea 1.x writes them (sorted keys, enum order kept).
      const wire = c.received().toString();
      assert.ok(wire.includes('"RemoteProxy.Hello":{"description":"Once connected to this server, a client can get information about the server by saying Hello. The response informs the client about this proxy server.","params":{},"returns":{"apiVersion":"String","name":"String","server":"String","version":"String"}}'));
      assert.ok(wire.includes('"params":{"name":"String","o:nonce":"String","token":"String","uuid":"String"},"returns":{"authenticationError":"$ref:AuthenticationError"}'));
      assert.ok(wire.includes('"BasicType":["Uuid","String","Int","UInt","Double","Bool","Variant","Object"]'));
      c.destroy();
    });

    const rows: [string, string | Buffer, string, string][] = [
      ['invalid JSON', '{"id":1,"method":"RemoteProxy.Hello"}{"id":2}', '{"error":"Failed to parse JSON data: garbage at the end of the document","id":-1,"status":"error"}\n', 'Invalid JSON data received.'],
      ['missing id', '{"method":"RemoteProxy.Hello"}\n', `{"error":"Error parsing command. Missing 'id'","id":-1,"status":"error"}\n`, 'The id property is missing in the request.'],
      ['non-numeric id', '{"id":"abc","method":"RemoteProxy.Hello"}\n', `{"error":"Error parsing command. Missing 'id'","id":-1,"status":"error"}\n`, 'The id property is missing in the request.'],
      ['method not A.B', '{"id":3,"method":"RemoteProxyHello"}\n', `{"error":"Error parsing method. Got: 'RemoteProxyHello'', Expected: 'Namespace.method'","id":3,"status":"error"}\n`, 'Invalid method passed.'],
      ['unknown namespace', '{"id":4,"method":"Foo.Hello"}\n', '{"error":"No such namespace","id":4,"status":"error"}\n', 'No such namespace.'],
      ['unknown method', '{"id":"5","method":"RemoteProxy.Bye"}\n', '{"error":"No such method","id":5,"status":"error"}\n', 'No such method.'],
      ['invalid params (nymea row)', '{"id":42, "method":"RemoteProxy.Hello", "params":{"törööö":"chooo-chooo"}}', '{"error":"Invalid params: Forbidden key \\"törööö\\" in {\\n    \\"törööö\\": \\"chooo-chooo\\"\\n}\\n","id":42,"status":"error"}\n', 'Invalid params passed.'],
      ['invalid authentication params (nymea row)', '{"id":42, "method":"Authentication.Authenticate", "params":{"your":"mamma"}}', '{"error":"Invalid params: Missing key name in {\\n    \\"your\\": \\"mamma\\"\\n}\\n","id":42,"status":"error"}\n', 'Invalid params passed.'],
      ['missing method (nymea row)', '{"id":42}', `{"error":"Error parsing method. Got: ''', Expected: 'Namespace.method'","id":42,"status":"error"}\n`, 'Invalid method passed.'],
      ['invalid json (nymea row)', '{"id":42, "method":"RemoteProx}', '{"error":"Failed to parse JSON data: unterminated string","id":-1,"status":"error"}\n', 'Invalid JSON data received.'],
      ['id coerced from 5.7', '{"id":5.7,"method":"RemoteProxy.Bye"}\n', '{"error":"No such method","id":6,"status":"error"}\n', 'No such method.'],
      // Qt 5 fidelity: qRound64 (-2.5 -> -2) and int(qint64) (99999999999 -> 1215752191).
      ['id -2.5 rounds to -2', '{"id":-2.5,"method":"RemoteProxy.Bye"}\n', '{"error":"No such method","id":-2,"status":"error"}\n', 'No such method.'],
      ['id 99999999999 wraps to 32 bits', '{"id":99999999999,"method":"RemoteProxy.Bye"}\n', '{"error":"No such method","id":1215752191,"status":"error"}\n', 'No such method.'],
      ['id "99999999999" wraps to 32 bits', '{"id":"99999999999","method":"RemoteProxy.Bye"}\n', '{"error":"No such method","id":1215752191,"status":"error"}\n', 'No such method.'],
      ['a number a double cannot hold', '{"id":1,"method":"RemoteProxy.Hello","x":1e400}\n', '{"error":"Failed to parse JSON data: illegal number","id":-1,"status":"error"}\n', 'Invalid JSON data received.'],
      // Object.prototype keys are unknown names like any other (they killed the process before).
      ['method RemoteProxy.constructor', '{"id":1,"method":"RemoteProxy.constructor","params":{}}', '{"error":"No such method","id":1,"status":"error"}\n', 'No such method.'],
      ['method Authentication.toString', '{"id":1,"method":"Authentication.toString","params":{}}', '{"error":"No such method","id":1,"status":"error"}\n', 'No such method.'],
      ['method Authentication.hasOwnProperty', '{"id":1,"method":"Authentication.hasOwnProperty"}', '{"error":"No such method","id":1,"status":"error"}\n', 'No such method.'],
      ['method RemoteProxy.__proto__', '{"id":1,"method":"RemoteProxy.__proto__"}', '{"error":"No such method","id":1,"status":"error"}\n', 'No such method.'],
      ['method constructor.name', '{"id":1,"method":"constructor.name"}', '{"error":"No such namespace","id":1,"status":"error"}\n', 'No such namespace.'],
      ['method __proto__.x', '{"id":1,"method":"__proto__.x"}', '{"error":"No such namespace","id":1,"status":"error"}\n', 'No such namespace.'],
      ['param key __proto__', '{"id":1,"method":"RemoteProxy.Hello","params":{"__proto__":{"a":1}}}', '{"error":"Invalid params: Forbidden key \\"__proto__\\" in {\\n    \\"__proto__\\": {\\n        \\"a\\": 1\\n    }\\n}\\n","id":1,"status":"error"}\n', 'Invalid params passed.'],
    ];
    for (const [name, input, answer, reason] of rows) {
      test(`error row: ${name} → answered, then closed (${reason})`, async () => {
        const c = await rawClient(relay.url(transport));
        c.send(input);
        const how = await c.closed();
        assert.equal(c.received().toString(), answer);
        if (transport === 'ws') assert.deepEqual(how, { code: 1011, reason });
      });
    }

    for (const error of AUTHENTICATION_ERRORS) {
      test(`Authenticate answers ${error} (mock, 50 ms delay)`, async () => {
        const c = await rawClient(relay.url(transport));
        const started = Date.now();
        c.send(`{"id":0,"method":"Authentication.Authenticate","params":{"name":"n","token":"mock:50:${error}","uuid":"{0b7e4a4e-4a5b-4d7c-9a2e-1f1f1f1f1f1f}"}}\n`);
        await c.waitFor('\n');
        assert.ok(Date.now() - started >= 45, 'the mock delay is honoured');
        assert.equal(c.received().toString(), `{"id":0,"params":{"authenticationError":"${error}"},"status":"success"}\n`);
        if (error === 'AuthenticationErrorNoError') {
          assert.equal(c.isClosed, false);
          c.destroy();
        } else {
          const how = await c.closed();
          if (transport === 'ws') assert.deepEqual(how, { code: 1011, reason: 'API call was not successfully.' });
        }
      });
    }
  });
}

test('after every Object.prototype name the relay still serves (one client per name, then a Hello)', async () => {
  for (const key of PROTOTYPE_KEYS) {
    for (const method of [`RemoteProxy.${key}`, `${key}.Hello`, `${key}.${key}`]) {
      const c = await rawClient(relay.url('tcp'));
      c.send(`{"id":1,"method":"${method}","params":{"${key}":null}}\n`);
      await c.closed();
      assert.match(c.received().toString(), /^\{"error":"No such (namespace|method)","id":1,"status":"error"\}\n$/);
    }
  }
  const c = await rawClient(relay.url('tcp'));
  c.send(request(9, 'RemoteProxy.Hello'));
  await c.waitFor('"id":9');
  c.destroy();
});

test('Qt 5 accepts unknown escapes: "RemoteProxy.H\\ello" is Hello', async () => {
  for (const transport of ['tcp', 'ws'] as const) {
    const c = await rawClient(relay.url(transport));
    c.send('{"id":7,"method":"RemoteProxy.H\\ello","params":{}}\n');
    await c.waitFor('\n');
    assert.equal(c.received().toString(), '{"id":7,"params":{"apiVersion":"5","name":"test-relay","server":"nymea-remoteproxy","version":"1.8.4"},"status":"success"}\n');
    c.destroy();
  }
});

test('invalid UTF-8 inside a JSON string: TCP answers Qt\'s parse error; WebSocket closes 1007 unanswered', async () => {
  const bad = Buffer.concat([Buffer.from('{"id":1,"method":"RemoteProxy.Hello","params":{"x":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}}\n')]);
  const tcp = await rawClient(relay.url('tcp'));
  tcp.send(bad);
  await tcp.closed();
  assert.equal(tcp.received().toString(), '{"error":"Failed to parse JSON data: invalid UTF8 string","id":-1,"status":"error"}\n');
  const ws = await rawClient(relay.url('ws'));
  ws.send(bad, { binary: false });
  assert.deepEqual(await ws.closed(), { code: 1007, reason: 'Invalid UTF-8 code encountered.' });
  assert.equal(ws.received().length, 0);
});

test('null token/name/uuid/nonce read as empty strings: the accept-all authenticator answers NoError', async () => {
  const dev = await startRelay({ authenticator: { kind: 'dev' } });
  try {
    for (const transport of ['tcp', 'ws'] as const) {
      const c = await rawClient(dev.url(transport));
      c.send('{"id":0,"method":"Authentication.Authenticate","params":{"name":null,"nonce":null,"token":null,"uuid":null}}\n');
      await c.waitFor('\n');
      assert.equal(c.received().toString(), '{"id":0,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}\n');
      c.destroy();
    }
  } finally {
    await dev.close();
  }
});

test('a request split across TCP segments is reassembled; two requests in one segment both answered', async () => {
  const c = await rawClient(relay.url('tcp'));
  c.send('{"id":1,"method":"Remote');
  await new Promise((r) => setTimeout(r, 30));
  c.send('Proxy.Hello"}\n{"id":2,"method":"RemoteProxy.Hello"}');
  await c.waitFor('"id":2');
  assert.deepEqual(lines(c.received()).map((l) => (JSON.parse(l) as { id: number }).id), [1, 2]);
  c.destroy();
});
