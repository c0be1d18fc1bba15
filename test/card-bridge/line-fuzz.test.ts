/**
 * The line protocol under hostile input over a real socket (moved here from the old review grab-bag): a
 * fast-check fuzz of random and mutated requests in random reads beside a well-behaved client, and the
 * memory and deadline edges of unfinished lines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RequestDecoder } from '../../src/card-bridge/protocol/lines.ts';
import { startBridge, LineClient, serverSessionOf, untilServerRead, type RawCard } from './helpers.ts';

const FUZZ_LIMITS = { maxLineBytes: 256, maxCommandsPerRequest: 8, maxRequestBytes: 1024, maxPendingRequests: 4 };
const TEMPLATES = [
  '>Foxy NET 192.168.42.10-12|\n>17:APDU:00A4040007A0000000030000|\n\n',
  '>R|\n>18:RESET:|\n\n',
  '>*|\n>19:READERS:tag:0|\n\n',
  '>*|\n>20:PERSONALIZE:tag|\n\n',
  '>all readers\n>1:ALIASES\n\n',
  '>Fuzz Signer|\n>2:CHAIN|\n\n',
  `>Fuzz Signer:9876|\n>3:SIGN:${'AB'.repeat(32)}|\n\n`,
  '>fuzz a\n>1:APDU|00 A4 00 0C 02 3F 00|\n>2:ENUM|12\n>3:EMPTYLINE\n>fuzz b\n>4:RESET\n\n',
  '#fuzz a\r\n#5:apdu:80EE0000\r\n\r\n',
];

/** Bytes that matter to the grammar, weighted in over random bytes. */
const SPECIAL = [...Buffer.from(':|>#\r\n @*\t')];

const mutation = fc.oneof(
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }) }),
  fc.record({ op: fc.constant('repeat' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 300 }), times: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
);

type Mutation = { op: string; at: number; len?: number; bytes?: number[]; times?: number };

function mutate(base: Buffer, ops: readonly Mutation[]): Buffer {
  let b = base;
  for (const m of ops) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    if (m.op === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + (m.len ?? 1))]);
    else if (m.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes ?? []), b.subarray(at)]);
    else if (m.op === 'repeat') {
      const piece = b.subarray(at, at + (m.len ?? 1));
      b = Buffer.concat([b.subarray(0, at), ...Array<Buffer>(m.times ?? 1).fill(piece), b.subarray(at)]);
    } else b = b.subarray(0, at);
  }
  return b;
}

const segment = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...TEMPLATES), fc.array(mutation, { maxLength: 4 })).map(([t, ops]) => mutate(Buffer.from(t, 'latin1'), ops)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...SPECIAL, 0x41, 0x31), { maxLength: 80 }).map((a) => Buffer.from(a)) },
  // one line around the line limit
  { weight: 1, arbitrary: fc.integer({ min: 240, max: 270 }).map((n) => Buffer.from(`>1:APDU:${'A'.repeat(n - 8)}\n`)) },
);

const fuzzCase = fc.record({
  segments: fc.array(segment, { minLength: 1, maxLength: 6 }),
  cuts: fc.array(fc.nat(), { maxLength: 12 }),
  /** false: wait for the answers before half-closing (answers must not depend on EOF). */
  eofFirst: fc.boolean(),
});

/**
 * What the server must answer: the reference decoder fed the same reads the bridge gets (push, then
 * endOfRead, as the session does): each request's command count, whether a limit ends it, and after which
 * read the bridge stops reading (the limit's).
 */
function expected(reads: readonly Buffer[]): { commands: number[]; limit: boolean; lastRead: number } {
  const d = new RequestDecoder({ maxLineBytes: FUZZ_LIMITS.maxLineBytes, maxCommands: FUZZ_LIMITS.maxCommandsPerRequest, maxRequestBytes: FUZZ_LIMITS.maxRequestBytes });
  const commands: number[] = [];
  for (const [i, r] of reads.entries()) {
    const pushed = d.push(r);
    const evs = pushed.some((e) => e.kind === 'limit') ? pushed : [...pushed, ...d.endOfRead()];
    for (const ev of evs) {
      if (ev.kind === 'limit') return { commands, limit: true, lastRead: i };
      commands.push(ev.request.items.filter((it) => it.kind === 'command' && it.command !== 'EMPTYLINE').length);
    }
  }
  return { commands, limit: false, lastRead: reads.length - 1 };
}

