/**
 * The line protocol against its real clients' exact bytes: APDUPlay (`Winscard/Winscard.cpp`,
 * `Remote_FormatRequest` + `SocketClient::SendLine`) and JSignPdf (`net.sf.jsignpdf.extcsp.CloudFoxy`,
 * `PrintWriter.println` of a `MessageFormat` text), and a request ended by EOF. Each is sent whole and
 * split into two reads at every byte boundary (the second part is sent only once the bridge has read the
 * first), and must be answered promptly with the exact bytes its client parses. The answers are also read
 * the way each client reads them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startBridge, LineClient, serverSessionOf, untilServerRead, type StartedBridge, type RawCard } from './helpers.ts';

const CARDS: RawCard[] = [
  { name: '/192.168.42.10@12', script: [{ command: '00A4040007A0000000030000', response: '6F048400A5009000' }] },
  { name: 'R' },
  { name: 'Signer 01', signing: { commonName: 'Jan Novák', countryName: 'CZ', pin: '1234', keyId: 1 } },
];
const SUBJECT = 'commonName: Jan Novák, countryName: CZ';
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const HASH = createHash('sha256').update('a PDF byte range').digest('hex').toUpperCase();

/** How long an answer may take after the request's last byte ("promptly"; they take a few ms). */
const PROMPT_MS = 1000;

let bridge: StartedBridge;
before(async () => {
  bridge = await startBridge({ cards: CARDS, config: { timeouts: { requestReadMs: 10000 } } });
});
after(() => bridge.close());

interface Fixture {
  readonly name: string;
  readonly request: Buffer;
  /** Half-close after the request (the client reads to EOF). */
  readonly eof?: boolean;
}

// --- APDUPlay: `>%s|\n>%d:%s:%s|%s\n` (notes empty) and SendLine appends `\n`; one send() per request.
const apduplay = (reader: string, id: number, command: string, data: string): Buffer => Buffer.from(`>${reader}|\n>${id}:${command}:${data}|\n\n`);
// --- JSignPdf: println (autoflush) of the request text: `\n` on Linux, `\r\n` on Windows, after the last line only.
const jsignpdf = (text: string, eol = '\n'): Buffer => Buffer.from(`${text}${eol}`);

const FIXTURES: readonly (Fixture & { readonly answer: string | RegExp })[] = [
  { name: 'APDUPlay APDU', request: apduplay('Foxy NET 192.168.42.10-12', 17, 'APDU', '00A4040007A0000000030000'), answer: '>17:6F048400A5009000\n@@\n' },
  { name: 'APDUPlay RESET (SCardConnect)', request: apduplay('R', 18, 'RESET', ''), answer: '>18:3B021450\n@@\n' },
  {
    name: 'APDUPlay READERS (SCardListReaders)',
    request: apduplay('*', 19, 'READERS', 'tag:0'),
    answer: `>19:${['Foxy NET 192.168.42.10-12', 'Foxy USB R', 'Foxy USB Signer 01'].map(b64).join('|')}\n@@\n`,
  },
  { name: 'APDUPlay PERSONALIZE', request: apduplay('*', 20, 'PERSONALIZE', 'tag'), answer: '>20:OK\n@@\n' },
  { name: 'JSignPdf ALIASES (Linux)', request: jsignpdf('>all readers\n>5:ALIASES'), answer: `>5:${b64(SUBJECT)}\n@@\n` },
  { name: 'JSignPdf ALIASES (Windows)', request: jsignpdf('>all readers\n>99999:ALIASES', '\r\n'), answer: `>99999:${b64(SUBJECT)}\n@@\n` },
  // MessageFormat formats the id with the default locale's grouping: en `12,345`, cs `12 345` (U+00A0).
  { name: 'JSignPdf CHAIN (en)', request: jsignpdf(`>${SUBJECT}|\n>12,345:CHAIN|`), answer: /^>12,345:[A-Za-z0-9+/=]{200,}(:[A-Za-z0-9+/=]{200,}){2}\n@@\n$/ },
  { name: 'JSignPdf CHAIN (cs, alias substring)', request: jsignpdf('>Jan Novák|\n>12\u00a0345:CHAIN|', '\r\n'), answer: /^>12\u00a0345:[A-Za-z0-9+/=]{200,}(:[A-Za-z0-9+/=]{200,}){2}\n@@\n$/ },
  { name: 'JSignPdf SIGN', request: jsignpdf(`>${SUBJECT}:1234|\n>1,024:SIGN:${HASH}|`), answer: /^>1,024:[0-9A-F]{512}\n@@\n$/ },
  // No PIN: JSignPdf's pattern `>{0}|\n>{2}:SIGN:{3}|` gets only three arguments, so `{2}` is the hash and
  // `{3}` stays literal. foxyproxy answers that with its bad-data code too.
  { name: 'JSignPdf SIGN without a PIN', request: jsignpdf(`>${SUBJECT}|\n>${HASH}:SIGN:{3}|`), answer: `>${HASH}:C084\n@@\n` },
  { name: 'one command ended by EOF, no line end', request: Buffer.from('>R\n>7:RESET'), eof: true, answer: '>7:3B021450\n@@\n' },
  {
    name: 'EMPTYLINE request ended by EOF',
    request: Buffer.from('>R|\n>0:EMPTYLINE\n>1:APDU:80EE000001AA|\n>2:RESET|\n'),
    eof: true,
    answer: '>1:AA9000\n>2:3B021450\n@@\n',
  },
  {
    name: 'EMPTYLINE request ended by its empty line',
    request: Buffer.from('>R|\r\n>0:EMPTYLINE\r\n>1:APDU:80EE000001AA|\r\n>2:RESET|\r\n\r\n'),
    answer: '>1:AA9000\n>2:3B021450\n@@\n',
  },
];

