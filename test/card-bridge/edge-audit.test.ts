/**
 * The line protocol against a hostile unauthenticated client, over real sockets: what a client can make the
 * bridge hold (an unfinished line sent a byte per read, APDUs streamed at a simulated card) and what it can
 * make it compute (reader lines full of `:` that would each be tried as a name), plus the edges that held
 * (prototype-key names, NUL and invalid UTF-8, limits at and one byte past, half-close, resets).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { RequestDecoder } from '../../src/card-bridge/protocol/lines.ts';
import { maxReaderTextChars } from '../../src/card-bridge/protocol/readers.ts';
import { MAX_LOGGED_APDU_CHARS, MAX_LOGGED_APDUS } from '../../src/card-bridge/backends/virtual-card.ts';
import { SimulatorBackend } from '../../src/card-bridge/backends/simulator.ts';
import type { ReaderState } from '../../src/card-bridge/backends/types.ts';
import { startBridge, LineClient, simCards, TEST_PKI_DIR } from './helpers.ts';

/** A full garbage collection (for heap measurements that must not count garbage). */
function gc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

test('an unfinished line sent one byte per read holds about its size, not a small buffer per read; heldBytes tells the budget what is held', () => {
  const limits = { maxLineBytes: 132096, maxCommands: 64, maxRequestBytes: 1048576 };
  const decoders: RequestDecoder[] = [];
  const one = Buffer.from('A');
  gc();
  const before = process.memoryUsage();
  for (let k = 0; k < 8; k++) {
    const d = new RequestDecoder(limits);
    d.push(Buffer.from('>edge\n>1:APDU:'));
    for (let i = 0; i < 65536; i++) d.push(one);
    decoders.push(d);
  }
  gc();
  const after = process.memoryUsage();
  const held = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers;
  const perDecoder = held / decoders.length;
  // 65 KiB of line bytes in one buffer of at most twice that (a list of one-byte buffers held ~7 MB)
  assert.ok(perDecoder < 400_000, `an unfinished 64 KiB line holds ${Math.round(perDecoder)} bytes`);
  for (const d of decoders) {
    assert.ok(d.heldBytes >= 65536 + 6 && d.heldBytes <= 2 * 65536 + 64, `heldBytes ${d.heldBytes}`);
    assert.equal(d.pendingId, '1');
  }
  // and the line still decodes whole once its end arrives
  const d = decoders[0]!;
  d.push(Buffer.from('\n'));
  const evs = d.push(Buffer.from('\n'));
  assert.equal(evs.length, 1);
  const req = evs[0]!.kind === 'request' ? evs[0]!.request : undefined;
  const item = req?.items[0];
  assert.ok(item?.kind === 'command');
  assert.equal(item.data, 'A'.repeat(65536));
});

test('unfinished lines at and one byte past maxLineBytes, sent a byte at a time over a socket: the limit holds exactly', async () => {
  const b = await startBridge({ cards: [{ name: 'edge' }], config: { limits: { maxLineBytes: 300 } } });
  try {
    const at = await LineClient.connect(b.port);
    at.send('>edge\n');
    const line = `>7:APDU:${'0'.repeat(300 - 8)}`;
    for (const ch of line) at.send(ch);
    assert.equal(await at.request('\n\n'), '>7:C087\n@@\n', 'a 300-byte line is read (and its bad APDU answered)');
    at.destroy();
    const past = await LineClient.connect(b.port);
    past.send('>edge\n');
    for (const ch of `${line}0`) past.send(ch);
    await past.closed();
    assert.equal(past.text, '>7:C088\n@@\n');
  } finally {
    await b.close();
  }
});

