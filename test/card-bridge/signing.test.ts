import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, verify, X509Certificate } from 'node:crypto';
import { captureLog } from '../helpers/relay.ts';
import { startBridge, LineClient, oneResult, decodeListing, type StartedBridge, type RawCard } from './helpers.ts';

const CARDS: RawCard[] = [
  { name: 'Plain 00' },
  { name: '/10.0.0.5@3', signing: { commonName: 'Jan Novák', countryName: 'CZ', pin: 'jan-pin-4711', keyId: 2 } },
  { name: 'Signer 02', signing: { commonName: 'Petr Svoboda', countryName: 'CZ', organizationName: 'Firma s.r.o.', pin: 'petr-pin-987', keyId: 15 } },
];
const JAN = 'commonName: Jan Novák, countryName: CZ';
const PETR = 'commonName: Petr Svoboda, countryName: CZ, organizationName: Firma s.r.o.';

let bridge: StartedBridge;
const logged = captureLog('trace');
before(async () => {
  bridge = await startBridge({ cards: CARDS, log: logged.log });
});
after(() => bridge.close());

/** Sends a request the way JSignPdf does and returns the one answer line's result. */
const jsign = (text: string): Promise<string> => oneResult(bridge.port, text);

test('ALIASES → CHAIN → SIGN (SHA-256 and SHA-1): the signature verifies against the returned certificate', async () => {
  const aliases = decodeListing(await jsign('>all readers\n>1:ALIASES\n\n'));
  assert.deepEqual(aliases, [JAN, PETR]);

  const chain = (await jsign('>Jan Novák|\n>2:CHAIN|\n\n')).split(':').map((b) => new X509Certificate(Buffer.from(b, 'base64')));
  assert.equal(chain.length, 3);
  assert.match(chain[0]!.subject, /CN=Jan Novák/);
  assert.ok(chain[0]!.verify(chain[1]!.publicKey), 'end-user certificate signed by the next one');
  assert.ok(chain[1]!.verify(chain[2]!.publicKey), 'intermediate signed by the root');
  assert.ok(chain[2]!.verify(chain[2]!.publicKey), 'root is self-signed');

  const doc = Buffer.from('a PDF byte range');
  for (const alg of ['sha256', 'sha1'] as const) {
    const hash = createHash(alg).update(doc).digest('hex').toUpperCase();
    const sig = await jsign(`>Jan Novák:jan-pin-4711|\n>3:SIGN:${hash}|\n\n`);
    assert.match(sig, /^[0-9A-F]{512}$/);
    assert.ok(verify(alg, doc, chain[0]!.publicKey, Buffer.from(sig, 'hex')), `${alg} signature verifies`);
  }
  // the full subject string works as the alias too, with or without a PIN, and so does its base64
  const hash = createHash('sha256').update(doc).digest('hex');
  assert.match(await jsign(`>${JAN}:jan-pin-4711|\n>4:SIGN:${hash}|\n\n`), /^[0-9A-F]{512}$/);
  assert.match(await jsign(`>${Buffer.from(PETR).toString('base64')}:petr-pin-987|\n>5:SIGN:${hash}|\n\n`), /^[0-9A-F]{512}$/);
});

test('the key id is discovered (15 down to 0) once and remembered per card', async () => {
  const card = bridge.sim!.card('/10.0.0.5@3')!;
  const hash = 'AB'.repeat(32);
  await jsign(`>Jan Novák:jan-pin-4711|\n>1:SIGN:${hash}|\n\n`);
  card.log.length = 0;
  await jsign(`>Jan Novák:jan-pin-4711|\n>1:SIGN:${hash}|\n\n`);
  const mse = card.log.filter((a) => a.startsWith('002241B6'));
  assert.deepEqual(mse, ['002241B60A84038002008903132330']);
  assert.deepEqual(
    card.log.filter((a) => !a.startsWith('0020')).map((a) => a.slice(0, 10)),
    ['00A4000C02', '00A4010C02', '002241AA04', '002241B60A', '002A90A022', '002A9E9A00'],
  );
});

