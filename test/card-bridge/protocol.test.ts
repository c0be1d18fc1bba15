import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RequestDecoder, type DecoderEvent, type DecoderLimits } from '../../src/card-bridge/protocol/lines.ts';
import { apduCase, parseApdu, MAX_EXTENDED_APDU_BYTES } from '../../src/card-bridge/protocol/apdu.ts';
import { displayReaderName, normaliseReaderName, readerCandidates } from '../../src/card-bridge/protocol/readers.ts';
import { formatAnswers } from '../../src/card-bridge/protocol/answers.ts';
import { isGatewayError } from '../../src/core/errors.ts';

const LIMITS: DecoderLimits = { maxLineBytes: 1000, maxCommands: 8, maxRequestBytes: 4000 };
const decode = (input: string | Buffer, limits = LIMITS): DecoderEvent[] => new RequestDecoder(limits).push(Buffer.from(input));

test('APDUPlay request bytes decode to reader + APDU command (trailing notes field dropped)', () => {
  const [ev] = decode('>Foxy NET 192.168.42.10-12|\n>17:APDU:00A4040007A0000000030000|\n\n');
  assert.deepEqual(ev, {
    kind: 'request',
    request: {
      reader: { text: 'Foxy NET 192.168.42.10-12', name: 'Foxy NET 192.168.42.10-12', pin: undefined },
      items: [{ kind: 'command', id: '17', command: 'APDU', data: '00A4040007A0000000030000', object: '', fields: 3 }],
    },
  });
  const [reset] = decode('>R|\n>18:RESET:|\n\n');
  assert.deepEqual(reset, {
    kind: 'request',
    request: { reader: { text: 'R', name: 'R', pin: undefined }, items: [{ kind: 'command', id: '18', command: 'RESET', data: '', object: '', fields: 2 }] },
  });
  const [list] = decode('>*|\n>19:READERS:tag1:0|\n\n');
  assert.equal(list?.kind, 'request');
  if (list?.kind === 'request') assert.deepEqual(list.request.items[0], { kind: 'command', id: '19', command: 'READERS', data: 'tag1', object: '0', fields: 4 });
});

test('JSignPdf request bytes: reader with PIN, ALIASES without trailing bar', () => {
  const [a] = decode('>all readers\n>7:ALIASES\n\n');
  assert.ok(a?.kind === 'request');
  assert.equal(a.request.reader?.text, 'all readers');
  assert.deepEqual(a.request.items[0], { kind: 'command', id: '7', command: 'ALIASES', data: '', object: '', fields: 2 });
  const [s] = decode('>Jan Novak:1234|\n>8:SIGN:' + 'AB'.repeat(32) + '|\n\n');
  assert.ok(s?.kind === 'request');
  assert.deepEqual(s.request.reader, { text: 'Jan Novak:1234', name: 'Jan Novak', pin: '1234' });
});

test('both separators, README form with spaces in the data, # lines, CR / CRLF / LF, ignored lines', () => {
  const want = { kind: 'command', id: '2', command: 'APDU', data: '00A4000C023F00', object: '', fields: 3 };
  for (const input of [
    '>reader|\n>2:APDU|00 A4 00 0C 02 3F 00|\n\n',
    '#reader|\r\n#2:APDU:00A4000C023F00|\r\n\r\n',
    '>reader\r>2|APDU|00A4000C023F00\r\r',
    'hello there\n>reader|\nnot a protocol line\n>2:APDU:00A4000C023F00|||\n   \n',
  ]) {
    const evs = decode(input);
    assert.equal(evs.length, 1, input);
    const ev = evs[0]!;
    assert.ok(ev.kind === 'request');
    assert.equal(ev.request.reader?.text, 'reader');
    assert.deepEqual(ev.request.items, [want], JSON.stringify(input));
  }
  const [e1] = decode('>x\n>1:ENUM|12\n\n');
  const [e2] = decode('>x\n>1:ENUM:12|\n\n');
  assert.deepEqual(e1, e2);
});

test('a one-field command line replaces the reader; blank lines between requests are ignored', () => {
  const evs = decode('\n\n>A|\n>1:RESET\n>B|\n>2:RESET\n\n\n\n>C\n>3:RESET\n\n');
  assert.equal(evs.length, 2);
  const [r1, r2] = evs;
  assert.ok(r1?.kind === 'request' && r2?.kind === 'request');
  assert.equal(r1.request.items[1]?.kind, 'reader');
  assert.equal(r1.request.items.length, 3);
  assert.equal(r2.request.reader?.text, 'C');
});

