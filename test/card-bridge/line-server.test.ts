import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { startBridge, LineClient, oneShot, decodeListing, type StartedBridge, type RawCard } from './helpers.ts';
import { tempDir, selfSignedCert } from '../helpers/relay.ts';

const LONG = 'A1'.repeat(300); // 300 bytes: a 61xx chain needs two GET RESPONSEs
const CARDS: RawCard[] = [
  {
    name: '/192.168.42.10@12',
    script: [
      { command: '00A4040007A0000000030000', response: '6F048400A5009000' },
      { command: '80CA0001*', response: `${LONG}9000`, mode: 'chain' },
      { command: '80CA0002*', response: '0102039000', mode: 'le' },
    ],
  },
  { name: '/192.168.42.10@13' },
  { name: 'R' },
  { name: 'Sim Slow' },
];

let bridge: StartedBridge;
before(async () => {
  bridge = await startBridge({ cards: CARDS, config: { timeouts: { commandMs: 3000, lockWaitMs: 20000 } } });
});
after(() => bridge.close());

test('APDUPlay: exact request and answer bytes (APDU, RESET, READERS, PERSONALIZE) on one persistent connection', async () => {
  const c = await LineClient.connect(bridge.port);
  assert.equal(await c.request('>Foxy NET 192.168.42.10-12|\n>17:APDU:00A4040007A0000000030000|\n\n'), '>17:6F048400A5009000\n@@\n');
  assert.equal(await c.request('>R|\n>18:RESET:|\n\n'), '>18:3B021450\n@@\n');
  const listing = await c.request('>*|\n>19:READERS:tag-1:0|\n\n');
  const names = ['Foxy NET 192.168.42.10-12', 'Foxy NET 192.168.42.10-13', 'Foxy USB R', 'Foxy USB Sim Slow'];
  assert.equal(listing, `>19:${names.map((n) => Buffer.from(n).toString('base64')).join('|')}\n@@\n`);
  assert.equal(await c.request('>*|\n>20:PERSONALIZE:tag-1|\n\n'), '>20:OK\n@@\n');
  assert.equal(await c.request('>*|\n>21:LIST\n\n'), listing.replace('>19:', '>21:'));
  assert.ok(!c.isClosed);
  c.destroy();
});

test('several commands: one answer line each, in order, then @@; a reader change mid-request', async () => {
  const ans = await oneShot(bridge.port, '>/192.168.42.10@13|\n>1:APDU:80EE000003AABBCC|\n>2:RESET\n>R|\n>3:apdu:80EE000001FF\n>4:EMPTYLINE\n>5:NOPE\n\n');
  assert.equal(ans, '>1:AABBCC9000\n>2:3B021450\n>3:FF9000\n>5:C081\n@@\n');
});

test('compatibility switch: @@ after every answer line (foxyproxy 1.x)', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { atAfterEveryAnswer: true } });
  try {
    const c = await LineClient.connect(b.port);
    c.send('>one|\n>1:APDU:80EE000001AA|\n>2:APDU:80EE000001BB|\n\n');
    assert.equal(await c.answers(2), '>1:AA9000\n@@\n>2:BB9000\n@@\n');
  } finally {
    await b.close();
  }
});

test('closeAfterAnswer (foxyproxy 2.x): one request, its answer, then EOF for clients that read to the end', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { closeAfterAnswer: true } });
  try {
    const c = await LineClient.connect(b.port);
    c.send('>one|\n>1:APDU:80EE000001AA|\n\n');
    await c.closed();
    assert.equal(c.text, '>1:AA9000\n@@\n');
  } finally {
    await b.close();
  }
});

test('a request split into single bytes is reassembled; two requests in one segment are both answered', async () => {
  const c = await LineClient.connect(bridge.port);
  const req = '>Foxy NET 192.168.42.10-13|\r\n>9:APDU:80 EE 00 00 02 12 34|\r\n\r\n';
  for (const ch of req) {
    c.send(ch);
    await new Promise((r) => setImmediate(r));
  }
  await c.answers(1);
  c.send('>R\n>10:APDU:80EE000001AA\n\n>R\n>11:APDU:80EE000001BB\n\n');
  assert.equal(await c.answers(3), '>9:12349000\n@@\n>10:AA9000\n@@\n>11:BB9000\n@@\n');
  c.destroy();
});

