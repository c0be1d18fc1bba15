/**
 * Adversarial review of the card bridge (issue 3: "bad input never hangs and never kills other clients"):
 * a fast-check fuzz over a real socket, SIGN's PIN and hash edge cases, the REST APIs we serve against
 * hostile clients, and the CloudFoxy upstream backend against a hostile upstream.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { createServer, type Server } from 'node:http';
import { tempDir, selfSignedCert, captureLog } from '../helpers/relay.ts';
import fc from 'fast-check';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { CloudFoxyBackend } from '../../src/card-bridge/backends/cloudfoxy.ts';
import { RequestDecoder } from '../../src/card-bridge/protocol/lines.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { startBridge, LineClient, oneShot, oneResult, testLogger, type StartedBridge, type RawCard } from './helpers.ts';

// ---------------------------------------------------------------------------------------------------
// 1. Fuzz over a real socket
// ---------------------------------------------------------------------------------------------------

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

/** What the server must answer: the reference decoder's requests (their command counts) and whether a limit ends it. */
function expected(input: Buffer): { commands: number[]; limit: boolean } {
  const d = new RequestDecoder({ maxLineBytes: FUZZ_LIMITS.maxLineBytes, maxCommands: FUZZ_LIMITS.maxCommandsPerRequest, maxRequestBytes: FUZZ_LIMITS.maxRequestBytes });
  const commands: number[] = [];
  for (const ev of d.push(input)) {
    if (ev.kind === 'limit') return { commands, limit: true };
    commands.push(ev.request.items.filter((i) => i.kind === 'command' && i.command !== 'EMPTYLINE').length);
  }
  return { commands, limit: false };
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
        const want = expected(input);
        const c = await LineClient.connect(b.port);
        c.socket.setNoDelay(true);
        const points = [...new Set(cuts.map((x) => x % (input.length + 1)))].sort((x, y) => x - y);
        let at = 0;
        for (const p of [...points, input.length]) {
          if (p > at) c.send(input.subarray(at, p));
          at = Math.max(at, p);
          await new Promise((r) => setImmediate(r));
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

// ---------------------------------------------------------------------------------------------------
// 2. SIGN: PINs, hashes, aliases, locking
// ---------------------------------------------------------------------------------------------------

const SIGNERS: RawCard[] = [
  { name: 'Colon Card', signing: { commonName: 'Colon Person', countryName: 'CZ', pin: 'ab:c|d12', pinTries: 5 } },
  { name: 'Plain Card', signing: { commonName: 'Plain Person', countryName: 'SK', pin: 'abcd1234', pinTries: 5 } },
  { name: 'Slow Card', signing: { commonName: 'Slow Person', countryName: 'AT', pin: '11112222', pinTries: 5 } },
];
const H32 = 'AB'.repeat(32);

let sb: StartedBridge;
const logged = captureLog('trace');
before(async () => {
  sb = await startBridge({ cards: SIGNERS, log: logged.log });
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
  const all = logged.text();
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

// ---------------------------------------------------------------------------------------------------
// 3. The REST APIs we serve
// ---------------------------------------------------------------------------------------------------

const CF = 'cf-review-token';
const FP = 'fp-review-token';

async function withApis(fn: (cf: string, fp: string, b: StartedBridge) => Promise<void>, config: Record<string, unknown> = {}): Promise<void> {
  const b = await startBridge({
    cards: [{ name: 'Rest One' }, { name: 'Rest Two', delayMs: 20 }],
    config: {
      cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: CF },
      foxyproxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: FP },
      ...config,
    },
  });
  try {
    await fn(b.url('cloudfoxy-api').replace(/\/api\/v1\/$/, ''), b.url('foxyproxy-api').replace(/\/api\/v1\.0\/$/, ''), b);
  } finally {
    await b.close();
  }
}

test('REST: tokens (missing, wrong, longer, prefix, case), odd paths and terminal names get defined answers', async () => {
  await withApis(async (cf, fp) => {
    for (const tok of [undefined, '', 'x', CF.slice(0, -1), `${CF}x`, CF.toUpperCase(), `${CF} x`]) {
      const r = await fetch(`${cf}/api/v1/hello`, { headers: tok === undefined ? {} : { 'X-Auth-Token': tok } });
      assert.equal(r.status, 401, `token ${JSON.stringify(tok)}`);
    }
    const h = { 'X-Auth-Token': CF };
    for (const t of ['../../etc/passwd', '%2e%2e%2f', '/', '', '\u0000', 'Rest', 'x'.repeat(4000)]) {
      const r = await fetch(`${cf}/api/v1/basic?reset=1&terminal=${encodeURIComponent(t)}`, { headers: h });
      assert.ok([404, 409].includes(r.status), `terminal ${JSON.stringify(t.slice(0, 20))}: ${r.status}`);
      await r.text();
    }
    const fh = { Authorization: `Bearer ${FP}` };
    for (const p of ['/api/v1.0/select/%E0%A4%A', '/api/v1.0/select/%', '/api/v1.0/select/..%2F..%2Fetc']) {
      const r = await fetch(`${fp}${p}`, { headers: fh });
      assert.ok(r.status === 400 || r.status === 200, `${p}: ${r.status}`);
      await r.text();
    }
    for (const body of ['{"data":{"reader":"Rest One","commands":[null]}}', '{"data":{"reader":"Rest One","commands":[1,"x"]}}', 'null', '[]', '{"data":null}']) {
      const r = await fetch(`${fp}/api/v1.0/command`, { method: 'POST', headers: fh, body });
      assert.equal(r.status, 400, `${body}: ${r.status} ${await r.text()}`);
    }
  });
});

test('REST: oversized query and body; concurrent requests on one card are serialised and all answered', async () => {
  await withApis(async (cf, fp) => {
    const h = { 'X-Auth-Token': CF };
    const big = await fetch(`${cf}/api/v1/basic?reset=0&terminal=Rest%20One&apdu=${'A'.repeat(70000)}`, { headers: h }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    assert.ok(big instanceof Error || big.status === 431 || big.status === 400, String(big instanceof Error ? big : big.status));
    const fh = { Authorization: `Bearer ${FP}` };
    const r = await fetch(`${fp}/api/v1.0/command`, { method: 'POST', headers: fh, body: 'x'.repeat(1048577) }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    assert.ok(r instanceof Error || r.status === 413);
    const all = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        fetch(`${cf}/api/v1/basic?reset=0&terminal=Rest%20Two&apdu=00A40400${i % 2 === 0 ? '00' : ''}`, { headers: h }).then(async (x) => [x.status, await x.text()] as const),
      ),
    );
    for (const [status, text] of all) assert.equal(status, 200, text);
  });
});

test('REST slowloris: a client that never finishes its headers or body is cut off by the header / request deadline', async () => {
  const { createCloudFoxyApi } = await import('../../src/card-bridge/rest/cloudfoxy.ts');
  const { Secret } = await import('../../src/core/config/secret.ts');
  const b = await startBridge({ cards: [{ name: 'one' }] });
  const api = createCloudFoxyApi(b.server.cards, { token: new Secret(CF), log: testLogger(), startedAt: Date.now(), requestTimeoutMs: 800 });
  const port = await api.listen('127.0.0.1', 0);
  try {
    const t0 = Date.now();
    const results = await Promise.all(
      ['GET /api/v1/hello HTTP/1.1\r\nHost: x\r\nX-Au', `POST /api/v1/hello HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${CF}\r\nContent-Length: 100\r\n\r\nab`].map(
        (head) =>
          new Promise<number>((resolve) => {
            const s = connect({ host: '127.0.0.1', port }, () => s.write(head));
            const drip = setInterval(() => s.write(head.startsWith('GET') ? 'x' : 'y'), 100);
            s.on('error', () => undefined);
            s.on('close', () => {
              clearInterval(drip);
              resolve(Date.now() - t0);
            });
            setTimeout(() => s.destroy(), 15000).unref();
          }),
      ),
    );
    for (const ms of results) assert.ok(ms < 6000, `cut off after ${ms} ms`);
  } finally {
    await api.close(0);
    await b.close();
  }
});

// ---------------------------------------------------------------------------------------------------
// 4. The CloudFoxy upstream backend against a hostile upstream
// ---------------------------------------------------------------------------------------------------

async function hostile(onBasic: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void): Promise<{ url: string; server: Server; basics: () => number }> {
  let n = 0;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/api/v1/hello') return res.end('CloudFoxy\nuptime 100 s\n');
    if (url.pathname === '/api/v1/inventory') return res.end('/10.9.9.9@1 3B021450\n');
    n++;
    onBasic(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`, server, basics: () => n };
}

function backendFor(url: string, extra: Record<string, unknown> = {}): CloudFoxyBackend {
  const cfg = validateConfig(cardBridgeConfigSchema, {
    backends: [{ kind: 'cloudfoxy', url, token: 't', pollIntervalMs: 60000, requestTimeoutMs: 700, maxResponseBytes: 4096, ...extra }],
  }).backends[0];
  assert.ok(cfg?.kind === 'cloudfoxy');
  return new CloudFoxyBackend(cfg, testLogger());
}

async function stopServer(s: Server): Promise<void> {
  s.closeAllConnections();
  await new Promise((r) => s.close(r));
}

test('hostile upstream: slow drip, endless line, no newline, silence: every call ends by its deadline', async () => {
  const timers = new Set<NodeJS.Timeout>();
  let mode = 'drip';
  const h = await hostile((_req, res) => {
    if (mode === 'drip') {
      res.writeHead(200);
      const t = setInterval(() => res.write('9'), 50);
      timers.add(t);
      res.on('close', () => clearInterval(t));
    } else if (mode === 'endless') {
      res.writeHead(200);
      const t = setInterval(() => res.write('90'.repeat(1024)), 5);
      timers.add(t);
      res.on('close', () => clearInterval(t));
    } else if (mode === 'nonewline') {
      res.end('9000');
    } else if (mode === 'silence') {
      // never answers
    }
  });
  const be = backendFor(h.url);
  try {
    await be.start();
    for (const m of ['drip', 'endless', 'silence']) {
      mode = m;
      const t0 = Date.now();
      const err = await be.transmit('/10.9.9.9@1', Buffer.from('00A40400', 'hex'), new AbortController().signal).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), `${m}: ${String(err)}`);
      assert.ok(Date.now() - t0 < 3000, `${m}: ${Date.now() - t0} ms`);
    }
    mode = 'nonewline';
    assert.equal((await be.transmit('/10.9.9.9@1', Buffer.from('00A40400', 'hex'), new AbortController().signal)).toString('hex'), '9000');
  } finally {
    for (const t of timers) clearInterval(t);
    await be.close();
    await stopServer(h.server);
  }
});

test('hostile upstream: a connection reset after the request arrived does not send the APDU (e.g. a VERIFY PIN) twice', async () => {
  const h = await hostile((req) => req.socket.destroy());
  const be = backendFor(h.url);
  try {
    await be.start();
    const before = h.basics();
    const verify = Buffer.from('0020008604' + '31323334', 'hex');
    const err = await be.transmit('/10.9.9.9@1', verify, new AbortController().signal).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), String(err));
    assert.equal(h.basics() - before, 1, 'the APDU reached the upstream once');
  } finally {
    await be.close();
    await stopServer(h.server);
  }
});

test('hostile upstream: start() and close() are bounded when /hello and /inventory never answer', async () => {
  const server = createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  const be = backendFor(`http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`);
  try {
    const t0 = Date.now();
    await be.start();
    assert.ok(Date.now() - t0 < 4000, `start took ${Date.now() - t0} ms`);
    assert.deepEqual(be.readers(), []);
  } finally {
    await be.close();
    await stopServer(server);
  }
});

test('a pipelining client is not timed out while the server itself stopped reading (backpressure on a slow card)', async () => {
  const b = await startBridge({
    cards: [{ name: 'slowpoke', delayMs: 250 }],
    config: { limits: { maxPendingRequests: 1 }, timeouts: { requestReadMs: 400 } },
  });
  try {
    const c = await LineClient.connect(b.port);
    c.send('>slowpoke\n>1:RESET\n\n>slowpoke\n>2:RESET\n\n>slowpoke\n>3:RESET\n\n>slowpoke\n>4:RE');
    await new Promise((r) => setTimeout(r, 50));
    c.send('SET\n\n');
    const text = await c.answers(4, 10000);
    assert.equal(text, '>1:3B021450\n@@\n>2:3B021450\n@@\n>3:3B021450\n@@\n>4:3B021450\n@@\n');
    c.destroy();
  } finally {
    await b.close();
  }
});

test('TLS listener: connections still in their handshake count against maxConnections', async () => {
  const dir = tempDir('gatehouse-card-review-tls-');
  const tls = selfSignedCert(dir);
  const b = await startBridge({
    cards: [{ name: 'one' }],
    config: {
      listeners: [{ kind: 'tls', host: '127.0.0.1', port: 0 }],
      tls,
      timeouts: { requestReadMs: 4000 },
      limits: { maxConnections: 2 },
    },
  });
  try {
    const raws = await Promise.all(Array.from({ length: 6 }, () => LineClient.connect(b.port)));
    await new Promise((r) => setTimeout(r, 1000));
    const open = raws.filter((c) => !c.isClosed).length;
    assert.ok(open <= 2, `${open} handshake-pending connections held open`);
    for (const c of raws) c.destroy();
  } finally {
    await b.close();
  }
});

test('a request whose client reset the connection stops at its next command instead of keeping the card busy', async () => {
  const b = await startBridge({ cards: [{ name: 'busy', delayMs: 80 }] });
  try {
    const card = b.sim!.card('busy')!;
    const c = await LineClient.connect(b.port);
    const cmds = Array.from({ length: 20 }, (_, i) => `>${i}:APDU:80EE000001AA\n`).join('');
    card.log.length = 0;
    c.send(`>busy\n${cmds}\n`);
    await new Promise((r) => setTimeout(r, 200));
    // a reset, not a FIN: a half-closed client still gets its answers (EOF ends a request), a reset one cannot
    c.socket.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 800));
    const n = card.log.length;
    assert.ok(n <= 5, `${n} APDUs ran for a client that had gone`);
    // the card is free for others right away
    assert.equal(await oneShot(b.port, '>busy\n>1:APDU:80EE000001AA\n\n'), '>1:AA9000\n@@\n');
  } finally {
    await b.close();
  }
});

test('foxyproxy API: commands stop when the HTTP client goes away', async () => {
  await withApis(async (_cf, fp, b) => {
    const card = b.sim!.card('Rest Two')!;
    b.sim!.setDelay('Rest Two', 80);
    card.log.length = 0;
    const commands = Array.from({ length: 20 }, (_, i) => ({ id: String(i), line: 'APDU:80EE000001AA' }));
    const ac = new AbortController();
    const r = fetch(`${fp}/api/v1.0/command`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${FP}` },
      body: JSON.stringify({ data: { reader: 'Rest Two', commands } }),
      signal: ac.signal,
    }).catch(() => undefined);
    await new Promise((res) => setTimeout(res, 200));
    ac.abort();
    await r;
    await new Promise((res) => setTimeout(res, 800));
    assert.ok(card.log.length <= 5, `${card.log.length} APDUs ran for a client that had gone`);
  });
});
