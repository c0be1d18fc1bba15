/** Each relay timeout: a stalled peer gets the right reason and close; nothing waits forever. */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, rawClient, authenticate, pair, request, NO_ERROR, type StartedRelay } from '../helpers/relay.ts';

let relay: StartedRelay;
before(async () => {
  relay = await startRelay({
    timeouts: { inactiveMs: 300, aloneMs: 300, authenticationMs: 400, jsonRpcMs: 1500, tunnelIdleMs: 400, halfCloseMs: 400 },
  });
});
after(() => relay.close());

const elapsed = (t0: number) => Date.now() - t0;

test('inactive: a client that says nothing is closed', async () => {
  const c = await rawClient(relay.url('ws'));
  const t0 = Date.now();
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'Proxy timeout occurred. The socket was inactive.' });
  assert.ok(elapsed(t0) >= 250);
  assert.equal(c.received().length, 0);
});

test('inactive is re-armed by every chunk', async () => {
  const c = await rawClient(relay.url('tcp'));
  for (let i = 0; i < 4; i++) {
    c.send(request(i, 'RemoteProxy.Hello'));
    await c.waitFor(`"id":${i},`);
    await new Promise((r) => setTimeout(r, 150));
  }
  assert.equal(c.isClosed, false);
  await c.closed();
});

test('alone: an authenticated client whose partner never comes is closed', async () => {
  const c = await rawClient(relay.url('ws'));
  c.send(authenticate('tok-alone'));
  await c.waitFor(NO_ERROR);
  const t0 = Date.now();
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'Proxy timeout occurred. The tunnel partner did not show up.' });
  assert.ok(elapsed(t0) >= 250);
});

test('authentication: a slow authenticator answers AuthenticationErrorTimeout', async () => {
  const c = await rawClient(relay.url('ws'));
  c.send(authenticate('mock:1000:AuthenticationErrorNoError'));
  await c.waitFor('\n');
  assert.equal(c.received().toString(), '{"id":0,"params":{"authenticationError":"AuthenticationErrorTimeout"},"status":"success"}\n');
  assert.deepEqual(await c.closed(), { code: 1011, reason: 'API call was not successfully.' });
});

test('jsonRpc: an async reply later than the JSON-RPC timeout is "Command timed out"', async () => {
  const r = await startRelay({ timeouts: { authenticationMs: 2000, jsonRpcMs: 200 } });
  try {
    const c = await rawClient(r.url('ws'));
    c.send(authenticate('mock:1000:AuthenticationErrorNoError', { id: 12 }));
    assert.deepEqual(await c.closed(), { code: 1011, reason: 'API call timeouted.' });
    assert.equal(c.received().toString(), '{"error":"Command timed out","id":12,"status":"error"}\n');
  } finally {
    await r.close();
  }
});

test('tunnel idle (optional, off by default): a silent tunnel is closed; a busy one is not', async () => {
  const quiet = await pair(relay.url('ws'), relay.url('ws'));
  const busy = await pair(relay.url('tcp'), relay.url('tcp'));
  const pump = setInterval(() => busy.a.send('.'), 50);
  try {
    assert.deepEqual(await quiet.a.closed(2000), { code: 1011, reason: 'Proxy timeout occurred. The tunnel was idle.' });
    assert.equal(busy.a.isClosed, false);
    assert.equal(busy.b.isClosed, false);
  } finally {
    clearInterval(pump);
  }
});

test('half-close: the other side may answer until halfCloseMs, then both are closed', async () => {
  const { a, b } = await pair(relay.url('tcp'), relay.url('tcp'));
  a.end();
  await b.closed();
  b.send('late answer');
  await a.waitFor('late answer');
  // b never ends its side: the relay gives up after halfCloseMs.
  await a.closed(2000);
});

test('the default config has no tunnel idle timeout and nymea timeouts', async () => {
  const { relayConfigSchema } = await import('../../src/relay/config.ts');
  const cfg = relayConfigSchema.parse({});
  assert.deepEqual(
    { ...cfg.timeouts },
    { inactiveMs: 8000, aloneMs: 8000, authenticationMs: 8000, jsonRpcMs: 10000, tunnelIdleMs: 0, halfCloseMs: 60000, closeFlushMs: 5000 },
  );
});