test('wrong PIN → C085 and the same PIN is never sent to that card again; the right PIN still works', async () => {
  const card = bridge.sim!.card('Signer 02')!;
  const hash = 'CD'.repeat(20);
  const before = card.pinTriesLeft;
  assert.equal(await jsign(`>Petr Svoboda:wrong-pin-00|\n>1:SIGN:${hash}|\n\n`), 'C085');
  assert.equal(card.pinTriesLeft, before - 1);
  const verifies = () => card.log.filter((a) => a.startsWith('0020')).length;
  const n = verifies();
  assert.equal(await jsign(`>Petr Svoboda:wrong-pin-00|\n>2:SIGN:${hash}|\n\n`), 'C085');
  assert.equal(verifies(), n, 'the failed PIN was not sent again');
  assert.equal(card.pinTriesLeft, before - 1);
  assert.match(await jsign(`>Petr Svoboda:petr-pin-987|\n>3:SIGN:${hash}|\n\n`), /^[0-9A-F]{512}$/);
  assert.equal(card.pinTriesLeft, before);
  assert.equal(await jsign('>Petr Svoboda:petr-pin-987|\n>4:RESET\n\n'), 'C083');
  assert.equal(await jsign('>Svoboda:petr-pin-987|\n>5:APDU:00A4\n\n'), 'C087');
  const all = logged.text();
  for (const pin of ['wrong-pin-00', 'petr-pin-987', 'jan-pin-4711']) assert.ok(!all.includes(pin), `PIN ${pin} never logged`);
  assert.ok(all.includes('wrong PIN'), 'the failure itself is logged');
});

test('SIGN errors: bad hash → C084, no PIN → the card SW 6982, ambiguous alias → C082, unknown alias → C083', async () => {
  assert.equal(await jsign('>Jan Novák:jan-pin-4711|\n>1:SIGN:ABCD|\n\n'), 'C084');
  assert.equal(await jsign('>Jan Novák:jan-pin-4711|\n>1:SIGN:XX' + 'A'.repeat(62) + '|\n\n'), 'C084');
  assert.equal(await jsign(`>Jan Novák|\n>1:SIGN:${'AB'.repeat(32)}|\n\n`), '6982');
  assert.equal(await jsign(`>CZ:jan-pin-4711|\n>1:SIGN:${'AB'.repeat(32)}|\n\n`), 'C082');
  assert.equal(await jsign(`>CZ|\n>1:CHAIN|\n\n`), 'C082');
  assert.equal(await jsign(`>Nobody:jan-pin-4711|\n>1:SIGN:${'AB'.repeat(32)}|\n\n`), 'C083');
});

test('ENUM lists only readers with a signing certificate: substring filter on name or subject, optional max', async () => {
  const names = (r: string) => decodeListing(r);
  assert.deepEqual(names(await jsign('>*|\n>1:ENUM|\n\n')), ['Foxy NET 10.0.0.5-3', 'Foxy USB Signer 02']);
  assert.deepEqual(names(await jsign('>|\n>1:ENUM\n\n')), ['Foxy NET 10.0.0.5-3', 'Foxy USB Signer 02']);
  assert.deepEqual(names(await jsign('>*|\n>1:ENUM|1\n\n')), ['Foxy NET 10.0.0.5-3']);
  assert.deepEqual(names(await jsign('>*|\n>1:ENUM:1|\n\n')), ['Foxy NET 10.0.0.5-3']);
  assert.deepEqual(names(await jsign('>Svoboda|\n>1:ENUM|\n\n')), ['Foxy USB Signer 02']);
  assert.deepEqual(names(await jsign('>10.0.0.5|\n>1:ENUM|\n\n')), ['Foxy NET 10.0.0.5-3']);
  assert.deepEqual(names(await jsign('>nothing|\n>1:ENUM|\n\n')), []);
});

