/**
 * Hostile unauthenticated clients of the relay's legacy (rendezvous) mode that the other files do not
 * play: requests sent faster than their answers are read, prototype keys everywhere, messages at and past
 * maxMessageBytes cut at every byte, WebSocket frames a stock client never sends, TLS handshakes that
 * never finish. The process and the other clients must go on, every socket must end, and what is held for
 * a client that does not read must stay bounded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, rawClient, request, authenticate, selfSignedCert, tempDir, type StartedRelay } from '../helpers/relay.ts';

const BUFFER = 65536;
let relay: StartedRelay;
before(async () => {
  const dir = tempDir();
  relay = await startRelay({
    listeners: [
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { kind: 'tls', host: '127.0.0.1', port: 0 },
      { kind: 'ws', host: '127.0.0.1', port: 0 },
      { kind: 'wss', host: '127.0.0.1', port: 0 },
    ],
    tls: selfSignedCert(dir),
    limits: { tunnelBufferBytes: BUFFER },
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

/** A fresh client on `kind` is answered Hello: the relay and its other clients go on. */
async function stillServes(kind: (typeof KINDS)[number]): Promise<void> {
  const ok = await rawClient(relay.url(kind));
  ok.send(request(7, 'RemoteProxy.Hello'));
  await ok.waitFor('"id":7');
  ok.destroy();
}

for (const kind of KINDS) {
  for (const phase of ['handshake', 'authenticating'] as const) {
    test(`${kind}, ${phase}: a client that floods Introspect and never reads is dropped once its unread answers pass tunnelBufferBytes`, { timeout: 15000 }, async () => {
      const { c, session } = await clientWithSession(kind);
      c.pause();
      // The mock authenticator holds the answer for 5 s: Introspect is still answered meanwhile.
      if (phase === 'authenticating') c.send(authenticate('mock:5000:AuthenticationErrorNoError'));
      let maxPending = 0;
      const batch = INTROSPECT.repeat(100);
      // Up to ~22 MB of answers asked for (each about 2.2 KiB), in 4 KiB writes.
      for (let i = 0; i < 100 && session.state !== 'closed'; i++) {
        c.send(batch);
        await sleep(5);
        maxPending = Math.max(maxPending, session.link.pendingBytes);
      }
      assert.equal(session.state, 'closed', `still ${session.state} with ${session.link.pendingBytes} bytes unread`);
      // The limit plus the answer that crossed it.
      assert.ok(maxPending <= BUFFER + 4096, `unread answers reached ${maxPending} bytes`);
      for (let i = 0; i < 100 && !session.link.closed; i++) await sleep(10);
      assert.ok(session.link.closed, 'the socket is gone at once, not left to flush');
      await stillServes(kind);
    });
  }
}
