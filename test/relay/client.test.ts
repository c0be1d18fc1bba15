/**
 * The relay client (src/relay/client.ts, what `gatehouse tunnel` runs on): partner bytes and the tunnel's
 * end that arrive after TunnelEstablished but before the caller asked for them (`onData`, `onEnd`) are
 * kept and delivered then, in order. Before, a WebSocket frame in that gap was dropped (a flaky CLI test).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTunnel } from '../../src/relay/client.ts';
import { startRelay, rawClient, authenticate, NO_ERROR, TUNNEL_ESTABLISHED } from '../helpers/relay.ts';

for (const kind of ['ws', 'tcp'] as const) {
  test(`${kind}: bytes and the end that come before onData/onEnd are delivered once asked, in order`, { timeout: 10_000 }, async () => {
    const relay = await startRelay();
    try {
      const token = `early-${crypto.randomUUID()}`;
      const a = await rawClient(relay.url('tcp'));
      a.send(authenticate(token, { name: 'a' }));
      await a.waitFor(NO_ERROR);
      const opening = openTunnel({ url: relay.url(kind), token, name: 'b', timeoutMs: 5000 });
      await a.waitFor(TUNNEL_ESTABLISHED);
      // Three separate writes after the notification (separate WS frames), then the end.
      a.send('one ');
      await new Promise((r) => setTimeout(r, 20));
      a.send('two ');
      await new Promise((r) => setTimeout(r, 20));
      a.send('three');
      a.end();
      const t = await opening;
      // The caller takes its time before asking.
      await new Promise((r) => setTimeout(r, 200));
      const got: string[] = [];
      const ended = new Promise<string>((resolve) => {
        t.onData((b) => got.push(b.toString()));
        t.onEnd(resolve);
      });
      await ended;
      assert.equal(got.join(''), 'one two three');
      t.destroy();
    } finally {
      await relay.close();
    }
  });
}
