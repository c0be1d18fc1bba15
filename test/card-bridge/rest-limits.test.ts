/**
 * The card bridge's REST listeners under connection pressure: a per-address cap (one address cannot lock
 * others out), refusals logged with their code, and shutdown that ends every socket.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { startBridge } from './helpers.ts';
import { captureLog, deadline } from '../helpers/relay.ts';

const TOKEN = 'rest-limits-token';

function open(port: number, localAddress: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function closedWithin(s: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function hello(port: number, localAddress: string): Promise<string> {
  const s = await open(port, localAddress);
  return new Promise((resolve, reject) => {
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.end(`GET /api/v1/hello HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nConnection: close\r\n\r\n`);
  });
}

test('REST APIs: limits.maxConnectionsPerIp idle connections from one address; the next is closed at once and logged, other addresses are served', async () => {
  const cap = captureLog();
  const bridge = await startBridge({
    log: cap.log,
    config: { limits: { maxConnectionsPerIp: 2 }, cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: TOKEN } },
  });
  const port = bridge.server.listeners.find((l) => l.kind === 'cloudfoxy-api')!.port;
  const held: Socket[] = [];
  try {
    held.push(await open(port, '127.0.0.1'), await open(port, '127.0.0.1'));
    const third = await open(port, '127.0.0.1');
    held.push(third);
    assert.equal(await closedWithin(third, 1000), true, 'the connection over the per-address limit is closed');
    assert.ok(cap.records().some((r) => r.code === 'CORE_LIMIT_CONNECTIONS_PER_IP' && r.level === 'warn'));
    assert.match(await hello(port, '127.0.0.2'), /^HTTP\/1\.1 200 /);
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 50));
    assert.match(await hello(port, '127.0.0.1'), /^HTTP\/1\.1 200 /);
  } finally {
    for (const s of held) s.destroy();
    await bridge.close();
  }
});

test('REST APIs: close() ends idle keep-alive and half-sent requests, whatever the clients do', async () => {
  const bridge = await startBridge({ config: { cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: TOKEN } } });
  const port = bridge.server.listeners.find((l) => l.kind === 'cloudfoxy-api')!.port;
  const idle = await open(port, '127.0.0.1');
  const half = await open(port, '127.0.0.1');
  half.write('GET /api/v1/hello HTTP/1.1\r\nHost: x\r\n');
  await deadline(bridge.server.close({ graceMs: 100 }), 3000, 'close()');
  assert.equal(await closedWithin(idle, 1000), true);
  assert.equal(await closedWithin(half, 1000), true);
});
