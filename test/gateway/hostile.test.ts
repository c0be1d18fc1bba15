/**
 * All three front ends in one process, over real sockets, fed names a client chooses: every
 * `Object.prototype` key (and dotted, padded, cased variants) in every position a name can take, plus
 * invalid UTF-8 and huge numbers. After each batch the process must still serve a real client on each
 * front end, and `Object.prototype` must be untouched. (A throw that escaped would end this process, and
 * with it the test.)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import fc from 'fast-check';
import { WebSocket } from 'ws';
import { importJWK, type CryptoKey } from 'jose';
import { validateConfig } from '../../src/core/config/load.ts';
import { gatewayConfigSchema } from '../../src/config.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { addClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { generateClientKey, importPublic } from '../../src/sealed-api/keys.ts';
import { SealedClient, SealedCallError } from '../../src/sealed-api/client.ts';
import { captureLog, pair, tempDir } from '../helpers/relay.ts';
import { hostileName, hostileJsonValue, hugeNumber, invalidUtf8Bytes, objectWithOwnKeys, PROTOTYPE_KEYS } from '../helpers/hostile.ts';

const RUNS = Number(process.env.GATEHOUSE_FUZZ_RUNS ?? 100);
const TOKEN = 'hostile-test-token';
const protoNamesBefore = Object.getOwnPropertyNames(Object.prototype).sort();

let gw: Gateway;
let sealed: SealedClient;
const cap = captureLog();
const port = (kind: string): number => {
  const l = [...(gw.relay?.listeners ?? []), ...(gw.cardBridge?.listeners ?? [])].find((x) => x.kind === kind);
  if (l === undefined) throw new Error(`no ${kind} listener`);
  return l.port;
};

before(async () => {
  const dir = tempDir('gatehouse-hostile-');
  const config = validateConfig(gatewayConfigSchema, {
    relay: {
      listeners: [
        { kind: 'tcp', host: '127.0.0.1', port: 0 },
        { kind: 'ws', host: '127.0.0.1', port: 0 },
      ],
      monitor: { path: join(dir, 'monitor.sock') },
      timeouts: { aloneMs: 2000 },
      tunnelProxy: { enabled: true, listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }] },
    },
    cardBridge: {
      listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }],
      backends: [{ kind: 'simulator' }],
      cloudfoxyApi: { enabled: true, port: 0, token: TOKEN },
      foxyproxyApi: { enabled: true, port: 0, token: TOKEN },
    },
    sealedApi: { port: 0, stateDir: 'state', demo: true, reloadCheckMs: 100 },
  });
  gw = await createGateway(config, { log: cap.log, baseDir: dir });
  await gw.start();
  const key = await generateClientKey('hostile');
  await addClient(sealedPaths(config.sealedApi, dir), { name: 'hostile', jwk: key.publicJwk, allow: ['*'], files: ['*'] });
  await gw.sealedApi!.reload();
  const info = gw.sealedApi!.serverInfo();
  sealed = new SealedClient({
    url: gw.sealedApi!.url,
    clientKid: key.kid,
    clientKey: (await importJWK(key.privateJwk, 'EdDSA')) as CryptoKey,
    serverKid: info.kid,
    serverKey: await importPublic(info.jwk, 'ECDH-ES'),
    timeoutMs: 10_000,
  });
});

after(async () => {
  sealed.close();
  await gw.close({ graceMs: 0 });
});

/** Each front end still serves a real client, nothing logged CORE_INTERNAL, and the prototype is clean. */
async function assertHealthy(): Promise<void> {
  const { a, b, bOffset } = await pair(`tcp://127.0.0.1:${port('tcp')}`, `ws://127.0.0.1:${port('ws')}`);
  a.send('ping through the tunnel');
  await b.waitFor('ping through the tunnel');
  assert.equal(b.received().subarray(bOffset).toString(), 'ping through the tunnel');
  a.destroy();
  b.destroy();
  const cardPort = gw.cardBridge!.listeners.find((l) => l.kind === 'tcp')!.port;
  const answer = await exchange(cardPort, Buffer.from('>*|\n>1:LIST\n\n'), 5000);
  assert.match(answer.toString('latin1'), /^>1:.+\n@@\n/);
  assert.deepEqual(await sealed.call('ping'), { pong: true });
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoNamesBefore);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  const internal = cap.records().filter((r) => r.code === 'CORE_INTERNAL' || (r.level === 'error' && r.code === undefined));
  assert.deepEqual(internal, [], 'no internal error was logged');
}

/** Sends `bytes`, then collects what arrives until the peer closes, `@@\n` ends an answer, or `ms` pass. */
function exchange(p: number, bytes: Buffer, ms: number, until = Buffer.from('@@\n')): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s: Socket = connect({ host: '127.0.0.1', port: p });
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(Buffer.concat(chunks));
    };
    const timer = setTimeout(done, ms);
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (Buffer.concat(chunks).includes(until)) done();
    });
    s.on('error', done);
    s.on('close', done);
    s.write(bytes);
  });
}

