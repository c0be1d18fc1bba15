/**
 * Review (issue 11): the terminal views of `gatehouse monitor` (one node, and `--cluster` from presence
 * documents in Redis) print names that clients chose (Authenticate's `name`) and values other nodes wrote.
 * None of their control characters reaches the operator's terminal (ESC sequences could clear the
 * screen, retitle the window or write the clipboard).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderClusterView, renderMonitorView } from '../../src/cli/monitor.ts';
import type { ClusterView } from '../../src/relay/cluster/presence.ts';

const EVIL = 'x\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m\ry';
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

test('monitor views: control characters in client-chosen names and presence values are not printed', () => {
  const peer = (id: string) => ({ id, name: EVIL, userName: EVIL, address: EVIL });
  const view: ClusterView = {
    unreadable: 0,
    nodes: [
      {
        node: 'node-a',
        version: EVIL,
        host: 'h',
        pid: 1,
        startedAt: 0,
        updatedAt: 0,
        forward: EVIL,
        relay: { connections: { tcp: 2 }, clients: 2, waiting: 0, tunnels: 1, forwarded: 0, totalClients: 2, totalTunnels: 1, totalTraffic: 0, tunnelList: [{ one: peer('{1}'), two: peer('{2}'), bytes: 0, timestamp: 0 }], tunnelsNotListed: 0 },
      },
    ],
  };
  const cluster = renderClusterView(view, 1000, { columns: 200, rows: 50, version: '1' });
  for (const line of cluster.split('\n')) assert.ok(!CONTROL.test(line), JSON.stringify(line));
  const client = (id: string) => ({ id, address: EVIL, name: EVIL, uuid: '', userName: EVIL, authenticated: true, tunnelConnected: true, rxDataCount: 0, txDataCount: 0, timestamp: 0 });
  const doc = { proxyStatistic: { clientCount: 2, tunnelCount: 1, clients: [client('{a}'), client('{b}')], tunnels: [{ clientOne: '{a}', clientTwo: '{b}', timestamp: 0 }] } };
  const local = renderMonitorView(doc, 1000, { columns: 200, rows: 50, version: '1' }).text;
  for (const line of local.split('\n')) assert.ok(!CONTROL.test(line), JSON.stringify(line));
  assert.ok(local.includes('x'), 'the printable part of the name is still shown');
});