test('property: any chunking of a valid stream gives the same requests', () => {
  const line = fc.stringMatching(/^[A-Za-z0-9 *.@-]{0,20}$/);
  const request = fc.record({
    reader: line,
    cmds: fc.array(fc.tuple(fc.stringMatching(/^[0-9]{1,3}$/), fc.constantFrom('APDU', 'RESET', 'ENUM', 'sign'), fc.stringMatching(/^[0-9A-F]{0,16}$/)), { minLength: 1, maxLength: 5 }),
    eol: fc.constantFrom('\n', '\r\n', '\r'),
  });
  fc.assert(
    fc.property(fc.array(request, { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 17 }), { minLength: 1, maxLength: 10 }), (reqs, cuts) => {
      const text = reqs.map((r) => `>${r.reader}|${r.eol}${r.cmds.map(([id, c, d]) => `>${id}:${c}:${d}|${r.eol}`).join('')}${r.eol}`).join('');
      const bytes = Buffer.from(text);
      const whole = new RequestDecoder(LIMITS).push(bytes);
      const dec = new RequestDecoder(LIMITS);
      const pieces: DecoderEvent[] = [];
      let at = 0;
      let i = 0;
      while (at < bytes.length) {
        const n = cuts[i++ % cuts.length]!;
        pieces.push(...dec.push(bytes.subarray(at, at + n)));
        at += n;
      }
      assert.deepEqual(pieces, whole);
      assert.equal(whole.length, reqs.length);
    }),
    { numRuns: 300 },
  );
});

test('property: no input crashes the decoder; its only other outcome is a coded limit', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 10 }), (chunks) => {
      const dec = new RequestDecoder({ maxLineBytes: 200, maxCommands: 4, maxRequestBytes: 600 });
      for (const c of chunks) {
        for (const ev of dec.push(c)) {
          if (ev.kind === 'limit') assert.match(ev.code, /^CARD_LIMIT_/);
        }
      }
    }),
    { numRuns: 500 },
  );
});

test('limits: a line of exactly maxLineBytes passes, one byte more is CARD_LIMIT_LINE (whole or split)', () => {
  const limits = { maxLineBytes: 100, maxCommands: 8, maxRequestBytes: 4000 };
  const head = '>5:APDU:';
  const ok = head + 'A'.repeat(100 - head.length);
  assert.equal(decode(`>r\n${ok}\n\n`, limits)[0]?.kind, 'request');
  const over = ok + 'A';
  assert.deepEqual(decode(`>r\n${over}\n\n`, limits), [{ kind: 'limit', code: 'CARD_LIMIT_LINE', id: '5' }]);
  const dec = new RequestDecoder(limits);
  assert.deepEqual(dec.push(Buffer.from(`>r\n${over.slice(0, 60)}`)), []);
  assert.deepEqual(dec.push(Buffer.from(over.slice(60))), [{ kind: 'limit', code: 'CARD_LIMIT_LINE', id: '5' }]);
  assert.deepEqual(dec.push(Buffer.from('\n\n>r\n>1:RESET\n\n')), [], 'nothing after a limit');
});

test('limits: command count and request size', () => {
  const cmds = (n: number) => `>r\n${Array.from({ length: n }, (_, i) => `>${i}:RESET\n`).join('')}\n`;
  assert.equal(decode(cmds(8))[0]?.kind, 'request');
  assert.deepEqual(decode(cmds(9)), [{ kind: 'limit', code: 'CARD_LIMIT_COMMANDS', id: '8' }]);
  const big = { maxLineBytes: 1000, maxCommands: 100, maxRequestBytes: 50 };
  // `>r\n` (3) + `>1:APDU:` + hex: exactly 50 bytes with line ends, then one more.
  const line = (n: number) => `>1:APDU:${'0'.repeat(n)}`;
  assert.equal(decode(`>r\n${line(50 - 3 - 9 - 1)}\n\n`, big)[0]?.kind, 'request');
  assert.deepEqual(decode(`>r\n${line(50 - 3 - 9)}\n\n`, big), [{ kind: 'limit', code: 'CARD_LIMIT_REQUEST', id: '1' }]);
});

test('APDU rules: cases, hex, sizes', () => {
  assert.equal(apduCase(Buffer.from('00A40000', 'hex')), '1');
  assert.equal(apduCase(Buffer.from('00B0000000', 'hex')), '2S');
  assert.equal(apduCase(Buffer.from('00A4000C023F00', 'hex')), '3S');
  assert.equal(apduCase(Buffer.from('00A4040C023F0000', 'hex')), '4S');
  assert.equal(apduCase(Buffer.from('00B0000000FFFF', 'hex')), '2E');
  assert.equal(apduCase(Buffer.from('00D6000000000201 02'.replace(/ /g, ''), 'hex')), '3E');
  assert.equal(apduCase(Buffer.from('00D60000000002010200 00'.replace(/ /g, ''), 'hex')), '4E');
  const bad = (hex: string) =>
    assert.throws(
      () => parseApdu(hex),
      (e: unknown) => isGatewayError(e, 'CARD_BAD_APDU'),
      hex,
    );
  bad('00A400'); // 3 bytes
  bad('00A4000'); // odd
  bad('00A4000G'); // not hex
  bad('00A4000C033F00'); // Lc 3 but 2 data bytes
  bad('00A4000C023F000000'); // too long for Lc 2
  bad('00D6000000000001'); // extended Lc 0 ... malformed
  bad('00'.repeat(MAX_EXTENDED_APDU_BYTES + 1));
  const ext = Buffer.concat([Buffer.from('00D6000000FFFF', 'hex'), Buffer.alloc(0xffff), Buffer.from('0000', 'hex')]);
  assert.equal(ext.length, MAX_EXTENDED_APDU_BYTES);
  assert.equal(parseApdu(ext.toString('hex')).length, MAX_EXTENDED_APDU_BYTES);
  assert.equal(parseApdu('00a4000c023f00').toString('hex'), '00a4000c023f00');
});