test('bad input gets defined answers: unknown reader, bad hex, short and malformed APDUs, no card, unknown command, no id', async () => {
  const cases: [string, string][] = [
    ['>nonexistent|\n>1:APDU:00A4000C023F00|\n\n', '>1:C083\n@@\n'],
    ['>R|\n>2:APDU:00A4000C023F0|\n\n', '>2:C087\n@@\n'],
    ['>R|\n>3:APDU:00A4ZZ0C023F00|\n\n', '>3:C087\n@@\n'],
    ['>R|\n>4:APDU:00A400|\n\n', '>4:C087\n@@\n'],
    ['>R|\n>5:APDU:00A4000C053F00|\n\n', '>5:C087\n@@\n'],
    ['>R|\n>6:APDU|\n\n', '>6:C087\n@@\n'],
    ['>R|\n>7:FROB:00|\n\n', '>7:C081\n@@\n'],
    ['>R|\n>:APDU:00A4000C023F00|\n\n', '>:6A82\n@@\n'],
    ['>Foxy NET 192.168.42.10-1|\n>8:RESET|\n\n', '>8:C083\n@@\n'],
    ['>192.168.42.10|\n>9:RESET|\n\n', '>9:C082\n@@\n'],
    ['>R|\n\n', '@@\n'],
    ['>R:1234|\n>12:RESET\n\n', '>12:3B021450\n@@\n'],
  ];
  const c = await LineClient.connect(bridge.port);
  for (const [req, want] of cases) assert.equal(await c.request(req), want, req);
  bridge.sim!.remove('Sim Slow');
  try {
    assert.equal(await c.request('>Foxy USB Sim Slow|\n>10:APDU:00A4000C023F00|\n>11:RESET\n\n'), '>10:C080\n>11:C080\n@@\n');
  } finally {
    bridge.sim!.insert('Sim Slow');
  }
  assert.equal(await c.request('>Foxy USB Sim Slow|\n>12:RESET\n\n'), '>12:3B021450\n@@\n');
  c.destroy();
});

test('61xx and 6Cxx pass through raw by default; autoGetResponse follows them for configured readers', async () => {
  const raw = await oneShot(bridge.port, '>/192.168.42.10@12\n>1:APDU:80CA000100\n>2:APDU:00C0000000\n>3:APDU:80CA000200\n\n');
  assert.equal(raw, `>1:6100\n>2:${LONG.slice(0, 512)}612C\n>3:6C03\n@@\n`);
  const b = await startBridge({ cards: CARDS, config: { autoGetResponse: ['/192.168.42.10@12'] } });
  try {
    const auto = await oneShot(b.port, '>/192.168.42.10@12\n>1:APDU:80CA000100\n>2:APDU:80CA000200\n\n');
    assert.equal(auto, `>1:${LONG}9000\n>2:0102039000\n@@\n`);
  } finally {
    await b.close();
  }
});

test('limits: a line one byte over maxLineBytes, too many commands, too large a request: C088 then close', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { limits: { maxLineBytes: 64, maxCommandsPerRequest: 3, maxRequestBytes: 150 } } });
  try {
    const data = '80EE0000'.padEnd(64 - '>1:APDU:'.length, 'A');
    // exactly 64 bytes: accepted (and rejected as a malformed APDU, but answered normally)
    const ok = await oneShot(b.port, `>one\n>1:APDU:${data}\n\n`);
    assert.equal(ok, '>1:C087\n@@\n');
    const c = await LineClient.connect(b.port);
    c.send(`>one\n>2:APDU:${data}A\n\n`);
    await c.closed();
    assert.equal(c.text, '>2:C088\n@@\n');
    const d = await LineClient.connect(b.port);
    d.send('>one\n>1:RESET\n>2:RESET\n>3:RESET\n\n>one\n>1:RESET\n>2:RESET\n>3:RESET\n>4:RESET\n\n');
    await d.closed();
    assert.equal(d.text, '>1:3B021450\n>2:3B021450\n>3:3B021450\n@@\n>4:C088\n@@\n');
    const e = await LineClient.connect(b.port);
    e.send(`>one\n>1:APDU:${'A'.repeat(50)}\n>2:APDU:${'A'.repeat(50)}\n>3:APDU:${'A'.repeat(50)}\n\n`);
    await e.closed();
    assert.equal(e.text, '>3:C088\n@@\n');
  } finally {
    await b.close();
  }
});

