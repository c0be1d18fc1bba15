/**
 * `gatehouse serve --workers 2` (no Redis): both workers accept on the same ports, pair through the
 * primary's table; with `moveClients = false` (else plain clients move: handoff.test.ts) a partner that
 * waits in the other worker is reached over the workers' forward sockets, so every pair gets its tunnel wherever its clients landed; SIGTERM drains every worker and
 * the primary exits 0 (and removes the forward socket directory).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { rawClient, authenticate, tempDir, NO_ERROR, type RawClient } from '../helpers/relay.ts';

const PROXY_ERROR = '"authenticationError":"AuthenticationErrorProxyError"';

test('serve --workers 2: same ports, pairing through the primary, tunnels across workers forwarded, SIGTERM drains all', { timeout: 30000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    `[shutdown]\ngraceMs = 300\n[relay]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }, { kind = "ws", host = "127.0.0.1", port = 0 }]\nauthenticator = { kind = "dev" }\n[relay.monitor]\nenabled = false\n[cluster]\nmoveClients = false\n`,
  );
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json']);
  const opened: RawClient[] = [];
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    const tcpUrl = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const wsUrl = /(ws:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    // Round robin spreads consecutive connections over both workers: pairs land on the same worker or on
    // two, and every one pairs (across workers the tunnel is forwarded over the workers' unix sockets).
    let a!: RawClient;
    let b!: RawClient;
    for (let i = 0; i < 6; i++) {
      const token = `tok-${crypto.randomUUID()}`;
      a = await rawClient(i % 2 === 0 ? tcpUrl : wsUrl);
      opened.push(a);
      a.send(authenticate(token, { name: `alpha${i}` }));
      await a.waitFor(NO_ERROR);
      b = await rawClient(i % 3 === 0 ? wsUrl : tcpUrl);
      opened.push(b);
      b.send(authenticate(token, { id: 5, name: `beta${i}` }));
      await a.waitFor(`"name":"beta${i}"`);
      await b.waitFor(`"name":"alpha${i}"`);
      assert.ok(!b.received().toString().includes(PROXY_ERROR));
      const aOff = a.received().length;
      const bOff = b.received().length;
      a.send('from a');
      assert.equal((await b.waitForBytes(bOff + 6)).subarray(bOff).toString(), 'from a');
      b.send('from b');
      assert.equal((await a.waitForBytes(aOff + 6)).subarray(aOff).toString(), 'from b');
      if (i < 5) {
        a.end();
        await b.closed();
      }
    }
    // A forwarded tunnel's far side has a negative session id in the "tunnel established" line.
    const established = server.stderr().split('\n').filter((l) => l.includes('"tunnel established"'));
    const forwarded = established.filter((l) => /"sessions":\[-\d+,|,-\d+\]/.test(l));
    assert.ok(forwarded.length >= 2, `some pairs spanned both workers and were forwarded (${forwarded.length} lines)`);
    // An open tunnel at SIGTERM: it may drain for graceMs, then every worker closes it and exits.
    server.child.kill('SIGTERM');
    const how = await server.exited(10000);
    assert.equal(how.code, 0, server.stderr().slice(-2000));
    await a.closed(5000);
    await b.closed(5000);
    assert.match(server.stderr(), /every worker drains/);
  } finally {
    for (const c of opened) c.destroy();
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
});