test('reader names: every accepted form, base64 of them, and listing styles', () => {
  const net = '/192.168.42.10@12';
  for (const form of ['/192.168.42.10@12', 'CloudFoxy 192.168.42.10@12', 'CloudFoxy NET 192.168.42.10-12', 'cloudfoxy net 192.168.42.10-12', 'Foxy NET 192.168.42.10-12', 'FOXY net 192.168.42.10-12']) {
    assert.equal(normaliseReaderName(form), net, form);
    assert.ok(readerCandidates(Buffer.from(form).toString('base64')).includes(net), `base64 ${form}`);
  }
  assert.equal(normaliseReaderName('Foxy USB Test VPCD 00 00'), 'Test VPCD 00 00');
  assert.equal(normaliseReaderName('CloudFoxy USB Test VPCD 00 00'), 'Test VPCD 00 00');
  assert.equal(normaliseReaderName('Test VPCD 00 00'), 'Test VPCD 00 00');
  assert.deepEqual(readerCandidates('R'), ['R']);
  assert.equal(displayReaderName(net, 'foxy'), 'Foxy NET 192.168.42.10-12');
  assert.equal(displayReaderName(net, 'cloudfoxy'), 'CloudFoxy NET 192.168.42.10-12');
  assert.equal(displayReaderName(net, 'raw'), net);
  assert.equal(displayReaderName('Test VPCD 00 00', 'foxy'), 'Foxy USB Test VPCD 00 00');
});

test('answer framing: one @@ per request, or after every answer in 1.x mode', () => {
  const a = [
    { id: '1', result: '9000' },
    { id: '2', result: 'C083' },
  ];
  assert.equal(formatAnswers(a, false).toString('latin1'), '>1:9000\n>2:C083\n@@\n');
  assert.equal(formatAnswers(a, true).toString('latin1'), '>1:9000\n@@\n>2:C083\n@@\n');
  assert.equal(formatAnswers([], false).toString('latin1'), '@@\n');
});

// ---------------------------------------------------------------------------------------------------
// When a request is complete (foxyproxy 2.x's rule) and ids byte for byte
// ---------------------------------------------------------------------------------------------------

/** Decodes the way the session does: each chunk is one read (push, then endOfRead). */
function decodeReads(chunks: readonly (string | Uint8Array)[], limits = LIMITS): DecoderEvent[] {
  const dec = new RequestDecoder(limits);
  const out: DecoderEvent[] = [];
  for (const c of chunks) out.push(...dec.push(typeof c === 'string' ? Buffer.from(c) : c), ...dec.endOfRead());
  return out;
}
const commandIds = (evs: readonly DecoderEvent[]): string[][] =>
  evs.map((e) => (e.kind === 'request' ? e.request.items.flatMap((i) => (i.kind === 'command' ? [i.id] : [])) : [`limit:${e.code}`]));

test('a read that ends at a line end after a command completes the request (JSignPdf: no empty line)', () => {
  assert.deepEqual(commandIds(decodeReads(['>all readers\n>5:ALIASES\n'])), [['5']]);
  assert.deepEqual(commandIds(decodeReads(['>all readers\r\n>5:ALIASES\r\n'])), [['5']]);
  // no command yet, or an unfinished line: wait
  assert.deepEqual(decodeReads(['>all readers\n']), []);
  assert.deepEqual(decodeReads(['>all readers\n>5:ALIA']), []);
  assert.deepEqual(commandIds(decodeReads(['>all readers\n>5:ALIA', 'SES\n'])), [['5']]);
  // several commands in one read are one request; the empty line that may follow in a later read is ignored
  assert.deepEqual(commandIds(decodeReads(['>R|\n>1:RESET|\n>2:APDU:00A4040000|\n', '\n', '>R|\n>3:RESET|\n\n'])), [['1', '2'], ['3']]);
  // push alone (no end of read) still waits for the empty line
  assert.deepEqual(new RequestDecoder(LIMITS).push(Buffer.from('>all readers\n>5:ALIASES\n')), []);
});