test('timeouts: idle connections are closed; an unfinished request is answered C089 and closed; EOF ends a request', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { timeouts: { idleMs: 300, requestReadMs: 300 } } });
  try {
    const idle = await LineClient.connect(b.port);
    assert.equal(await idle.request('>one\n>1:RESET\n\n'), '>1:3B021450\n@@\n');
    await idle.closed(5000);
    const junk = await LineClient.connect(b.port);
    const t0 = Date.now();
    while (!junk.isClosed && Date.now() - t0 < 5000) {
      junk.send('not a protocol line\n');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(junk.isClosed, 'lines that are not protocol lines do not keep the connection alive');
    // a stalled half-sent line answers under its own id (`>46:RES` then silence)
    const stalled = await LineClient.connect(b.port);
    stalled.send('>one\n>46:RES');
    await stalled.closed(5000);
    assert.equal(stalled.text, '>46:C089\n@@\n');
    // EMPTYLINE: complete lines, but the empty line never comes
    const waiting = await LineClient.connect(b.port);
    waiting.send('>one\n>3:EMPTYLINE\n>4:RESET\n');
    await waiting.closed(5000);
    assert.equal(waiting.text, '>4:C089\n@@\n');
    const eof = await LineClient.connect(b.port);
    eof.send('>one\n>5:RESET');
    eof.end();
    await eof.closed(5000);
    assert.equal(eof.text, '>5:3B021450\n@@\n');
  } finally {
    await b.close();
  }
});

test('a slow card does not delay other cards; a request is atomic on its card', async () => {
  bridge.sim!.setDelay('Sim Slow', 400);
  try {
    const slow = await LineClient.connect(bridge.port);
    const fast = await LineClient.connect(bridge.port);
    const other = await LineClient.connect(bridge.port);
    const card = bridge.sim!.card('Sim Slow')!;
    card.log.length = 0;
    slow.send('>Sim Slow\n>1:APDU:80EE000001A1\n>2:APDU:80EE000001A2\n>3:APDU:80EE000001A3\n\n');
    await new Promise((r) => setTimeout(r, 50));
    other.send('>Sim Slow\n>1:APDU:80EE000001B1\n\n');
    const t0 = Date.now();
    assert.equal(await fast.request('>R\n>1:APDU:80EE000001CC\n\n'), '>1:CC9000\n@@\n');
    assert.equal(slow.text, '', 'the fast card answered while the slow card was still working');
    assert.ok(Date.now() - t0 < 5000);
    await slow.answers(1);
    await other.answers(1);
    assert.deepEqual(card.log, ['80EE000001A1', '80EE000001A2', '80EE000001A3', '80EE000001B1']);
  } finally {
    bridge.sim!.setDelay('Sim Slow', 0);
  }
});

test('per-card wait queue: full → C089 right away; a card slower than commandMs → C089', async () => {
  const b = await startBridge({ cards: [{ name: 'slow', delayMs: 600 }], config: { limits: { maxQueuedPerCard: 1 }, timeouts: { commandMs: 5000 } } });
  try {
    const clients = await Promise.all([0, 1, 2].map(() => LineClient.connect(b.port)));
    clients[0]!.send('>slow\n>1:RESET\n\n');
    await new Promise((r) => setTimeout(r, 100));
    clients[1]!.send('>slow\n>1:RESET\n\n');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await clients[2]!.request('>slow\n>1:RESET\n\n'), '>1:C089\n@@\n');
    assert.equal(await clients[0]!.answers(1), '>1:3B021450\n@@\n');
    assert.equal(await clients[1]!.answers(1), '>1:3B021450\n@@\n');
  } finally {
    await b.close();
  }
  const t = await startBridge({ cards: [{ name: 'slow', delayMs: 2000 }], config: { timeouts: { commandMs: 200 } } });
  try {
    assert.equal(await oneShot(t.port, '>slow\n>1:RESET\n\n'), '>1:C089\n@@\n');
  } finally {
    await t.close();
  }
  const w = await startBridge({ cards: [{ name: 'slow', delayMs: 1500 }], config: { timeouts: { lockWaitMs: 200 } } });
  try {
    const first = await LineClient.connect(w.port);
    first.send('>slow\n>1:RESET\n\n');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await oneShot(w.port, '>slow\n>1:RESET\n\n'), '>1:C089\n@@\n', 'lock wait past lockWaitMs');
    assert.equal(await first.answers(1), '>1:3B021450\n@@\n');
  } finally {
    await w.close();
  }
});

