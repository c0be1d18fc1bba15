/**
 * The whole PC/SC path: line protocol → PcscBackend (npm `smartcard`) → pcscd → vpcd driver → our
 * simulator playing the card over vpcd's TCP protocol (from a worker thread, see vpcd-worker.ts). The test
 * starts its own pcscd and skips, saying why, only when pcscd cannot run here (or the optional binding is
 * not installed); on CI (GATEHOUSE_REQUIRE_PCSC=1) that is a failure instead.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, verify, X509Certificate } from 'node:crypto';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { PcscBackend } from '../../src/card-bridge/backends/pcsc.ts';
import { startVpcdCards, type VpcdCards } from './vpcd-worker.ts';
import { pcscdOrSkip, startPcscd, type RunningPcscd } from './pcscd.ts';
import {
  startBridge,
  oneShot,
  pollUntil,
  decodeListing,
  simCards,
  testLogger,
  TEST_PKI_DIR,
  type StartedBridge,
} from './helpers.ts';

let pcscd: RunningPcscd | undefined;
let skip: string | undefined;
let bridge: StartedBridge | undefined;
let backend: PcscBackend | undefined;
let cards: VpcdCards | undefined;

const CARDS = simCards([
  {
    name: 'vpcd signing',
    signing: { commonName: 'Eva Dvořáková', countryName: 'CZ', pin: 'eva-pin-123', keyId: 3 },
  },
  {
    name: 'vpcd plain',
    script: [{ command: '80CA0001*', response: `${'5A'.repeat(300)}9000`, mode: 'chain' }],
  },
]);

/** Polls `pred` (every 25 ms) until it holds; throws after 15000 ms. */
const until = (pred: () => boolean, what: string, ms = 15000): Promise<void> => pollUntil(pred, what, ms);

before(async () => {
  const started = await pcscdOrSkip();
  if (typeof started === 'string') {
    skip = started;
    return;
  }
  pcscd = started;
  cards = await startVpcdCards(CARDS, pcscd.port, TEST_PKI_DIR);
  const cfg = validateConfig(cardBridgeConfigSchema, {
    backends: [{ kind: 'pcsc', readerFilter: ['Gatehouse VPCD'] }],
  });
  const b = cfg.backends[0];
  assert.ok(b?.kind === 'pcsc');
  backend = new PcscBackend(b, testLogger());
  bridge = await startBridge({ backends: [backend] });
  await until(
    () => backend!.readers().filter((r) => r.atr !== undefined).length === 2,
    'both vpcd cards to appear in pcscd',
  );
});

after(async () => {
  const dbg = (m: string) => process.env.PCSC_DEBUG !== undefined && console.error(m);
  dbg('closing bridge');
  await bridge?.close();
  dbg('removing cards');
  await cards?.close();
  dbg('stopping pcscd');
  await pcscd?.stop();
  dbg('done');
});

test('PC/SC via pcscd + vpcd: LIST, RESET, APDU, raw 61xx', async (t) => {
  if (skip !== undefined) return t.skip(skip);
  const port = bridge!.port;
  const [r0, r1] = pcscd!.readers;
  assert.deepEqual(decodeListing((await oneShot(port, '>*\n>1:LIST\n\n')).slice(3, -4)), [
    `Foxy USB ${r0}`,
    `Foxy USB ${r1}`,
  ]);
  assert.equal(
    await oneShot(port, `>Foxy USB ${r1}|\n>1:RESET:|\n>2:APDU:80EE000003010203|\n\n`),
    '>1:3B021450\n>2:0102039000\n@@\n',
  );
  assert.equal(await oneShot(port, `>${r1}\n>1:APDU:80CA000100\n\n`), '>1:6100\n@@\n');
});

test('PC/SC: ALIASES → CHAIN → SIGN through the real stack; signature verifies', async (t) => {
  if (skip !== undefined) return t.skip(skip);
  const port = bridge!.port;
  assert.deepEqual(decodeListing((await oneShot(port, '>all readers\n>1:ALIASES\n\n')).slice(3, -4)), [
    'commonName: Eva Dvořáková, countryName: CZ',
  ]);
  const chain = (await oneShot(port, '>Dvořáková|\n>2:CHAIN|\n\n')).slice(3, -4).split(':');
  const cert = new X509Certificate(Buffer.from(chain[0]!, 'base64'));
  const hash = createHash('sha256').update('through pcscd').digest('hex');
  const sig = (await oneShot(port, `>Dvořáková:eva-pin-123|\n>3:SIGN:${hash}|\n\n`)).slice(3, -4);
  assert.match(sig, /^[0-9A-F]{512}$/);
  assert.ok(verify('sha256', Buffer.from('through pcscd'), cert.publicKey, Buffer.from(sig, 'hex')));
});

test('PC/SC: card removal is seen (C080), and a new card is picked up', async (t) => {
  if (skip !== undefined) return t.skip(skip);
  const port = bridge!.port;
  const r1 = pcscd!.readers[1];
  await cards!.remove(1);
  await until(() => backend!.readers().find((r) => r.terminal === r1)?.atr === undefined, 'removal');
  assert.equal(await oneShot(port, `>${r1}\n>1:APDU:80EE000001AA\n\n`), '>1:C080\n@@\n');
  await cards!.insert(1);
  await until(() => backend!.readers().find((r) => r.terminal === r1)?.atr !== undefined, 'reinsertion');
  assert.equal(await oneShot(port, `>${r1}\n>1:APDU:80EE000001AA\n\n`), '>1:AA9000\n@@\n');
});

test('without the optional binding the PC/SC backend has no readers and the bridge still serves', async () => {
  const cfg = validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'pcsc' }] }).backends[0];
  assert.ok(cfg?.kind === 'pcsc');
  const missing = new PcscBackend(cfg, testLogger(), () =>
    Promise.resolve({ error: "Cannot find package 'smartcard'" }),
  );
  const b = await startBridge({ backends: [missing] });
  try {
    assert.match(missing.unavailable ?? '', /smartcard/);
    assert.equal(await oneShot(b.port, '>*\n>1:LIST\n>2:ALIASES\n\n'), '>1:\n>2:\n@@\n');
    assert.equal(await oneShot(b.port, '>anything\n>1:RESET\n\n'), '>1:C083\n@@\n');
  } finally {
    await b.close();
  }
});

test('PC/SC: readers detach when pcscd goes away and attach again when it comes back', async (t) => {
  if (skip !== undefined) return t.skip(skip);
  const port = bridge!.port;
  await cards!.close();
  await pcscd!.stop();
  await until(() => backend!.readers().length === 0, 'readers to detach');
  assert.equal(await oneShot(port, '>*\n>1:LIST\n\n'), '>1:\n@@\n');
  assert.equal(await oneShot(port, `>${pcscd!.readers[1]}\n>1:APDU:80EE000001AA\n\n`), '>1:C083\n@@\n');
  const again = await startPcscd();
  assert.ok(typeof again !== 'string', typeof again === 'string' ? again : '');
  pcscd = again;
  cards = await startVpcdCards(CARDS, pcscd.port, TEST_PKI_DIR);
  await until(
    () => backend!.readers().filter((r) => r.atr !== undefined).length === 2,
    'readers and cards to attach',
    30000,
  );
  assert.equal(await oneShot(port, `>${pcscd.readers[1]}\n>1:APDU:80EE000001AA\n\n`), '>1:AA9000\n@@\n');
});
