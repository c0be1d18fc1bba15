/**
 * The tunnel-proxy mode on /metrics: registered servers and clients, open connections, registrations by
 * role and bytes carried, read from a running relay with real tunnel-proxy clients (the library behind
 * `gatehouse tunnel --tp-server/--tp-client`); promtool accepts the page when installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { gatewayConfigSchema } from '../../src/config.ts';
import { createGateway } from '../../src/gateway.ts';
import { registerTpClient, registerTpServer } from '../../src/relay/tunnel-proxy/client.ts';
import { deadline, tempDir } from '../helpers/relay.ts';

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('tunnel-proxy metrics: servers, clients, connections, registrations by role, bytes', async (t) => {
  const config = validateConfig(gatewayConfigSchema, {
    relay: {
      listeners: [{ kind: 'tcp', port: 0 }],
      monitor: { enabled: false },
      tunnelProxy: { enabled: true, listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }] },
    },
    ops: { port: 0 },
  });
  const gw = await createGateway(config, { log: silentLogger(), baseDir: tempDir() });
  await gw.start();
  const url = gw.relay!.tunnelProxyListeners[0]!.url;
  const uuid = randomUUID();
  const scrape = async () => (await deadline(fetch(`${gw.ops!.url}/metrics`), 5000, '/metrics')).text();
  try {
    const server = await registerTpServer({ url, serverUuid: uuid, name: 'daemon' });
    const got: Buffer[] = [];
    const connected = new Promise<number>((resolve) => server.onClientConnected((c) => resolve(c.address)));
    server.onData((address, bytes) => {
      got.push(bytes);
      server.send(address, bytes);
    });
    const client = await registerTpClient({ url, serverUuid: uuid, name: 'app' });
    await connected;
    const echoed = new Promise<void>((resolve) => {
      let n = 0;
      client.onData((b) => {
        n += b.length;
        if (n >= 1000) resolve();
      });
    });
    client.write(Buffer.alloc(1000, 0xc0));
    await deadline(echoed, 5000, 'the echo');
    const text = await scrape();
    assert.equal(sample(text, 'gatehouse_relay_tunnel_proxy_servers'), 1);
    assert.equal(sample(text, 'gatehouse_relay_tunnel_proxy_clients'), 1);
    assert.equal(sample(text, 'gatehouse_relay_tunnel_proxy_connections'), 2);
    assert.equal(sample(text, 'gatehouse_relay_tunnel_proxy_registrations_total{role="server"}'), 1);
    assert.equal(sample(text, 'gatehouse_relay_tunnel_proxy_registrations_total{role="client"}'), 1);
    assert.ok((sample(text, 'gatehouse_relay_tunnel_proxy_traffic_bytes_total') ?? 0) >= 2000);
    client.destroy();
    server.destroy();
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10000 });
    if (promtool.error !== undefined) {
      if (process.env.GATEHOUSE_REQUIRE_PROMTOOL === '1') assert.fail(`promtool is required here: ${promtool.error.message}`);
      t.skip('promtool not installed (Debian package prometheus)');
    } else assert.equal(promtool.status, 0, `${promtool.stdout}${promtool.stderr}`);
  } finally {
    await gw.close({ graceMs: 0 });
  }
});
