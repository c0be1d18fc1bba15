import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, rawClient, authenticate, pair, lines, request, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay } from '../helpers/relay.ts';

let relay: StartedRelay;
before(async () => {
  relay = await startRelay();
});
after(() => relay.close());

test('token-only pairing over TCP: exact handshake bytes, then data both ways', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send('{"id":0,"method":"Authentication.Authenticate","params":{"name":"alpha","token":"tok-1","uuid":"{E1D4D9B0-1C2A-4F51-9C1E-0A0B0C0D0E0F}"}}\n');
  await a.waitFor(NO_ERROR);
  assert.equal(a.received().toString(), '{"id":0,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}\n');
  const b = await rawClient(relay.url('tcp'));
  b.send('{"id":7,"method":"Authentication.Authenticate","params":{"name":"beta","token":"tok-1","uuid":"5f0c3c2e-0000-4000-8000-000000000001"}}\n');
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  const aLines = lines(a.received());
  const bLines = lines(b.received());
  assert.match(aLines[1]!, /^\{"id":\d+,"notification":"RemoteProxy.TunnelEstablished","params":\{"name":"beta","uuid":"5f0c3c2e-0000-4000-8000-000000000001"\}\}$/);
  assert.equal(bLines[0], '{"id":7,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}');
  assert.match(bLines[1]!, /^\{"id":\d+,"notification":"RemoteProxy.TunnelEstablished","params":\{"name":"alpha","uuid":"e1d4d9b0-1c2a-4f51-9c1e-0a0b0c0d0e0f"\}\}$/);
  const aOff = a.received().length;
  const bOff = b.received().length;
  a.send(Buffer.from([0, 1, 2, 0xff, 0xfe, 0x7d, 0x0a, 0x7b]));
  const got = await b.waitForBytes(bOff + 8);
  assert.deepEqual(got.subarray(bOff), Buffer.from([0, 1, 2, 0xff, 0xfe, 0x7d, 0x0a, 0x7b]));
  b.send('pong');
  assert.equal((await a.waitForBytes(aOff + 4)).subarray(aOff).toString(), 'pong');
  // a half-closes: b gets the rest and then FIN; b may still answer until it ends too.
  a.send('last');
  a.end();
  await b.closed();

  assert.ok(b.received().subarray(bOff).toString().endsWith('last'));
  b.send('reply after half-close');
  await a.waitFor('reply after half-close');
  b.end();
  await a.closed();
});

test('mixed transports: WS to TCP relays bytes exactly', async () => {
  const { a, b, aOffset, bOffset } = await pair(relay.url('ws'), relay.url('tcp'));
  b.send(Buffer.from('hello from tcp'));
  assert.equal((await a.waitForBytes(aOffset + 14)).subarray(aOffset).toString(), 'hello from tcp');
  a.send(Buffer.from([0x00, 0xc3]), { binary: true });
  assert.deepEqual((await b.waitForBytes(bOffset + 2)).subarray(bOffset), Buffer.from([0x00, 0xc3]));
  b.end();
  const how = await a.closed();
  assert.equal(how.code, 1011);
  assert.equal(how.reason, 'Tunnel client disconnected');
});

test('second Authenticate before partner counts as data', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send(authenticate('tok-data'));
  await a.waitFor(NO_ERROR);
  a.send(authenticate('tok-data'));
  await a.closed();
  assert.equal(lines(a.received()).length, 1);
});

test('nonce pairing: same token and nonce pair; the same nonce with another token does not (FIX)', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send(authenticate('tok-A', { nonce: '67af856c4e4071833ed01128e50b3ea5' }));
  await a.waitFor(NO_ERROR);
  const intruder = await rawClient(relay.url('tcp'));
  intruder.send(authenticate('tok-B', { nonce: '67af856c4e4071833ed01128e50b3ea5' }));
  await intruder.waitFor(NO_ERROR);
  const b = await rawClient(relay.url('ws'));
  b.send(authenticate('tok-A', { nonce: '67af856c4e4071833ed01128e50b3ea5' }));
  await b.waitFor(TUNNEL_ESTABLISHED);
  await a.waitFor(TUNNEL_ESTABLISHED);
  assert.ok(!intruder.received().includes(TUNNEL_ESTABLISHED));
  const aOff = a.received().length;
  const bOff = b.received().length;
  a.send('Hello from client one :-)');
  b.send('Hello from client two :-)');
  assert.equal((await b.waitForBytes(bOff + 25)).subarray(bOff).toString(), 'Hello from client one :-)');
  assert.equal((await a.waitForBytes(aOff + 25)).subarray(aOff).toString(), 'Hello from client two :-)');
  // An empty nonce equals an absent one.
  const c = await rawClient(relay.url('tcp'));
  c.send(authenticate('tok-C', { nonce: '' }));
  await c.waitFor(NO_ERROR);
  const d = await rawClient(relay.url('tcp'));
  d.send(authenticate('tok-C'));
  await c.waitFor(TUNNEL_ESTABLISHED);
  await d.waitFor(TUNNEL_ESTABLISHED);
  for (const x of [a, b, c, d, intruder]) x.destroy();
});

