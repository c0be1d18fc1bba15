/**
 * The primary's side of the machine view, without processes: questions to workers are answered with what
 * came by the deadline (a hung worker or one that exits never blocks an answer; late answers are dropped),
 * and worker monitor documents merge into one nymea document (sums, lists, a forwarded tunnel once).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkerQuestions, type WorkerHandle } from '../../src/ops/workers.ts';
import { mergeMonitorDocuments } from '../../src/relay/monitor.ts';
import { toCompactJson } from '../../src/relay/protocol/json.ts';

function worker(id: number, answer: 'now' | 'never', q: () => WorkerQuestions): WorkerHandle & { asked: unknown[] } {
  const asked: unknown[] = [];
  return {
    id,
    asked,
    isConnected: () => true,
    send(m: unknown) {
      asked.push(m);
      const { id: qid } = m as { id: number };
      if (answer === 'now') setImmediate(() => q().onMessage(id, { gh: 'view', id: qid, traffic: { relay: id * 10, tunnelProxy: 0 } }));
      return true;
    },
  };
}

test('questions: every worker answers; a hung one costs only its share after the deadline; an exited one is dropped at once', { timeout: 5000 }, async () => {
  let q: WorkerQuestions | undefined;
  const ws = [worker(1, 'now', () => q!), worker(2, 'now', () => q!), worker(3, 'never', () => q!)];
  q = new WorkerQuestions(() => ws.slice(0, 2));
  assert.deepEqual((await q.ask('traffic', 1000)).map((a) => a.traffic?.relay).sort(), [10, 20]);

  q = new WorkerQuestions(() => ws);
  const t0 = Date.now();
  const answers = await q.ask('traffic', 150);
  assert.deepEqual(answers.map((a) => a.traffic?.relay).sort(), [10, 20]);
  assert.ok(Date.now() - t0 >= 140, 'waited for the hung worker until the deadline');
  // The hung worker's late answer is not an error and changes nothing.
  assert.equal(q.onMessage(3, { gh: 'view', id: 1, traffic: { relay: 99, tunnelProxy: 0 } }), true);

  const pending = q.ask('traffic', 10000);
  q.dropWorker(3);
  assert.equal((await pending).length, 2, 'answered as soon as the exited worker was dropped');
  assert.equal(q.onMessage(1, { not: 'ours' }), false);
});

test('merge: counts and totals summed, clients and tunnels listed, a tunnel forwarded between workers listed once', () => {
  const hello = { hello: { server: 'gatehouse', apiVersion: '5', name: 'machine', version: '1.8.4' } };
  const client = (id: string) => ({ address: '127.0.0.1', authenticated: true, id, name: id, rxDataCount: 1, timestamp: 1, tunnelConnected: true, txDataCount: 1, userName: '', uuid: '{u}' });
  const doc = (clients: string[], tunnels: [string, string][], totalTraffic: number) => ({
    apiVersion: '5',
    proxyStatistic: { clientCount: clients.length, clients: clients.map(client), total: { totalClientCount: clients.length, totalTraffic, totalTunnelCount: tunnels.length }, troughput: 0, tunnelCount: tunnels.length, tunnels: tunnels.map(([a, b]) => ({ clientOne: a, clientTwo: b, timestamp: 1 })) },
    serverName: 'machine',
    serverVersion: '1.8.4',
    tunnelProxyStatistic: { clientConnectionsCount: 0, serverConnectionsCount: 1, totalClientCount: 1, totalTraffic: 5, transports: { tcp: 1 }, troughput: 0, tunnelConnections: [{ id: 's' }] },
  });
  // Worker 1: a local tunnel (a–b) and its half of a forwarded one (c–x); worker 2: the other half (x–c).
  const merged = mergeMonitorDocuments(hello, [doc(['{a}', '{b}', '{c}'], [['{a}', '{b}'], ['{c}', '{x}']], 100), doc(['{x}'], [['{x}', '{c}']], 50)]);
  assert.equal(
    toCompactJson(merged),
    '{"apiVersion":"5","proxyStatistic":{"clientCount":4,"clients":[' +
      ['{a}', '{b}', '{c}', '{x}'].map((id) => toCompactJson(client(id))).join(',') +
      '],"total":{"totalClientCount":4,"totalTraffic":150,"totalTunnelCount":3},"troughput":0,"tunnelCount":2,"tunnels":[{"clientOne":"{a}","clientTwo":"{b}","timestamp":1},{"clientOne":"{c}","clientTwo":"{x}","timestamp":1}]},"serverName":"machine","serverVersion":"1.8.4","tunnelProxyStatistic":{"clientConnectionsCount":0,"serverConnectionsCount":2,"totalClientCount":2,"totalTraffic":10,"transports":{"tcp":2},"troughput":0,"tunnelConnections":[{"id":"s"},{"id":"s"}]}}',
  );
  assert.equal(toCompactJson(mergeMonitorDocuments(hello, [])), '{"apiVersion":"5","proxyStatistic":{"clientCount":0,"clients":[],"total":{"totalClientCount":0,"totalTraffic":0,"totalTunnelCount":0},"troughput":0,"tunnelCount":0,"tunnels":[]},"serverName":"machine","serverVersion":"1.8.4","tunnelProxyStatistic":{"clientConnectionsCount":0,"serverConnectionsCount":0,"totalClientCount":0,"transports":{},"troughput":0,"tunnelConnections":[]}}');
});