/** A JSON-RPC request whose names come from the generators (as own keys, the way JSON.parse makes them). */
const relayMessage = fc
  .record({
    ns: fc.oneof(hostileName(), fc.constantFrom('RemoteProxy', 'Authentication')),
    method: fc.oneof(hostileName(), fc.constantFrom('Hello', 'Introspect', 'Authenticate')),
    paramKeys: fc.array(fc.oneof(hostileName(), fc.constantFrom('uuid', 'name', 'token', 'nonce')), { maxLength: 5 }),
    paramValue: fc.oneof(hostileJsonValue(), hostileName(), fc.constant(null)),
    id: fc.oneof(hugeNumber(), hostileName(), fc.constant(null)),
    shape: fc.constantFrom('dotted', 'whole', 'noparams'),
  })
  .map(({ ns, method, paramKeys, paramValue, id, shape }) => {
    const params = objectWithOwnKeys(paramKeys.map((k) => [k, paramValue] as const));
    const msg = objectWithOwnKeys([
      ['id', id],
      ['method', shape === 'whole' ? ns : `${ns}.${method}`],
      ...(shape === 'noparams' ? [] : [['params', params] as const]),
    ]);
    return `${JSON.stringify(msg)}\n`;
  });

test('relay: hostile names in namespace, method, params and id never take the process down', async () => {
  await fc.assert(
    fc.asyncProperty(relayMessage, fc.boolean(), invalidUtf8Bytes(), async (text, overWs, junk) => {
      if (overWs) {
        const ws = new WebSocket(`ws://127.0.0.1:${port('ws')}`);
        ws.on('error', () => undefined);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            ws.terminate();
            resolve();
          }, 1500);
          ws.on('open', () => ws.send(Math.random() < 0.2 ? Buffer.concat([Buffer.from(text), junk]) : text));
          ws.on('close', () => {
            clearTimeout(timer);
            resolve();
          });
          ws.on('message', () => {
            // One answer is enough: the request was handled.
            clearTimeout(timer);
            ws.terminate();
            resolve();
          });
        });
      } else {
        await exchange(port('tcp'), Buffer.from(text), 1500, Buffer.from('\n'));
      }
    }),
    { numRuns: RUNS, seed: 7 },
  );
  await assertHealthy();
});

const lineRequest = fc
  .record({
    reader: fc.oneof(hostileName(), fc.constantFrom('*', 'all readers', 'Gatehouse Sim 00')),
    pin: fc.option(hostileName(), { nil: undefined }),
    items: fc.array(
      fc.record({
        id: fc.oneof(hostileName(), fc.nat().map(String), fc.constant('12,345')),
        command: fc.oneof(hostileName(), fc.constantFrom('APDU', 'RESET', 'LIST', 'READERS', 'ALIASES', 'CHAIN', 'SIGN', 'ENUM')),
        arg: fc.oneof(hostileName(), fc.constantFrom('00A4040000', '', '00')),
      }),
      { minLength: 1, maxLength: 3 },
    ),
    junk: fc.option(invalidUtf8Bytes(), { nil: undefined }),
  })
  .map(({ reader, pin, items, junk }) => {
    const head = `>${reader}${pin === undefined ? '' : `:${pin}`}|\n`;
    const body = items.map((i) => `>${i.id}:${i.command}:${i.arg}\n`).join('');
    return Buffer.concat([Buffer.from(head + body), junk ?? Buffer.alloc(0), Buffer.from('\n\n')]);
  });

test('relay tunnel-proxy mode: hostile names in TunnelProxy methods, uuids and names', async () => {
  const tpPort = gw.relay!.tunnelProxyListeners.find((l) => l.kind === 'tcp')!.port;
  const tpMessage = fc
    .record({
      ns: fc.oneof(hostileName(), fc.constantFrom('TunnelProxy', 'RemoteProxy')),
      method: fc.oneof(hostileName(), fc.constantFrom('RegisterServer', 'RegisterClient', 'DisconnectClient', 'Ping', 'Hello')),
      keys: fc.array(fc.oneof(hostileName(), fc.constantFrom('serverUuid', 'serverName', 'clientUuid', 'clientName', 'socketAddress', 'timestamp')), { maxLength: 4 }),
      value: fc.oneof(hostileJsonValue(), hostileName(), hugeNumber()),
    })
    .map(({ ns, method, keys, value }) => `${JSON.stringify(objectWithOwnKeys([['id', 1], ['method', `${ns}.${method}`], ['params', objectWithOwnKeys(keys.map((k) => [k, value] as const))]]))}\n`);
  await fc.assert(
    fc.asyncProperty(tpMessage, async (text) => {
      await exchange(tpPort, Buffer.from(text), 1500, Buffer.from('\n'));
    }),
    { numRuns: RUNS, seed: 19 },
  );
  for (const k of PROTOTYPE_KEYS) {
    const out = await exchange(tpPort, Buffer.from(`{"id":1,"method":"TunnelProxy.${k}","params":{}}\n`), 1500, Buffer.from('\n'));
    assert.match(out.toString(), /"status":"error"/, k);
  }
  await assertHealthy();
});