test('EMPTYLINE (exact case) makes a request wait for its empty line or EOF, across reads', () => {
  assert.deepEqual(decodeReads(['>R|\n>0:EMPTYLINE\n>1:RESET|\n', '>2:RESET|\n']), []);
  assert.deepEqual(commandIds(decodeReads(['>R|\n>0:EMPTYLINE\n>1:RESET|\n', '>2:RESET|\n', '\n'])), [['0', '1', '2']]);
  // any other case is an ordinary (unknown) command
  assert.deepEqual(commandIds(decodeReads(['>R|\n>0:emptyline\n'])), [['0']]);
});

test('ids are the wire bytes between ">" and the first separator, in any encoding, echoed byte for byte', () => {
  const ids = [
    Buffer.from('12,345'), // MessageFormat, en
    Buffer.from('12\u00a0345'), // cs (U+00A0, UTF-8)
    Buffer.from([0x31, 0x32, 0xa0, 0x33, 0x34, 0x35]), // cs in windows-1250 (Java < 18 default charset)
    Buffer.from('12\u202f345'), // fr (U+202F)
    Buffer.from('12.345'),
    Buffer.from('-7'),
    Buffer.from('7 '), // trailing whitespace is kept, as foxyproxy echoes it
  ];
  for (const id of ids) {
    const line = Buffer.concat([Buffer.from('>R\n> '), id, Buffer.from(':RESET|\n\n')]);
    const [ev] = new RequestDecoder(LIMITS).push(line);
    assert.ok(ev?.kind === 'request');
    const item = ev.request.items[0];
    assert.ok(item?.kind === 'command');
    assert.equal(item.command, 'RESET');
    const answer = formatAnswers([{ id: item.id, result: '3B00' }], false);
    assert.deepEqual(answer, Buffer.concat([Buffer.from('>'), id, Buffer.from(':3B00\n@@\n')]), id.toString('hex'));
  }
});

test('pendingId: a stalled half-sent command line answers under its own id once its separator arrived', () => {
  const dec = new RequestDecoder(LIMITS);
  dec.push(Buffer.from('>R\n>45:RESET\n>46:RES'));
  assert.equal(dec.pendingId, '46');
  const early = new RequestDecoder(LIMITS);
  early.push(Buffer.from('>R\n>45:RESET\n>46'));
  assert.equal(early.pendingId, '45', 'no separator yet: the latest complete command');
  const reader = new RequestDecoder(LIMITS);
  reader.push(Buffer.from('>Jan:12'));
  assert.equal(reader.pendingId, '', 'an unfinished reader line has no id (nor is its PIN echoed)');
});

test('property: any chunking gives the same requests when every read boundary is a possible request end', () => {
  // Single-command requests (JSignPdf, APDUPlay) and EMPTYLINE requests do not depend on where reads end.
  const request = fc.oneof(
    fc.record({ reader: fc.stringMatching(/^[A-Za-z0-9 *.@-]{1,20}$/), id: fc.stringMatching(/^[0-9]{1,3}(,[0-9]{3})?$/), empty: fc.boolean(), eol: fc.constantFrom('\n', '\r\n', '\r') }).map(
      (r) => ({ text: `>${r.reader}|${r.eol}>${r.id}:RESET|${r.eol}`, end: r.empty ? r.eol : '', ids: [r.id] }),
    ),
    fc.record({ reader: fc.stringMatching(/^[A-Za-z0-9 *.@-]{1,20}$/), ids: fc.array(fc.stringMatching(/^[0-9]{1,3}$/), { minLength: 1, maxLength: 4 }), eol: fc.constantFrom('\n', '\r\n') }).map((r) => ({
      text: `>${r.reader}|${r.eol}>0:EMPTYLINE${r.eol}${r.ids.map((id) => `>${id}:APDU:00A40400|${r.eol}`).join('')}`,
      end: r.eol,
      ids: ['0', ...r.ids],
    })),
  );
  fc.assert(
    fc.property(fc.array(request, { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 17 }), { minLength: 1, maxLength: 10 }), (reqs, cuts) => {
      // A request without its empty line can only be the last one: the client waits for its answer first.
      const bytes = Buffer.from(reqs.map((r, i) => r.text + (i === reqs.length - 1 ? r.end : r.end || r.text.slice(-1))).join(''));
      const chunks: Buffer[] = [];
      for (let at = 0, i = 0; at < bytes.length; at += cuts[i++ % cuts.length]!) chunks.push(bytes.subarray(at, at + cuts[i % cuts.length]!));
      assert.deepEqual(commandIds(decodeReads(chunks)), reqs.map((r) => r.ids));
    }),
    { numRuns: 300 },
  );
});