test('the certificate cache is rebuilt when the card set changes (card removed → its alias disappears)', async () => {
  const gen = bridge.server.cards.generation;
  bridge.sim!.remove('Signer 02');
  try {
    assert.ok(bridge.server.cards.generation > gen);
    assert.deepEqual(decodeListing(await jsign('>all readers\n>1:ALIASES\n\n')), [JAN]);
  } finally {
    bridge.sim!.insert('Signer 02');
  }
  assert.deepEqual(decodeListing(await jsign('>all readers\n>1:ALIASES\n\n')), [JAN, PETR]);
  const c = await LineClient.connect(bridge.port);
  c.destroy();
});

// ---------------------------------------------------------------------------------------------------
// PINs, hashes, aliases and locking at their edges (a second bridge with its own signing cards)
// ---------------------------------------------------------------------------------------------------


const SIGNERS: RawCard[] = [
  { name: 'Colon Card', signing: { commonName: 'Colon Person', countryName: 'CZ', pin: 'ab:c|d12', pinTries: 5 } },
  { name: 'Plain Card', signing: { commonName: 'Plain Person', countryName: 'SK', pin: 'abcd1234', pinTries: 5 } },
  { name: 'Slow Card', signing: { commonName: 'Slow Person', countryName: 'AT', pin: '11112222', pinTries: 5 } },
];
const H32 = 'AB'.repeat(32);

let sb: StartedBridge;
const signLogged = captureLog('trace');
before(async () => {
  sb = await startBridge({ cards: SIGNERS, log: signLogged.log });
});
after(() => sb.close());

const one = (text: string): Promise<string> => oneResult(sb.port, text);
const verifies = (name: string) => sb.sim!.card(name)!.log.filter((a) => a.startsWith('0020'));

test('SIGN: a PIN containing ":" and "|" is passed whole', async () => {
  assert.match(await one(`>Colon Person:ab:c|d12|\n>1:SIGN:${H32}|\n\n`), /^[0-9A-F]{512}$/);
  assert.match(await one(`>commonName: Colon Person, countryName: CZ:ab:c|d12|\n>1:SIGN:${H32}|\n\n`), /^[0-9A-F]{512}$/);
});

test('SIGN: an empty PIN means no PIN (the card answers 6982), not an unknown alias', async () => {
  assert.equal(await one(`>Plain Person|\n>1:SIGN:${H32}|\n\n`), '6982');
  assert.equal(await one(`>Plain Person:|\n>1:SIGN:${H32}|\n\n`), '6982');
});

test('SIGN: PINs that cannot be sent as typed (not ASCII, over 255 bytes) are refused before reaching the card', async () => {
  const card = sb.sim!.card('Plain Card')!;
  const tries = card.pinTriesLeft;
  const n = verifies('Plain Card').length;
  // 'š' is U+0161: as latin1 it would become 'a', and 'ź' (U+017A) would become 'z'.
  assert.equal(await one(`>Plain Person:šbcd1234|\n>1:SIGN:${H32}|\n\n`), 'C084');
  assert.equal(await one(`>Plain Person:zzzz9999|\n>1:SIGN:${H32}|\n\n`), 'C085');
  assert.equal(await one(`>Plain Person:źzzz9999|\n>1:SIGN:${H32}|\n\n`), 'C084');
  assert.equal(await one(`>Plain Person:${'7'.repeat(256)}|\n>1:SIGN:${H32}|\n\n`), 'C084');
  // longer PIN parts are not even considered when splitting the reader line: no alias matches
  assert.equal(await one(`>Plain Person:${'7'.repeat(300)}|\n>1:SIGN:${H32}|\n\n`), 'C083');
  assert.equal(verifies('Plain Card').length, n + 1, 'only the one wrong ASCII PIN reached the card');
  assert.equal(card.pinTriesLeft, tries - 1);
  assert.match(await one(`>Plain Person:abcd1234|\n>1:SIGN:${H32}|\n\n`), /^[0-9A-F]{512}$/);
});