test('card bridge: hostile reader names, commands, ids and PINs on the line protocol', async () => {
  const p = gw.cardBridge!.listeners.find((l) => l.kind === 'tcp')!.port;
  await fc.assert(
    fc.asyncProperty(lineRequest, async (bytes) => {
      const answer = await exchange(p, bytes, 3000);
      // Every request is answered (or closed with a coded answer), never left hanging.
      assert.ok(answer.length > 0, `no answer to ${JSON.stringify(bytes.toString('latin1'))}`);
    }),
    { numRuns: RUNS, seed: 11 },
  );
  await assertHealthy();
});

function http(p: number, method: string, path: string, body?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: p, method, path, headers: { 'x-auth-token': TOKEN, authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

test('card bridge REST APIs: hostile path segments, query names and JSON keys never answer 500', async () => {
  const cloud = gw.cardBridge!.listeners.find((l) => l.kind === 'cloudfoxy-api')!.port;
  const foxy = gw.cardBridge!.listeners.find((l) => l.kind === 'foxyproxy-api')!.port;
  await fc.assert(
    fc.asyncProperty(hostileName(), hostileName(), hostileJsonValue(), async (a, b, value) => {
      const seg = encodeURIComponent(a);
      const statuses = [
        await http(cloud, 'GET', `/api/v1/${seg}`),
        await http(cloud, 'GET', `/api/v1/basic?reset=0&terminal=${seg}&apdu=00A4040000&${encodeURIComponent(b)}=1`),
        await http(foxy, 'GET', `/api/v1.0/select/${seg}/${encodeURIComponent(b)}`),
        await http(foxy, 'POST', '/api/v1.0/command', JSON.stringify(objectWithOwnKeys([[a, value], ['data', objectWithOwnKeys([['reader', a], ['commands', [objectWithOwnKeys([['id', b], ['line', `${a}:${b}`], [b, value]])]]])]]))),
      ];
      for (const s of statuses) assert.ok(s !== 500 && s !== 0, `status ${s}`);
    }),
    { numRuns: RUNS, seed: 13 },
  );
  await assertHealthy();
});

test('sealed API: hostile action names, argument keys, file names and backup ids answer coded errors', async () => {
  await fc.assert(
    fc.asyncProperty(hostileName(), hostileName(), hostileJsonValue(), fc.constantFrom('act', 'file', 'args', 'backup', 'op'), async (name, key, value, where) => {
      let action = 'files.read';
      let args: Record<string, unknown> = { file: 'demo' };
      if (where === 'act') action = name;
      if (where === 'file') args = { file: name };
      if (where === 'args') args = objectWithOwnKeys([['file', 'demo'], [name, value], [key, value]]);
      if (where === 'backup') {
        action = 'files.restore';
        args = { file: 'demo', backup: name };
      }
      if (where === 'op') {
        action = 'files.update';
        args = { file: 'demo', ops: [objectWithOwnKeys([['op', name], ['path', [name, key]], ['value', value], [key, value]])] };
      }
      try {
        await sealed.call(action, args);
      } catch (err) {
        if (!(err instanceof SealedCallError)) throw err;
        assert.ok(err.status !== 500, `${action} ${JSON.stringify(args)} → ${err.status} ${err.code}`);
        assert.notEqual(err.code, 'SEALED_ACTION_FAILED');
      }
    }),
    { numRuns: RUNS, seed: 17 },
  );
  await assertHealthy();
});

test('the prototype keys themselves, one by one, in the most direct positions', async () => {
  const cardPort = gw.cardBridge!.listeners.find((l) => l.kind === 'tcp')!.port;
  for (const k of PROTOTYPE_KEYS) {
    for (const method of [`RemoteProxy.${k}`, `Authentication.${k}`, `${k}.name`, `${k}.${k}`]) {
      const out = await exchange(port('tcp'), Buffer.from(`{"id":1,"method":"${method}","params":{}}\n`), 1500, Buffer.from('\n'));
      assert.match(out.toString(), /"status":"error"/, method);
    }
    const card = await exchange(cardPort, Buffer.from(`>${k}|\n>${k}:${k}:${k}\n>1:${k}\n\n`), 3000);
    assert.match(card.toString('latin1'), /@@\n$/, k);
    await assert.rejects(sealed.call(k, {}), (e: unknown) => e instanceof SealedCallError && e.code === 'SEALED_UNKNOWN_ACTION');
  }
  await assertHealthy();
});
