/** Warnings a peer can cause at will are rate-limited per code, with the count of what was left out. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimitedWarnings } from '../../src/core/log.ts';
import { captureLog, rawClient, startRelay } from '../helpers/relay.ts';

test('one line per key per interval; the next one says how many were suppressed', () => {
  const cap = captureLog();
  let now = 0;
  const w = new RateLimitedWarnings(cap.log, 1000, () => now);
  for (let i = 0; i < 5; i++) w.warn('A', { code: 'A' }, 'refused');
  w.warn('B', { code: 'B' }, 'refused');
  now = 999;
  w.warn('A', { code: 'A' }, 'refused');
  now = 1000;
  w.warn('A', { code: 'A' }, 'refused');
  const lines = cap.records().map((r) => ({ code: r.code, suppressed: r.suppressed }));
  assert.deepEqual(lines, [
    { code: 'A', suppressed: undefined },
    { code: 'B', suppressed: undefined },
    { code: 'A', suppressed: 5 },
  ]);
});

test('a flood of refused connections is one log line, not one per connection', async () => {
  const cap = captureLog();
  const relay = await startRelay({ limits: { maxConnectionsPerIp: 1 } }, { log: cap.log });
  try {
    const holder = await rawClient(relay.url('tcp'));
    const refused = await Promise.all(Array.from({ length: 40 }, () => rawClient(relay.url('tcp'))));
    await Promise.all(refused.map((c) => c.closed(5000)));
    const lines = cap.records().filter((r) => r.msg === 'connection refused');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.code, 'CORE_LIMIT_CONNECTIONS_PER_IP');
    holder.destroy();
  } finally {
    await relay.close();
  }
});

test('every refusal is counted on /metrics, also the ones the log leaves out', async () => {
  const { validateConfig } = await import('../../src/core/config/load.ts');
  const { gatewayConfigSchema } = await import('../../src/config.ts');
  const { createGateway } = await import('../../src/gateway.ts');
  const { tempDir } = await import('../helpers/relay.ts');
  const cap = captureLog();
  const config = validateConfig(gatewayConfigSchema, {
    relay: { listeners: [{ kind: 'tcp', port: 0 }], monitor: { enabled: false }, limits: { maxConnectionsPerIp: 1 } },
    ops: { port: 0 },
  });
  const gw = await createGateway(config, { log: cap.log, baseDir: tempDir() });
  await gw.start();
  try {
    const url = gw.relay!.listeners[0]!.url;
    const holder = await rawClient(url);
    const refused = await Promise.all(Array.from({ length: 12 }, () => rawClient(url)));
    await Promise.all(refused.map((c) => c.closed(5000)));
    const text = await (await fetch(`${gw.ops!.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('gatehouse_connections_refused_total{front_end="relay",code="CORE_LIMIT_CONNECTIONS_PER_IP"}'));
    assert.equal(line?.split(' ')[1], '12');
    assert.equal(cap.records().filter((r) => r.msg === 'connection refused').length, 1);
    holder.destroy();
  } finally {
    await gw.close({ graceMs: 0 });
  }
});