test('SIGN: a failed PIN containing ":" is not re-sent, not even from another connection', async () => {
  const n = verifies('Colon Card').length;
  assert.equal(await one(`>Colon Person:wrong:pin|\n>1:SIGN:${H32}|\n\n`), 'C085');
  assert.equal(verifies('Colon Card').length, n + 1);
  const c = await LineClient.connect(sb.port);
  assert.equal(await c.request(`>Colon Person:wrong:pin|\n>1:SIGN:${H32}|\n\n`), '>1:C085\n@@\n');
  c.destroy();
  assert.equal(verifies('Colon Card').length, n + 1, 'not sent again');
  assert.match(await one(`>Colon Person:ab:c|d12|\n>1:SIGN:${H32}|\n\n`), /^[0-9A-F]{512}$/);
});

test('SIGN hash edge cases: 39/41/63/65 hex digits, non-hex, 42 digits → C084 and nothing reaches the card', async () => {
  const n = sb.sim!.card('Plain Card')!.log.length;
  for (const h of ['A'.repeat(39), 'A'.repeat(41), 'A'.repeat(63), 'A'.repeat(65), 'G'.repeat(64), 'A'.repeat(42), '', 'AB CD'.repeat(8)]) {
    assert.equal(await one(`>Plain Person:abcd1234|\n>1:SIGN:${h}|\n\n`), 'C084', `hash ${JSON.stringify(h)}`);
  }
  assert.equal(sb.sim!.card('Plain Card')!.log.length, n);
  // whitespace inside DATA is removed (40 digits once spaces go)
  assert.match(await one(`>Plain Person:abcd1234|\n>1:SIGN:${'ABCD '.repeat(10)}|\n\n`), /^[0-9A-F]{512}$/);
});

test('SIGN alias ambiguity: a substring of two subjects → C082 and no PIN is sent', async () => {
  const a = verifies('Plain Card').length;
  const b = verifies('Colon Card').length;
  assert.equal(await one(`>Person:abcd1234|\n>1:SIGN:${H32}|\n\n`), 'C082');
  assert.equal(await one(`>*:abcd1234|\n>1:SIGN:${H32}|\n\n`), 'C082');
  assert.equal(verifies('Plain Card').length, a);
  assert.equal(verifies('Colon Card').length, b);
});

test('PINs are never logged, in clear or as hex, at any level', () => {
  const all = signLogged.text();
  for (const pin of ['ab:c|d12', 'abcd1234', 'zzzz9999', 'wrong:pin']) {
    assert.ok(!all.includes(pin), `PIN ${pin} logged`);
    assert.ok(!all.toUpperCase().includes(Buffer.from(pin).toString('hex').toUpperCase()), `PIN ${pin} logged as hex`);
  }
});

test('a card busy with a slow SIGN does not block SIGN on other cards, even right after the card set changed', async () => {
  await one('>all\n>1:ALIASES\n\n'); // warm
  sb.sim!.setDelay('Slow Card', 150);
  try {
    const slow = one(`>Slow Person:11112222|\n>1:SIGN:${H32}|\n\n`);
    await new Promise((r) => setTimeout(r, 100));
    let t0 = Date.now();
    assert.match(await one(`>Plain Person:abcd1234|\n>1:SIGN:${H32}|\n\n`), /^[0-9A-F]{512}$/);
    assert.ok(Date.now() - t0 < 1000, `warm cache: ${Date.now() - t0} ms`);
    // a change event empties the certificate cache while the slow card is still locked
    sb.sim!.remove('Colon Card');
    sb.sim!.insert('Colon Card');
    t0 = Date.now();
    assert.match(await one(`>Plain Person:abcd1234|\n>1:SIGN:${H32}|\n\n`), /^[0-9A-F]{512}$/);
    const cold = Date.now() - t0;
    assert.match(await slow, /^[0-9A-F]{512}$/);
    assert.ok(cold < 1000, `cold cache: ${cold} ms`);
  } finally {
    sb.sim!.setDelay('Slow Card', 0);
  }
});
