/**
 * `gatehouse serve --workers 2` without Redis, tunnel-proxy mode: the primary holds the directory of
 * servers, so a nymea server registered in one worker is reached by clients that land in either worker
 * (round robin spreads them), over tcp and ws, with data both ways byte for byte; a client that leaves is
 * announced; the worker holding the server dying closes them all, and the server registers again at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { tempDir, deadline } from '../helpers/relay.ts';
import { tpServer, tpClient } from '../relay/tunnel-proxy/harness.ts';

test('serve --workers 2: a tunnel-proxy server in one worker, clients spread over both all reach it', { timeout: 30000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    `[shutdown]\ngraceMs = 200\n[relay]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]\nauthenticator = { kind = "dev" }\n[relay.monitor]\nenabled = false\n[relay.tunnelProxy]\nenabled = true\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }, { kind = "ws", host = "127.0.0.1", port = 0 }]\n`,
  );
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json', '--log-level', 'debug']);
  const clients: Awaited<ReturnType<typeof tpClient>>[] = [];
  try {
    await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    const urls = /"tunnelProxyListeners":\["(tcp:\/\/[^"]+)","(ws:\/\/[^"]+)"\]/.exec(server.stderr());
    assert.ok(urls !== null, 'the tunnel-proxy listeners are logged');
    const [, tcpUrl, wsUrl] = urls as unknown as [string, string, string];
    const sid = crypto.randomUUID();
    const s = await tpServer(tcpUrl, sid, 'nymea');
    const addresses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const c = await tpClient(i % 2 === 0 ? wsUrl : tcpUrl, sid, `app ${i}`);
      clients.push(c);
      assert.equal(c.raw.received().subarray(0, c.offset).toString(), '{"id":1,"params":{"tunnelProxyError":"TunnelProxyErrorNoError"},"status":"success"}\n');
      addresses.push(await s.waitClient(`app ${i}`));
    }
    assert.equal(new Set(addresses).size, 6);
    for (const [i, c] of clients.entries()) {
      const down = Buffer.from([i, 0xc0, 0xdb, 0x0a, 0xff]);
      s.send(addresses[i]!, down);
      assert.deepEqual((await c.raw.waitForBytes(c.offset + down.length)).subarray(c.offset), down);
      c.raw.send(`up ${i}`);
      assert.equal((await s.waitData(addresses[i]!, 4)).toString(), `up ${i}`);
    }
    // Round robin put some clients in the other worker: they were forwarded to the server's worker.
    const forwarded = server.stderr().split('\n').filter((l) => l.includes('tunnel-proxy client forwarded to its server node'));
    assert.ok(forwarded.length >= 2, `clients in the other worker were forwarded (${forwarded.length})`);
    clients[1]!.raw.destroy();
    await s.waitControl((m) => m.notification === 'TunnelProxy.ClientDisconnected' && (m.params as { socketAddress: number }).socketAddress === addresses[1]);
    // The worker holding the server dies (SIGKILL): clients in the other worker are closed as when a server
    // goes, the primary forgets the server at once, and it registers again at its next connection.
    const line = server.stderr().split('\n').find((l) => l.includes('"tunnel-proxy server registered"'));
    const pid = Number(/"pid":(\d+)/.exec(line ?? '')?.[1]);
    assert.ok(pid > 0 && pid !== server.child.pid, 'the worker holding the server is known');
    process.kill(pid, 'SIGKILL');
    for (const c of clients) await deadline(c.raw.closed(), 5000, 'clients closed when their server went');
    const ws = clients.filter((c) => c.raw.kind === 'ws').map((c) => c.raw.closed());
    assert.ok((await Promise.all(ws)).some((how) => how.code === 1011 && how.reason === 'Server disconnected'), 'a forwarded WebSocket client got the close of a server gone');
    const again = await tpServer(tcpUrl, sid, 'nymea again');
    const back = await tpClient(wsUrl, sid, 'after the death');
    const a = await again.waitClient('after the death');
    back.raw.send('alive');
    assert.equal((await again.waitData(a, 5)).toString(), 'alive');
    again.raw.destroy();
    await back.raw.closed();
    // The primary started a replacement worker; a shutdown sent while it starts would be lost (it listens for
    // it only once started), so wait until it listens.
    const listening = () => server.stderr().split('"relay listening"').length - 1;
    for (let i = 0; i < 300 && listening() < 3; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(listening(), 3, 'the replacement worker listens');
    server.child.kill('SIGTERM');
    assert.equal((await server.exited(10000)).code, 0, server.stderr().slice(-2000));
  } finally {
    for (const c of clients) c.raw.destroy();
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
});
