/**
 * Presence values stay small and readers stay safe: client-chosen names are cut before they go to Redis,
 * and a value no node of ours writes (oversized) is counted unreadable without being downloaded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PresencePublisher, readClusterView } from '../../src/relay/cluster/presence.ts';
import { createRedisClient, closeRedisClient } from '../../src/core/redis.ts';
import { silentLogger } from '../../src/core/log.ts';
import type { NodeSummary } from '../../src/relay/monitor.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
before(async () => {
  if (skip === false) redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

const client = () => createRedisClient({ redisUrl: redis.socket, commandTimeoutMs: 1000, log: silentLogger(), errorCode: 'RELAY_PRESENCE_FAILED', errorMessage: 'test' });

test('names in a node\'s presence are cut to 128 characters; an oversized value is skipped, not downloaded', { skip, timeout: 10000 }, async () => {
  const long = 'N'.repeat(10_000);
  const peer = (id: string) => ({ id, name: long, userName: long, address: '127.0.0.1' });
  const summary: NodeSummary = {
    connections: { tcp: 2 },
    clients: 2,
    waiting: 0,
    tunnels: 1,
    forwarded: 0,
    totalClients: 2,
    totalTunnels: 1,
    totalTraffic: 0,
    tunnelList: [{ one: peer('{a}'), two: peer('{b}'), bytes: 0, timestamp: 0 }],
    tunnelsNotListed: 0,
  };
  const pub = new PresencePublisher({ redis: client(), nodeId: 'bounded', keyPrefix: 'pb:', intervalMs: 100, version: 'test', summary: () => summary, log: silentLogger() });
  const reader = client();
  try {
    await pub.start();
    await reader.connect();
    let raw: string | null = null;
    for (let i = 0; i < 50 && raw === null; i++) {
      raw = await reader.get('pb:node:bounded');
      if (raw === null) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(raw !== null);
    assert.ok(raw.length < 2000, `value of ${raw.length} bytes`);
    const view = await readClusterView(reader, 'pb:');
    const t = view.nodes[0]!.relay!.tunnelList[0]!;
    assert.equal(t.one.name.length, 128);
    assert.ok(t.one.name.endsWith('…'));
    // A value not written by a node of ours: 2 MB under a listed node id.
    await reader.zadd('pb:nodes', Date.now() + 60_000, 'huge');
    await reader.set('pb:node:huge', 'x'.repeat(2 * 1024 * 1024));
    const before = Number(/total_net_output_bytes:(\d+)/.exec(await reader.info('stats'))![1]);
    const view2 = await readClusterView(reader, 'pb:');
    const sent = Number(/total_net_output_bytes:(\d+)/.exec(await reader.info('stats'))![1]) - before;
    assert.equal(view2.unreadable, 1);
    assert.deepEqual(view2.nodes.map((n) => n.node), ['bounded']);
    assert.ok(sent < 256 * 1024, `Redis sent ${sent} bytes for the view`);
  } finally {
    await pub.close();
    await closeRedisClient(reader);
  }
});
