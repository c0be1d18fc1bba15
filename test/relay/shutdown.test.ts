/** Graceful shutdown: stop accepting, tell clients, let tunnels drain within the grace period. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startRelay, rawClient, pair, authenticate, NO_ERROR, deadline } from '../helpers/relay.ts';

test('close(): clients not in a tunnel get "Stop server" (WS 1000); tunnels keep relaying within the grace, then close', async () => {
  // closeFlushMs bounds how long a peer that never closes its side (these raw clients) can hold us up.
  const relay = await startRelay({ timeouts: { closeFlushMs: 300 } });
  const waiting = await rawClient(relay.url('ws'));
  waiting.send(authenticate('tok-shutdown'));
  await waiting.waitFor(NO_ERROR);
  const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url('ws'));
  const port = relay.port('tcp');
  const t0 = Date.now();
  const closing = relay.server.close({ graceMs: 400 });
  assert.deepEqual(await waiting.closed(), { code: 1000, reason: 'Stop server' });
  // New connections are refused.
  await assert.rejects(
    new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port });
      s.on('connect', () => resolve(s));
      s.on('error', reject);
    }),
  );
  // The tunnel still works during the grace period.
  a.send('draining');
  await b.waitFor('draining');
  assert.equal(b.received().subarray(bOffset).toString(), 'draining');
  assert.deepEqual(await b.closed(3000), { code: 1000, reason: 'Stop server' });
  await a.closed(3000);
  await deadline(closing, 3000, 'close() to resolve');
  assert.ok(Date.now() - t0 >= 350, 'tunnels had their grace period');
  assert.equal(relay.server.sessions.size, 0);
});

test('close() resolves early when every tunnel ends before the grace period', async () => {
  const relay = await startRelay();
  const { a, b } = await pair(relay.url('tcp'), relay.url('tcp'));
  const t0 = Date.now();
  const closing = relay.server.close({ graceMs: 5000 });
  a.destroy();
  await b.closed();
  b.destroy();
  await deadline(closing, 3000, 'close()');
  assert.ok(Date.now() - t0 < 3000);
});
