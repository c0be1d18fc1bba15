/**
 * `gatehouse tunnel` in nymea's tunnel-proxy mode, through the real CLI: one process as the server (a nymea
 * daemon) and others as clients (apps), over the relay's tunnel-proxy listeners (tcp and ws).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { gatehouse, runGatehouse } from '../helpers/cli.ts';
import { startRelay } from '../helpers/relay.ts';

async function startTpRelay() {
  const relay = await startRelay({
    tunnelProxy: {
      enabled: true,
      listeners: [
        { kind: 'tcp', host: '127.0.0.1', port: 0 },
        { kind: 'ws', host: '127.0.0.1', port: 0 },
      ],
    },
  });
  const url = (kind: string) => relay.server.tunnelProxyListeners.find((l) => l.kind === kind)!.url;
  return { relay, url };
}

test('--tp-server --echo and two --tp-client processes (tcp and ws): each client gets its own bytes back; the server sees them come and go', async () => {
  const { relay, url } = await startTpRelay();
  const uuid = randomUUID();
  const server = gatehouse(['tunnel', '--url', url('tcp'), '--tp-server', uuid, '--name', 'daemon', '--echo']);
  try {
    await waitFor(() => server.stderr().includes('waiting for clients'), 15000, () => server.stderr());
    // The mode has no half-close (a client that ends its side has left), so the clients keep reading.
    const a = gatehouse(['tunnel', '--url', url('tcp'), '--tp-client', uuid, '--name', 'app-a', '--keep-open'], { input: 'hello from a\n' });
    const b = gatehouse(['tunnel', '--url', url('ws'), '--tp-client', uuid, '--name', 'app-b', '--keep-open'], { input: 'and from b\n' });
    await a.waitForStdout('hello from a\n');
    await b.waitForStdout('and from b\n');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(a.stdout(), 'hello from a\n');
    assert.equal(b.stdout(), 'and from b\n');
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    await a.exited();
    await b.exited();
    await waitFor(() => /app-b .*disconnected|\(address \d+\) disconnected[\s\S]*\(address \d+\) disconnected/.test(server.stderr()), 10000, () => server.stderr());
    assert.match(server.stderr(), /client app-a \{?[0-9a-f-]+\}? connected \(address \d+\)/);
    assert.match(server.stderr(), /client app-b \{?[0-9a-f-]+\}? connected \(address \d+\)/);
  } finally {
    server.child.kill('SIGTERM');
    await server.exited();
    await relay.close();
  }
});

test('--tp-server without --echo: a client\'s bytes reach the server\'s stdout; a client of an unknown server is refused (exit 1)', async () => {
  const { relay, url } = await startTpRelay();
  const uuid = randomUUID();
  const server = gatehouse(['tunnel', '--url', url('ws'), '--tp-server', uuid]);
  try {
    await waitFor(() => server.stderr().includes('waiting for clients'), 15000, () => server.stderr());
    const client = gatehouse(['tunnel', '--url', url('tcp'), '--tp-client', uuid, '--keep-open'], { input: 'bytes \u00c0\u00db for the daemon\n' });
    await server.waitForStdout('bytes \u00c0\u00db for the daemon\n');
    client.child.kill('SIGTERM');
    await client.exited();
    const stray = await runGatehouse(['tunnel', '--url', url('tcp'), '--tp-client', randomUUID()], { input: '' });
    assert.equal(stray.code, 1);
    assert.match(stray.stderr, /TunnelProxyErrorServerNotFound/);
  } finally {
    server.child.kill('SIGTERM');
    await server.exited();
    await relay.close();
  }
});

test('exactly one role: --token, --tp-server or --tp-client (usage error otherwise)', async () => {
  const none = await runGatehouse(['tunnel', '--url', 'tcp://127.0.0.1:1']);
  assert.equal(none.code, 64);
  assert.match(none.stderr, /exactly one of --token/);
  const two = await runGatehouse(['tunnel', '--url', 'tcp://127.0.0.1:1', '--token', 'x', '--tp-client', randomUUID()]);
  assert.equal(two.code, 64);
  const echo = await runGatehouse(['tunnel', '--url', 'tcp://127.0.0.1:1', '--token', 'x', '--echo']);
  assert.equal(echo.code, 64);
});

async function waitFor(pred: () => boolean, ms: number, what: () => string): Promise<void> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out; saw: ${what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
