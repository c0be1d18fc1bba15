/**
 * The cluster seen as one, with Redis: two spawned `gatehouse serve` nodes on one real redis-server, each
 * with a tunnel, publish their presence; `gatehouse monitor --cluster --json` lists both nodes and both
 * tunnels; node A's /metrics counts both nodes and each node's tunnels (promtool accepts it); a node
 * killed with SIGKILL leaves the view within its TTL (three presence periods).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { gatehouse, runGatehouse, type Spawned } from '../helpers/cli.ts';
import { pair, tempDir, type RawClient } from '../helpers/relay.ts';
import { readClusterView, type ClusterView } from '../../src/relay/cluster/presence.ts';
import { startRedis, skipUnlessRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
const PERIOD_MS = 200;
const TTL_MS = 3 * PERIOD_MS;

function nodeConfig(dir: string, node: string, socket: string, ops: boolean): string {
  const file = join(dir, `${node}.toml`);
  writeFileSync(
    file,
    [
      '[shutdown]',
      'graceMs = 200',
      '[relay]',
      'listeners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]',
      'authenticator = { kind = "dev" }',
      '[relay.monitor]',
      'enabled = false',
      ...(ops ? ['[ops]', 'port = 0'] : []),
      '[cluster]',
      `redisUrl = "${socket}"`,
      'secret = "cluster-view-test-secret-0123456789"',
      `nodeId = "${node}"`,
      `presenceIntervalMs = ${PERIOD_MS}`,
      '',
    ].join('\n'),
  );
  return file;
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  let last: T | undefined;
  while (Date.now() < end) {
    last = await read();
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
}

test('two nodes on one Redis: monitor --cluster --json lists both nodes and tunnels, /metrics counts them, a SIGKILLed node leaves within its TTL', { skip, timeout: 15000 }, async (t) => {
  const redis = await startRedis();
  const dir = tempDir();
  const servers: Spawned[] = [];
  const clients: RawClient[] = [];
  const reader = new Redis({ path: redis.socket, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    const cfgA = nodeConfig(dir, 'node-a', redis.socket, true);
    const cfgB = nodeConfig(dir, 'node-b', redis.socket, false);
    const a = gatehouse(['serve', '--config', cfgA, '--log-format', 'json']);
    const b = gatehouse(['serve', '--config', cfgB, '--log-format', 'json']);
    servers.push(a, b);
    const [outA, outB] = await Promise.all([a.waitForStdout(/Press Ctrl-C/, 10000), b.waitForStdout(/Press Ctrl-C/, 10000)]);
    const urlA = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(outA)![1]!;
    const urlB = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(outB)![1]!;
    const opsA = /Ops: (http:\/\/127\.0\.0\.1:\d+)/.exec(outA)![1]!;
    // One tunnel on each node (both clients of a tunnel on the same node).
    for (const [url, names] of [[urlA, ['fridge', 'phone']], [urlB, ['heater', 'tablet']]] as const) {
      const p = await pair(url, url, { nameA: names[0], nameB: names[1] });
      clients.push(p.a, p.b);
    }
    await reader.connect();
    const tunnelsOf = (v: ClusterView, node: string) => v.nodes.find((n) => n.node === node)?.relay?.tunnels ?? 0;
    await until(() => readClusterView(reader, 'gatehouse:'), (v) => tunnelsOf(v, 'node-a') === 1 && tunnelsOf(v, 'node-b') === 1, 3000, 'both tunnels published');

    // The CLI and the scrape at the same time (a spawned CLI takes a while to start).
    const [mon, metrics] = await Promise.all([runGatehouse(['monitor', '--cluster', '--json', '--config', cfgA], { ms: 10000 }), fetch(`${opsA}/metrics`).then((r) => r.text())]);
    assert.equal(mon.code, 0, mon.stderr);
    const view = JSON.parse(mon.stdout) as ClusterView;
    assert.deepEqual(view.nodes.map((n) => n.node), ['node-a', 'node-b']);
    assert.equal(view.unreadable, 0);
    for (const [node, names] of [['node-a', ['fridge', 'phone']], ['node-b', ['heater', 'tablet']]] as const) {
      const n = view.nodes.find((x) => x.node === node)!;
      assert.equal(n.version, '0.1.0');
      assert.ok(n.startedAt <= Date.now() && n.startedAt > Date.now() - 60000);
      assert.equal(n.relay?.tunnels, 1);
      assert.equal(n.relay?.clients, 2);
      assert.equal(n.relay?.connections.tcp, 2);
      assert.equal(n.relay?.tunnelList.length, 1);
      assert.deepEqual([n.relay.tunnelList[0]!.one.name, n.relay.tunnelList[0]!.two.name].sort(), [...names].sort());
      assert.match(n.forward ?? '', /^127\.0\.0\.1:\d+$/, 'the forward address other nodes reach it at');
    }

    assert.match(metrics, /^gatehouse_cluster_nodes 2$/m);
    assert.match(metrics, /^gatehouse_cluster_presence_up 1$/m);
    assert.match(metrics, /^gatehouse_cluster_node_tunnels\{node="node-a"\} 1$/m);
    assert.match(metrics, /^gatehouse_cluster_node_tunnels\{node="node-b"\} 1$/m);
    assert.match(metrics, /^gatehouse_cluster_node_connections\{node="node-b"\} 2$/m);
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8', timeout: 10000 });
    if (promtool.error !== undefined) {
      if (process.env.GATEHOUSE_REQUIRE_PROMTOOL === '1') assert.fail(`promtool is required here: ${promtool.error.message}`);
      t.diagnostic('promtool not installed: output not validated');
    } else assert.equal(promtool.status, 0, `promtool check metrics:\n${promtool.stdout}${promtool.stderr}`);

    // SIGKILL: nothing is cleaned up by node B; its key expires.
    b.child.kill('SIGKILL');
    const killedAt = Date.now();
    await b.exited(5000);
    await until(() => readClusterView(reader, 'gatehouse:'), (v) => !v.nodes.some((n) => n.node === 'node-b'), TTL_MS + 2000, 'node-b gone');
    const goneMs = Date.now() - killedAt;
    t.diagnostic(`node-b left the view ${goneMs} ms after SIGKILL (TTL ${TTL_MS} ms)`);
    assert.ok(goneMs <= TTL_MS + 250, `gone within the TTL (${goneMs} ms)`);
    const after = await until(() => fetch(`${opsA}/metrics`).then((r) => r.text()), (m) => /^gatehouse_cluster_nodes 1$/m.test(m), 2000, 'metrics: one node');
    assert.doesNotMatch(after, /node="node-b"/);
  } finally {
    for (const c of clients) c.destroy();
    for (const s of servers) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
    reader.disconnect();
    await redis.stop();
  }
});
