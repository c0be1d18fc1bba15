/** The monitor socket: 1.8.4 pushes (indented, once per interval), 1.9 refresh requests, misbehaving readers. */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { startRelay, pair, deadline, type StartedRelay } from '../helpers/relay.ts';

let relay: StartedRelay;
before(async () => {
  relay = await startRelay({ monitor: { intervalMs: 200, path: 'monitor.sock' }, hello: { name: 'mon-test' } });
});
after(() => relay.close());

function monitorClient(): Promise<{ socket: Socket; text: () => string; closed: Promise<void> }> {
  const socket = connect({ path: relay.server.monitorPath! });
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (t: string) => (text += t));
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve({ socket, text: () => text, closed }));
    socket.once('error', reject);
  });
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  await deadline(new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (cond()) {
        clearInterval(t);
        resolve();
      }
    }, 10);
  }), ms, what);
}

test('1.8.4 push: an indented document per interval with clients, tunnels and totals', async () => {
  const { a, b } = await pair(relay.url('tcp'), relay.url('ws'), { nameA: 'fridge', nameB: 'phone' });
  a.send('x'.repeat(1000));
  await b.waitFor('x'.repeat(1000));
  const m = await monitorClient();
  await until(() => m.text().endsWith('}\n\n') && m.text().includes('"proxyStatistic"'), 2000, 'first push');
  const first = m.text();
  assert.match(first, /^\{\n {4}"apiVersion": "5",\n {4}"proxyStatistic": \{\n/);
  const doc = JSON.parse(first) as {
    serverName: string;
    serverVersion: string;
    proxyStatistic: {
      clientCount: number;
      tunnelCount: number;
      troughput: number;
      clients: { name: string; tunnelConnected: boolean; authenticated: boolean; rxDataCount: number; address: string; id: string; uuid: string; userName: string }[];
      tunnels: { clientOne: string; clientTwo: string; timestamp: number }[];
      total: { totalClientCount: number; totalTunnelCount: number; totalTraffic: number };
    };
  };
  assert.equal(doc.serverName, 'mon-test');
  assert.equal(doc.serverVersion, '1.8.4');
  const p = doc.proxyStatistic;
  assert.ok(p.clientCount >= 2);
  assert.ok(p.tunnelCount >= 1);
  const fridge = p.clients.find((c) => c.name === 'fridge')!;
  assert.equal(fridge.tunnelConnected, true);
  assert.equal(fridge.authenticated, true);
  assert.equal(fridge.address, '127.0.0.1');
  assert.equal(fridge.rxDataCount, 1000, 'rxDataCount counts relayed bytes only');
  assert.match(fridge.id, /^\{[0-9a-f-]{36}\}$/);
  assert.match(fridge.uuid, /^[0-9a-f-]{36}$/);
  assert.ok(p.tunnels.some((t) => t.clientOne === fridge.id || t.clientTwo === fridge.id));
  assert.ok(p.total.totalTraffic >= 1000);
  // A second push follows.
  await until(() => m.text().length > first.length + 10, 2000, 'second push');
  m.socket.destroy();
  a.destroy();
});

test('1.9 refresh request: answered with compact JSON, no pushes', async () => {
  const m = await monitorClient();
  m.socket.write('{"method":"refresh","params":{"printAll":false}}\n');
  await until(() => m.text().includes('\n'), 2000, 'refresh answer');
  const line = m.text();
  assert.ok(!line.slice(0, -1).includes('\n'), 'compact: a single line');
  assert.ok(line.startsWith('{"apiVersion":"5","proxyStatistic":{'));
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(m.text(), line, 'no push after a refresh request');
  m.socket.destroy();
});

test('a monitor client that writes anything else is dropped', async () => {
  const m = await monitorClient();
  m.socket.write('hello\n');
  await deadline(m.closed, 2000, 'monitor drop');
});

test('a monitor request longer than 4096 bytes without a newline is dropped', async () => {
  const m = await monitorClient();
  m.socket.write(`{"method":"refresh","pad":"${'x'.repeat(4096)}`);
  await deadline(m.closed, 2000, 'oversized monitor request dropped');
  assert.equal(m.text(), '');
});
