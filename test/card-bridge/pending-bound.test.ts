/**
 * `limits.maxPendingRequests` holds within one socket read: a read full of tiny pipelined requests is decoded
 * only as far as the queue has room; the rest stays as raw bytes (charged to the shared budget at its size)
 * and is decoded, in order, as the queue drains. Real sockets on 127.0.0.1 against the real bridge over
 * simulated cards; answers are compared byte for byte with the same requests sent one at a time.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RequestDecoder, type DecoderEvent } from '../../src/card-bridge/protocol/lines.ts';
import { startBridge, LineClient, serverSessionOf, untilServerRead, type StartedBridge } from './helpers.ts';

/** One request of a pipelined batch; each ends so that no read boundary changes its answer. */
function requestText(i: number): string {
  const hh = (i % 256).toString(16).padStart(2, '0').toUpperCase();
  switch (i % 8) {
    case 0:
      return `>*|\n>${i}:LIST\n\n`;
    case 1:
      return `>pb\n>${i}:RESET\n\n`;
    case 2:
      return `>pb\n>${i}:APDU:80EE000001${hh}\n\n`;
    case 3:
      return `>nope\n>${i}:RESET\n\n`;
    case 4:
      return `>pb\r\n>${i}:BOGUS\r\n\r\n`;
    case 5:
      // EMPTYLINE first: a read boundary between its commands cannot end it early
      return `>pb\n>e:EMPTYLINE\n>${i}a:APDU:80EE000001${hh}|\n>${i}b:RESET|\n\n`;
    case 6:
      return `not a protocol line\n>pb|\n>${i}:PERSONALIZE:tag\n\n`;
    default:
      return `>pb\r>${i}:APDU:80EE0000\r\r`;
  }
}

/** The last request of a batch has no empty line (JSignPdf): the end of the read completes it. */
const LAST = '>pb|\n>last:RESET|\n';

function batch(n: number): string[] {
  return [...Array.from({ length: n }, (_, i) => requestText(i)), LAST];
}

/** Each request sent alone, its answer awaited before the next: the reference answers. */
async function oneByOne(port: number, requests: readonly string[]): Promise<string> {
  const c = await LineClient.connect(port);
  try {
    for (const r of requests) await c.request(r);
    return c.text;
  } finally {
    c.destroy();
  }
}

let bridge: StartedBridge;
let reference = '';
const N = 4000;
const requests = batch(N);
const whole = requests.join('');

before(async () => {
  bridge = await startBridge({ cards: [{ name: 'pb' }] });
  reference = await oneByOne(bridge.port, requests);
  assert.equal(reference.split('@@\n').length - 1, N + 1);
});
after(() => bridge.close());

test(`one write of ${N} pipelined requests: never more than maxPendingRequests queued; every answer, in order, byte for byte`, async () => {
  const max = bridge.config.limits.maxPendingRequests;
  assert.equal(max, 16);
  assert.ok(whole.length > 65536, 'more than one socket read');
  const c = await LineClient.connect(bridge.port);
  const session = await serverSessionOf(bridge, c);
  c.send(whole);
  await c.answers(N + 1, 10000);
  assert.equal(c.text, reference);
  const s = session.stats;
  assert.ok(
    s.peakQueuedRequests <= max,
    `${s.peakQueuedRequests} requests queued at once (maxPendingRequests ${max})`,
  );
  assert.ok(s.peakQueuedRequests >= max - 1, `the queue was used (${s.peakQueuedRequests})`);
  // still open and working afterwards
  assert.equal(await c.request('>pb\n>z:RESET\n\n'), '>z:3B021450\n@@\n');
  c.destroy();
});

test('the same, half-closed right after the write: every answer still arrives, then the server closes', async () => {
  const c = await LineClient.connect(bridge.port);
  const session = await serverSessionOf(bridge, c);
  c.send(whole);
  c.end();
  await c.closed(10000);
  assert.equal(c.text, reference);
  assert.ok(
    session.stats.peakQueuedRequests <= bridge.config.limits.maxPendingRequests,
    `${session.stats.peakQueuedRequests} queued at once`,
  );
});

test('a small pipelined batch split at every byte (and at random points, half-closed or not) gives the same answers', async () => {
  const small = batch(8);
  const bytes = Buffer.from(small.join(''));
  const b = await startBridge({ cards: [{ name: 'pb' }], config: { limits: { maxPendingRequests: 1 } } });
  try {
    const expected = await oneByOne(b.port, small);
    const run = async (cuts: readonly number[], halfClose: boolean): Promise<void> => {
      const c = await LineClient.connect(b.port);
      const session = await serverSessionOf(b, c);
      let at = 0;
      for (const cut of [...cuts, bytes.length]) {
        if (cut <= at) continue;
        c.send(bytes.subarray(at, cut));
        at = cut;
        // each piece in a read of its own (reads end requests without an empty line)
        if (at < bytes.length) await untilServerRead(session, at);
      }
      if (halfClose) {
        c.end();
        await c.closed(5000);
      } else {
        await c.answers(small.length, 5000);
      }
      assert.equal(c.text, expected, `cuts ${JSON.stringify(cuts)}${halfClose ? ' half-closed' : ''}`);
      assert.ok(session.stats.peakQueuedRequests <= 1, `${session.stats.peakQueuedRequests} queued at once`);
      c.destroy();
    };
    for (let k = 0; k <= bytes.length; k++) await run([k], k % 2 === 1);
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 12 }),
        fc.boolean(),
        async (cuts, halfClose) => {
          await run(
            [...cuts].sort((x, y) => x - y),
            halfClose,
          );
        },
      ),
      { numRuns: 25 },
    );
  } finally {
    await b.close();
  }
});

