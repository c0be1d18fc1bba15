/**
 * `gatehouse serve --workers 2` (no Redis): both workers accept on the same ports, pair through the
 * primary's table; a partner that waits in the other worker is refused cleanly (ProxyError) and keeps
 * waiting, a client that lands in its worker pairs; SIGTERM drains every worker and the primary exits 0.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { rawClient, authenticate, tempDir, NO_ERROR, TUNNEL_ESTABLISHED, type RawClient } from '../helpers/relay.ts';

const PROXY_ERROR = '"authenticationError":"AuthenticationErrorProxyError"';

test('serve --workers 2: same ports, pairing through the primary, a clean refusal across workers, SIGTERM drains all', { timeout: 30000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    `[shutdown]\ngraceMs = 300\n[relay]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }, { kind = "ws", host = "127.0.0.1", port = 0 }]\nauthenticator = { kind = "dev" }\n[relay.monitor]\nenabled = false\n`,
  );
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json']);
  const opened: RawClient[] = [];
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    const tcpUrl = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const wsUrl = /(ws:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const token = `tok-${crypto.randomUUID()}`;
    const a = await rawClient(tcpUrl);
    opened.push(a);
    a.send(authenticate(token, { name: 'alpha' }));
    await a.waitFor(NO_ERROR);
    let refused = 0;
    let b: RawClient | undefined;
    for (let i = 0; i < 10 && b === undefined; i++) {
      const x = await rawClient(i % 2 === 0 ? tcpUrl : wsUrl);
      opened.push(x);
      x.send(authenticate(token, { id: 5, name: 'beta' }));
      const first = (await x.waitFor('authenticationError')).toString();
      if (first.includes(PROXY_ERROR)) {
        await x.closed();
        if (x.kind === 'tcp') assert.equal(x.received().toString(), '{"id":5,"params":{"authenticationError":"AuthenticationErrorProxyError"},"status":"success"}\n');
        refused++;
      } else {
        assert.ok(first.includes(NO_ERROR));
        b = x;
      }
    }
    assert.ok(b !== undefined, 'a client landed in the waiting client’s worker and paired');
    assert.ok(refused >= 1, 'connections are spread over both workers (one landed in the other and was refused)');
    await a.waitFor(TUNNEL_ESTABLISHED);
    await b.waitFor(TUNNEL_ESTABLISHED);
    const aOff = a.received().length;
    const bOff = b.received().length;
    a.send('from a');
    await b.waitForBytes(bOff + 6);
    b.send('from b');
    assert.equal((await a.waitForBytes(aOff + 6)).subarray(aOff).toString(), 'from b');
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