test('a different nonce under the same token waits separately', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send(authenticate('tok-N', { nonce: 'one' }));
  await a.waitFor(NO_ERROR);
  const b = await rawClient(relay.url('tcp'));
  b.send(authenticate('tok-N', { nonce: 'two' }));
  await b.waitFor(NO_ERROR);
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(!a.received().includes(TUNNEL_ESTABLISHED));
  assert.ok(!b.received().includes(TUNNEL_ESTABLISHED));
  a.destroy();
  b.destroy();
});

test('three clients, one key: the third is closed without a reply; the first tunnel keeps working (FIX)', async () => {
  const { a, b, aOffset, bOffset, token } = await pair(relay.url('tcp'), relay.url('tcp'));
  const c = await rawClient(relay.url('ws'));
  c.send(authenticate(token));
  const how = await c.closed();
  assert.deepEqual(how, { code: 1011, reason: 'Tunnel already exists for this token nonce combination.' });
  assert.equal(c.received().length, 0);
  a.send('still');
  assert.equal((await b.waitForBytes(bOffset + 5)).subarray(bOffset).toString(), 'still');
  b.send('alive');
  assert.equal((await a.waitForBytes(aOffset + 5)).subarray(aOffset).toString(), 'alive');
  // Closes still propagate in the surviving tunnel.
  a.destroy();
  await b.closed();
});

test('duplicate uuid: both clients are closed; the second gets no Authenticate reply', async () => {
  const uuid = crypto.randomUUID();
  const a = await rawClient(relay.url('ws'));
  a.send(authenticate('tok-dup', { uuid }));
  await a.waitFor(NO_ERROR);
  const b = await rawClient(relay.url('ws'));
  b.send(authenticate('tok-dup', { uuid: `{${uuid.toUpperCase()}}` }));
  assert.deepEqual(await a.closed(), { code: 1011, reason: 'Duplicated client UUID.' });
  assert.deepEqual(await b.closed(), { code: 1011, reason: 'Duplicated client UUID.' });
  assert.equal(b.received().length, 0);
  // The key is free again.
  await pair(relay.url('tcp'), relay.url('tcp'), { token: 'tok-dup' });
});

test('same uuid with a nonce: "Client loop detected." (nymea 1.x nonce path)', async () => {
  const uuid = crypto.randomUUID();
  const a = await rawClient(relay.url('ws'));
  a.send(authenticate('tok-loop', { uuid, nonce: 'n' }));
  await a.waitFor(NO_ERROR);
  const b = await rawClient(relay.url('ws'));
  b.send(authenticate('tok-loop', { uuid, nonce: 'n' }));
  assert.deepEqual(await a.closed(), { code: 1011, reason: 'Client loop detected.' });
  assert.deepEqual(await b.closed(), { code: 1011, reason: 'Client loop detected.' });
});

test('a waiting client that disconnects is forgotten; a key is reusable after its tunnel closed', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send(authenticate('tok-reuse'));
  await a.waitFor(NO_ERROR);
  a.destroy();
  await new Promise((r) => setTimeout(r, 30));
  const first = await pair(relay.url('tcp'), relay.url('tcp'), { token: 'tok-reuse' });
  first.a.destroy();
  await first.b.closed();
  await new Promise((r) => setTimeout(r, 30));
  const second = await pair(relay.url('ws'), relay.url('tcp'), { token: 'tok-reuse' });
  second.a.send('again');
  await second.b.waitFor('again');
});

test('data sent before TunnelEstablished closes the client with the reason', async () => {
  const a = await rawClient(relay.url('ws'));
  a.send(authenticate('tok-early'));
  await a.waitFor(NO_ERROR);
  a.send('too early');
  assert.deepEqual(await a.closed(), { code: 1011, reason: 'Data received while authenticated but not remote connected.' });
  // Raw bytes pipelined right behind Authenticate count too (a JSON request there is answered, as by nymea).
  const b = await rawClient(relay.url('tcp'));
  b.send(authenticate('mock:100:AuthenticationErrorNoError'));
  await new Promise((r) => setTimeout(r, 20));
  b.send('raw tunnel bytes');
  await b.closed();
  assert.equal(lines(b.received()).length, 1);
});

