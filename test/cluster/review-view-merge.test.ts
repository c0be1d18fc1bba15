/**
 * Review (issue 11): the primary's merge of worker monitor documents holds for a large worker (the
 * relay's maxConnections has no upper bound: a worker may list more clients than one call can spread).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeMonitorDocuments } from '../../src/relay/monitor.ts';

test('merge: a worker listing 200,000 clients and tunnels merges (no call-stack overflow)', { timeout: 5000 }, () => {
  const hello = { hello: { server: 'gatehouse', apiVersion: '5', name: 'machine', version: '1.8.4' } };
  const n = 200_000;
  const clients = Array.from({ length: n }, (_, i) => ({ id: `{${i}}` }));
  const tunnels = Array.from({ length: n / 2 }, (_, i) => ({ clientOne: `{${2 * i}}`, clientTwo: `{${2 * i + 1}}`, timestamp: 1 }));
  const servers = Array.from({ length: n }, (_, i) => ({ id: `s${i}` }));
  const doc = { proxyStatistic: { clientCount: n, tunnelCount: n / 2, clients, tunnels, total: {} }, tunnelProxyStatistic: { tunnelConnections: servers } };
  const merged = mergeMonitorDocuments(hello, [doc, { proxyStatistic: { clients: [{ id: '{x}' }] } }]) as { proxyStatistic: { clients: unknown[]; tunnels: unknown[] }; tunnelProxyStatistic: { tunnelConnections: unknown[] } };
  assert.equal(merged.proxyStatistic.clients.length, n + 1);
  assert.equal(merged.proxyStatistic.tunnels.length, n / 2);
  assert.equal(merged.tunnelProxyStatistic.tunnelConnections.length, n);
});