test('connection limits: the connection one past maxConnectionsPerIp is answered C089 and closed', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { limits: { maxConnectionsPerIp: 2 } } });
  try {
    const a = await LineClient.connect(b.port);
    const c = await LineClient.connect(b.port);
    await a.request('>one\n>1:RESET\n\n');
    await c.request('>one\n>1:RESET\n\n');
    const third = await LineClient.connect(b.port);
    await third.closed();
    assert.equal(third.text, '>:C089\n@@\n');
    a.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await oneShot(b.port, '>one\n>1:RESET\n\n'), '>1:3B021450\n@@\n');
  } finally {
    await b.close();
  }
});

test('backpressure: many pipelined requests past maxPendingRequests are all answered, in order', async () => {
  const b = await startBridge({ cards: [{ name: 'one', delayMs: 5 }], config: { limits: { maxPendingRequests: 2 } } });
  try {
    const c = await LineClient.connect(b.port);
    const n = 40;
    c.send(Array.from({ length: n }, (_, i) => `>one\n>${i}:APDU:80EE000001${(i % 256).toString(16).padStart(2, '0').toUpperCase()}\n\n`).join(''));
    const text = await c.answers(n, 20000);
    assert.equal(text, Array.from({ length: n }, (_, i) => `>${i}:${(i % 256).toString(16).padStart(2, '0').toUpperCase()}9000\n@@\n`).join(''));
  } finally {
    await b.close();
  }
});

test('a client that stops reading its answers is destroyed after writeMs', async () => {
  const b = await startBridge({ cards: [{ name: 'one' }], config: { timeouts: { writeMs: 300 }, limits: { maxPendingRequests: 4 } } });
  try {
    const { connect } = await import('node:net');
    const s = connect({ host: '127.0.0.1', port: b.port });
    s.on('error', () => undefined);
    await new Promise((r) => s.once('connect', r));
    s.pause();
    const req = `>one\n>1:APDU:80EE0000FF${'AB'.repeat(255)}\n\n`;
    const deadline = Date.now() + 20000;
    while (b.server.sessions.size > 0 && Date.now() < deadline) {
      if (s.writableLength < 4 * 1024 * 1024) s.write(req.repeat(200));
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(b.server.sessions.size, 0, 'the stalled reader was destroyed');
    s.destroy();
  } finally {
    await b.close();
  }
});

test('TLS listener: same protocol over TLS', async () => {
  const dir = tempDir('gatehouse-card-tls-');
  const tls = selfSignedCert(dir);
  const b = await startBridge({
    cards: [{ name: 'one' }],
    config: {
      listeners: [{ kind: 'tls', host: '127.0.0.1', port: 0 }],
      tls,
      timeouts: { requestReadMs: 300 },
    },
  });
  try {
    const c = await LineClient.connect(0, tlsConnect({ host: '127.0.0.1', port: b.port, rejectUnauthorized: false }));
    assert.equal(await c.request('>one\n>1:APDU:80EE000001AA\n\n'), '>1:AA9000\n@@\n');
    c.destroy();
    // a TCP client that never starts the TLS handshake is dropped after the handshake deadline
    const raw = await LineClient.connect(b.port);
    await raw.closed(5000);
    assert.equal(raw.text, '');
  } finally {
    await b.close();
  }
});

test('close() drains: a request in progress is answered, then the connection ends', async () => {
  const b = await startBridge({ cards: [{ name: 'slow', delayMs: 300 }] });
  const c = await LineClient.connect(b.port);
  c.send('>slow\n>1:RESET\n\n');
  await new Promise((r) => setTimeout(r, 50));
  await b.server.close({ graceMs: 5000 });
  await c.closed();
  assert.equal(c.text, '>1:3B021450\n@@\n');
  assert.deepEqual(decodeListing(''), []);
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