test('the notification and relayed data never share a read (20 rounds)', async () => {
  for (let i = 0; i < 20; i++) {
    const token = `tok-split-${i}`;
    const a = await rawClient(relay.url('tcp'));
    a.send(authenticate(token));
    await a.waitFor(NO_ERROR);
    // a answers the notification at once with data; b must see its notification alone first.
    const aSocket = a.socket!;
    aSocket.on('data', (d: Buffer) => {
      if (d.includes(TUNNEL_ESTABLISHED)) aSocket.write('X'.repeat(100));
    });
    const b = await rawClient(relay.url('tcp'));
    const firstReads: Buffer[] = [];
    b.socket!.on('data', (d: Buffer) => firstReads.push(d));
    b.send(authenticate(token));
    await b.waitFor('X'.repeat(100));
    const withNotification = firstReads.find((d) => d.includes(TUNNEL_ESTABLISHED))!;
    assert.ok(withNotification.toString().endsWith('}\n'), `notification shared a read with data: ${withNotification.toString()}`);
    a.destroy();
    b.destroy();
  }
});

test('stock client quirks: "id":0 on every request, braces in uuids, nonce omitted', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send('{"id":0,"method":"RemoteProxy.Hello"}\n');
  await a.waitFor('"status":"success"');
  a.send('{"id":0,"method":"Authentication.Authenticate","params":{"name":"nymea","token":"tok-stock","uuid":"{11111111-2222-3333-4444-555555555555}"}}\n');
  await a.waitFor(NO_ERROR);
  const b = await rawClient(relay.url('ws'));
  b.send('{"id":0,"method":"Authentication.Authenticate","params":{"name":"app","token":"tok-stock","uuid":"{AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE}"}}');
  await b.waitFor(TUNNEL_ESTABLISHED);
  assert.ok(b.received().toString().includes('"params":{"name":"nymea","uuid":"11111111-2222-3333-4444-555555555555"}'));
  await a.waitFor('"uuid":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"');
  a.destroy();
  b.destroy();
});

test('an unparsable uuid is shown to the partner as the null uuid', async () => {
  const { a } = await pair(relay.url('tcp'), relay.url('tcp'), { nameB: 'odd' });
  assert.ok(a.received().includes('"uuid":"'));
  const c = await rawClient(relay.url('tcp'));
  c.send(authenticate('tok-null', { uuid: 'not-a-uuid' }));
  await c.waitFor(NO_ERROR);
  const d = await rawClient(relay.url('tcp'));
  d.send(authenticate('tok-null'));
  await d.waitFor('"uuid":"00000000-0000-0000-0000-000000000000"');
  c.destroy();
  d.destroy();
});

test('notification ids come from one counter per server', async () => {
  const ids: number[] = [];
  for (let i = 0; i < 3; i++) {
    const { a, b } = await pair(relay.url('tcp'), relay.url('tcp'));
    for (const c of [a, b]) {
      const note = lines(c.received()).find((l) => l.includes(TUNNEL_ESTABLISHED))!;
      ids.push((JSON.parse(note) as { id: number }).id);
    }
  }
  const sorted = [...ids].sort((x, y) => x - y);
  assert.equal(new Set(ids).size, 6);
  for (let i = 1; i < sorted.length; i++) assert.equal(sorted[i], sorted[i - 1]! + 1);
});

test('while the authenticator runs, Hello is answered at once (as nymea); a second Authenticate closes', async () => {
  const a = await rawClient(relay.url('tcp'));
  a.send(`${authenticate('mock:300:AuthenticationErrorNoError', { id: 1 }).trimEnd()}\n${request(2, 'RemoteProxy.Hello').trimEnd()}\n`);
  await a.waitFor('"id":2,');
  assert.ok(!a.received().includes('"id":1,'), 'Hello answered before the slow Authenticate');
  await a.waitFor(NO_ERROR);
  assert.equal(a.isClosed, false);
  const b = await rawClient(relay.url('tcp'));
  b.send(authenticate('mock:300:AuthenticationErrorNoError'));
  await new Promise((r) => setTimeout(r, 50));
  b.send(authenticate('mock:300:AuthenticationErrorNoError'));
  await b.closed();
  assert.equal(b.received().length, 0);
  a.destroy();
});
