/**
 * The operations endpoints as a hostile local client uses them: the ops HTTP listener (a client dribbling
 * its headers, odd methods and URLs) and the relay's monitor socket (a 1.9-style client that asks for
 * documents and never reads them). The process goes on, other clients are served, memory stays bounded.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { Registry } from 'prom-client';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { opsConfigSchema } from '../../src/ops/config.ts';
import { createOpsServer, type OpsServer } from '../../src/ops/server.ts';
import { startRelay, captureLog, deadline } from '../helpers/relay.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function startOps(): Promise<OpsServer> {
  const registry = new Registry();
  const ops = createOpsServer(validateConfig(opsConfigSchema, { port: 0 }), {
    log: silentLogger(),
    metrics: { registry, close: () => undefined },
    readiness: () => new Map([['relay', true]]),
    draining: () => false,
  });
  await ops.start();
  after(() => ops.close());
  return ops;
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.on('error', reject);
  });
}

test('ops: a client dribbling its headers is cut off near the 5 s headers timeout, not Node\'s 30 s check', { timeout: 14000 }, async () => {
  const ops = await startOps();
  const s = await open(ops.port);
  let closedAt = 0;
  s.on('error', () => undefined);
  s.on('close', () => (closedAt = Date.now()));
  const started = Date.now();
  s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
  while (closedAt === 0 && Date.now() - started < 9000) {
    if (!s.destroyed) s.write('a');
    await sleep(250);
  }
  s.destroy();
  assert.ok(closedAt > 0, 'the connection was still open after 9 s');
  assert.ok(closedAt - started <= 7500, `closed after ${closedAt - started} ms`);
  // Others are served meanwhile.
  assert.equal((await fetch(`${ops.url}/healthz`)).status, 200);
});

test('ops: odd methods, huge and odd URLs get 4xx, never a crash', { timeout: 10000 }, async () => {
  const ops = await startOps();
  const cases: [string, string, number][] = [
    ['DELETE', '/metrics', 405],
    ['POST', '/healthz', 405],
    ['GET', '/__proto__', 404],
    ['GET', '/constructor?x=1', 404],
    ['GET', `/metrics/${'a'.repeat(8000)}`, 404],
    ['GET', '//metrics', 404],
    ['GET', '/metrics%00', 404],
  ];
  for (const [method, path, status] of cases) {
    const res = await fetch(`${ops.url}${path}`, { method });
    assert.equal(res.status, status, `${method} ${path.slice(0, 40)}`);
    await res.arrayBuffer();
  }
  const huge = await fetch(`${ops.url}/metrics?${'q'.repeat(20000)}`);
  assert.equal(huge.status, 431);
  assert.equal((await fetch(`${ops.url}/readyz`)).status, 200);
});

test('monitor socket: a refresh client that never reads is dropped once its unread documents pass the backlog; others are answered', { timeout: 14000 }, async () => {
  const cap = captureLog('debug');
  const relay = await startRelay({}, { log: cap.log });
  after(() => relay.close());
  const path = relay.server.monitorPath!;
  const m = connect({ path });
  await new Promise<void>((r) => m.once('connect', () => r()));
  m.on('error', () => undefined);
  let closed = false;
  m.on('close', () => (closed = true));
  m.pause();
  const batch = '{"method":"refresh","params":{"printAll":false}}\n'.repeat(4);
  for (let i = 0; i < 3000 && !closed; i++) {
    m.write(batch);
    if (i % 8 === 0) await sleep(1);
    else await new Promise((r) => setImmediate(r));
  }
  for (let i = 0; i < 100 && !closed; i++) await sleep(10);
  assert.ok(closed, 'the monitor client that reads nothing is still connected');
  assert.ok(cap.text().includes('monitor client does not read'), 'dropped for its backlog, not for asking too fast');
  m.destroy();
  // Another monitor client is answered.
  const ok = connect({ path });
  let text = '';
  ok.on('data', (d: Buffer) => (text += d.toString()));
  ok.write('{"method":"refresh","params":{"printAll":false}}\n');
  await deadline((async () => { while (!text.endsWith('\n')) await sleep(5); })(), 3000, 'monitor answer');
  assert.ok(JSON.parse(text) !== null);
  ok.destroy();
});
