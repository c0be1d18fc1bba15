/**
 * The machine seen as one under `serve --workers 2` (no Redis): the primary serves the monitor socket and
 * the ops listener, and both answer from every worker. Tunnels made over both workers are all in the
 * monitor document (clients, tunnels, counts; a tunnel forwarded between workers listed once) and in
 * /metrics (counted once each), which promtool accepts. Before, every worker tried to bind the monitor
 * socket (the second failed: the gateway did not start) and /metrics showed one worker at random.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { deadline, pair, tempDir, type RawClient } from '../helpers/relay.ts';

interface Doc {
  proxyStatistic: {
    clientCount: number;
    tunnelCount: number;
    clients: { id: string; name: string; tunnelConnected: boolean }[];
    tunnels: { clientOne: string; clientTwo: string }[];
    total: { totalClientCount: number; totalTunnelCount: number };
  };
  serverName: string;
}

/** One 1.9 `refresh` on the monitor socket: the compact document. */
function refresh(path: string): Promise<Doc> {
  return deadline(
    new Promise<Doc>((resolve, reject) => {
      const s = connect({ path });
      let text = '';
      s.setEncoding('utf8');
      s.on('connect', () => s.write('{"method":"refresh","params":{"printAll":false}}\n'));
      s.on('data', (t: string) => {
        text += t;
        const nl = text.indexOf('\n');
        if (nl < 0) return;
        s.destroy();
        try {
          resolve(JSON.parse(text.slice(0, nl)) as Doc);
        } catch {
          reject(new Error(`not a JSON document: ${text}`));
        }
      });
      s.on('error', reject);
    }),
    3000,
    'monitor refresh',
  );
}

test('serve --workers 2: the monitor socket and /metrics show the tunnels of both workers', { timeout: 15000 }, async (t) => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    [
      '[shutdown]',
      'graceMs = 200',
      '[relay]',
      'listeners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]',
      'authenticator = { kind = "dev" }',
      'hello = { name = "machine" }',
      '[relay.monitor]',
      'path = "mon.sock"',
      'intervalMs = 200',
      '[ops]',
      'port = 0',
      // Tunnels across the workers are forwarded (plain clients would move): the merged view counts them once.
      '[cluster]',
      'moveClients = false',
      '',
    ].join('\n'),
  );
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json']);
  const opened: RawClient[] = [];
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 12000);
    const url = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const ops = /Ops: (http:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    assert.match(banner, /monitor: .* monitor --socket .*mon\.sock/);
    // Round robin spreads the connections over both workers (pairs within one worker or across two).
    const PAIRS = 4;
    for (let i = 0; i < PAIRS; i++) {
      const p = await pair(url, url, { nameA: `a${i}`, nameB: `b${i}` });
      opened.push(p.a, p.b);
    }
    const established = new Set(
      server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('"msg":"tunnel established"'))
        .map((l) => (JSON.parse(l) as { worker?: number }).worker),
    );
    assert.equal(established.size, 2, 'both workers relay tunnels');

    const doc = await refresh(join(dir, 'mon.sock'));
    const p = doc.proxyStatistic;
    assert.equal(doc.serverName, 'machine');
    assert.equal(p.clientCount, 2 * PAIRS, 'every client of both workers');
    assert.deepEqual(p.clients.map((c) => c.name).sort(), ['a0', 'a1', 'a2', 'a3', 'b0', 'b1', 'b2', 'b3']);
    assert.ok(p.clients.every((c) => c.tunnelConnected));
    assert.equal(p.tunnelCount, PAIRS, 'every tunnel once, forwarded ones too');
    assert.equal(p.tunnels.length, PAIRS);
    const ids = new Set(p.clients.map((c) => c.id));
    for (const tn of p.tunnels) assert.ok(ids.has(tn.clientOne) && ids.has(tn.clientTwo), 'both ends of each tunnel are listed clients');
    assert.equal(p.total.totalClientCount, 2 * PAIRS);

    const metrics = await (await fetch(`${ops}/metrics`)).text();
    assert.match(metrics, new RegExp(`^gatehouse_relay_tunnels_open ${PAIRS}$`, 'm'));
    assert.match(metrics, new RegExp(`^gatehouse_relay_connections\\{transport="tcp",state="tunnel"\\} ${2 * PAIRS}$`, 'm'));
    assert.match(metrics, new RegExp(`^gatehouse_relay_connections_total ${2 * PAIRS}$`, 'm'));
    t.diagnostic(`tunnel legs forwarded between the workers: ${/^gatehouse_relay_tunnels_forwarded (\d+)$/m.exec(metrics)?.[1] ?? '?'}`);
    assert.match(metrics, /^gatehouse_info\{version="0\.1\.0"\} 1$/m, 'one build, not one per worker');
    assert.match(metrics, /^gatehouse_front_end_ready\{front_end="relay"\} 1$/m);
    assert.equal((await fetch(`${ops}/readyz`)).status, 200);
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8', timeout: 10000 });
    if (promtool.error !== undefined) {
      if (process.env.GATEHOUSE_REQUIRE_PROMTOOL === '1') assert.fail(`promtool is required here: ${promtool.error.message}`);
      t.diagnostic('promtool not installed: output not validated');
    } else assert.equal(promtool.status, 0, `promtool check metrics:\n${promtool.stdout}${promtool.stderr}`);

    for (const c of opened) c.destroy();
    server.child.kill('SIGTERM');
    assert.equal((await server.exited(8000)).code, 0, server.stderr().slice(-2000));
  } finally {
    for (const c of opened) c.destroy();
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
});