test('the decoder, bounded to k requests at a time and resumed, gives the events of the unbounded decoder, for any reads and any k', () => {
  const limits = { maxLineBytes: 64, maxCommands: 4, maxRequestBytes: 256 };
  const lineArb = fc.constantFrom(
    '>r|',
    '>1:A',
    '>2:B:CC|',
    '>e:EMPTYLINE',
    '#3|X',
    'junk',
    '',
    '>',
    ':',
    `>${'x'.repeat(70)}`,
  );
  const endArb = fc.constantFrom('\n', '\r', '\r\n');
  const readsArb = fc.array(fc.array(fc.tuple(lineArb, endArb, fc.boolean()), { maxLength: 12 }), {
    minLength: 1,
    maxLength: 6,
  });
  fc.assert(
    fc.property(readsArb, fc.integer({ min: 0, max: 3 }), (reads, k) => {
      // a read ends after a line end, or (third element false) in the middle of its last line
      const chunks = reads.map((lines) =>
        Buffer.from(lines.map(([l, e, whole]) => (whole ? l + e : l)).join('')),
      );
      const plain = new RequestDecoder(limits);
      const want: DecoderEvent[] = [];
      for (const c of chunks) want.push(...plain.push(c), ...plain.endOfRead());
      const bounded = new RequestDecoder(limits);
      const got: DecoderEvent[] = [];
      for (const c of chunks) {
        got.push(...bounded.push(c, k));
        let rounds = 0;
        while (bounded.undecodedBytes > 0) {
          assert.deepEqual(bounded.endOfRead(), [], 'the read is not over while its rest is held');
          const evs = bounded.resume(Math.max(1, k));
          assert.ok(evs.filter((e) => e.kind === 'request').length <= Math.max(1, k));
          got.push(...evs);
          assert.ok(++rounds <= c.length + 1);
        }
        got.push(...bounded.endOfRead());
      }
      assert.deepEqual(got, want);
    }),
    { numRuns: 500 },
  );
});

test('the shared budget is charged the undecoded rest of a read at its size, and gets everything back when the connection ends', async () => {
  const b = await startBridge({ cards: [{ name: 'pb slow', delayMs: 100 }] });
  try {
    const max = b.config.limits.maxPendingRequests;
    const baseline = b.server.bufferedBytes;
    const text = Array.from({ length: 2000 }, (_, i) => `>pb slow\n>${i}:RESET\n\n`).join('');
    assert.ok(text.length < 65536);
    const c = await LineClient.connect(b.port);
    const session = await serverSessionOf(b, c);
    c.send(text);
    await untilServerRead(session, text.length);
    const deadline = Date.now() + 3000;
    while (session.stats.undecodedBytes === 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    const s = session.stats;
    assert.ok(s.undecodedBytes > 0, 'the rest of the read is held undecoded while the queue is full');
    assert.ok(s.undecodedBytes <= 65536, `at most one read held (${s.undecodedBytes} bytes)`);
    assert.ok(
      s.queuedRequests <= max && s.peakQueuedRequests <= max,
      `${s.peakQueuedRequests} requests queued at once`,
    );
    assert.equal(
      b.server.bufferedBytes - baseline,
      s.budgetBytes,
      'the budget holds what the connection holds',
    );
    assert.ok(
      s.budgetBytes >= s.undecodedBytes,
      `charged ${s.budgetBytes} bytes for ${s.undecodedBytes} undecoded bytes`,
    );
    // reading stays paused while bytes are held: what the client sends next is not decoded (at most the
    // stream's own buffer takes it)
    c.send('>pb slow\n>late:RESET\n\n');
    await new Promise((r) => setTimeout(r, 150));
    assert.ok(session.socket.isPaused(), 'reading is paused while bytes are held');
    assert.ok(
      session.stats.undecodedBytes > 0 && session.stats.undecodedBytes <= s.undecodedBytes,
      'nothing was added to the held rest',
    );
    assert.ok(session.stats.peakQueuedRequests <= max);
    c.destroy();
    const until = Date.now() + 3000;
    while (b.server.sessions.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.equal(b.server.sessions.size, 0);
    assert.equal(b.server.bufferedBytes, baseline, 'the budget is back where it was');
  } finally {
    await b.close();
  }
});

test('a graceful close while a read is held undecoded answers every request already read, then ends the connection', async () => {
  const b = await startBridge({ cards: [{ name: 'pb slow', delayMs: 2 }] });
  let closing: Promise<void> | undefined;
  try {
    const n = 200;
    const text = Array.from({ length: n }, (_, i) => `>pb slow\n>${i}:RESET\n\n`).join('');
    const c = await LineClient.connect(b.port);
    const session = await serverSessionOf(b, c);
    c.send(text);
    await untilServerRead(session, text.length);
    assert.ok(session.stats.undecodedBytes > 0, 'bytes are held when the close starts');
    closing = b.server.close({ graceMs: 10000 });
    await c.closed(10000);
    assert.equal(c.text, Array.from({ length: n }, (_, i) => `>${i}:3B021450\n@@\n`).join(''));
    assert.ok(session.stats.peakQueuedRequests <= b.config.limits.maxPendingRequests);
    await closing;
    assert.equal(b.server.bufferedBytes, 0);
  } finally {
    if (closing === undefined) await b.close();
  }
});