test('fuzz: random and mutated requests in random chunkings; one framed answer set per request; a good client is never disturbed', async () => {
  const cards: RawCard[] = [{ name: 'fuzz a' }, { name: 'fuzz b' }, { name: '/192.168.42.10@12' }, { name: 'Fuzz Signer 1', signing: { commonName: 'Fuzz Signer', pin: '9876', pinTries: 15 } }];
  const b = await startBridge({ cards, config: { limits: { ...FUZZ_LIMITS, maxConnectionsPerIp: 1000 }, timeouts: { requestReadMs: 5000, idleMs: 20000 } } });
  let stop = false;
  let goodRounds = 0;
  const good = (async () => {
    const c = await LineClient.connect(b.port);
    try {
      while (!stop) {
        const ans = await c.request('>fuzz b|\n>1:APDU:00A4040000|\n>2:RESET\n\n', 10000);
        assert.match(ans, /^>1:[0-9A-F]{4,}\n>2:3B[0-9A-F]+\n@@\n$/);
        goodRounds++;
      }
    } finally {
      c.destroy();
    }
  })();
  try {
    await fc.assert(
      fc.asyncProperty(fuzzCase, async ({ segments, cuts, eofFirst }) => {
        // EOF ends a request in progress as if its empty line had come; send it explicitly so the oracle agrees.
        const input = Buffer.concat([...segments, Buffer.from('\n\n')]);
        const points = [...new Set(cuts.map((x) => x % (input.length + 1)))].sort((x, y) => x - y);
        const reads: Buffer[] = [];
        let at = 0;
        for (const p of [...points, input.length]) {
          if (p > at) reads.push(input.subarray(at, p));
          at = Math.max(at, p);
        }
        // A request ends at the end of a read (foxyproxy's rule), so each chunk goes out once the bridge has
        // read the ones before it: the bridge then sees exactly these reads.
        const want = expected(reads);
        const c = await LineClient.connect(b.port);
        c.socket.setNoDelay(true);
        const session = await serverSessionOf(b, c);
        let sent = 0;
        for (const [i, r] of reads.entries()) {
          c.send(r);
          sent += r.length;
          if (i < want.lastRead) await untilServerRead(session, sent, 10000);
        }
        if (!eofFirst) {
          const n = want.commands.length + (want.limit ? 1 : 0);
          await c.until((t) => t.split('@@\n').length - 1 >= n, 10000);
        }
        c.end();
        await c.closed(10000);
        const text = c.text;
        const sets = text.split('@@\n');
        assert.equal(sets.pop(), '', `answers end in @@: ${JSON.stringify(text)}`);
        assert.equal(sets.length, want.commands.length + (want.limit ? 1 : 0), `one answer set per request: ${JSON.stringify(text)}`);
        sets.forEach((s, i) => {
          const lines = s === '' ? [] : s.slice(0, -1).split('\n');
          for (const l of lines) assert.match(l, /^>[^:\n]*:[^\n]*$/, `answer line ${JSON.stringify(l)}`);
          const n = i < want.commands.length ? want.commands[i]! : 1;
          assert.equal(lines.length, n, `answer set ${i}: ${JSON.stringify(s)}`);
        });
        if (want.limit) assert.match(sets[sets.length - 1]!, /^>[^\n]*:C088\n$/);
      }),
      { numRuns: 250, seed: Number(process.env.FUZZ_SEED ?? 4242), endOnFailure: true },
    );
    assert.ok(goodRounds > 0, 'the well-behaved client made progress');
  } finally {
    stop = true;
    await good;
    await b.close();
  }
  assert.equal(b.server.sessions.size, 0);
});

test('bounded memory: a line without its end past maxLineBytes is answered C088 and closed; endless empty lines do not keep a connection', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { limits: { maxLineBytes: 128 }, timeouts: { idleMs: 600 } } });
  try {
    const c = await LineClient.connect(b.port);
    for (let i = 0; i < 20; i++) c.send('A'.repeat(10));
    c.send('>1:APDU:');
    c.send('A'.repeat(200));
    await c.closed();
    assert.equal(c.text, '>:C088\n@@\n');
    const d = await LineClient.connect(b.port);
    const t = setInterval(() => d.send('\n'), 50);
    try {
      await d.closed(5000);
    } finally {
      clearInterval(t);
    }
    assert.equal(d.text, '');
  } finally {
    await b.close();
  }
});

test('a non-protocol line split across segments after a request does not leave a request-read deadline armed', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { timeouts: { requestReadMs: 300, idleMs: 5000 } } });
  try {
    const c = await LineClient.connect(b.port);
    assert.equal(await c.request('>one\n>1:RESET\n\n'), '>1:3B021450\n@@\n');
    c.send('he');
    await new Promise((r) => setTimeout(r, 50));
    c.send('llo\n');
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(c.isClosed, false, 'still open (idle deadline is 5 s)');
    assert.equal(c.text, '>1:3B021450\n@@\n', 'no unsolicited C089');
    assert.equal(await c.request('>one\n>2:RESET\n\n'), '>2:3B021450\n@@\n');
    c.destroy();
  } finally {
    await b.close();
  }
});

test('maxLineBytes counts bytes on the wire, also for bytes that are not UTF-8', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { limits: { maxLineBytes: 64 } } });
  try {
    const c = await LineClient.connect(b.port);
    // a 64-byte non-protocol line of 0xFF bytes is within the limit (it decodes to 3-byte U+FFFD characters)
    c.send(Buffer.concat([Buffer.alloc(64, 0xff), Buffer.from('\n')]));
    assert.equal(await c.request('>one\n>1:RESET\n\n'), '>1:3B021450\n@@\n');
    c.destroy();
  } finally {
    await b.close();
  }
});