test("a simulated card's APDU log keeps the latest entries only, each cut short: streaming APDUs at it holds no memory", async () => {
  const b = await startBridge({ cards: [{ name: 'edge log' }] });
  try {
    const c = await LineClient.connect(b.port);
    const big = `80EE000000FFF0${'AB'.repeat(0xfff0)}`; // an extended APDU of 65527 bytes
    for (let i = 0; i < 8; i++) assert.match(await c.request(`>edge log\n>1:APDU:${big}\n\n`, 10000), /^>1:[0-9A-F]{4,}\n@@\n$/);
    const log0 = b.sim!.card('edge log')!.log;
    assert.equal(log0.length, 8);
    for (const e of log0) assert.equal(e, `${big.slice(0, MAX_LOGGED_APDU_CHARS)}…`, 'a long APDU is remembered by its head only');
    for (let round = 0; round < 3; round++) {
      const cmds = Array.from({ length: 64 }, (_, i) => `>${i}:APDU:80EE000001${(i % 256).toString(16).padStart(2, '0')}\n`).join('');
      const got = await c.request(`>edge log\n${cmds}\n`, 10000);
      assert.equal(got.split('\n').length - 2, 64);
    }
    for (let i = 0; i < MAX_LOGGED_APDUS; i += 64) {
      await c.request(`>edge log\n${Array.from({ length: 64 }, (_, j) => `>${j}:APDU:80EE0000\n`).join('')}\n`, 10000);
    }
    const log = b.sim!.card('edge log')!.log;
    assert.ok(log.length <= MAX_LOGGED_APDUS, `${log.length} APDUs remembered`);
    for (const e of log) assert.ok(e.length <= MAX_LOGGED_APDU_CHARS + 1, `an entry of ${e.length} characters`);
    assert.equal(log.at(-1), '80EE0000', 'the latest is kept');
    c.destroy();
  } finally {
    await b.close();
  }
});

/** A real simulator that counts how often its reader list is read (each reader-name lookup reads it once). */
class CountingSimulator extends SimulatorBackend {
  lookups = 0;
  override readers(): readonly ReaderState[] {
    this.lookups++;
    return super.readers();
  }
}

test('a reader line full of `:` is resolved once per request, and a text longer than any name is not decoded: 64 commands under a 128 KiB base64-looking line are answered C083', async () => {
  const sim = new CountingSimulator(
    simCards([{ name: 'edge a' }, { name: 'edge b' }, { name: 'Edge Signer', signing: { commonName: 'Edge Person', pin: '2468', pinTries: 15 } }]),
    { pkiCacheDir: TEST_PKI_DIR },
  );
  const b = await startBridge({ backends: [sim], config: { timeouts: { requestReadMs: 30000 } } });
  try {
    // every prefix ending before a `:` is a split to try, each a 128 KiB text that looks like base64
    const line = `${'QUFB'.repeat(32000)}${':A'.repeat(125)}`;
    const cmds = Array.from({ length: 64 }, (_, i) => `>${i}:RESET\n`).join('');
    const c = await LineClient.connect(b.port);
    const other = await LineClient.connect(b.port);
    sim.lookups = 0;
    const ans = await c.request(`>${line}|\n${cmds}\n`, 20000);
    assert.equal(ans, `${Array.from({ length: 64 }, (_, i) => `>${i}:C083\n`).join('')}@@\n`);
    // one lookup per split of the one reader line (126), not one per split and command (8064)
    assert.ok(sim.lookups <= 130, `${sim.lookups} reader lookups for one reader line`);
    assert.throws(() => b.server.cards.resolve(line), (err: Error) => /longer than any reader name/.test(err.message));
    // SIGN and CHAIN try the same splits as aliases
    const h = 'AB'.repeat(32);
    assert.equal(await c.request(`>${line}|\n${Array.from({ length: 32 }, (_, i) => `>${i}:SIGN:${h}\n>c${i}:CHAIN\n`).join('')}\n`, 20000), `${Array.from({ length: 32 }, (_, i) => `>${i}:C083\n>c${i}:C083\n`).join('')}@@\n`);
    // the bound never hides a real name: base64 of a listed name, a PIN after it, a long subject alias
    const b64 = Buffer.from('Foxy USB edge a').toString('base64');
    assert.equal(await other.request(`>${b64}:1234|\n>1:RESET\n\n`), '>1:3B021450\n@@\n');
    assert.match(await other.request(`>Edge Person:2468|\n>1:SIGN:${h}\n\n`), /^>1:[0-9A-F]{512}\n@@\n$/);
    assert.match(await other.request(`>commonName: Edge Person, countryName: CZ|\n>1:CHAIN\n\n`), /^>1:[A-Za-z0-9+/=:]+\n@@\n$/);
    c.destroy();
    other.destroy();
  } finally {
    await b.close();
  }
  // the bound leaves room for base64 of a prefixed name and whitespace
  for (const n of [1, 15, 128, 4096]) assert.ok(maxReaderTextChars(n) >= Buffer.from(`CloudFoxy USB ${'x'.repeat(n)}${' '.repeat(16)}`).toString('base64').length);
});
