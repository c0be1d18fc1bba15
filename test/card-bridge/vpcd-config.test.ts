import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { VpcdDecoder, vpcdFrame } from '../../src/card-bridge/protocol/vpcd.ts';
import { defaultConfig } from '../../src/config.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { ERROR_CATALOGUE } from '../../src/core/errors.ts';
import { createCardBridgeServer } from '../../src/card-bridge/server.ts';
import { silentLogger } from '../../src/core/log.ts';
import { tempDir } from '../helpers/relay.ts';
import { oneShot } from './helpers.ts';

test('vpcd framing: control codes and APDUs, any chunking gives the same messages', () => {
  const stream = Buffer.concat([vpcdFrame(Buffer.from([0x04])), vpcdFrame(Buffer.from('00A4000C023F00', 'hex')), vpcdFrame(Buffer.from([0x01]))]);
  assert.deepEqual(new VpcdDecoder().push(stream), [
    { kind: 'control', code: 4 },
    { kind: 'apdu', apdu: Buffer.from('00A4000C023F00', 'hex') },
    { kind: 'control', code: 1 },
  ]);
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 6 }), fc.integer({ min: 1, max: 50 }), (payloads, step) => {
      const bytes = Buffer.concat(payloads.map((p) => vpcdFrame(p)));
      const d = new VpcdDecoder();
      const got = [];
      for (let i = 0; i < bytes.length; i += step) got.push(...d.push(bytes.subarray(i, i + step)));
      assert.deepEqual(got, new VpcdDecoder().push(bytes));
      assert.equal(got.length, payloads.length);
    }),
  );
  assert.throws(() => vpcdFrame(Buffer.alloc(65536)), RangeError);
});

test('embedded defaults: the bridge on 127.0.0.1:4001 with simulated cards, one of them a signing card', () => {
  const cfg = defaultConfig();
  assert.equal(cfg.cardBridge.enabled, true);
  assert.deepEqual(cfg.cardBridge.listeners, [{ kind: 'tcp', host: '127.0.0.1', port: 4001, allowFrom: [] }]);
  const sim = cfg.cardBridge.backends[0];
  assert.ok(sim?.kind === 'simulator');
  assert.ok(sim.cards.length >= 3);
  assert.equal(sim.cards.filter((c) => c.signing !== undefined).length, 1);
});

test('config: unknown keys, TLS without material and REST APIs without a token are rejected; tokens are secrets', () => {
  const bad = (raw: unknown) =>
    assert.throws(
      () => validateConfig(cardBridgeConfigSchema, raw),
      (e: unknown) => isGatewayError(e, 'CORE_CONFIG_INVALID'),
    );
  bad({ nope: 1 });
  bad({ listeners: [{ kind: 'tls' }] });
  bad({ cloudfoxyApi: { enabled: true } });
  bad({ backends: [{ kind: 'simulator', cards: [{ name: 'x', script: [{ command: 'ZZ', response: '9000' }] }] }] });
  const ok = validateConfig(cardBridgeConfigSchema, { cloudfoxyApi: { enabled: true, token: 'very-secret' } });
  assert.equal(String(ok.cloudfoxyApi.token), '[redacted]');
  assert.ok(!JSON.stringify(ok).includes('very-secret'));
});

test('every card-bridge line result is a 4-hex-digit C08x/C090 code', () => {
  for (const [code, spec] of Object.entries(ERROR_CATALOGUE)) {
    if (!code.startsWith('CARD_')) continue;
    const line = (spec as { lineResult?: string }).lineResult;
    if (line !== undefined) assert.match(line, /^C0(8[0-9]|90)$/, code);
  }
});

test('the embedded default cards answer: listing, the demo signing card signs with PIN 1234', async () => {
  const cfg = defaultConfig().cardBridge;
  const server = createCardBridgeServer({ ...cfg, listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0, allowFrom: [] }] }, { log: silentLogger(), baseDir: tempDir('gatehouse-card-defaults-') });
  await server.start();
  try {
    const port = server.listeners[0]!.port;
    const aliases = await oneShot(port, '>all readers\n>1:ALIASES\n\n');
    assert.equal(aliases, `>1:${Buffer.from('commonName: Jan Novák, countryName: CZ').toString('base64')}\n@@\n`);
    assert.match(await oneShot(port, `>Jan Novák:1234|\n>2:SIGN:${'00'.repeat(32)}|\n\n`), /^>2:[0-9A-F]{512}\n@@\n$/);
  } finally {
    await server.close();
  }
});