/** Sends `parts` as separate reads of the bridge, then waits for one answer set; returns it and its latency. */
async function exchange(parts: readonly Buffer[], eof: boolean): Promise<{ text: string; ms: number; client: LineClient }> {
  const c = await LineClient.connect(bridge.port);
  const session = await serverSessionOf(bridge, c);
  let sent = 0;
  for (const [i, p] of parts.entries()) {
    if (p.length === 0) continue;
    c.send(p);
    sent += p.length;
    if (i < parts.length - 1) await untilServerRead(session, sent);
  }
  const t0 = performance.now();
  if (eof) c.end();
  const text = await c.answers(1, PROMPT_MS + 4000);
  return { text, ms: performance.now() - t0, client: c };
}

function check(f: (typeof FIXTURES)[number], text: string, where: string): void {
  if (typeof f.answer === 'string') assert.equal(text, f.answer, where);
  else assert.match(text, f.answer, where);
}

for (const f of FIXTURES) {
  test(`${f.name}: answered promptly, whole and split into two reads at every byte`, async (t) => {
    const whole = await exchange([f.request], f.eof === true);
    check(f, whole.text, 'whole');
    assert.ok(whole.ms < PROMPT_MS, `whole: ${whole.ms.toFixed(1)} ms`);
    whole.client.destroy();
    let slowest = 0;
    for (let cut = 1; cut < f.request.length; cut++) {
      const r = await exchange([f.request.subarray(0, cut), f.request.subarray(cut)], f.eof === true);
      // the same bytes whatever the split (deterministic: RSA PKCS#1 v1.5, fixed certificates)
      assert.equal(r.text, whole.text, `split at ${cut}: ${JSON.stringify(f.request.subarray(0, cut).toString('latin1'))}`);
      slowest = Math.max(slowest, r.ms);
      r.client.destroy();
    }
    assert.ok(slowest < PROMPT_MS, `slowest split: ${slowest.toFixed(1)} ms`);
    t.diagnostic(`whole ${whole.ms.toFixed(1)} ms, slowest of ${f.request.length - 1} splits ${slowest.toFixed(1)} ms`);
  });
}

/** APDUPlay's Remote_ParseResponse + Remote_SCardTransmit: `>`, atoi(id) == sent id, data up to `@@`, ≥ 2 bytes. */
function apduplayParse(raw: string, expectedId: number): Buffer {
  assert.equal(raw[0], '>', "'>' was expected at begin");
  const colon = raw.indexOf(':');
  assert.equal(Number.parseInt(raw.slice(1, colon), 10), expectedId, 'Unexpected commandID in response');
  const response = raw.slice(colon + 1, raw.indexOf('@@')).trim();
  assert.ok(!response.includes('FAIL'));
  const bytes = Buffer.from(response.replace(/ /g, ''), 'hex');
  assert.ok(bytes.length >= 2 && bytes.length <= 260, 'at least 2 bytes (status word), at most 260');
  return bytes;
}

/** JSignPdf: `BufferedReader.readLine()` once, then `split(":")`; part 1 must be at least 5 characters. */
function jsignpdfParse(raw: string): string[] {
  const line = raw.split(/\r\n|\n|\r/)[0]!;
  const parts = line.split(':');
  assert.ok(parts.length >= 2 && parts[1]!.length >= 5, `JSignPdf would log "no certificate / signature": ${line}`);
  return parts.slice(1);
}

test('read back as each client reads: APDUPlay gets its R-APDU bytes, JSignPdf its aliases, chain and signature', async () => {
  const apdu = await exchange([FIXTURES[0]!.request], false);
  assert.deepEqual(apduplayParse(apdu.text, 17), Buffer.from('6F048400A5009000', 'hex'));
  apdu.client.destroy();
  const aliases = await exchange([FIXTURES[4]!.request], false);
  assert.deepEqual(
    jsignpdfParse(aliases.text)[0]!.split('|').map((a) => Buffer.from(a, 'base64').toString('utf8')),
    [SUBJECT],
  );
  aliases.client.destroy();
  const chain = await exchange([FIXTURES[6]!.request], false);
  assert.equal(jsignpdfParse(chain.text).length, 3, 'end-user certificate and two CAs');
  chain.client.destroy();
  const sig = await exchange([FIXTURES[8]!.request], false);
  assert.match(jsignpdfParse(sig.text)[0]!, /^[0-9A-F]{512}$/);
  sig.client.destroy();
});

test('ids in any form a client sends are echoed byte for byte (MessageFormat groupings, windows-1250, negative %d)', async () => {
  const ids = [
    Buffer.from('12,345'),
    Buffer.from('12.345'),
    Buffer.from('12\u00a0345'),
    Buffer.from('12\u202f345'),
    Buffer.from('12\u2019345'),
    Buffer.from([0x31, 0x32, 0xa0, 0x33, 0x34, 0x35]), // `12 345` from Java < 18 on Windows (windows-1250)
    Buffer.from('-1294967296'), // APDUPlay's DWORD printed with %d
  ];
  for (const id of ids) {
    const r = await exchange([Buffer.concat([Buffer.from('>R|\n>'), id, Buffer.from(':RESET|\n')])], false);
    assert.deepEqual(r.client.received, Buffer.concat([Buffer.from('>'), id, Buffer.from(':3B021450\n@@\n')]), id.toString('hex'));
    r.client.destroy();
  }
});
