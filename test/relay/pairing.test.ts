import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, rawClient, authenticate, pair, lines, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay } from '../helpers/relay.ts';

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
