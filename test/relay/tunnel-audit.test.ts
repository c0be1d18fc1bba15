/**
 * Audit of established legacy tunnels with hostile partners: WebSocket frames written by hand (fragments
 * with control frames between them, frames split at every byte, violations after pairing, the message
 * limit), half-closes and resets with bytes queued, a partner that never reads, the kernel relay hand-off
 * with bytes in flight both ways, many tunnels ending at once. Random payloads, compared byte for byte.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startRelay, rawClient, pair, authenticate, deadline, selfSignedCert, tempDir, NO_ERROR, TUNNEL_ESTABLISHED, type StartedRelay, everyListener } from '../helpers/relay.ts';
import { loadSplice } from '../../src/relay/splice.ts';

const BUFFER = 65536;
let relay: StartedRelay;
before(async () => {
  const dir = tempDir();
  relay = await startRelay({
    tls: selfSignedCert(dir),
    limits: { tunnelBufferBytes: BUFFER },
    timeouts: { halfCloseMs: 3000, closeFlushMs: 2000 },
    listeners: everyListener(dir),
  });
});
const rawSockets = new Set<Socket>();
after(async () => {
  for (const s of rawSockets) s.destroy();
  await relay.close();
});

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  await deadline(
    new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (cond()) {
          clearInterval(t);
          resolve();
        }
      }, 5);
    }),
    ms,
    what,
  );
}

/** A masked client frame (RFC 6455 §5.2) built by hand; `mask: false` leaves it unmasked (a violation). */
function frame(opcode: number, payload: Buffer, opts: { fin?: boolean; mask?: boolean } = {}): Buffer {
  const fin = opts.fin ?? true;
  const masked = opts.mask ?? true;
  const n = payload.length;
  const len = n < 126 ? [n] : n < 65536 ? [126, n >> 8, n & 0xff] : [127, 0, 0, 0, 0, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  const head = Buffer.from([(fin ? 0x80 : 0) | opcode, (masked ? 0x80 : 0) | len[0]!, ...len.slice(1)]);
  if (!masked) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!;
  return Buffer.concat([head, key, body]);
}

/** Server frames parsed off a raw WebSocket client's socket. */
interface RawWs {
  socket: Socket;
  frames: { opcode: number; fin: boolean; payload: Buffer }[];
  /** Data payload bytes received (text and binary), concatenated. */
  data(): Buffer;
  waitFrame(pred: (f: { opcode: number; payload: Buffer }) => boolean, ms?: number): Promise<{ opcode: number; payload: Buffer }>;
  ended: Promise<void>;
}

/** A WebSocket client whose frames we write ourselves, over a plain TCP socket. */
async function rawWs(port: number): Promise<RawWs> {
  const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  socket.on('error', () => undefined);
  rawSockets.add(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  let buf = Buffer.alloc(0);
  let upgraded = false;
  const frames: RawWs['frames'] = [];
  const waiters = new Set<() => void>();
  let onUpgrade: () => void = () => undefined;
  const upgradedP = new Promise<void>((r) => (onUpgrade = r));
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    if (!upgraded) {
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      assert.match(buf.subarray(0, i).toString(), /^HTTP\/1\.1 101/);
      buf = buf.subarray(i + 4);
      upgraded = true;
      onUpgrade();
    }
    for (;;) {
      if (buf.length < 2) break;
      let len = buf[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) break;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) break;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      if (buf.length < off + len) break;
      frames.push({ opcode: buf[0]! & 0x0f, fin: (buf[0]! & 0x80) !== 0, payload: Buffer.from(buf.subarray(off, off + len)) });
      buf = buf.subarray(off + len);
    }
    for (const w of waiters) w();
  });
  const ended = new Promise<void>((resolve) => {
    socket.once('end', () => resolve());
    socket.once('close', () => resolve());
  });
  await deadline(upgradedP, 5000, 'upgrade');
  return {
    socket,
    frames,
    data: () => Buffer.concat(frames.filter((f) => f.opcode <= 2).map((f) => f.payload)),
    waitFrame(pred, ms = 5000) {
      return deadline(
        new Promise((resolve) => {
          const check = () => {
            const f = frames.find(pred);
            if (f !== undefined) {
              waiters.delete(check);
              resolve(f);
            }
          };
          waiters.add(check);
          check();
        }),
        ms,
        'a frame',
      );
    },
    ended,
  };
}

/** Pairs a hand-framed WebSocket client with a raw client on `partnerUrl`. */
async function pairRawWs(partnerUrl: string) {
  const token = `token-${crypto.randomUUID()}`;
  const w = await rawWs(relay.port('ws'));
  w.socket.write(frame(1, Buffer.from(authenticate(token, { name: 'raw' }))));
  await w.waitFrame((f) => f.payload.includes(NO_ERROR));
  const p = await rawClient(partnerUrl);
  p.send(authenticate(token, { name: 'partner' }));
  await w.waitFrame((f) => f.payload.includes(TUNNEL_ESTABLISHED));
  await p.waitFor(TUNNEL_ESTABLISHED);
  const wOffset = w.data().length;
  return { w, p, pOffset: p.received().length, wData: () => w.data().subarray(wOffset) };
}

/** Sends `bytes` one byte per write, each on its own turn, so every frame is split at every byte. */
async function drip(socket: Socket, bytes: Buffer): Promise<void> {
  for (let i = 0; i < bytes.length; i++) {
    await new Promise<void>((r) => socket.write(bytes.subarray(i, i + 1), () => r()));
  }
}

test('a fragmented message with ping and pong between its fragments, every frame split at every byte: the partner gets the payload exactly, the pings are answered', async () => {
  const { w, p, pOffset, wData } = await pairRawWs(relay.url('tcp'));
  const parts = [randomBytes(10), randomBytes(130), randomBytes(3)];
  const wire = Buffer.concat([
    frame(2, parts[0]!, { fin: false }),
    frame(9, Buffer.from('ping-1')),
    frame(0, parts[1]!, { fin: false }),
    frame(10, Buffer.from('unsolicited')),
    frame(9, Buffer.alloc(0)),
    frame(0, parts[2]!, { fin: true }),
    frame(9, Buffer.from('ping-2')),
  ]);
  await drip(w.socket, wire);
  const all = Buffer.concat(parts);
  const got = await p.waitForBytes(pOffset + all.length);
  assert.ok(got.subarray(pOffset).equals(all));
  await w.waitFrame((f) => f.opcode === 10 && f.payload.toString() === 'ping-2');
  assert.deepEqual(
    w.frames.filter((f) => f.opcode === 10).map((f) => f.payload.toString()),
    ['ping-1', '', 'ping-2'],
  );
  // The tunnel still works the other way.
  const back = randomBytes(1000);
  p.send(back);
  await until(() => wData().equals(back), 3000, 'the answer');
  w.socket.destroy();
  await p.closed();
});

test('a close frame in the middle of a fragmented message (the client then keeps its TCP side open): the fragments so far reach the partner, which is closed at once (not after ws\'s 30 s close timeout); the close is answered', async () => {
  const { w, p, pOffset } = await pairRawWs(relay.url('tcp'));
  const first = randomBytes(500);
  w.socket.write(Buffer.concat([frame(2, first, { fin: false }), frame(8, Buffer.from([0x03, 0xe8]))]));
  const got = await p.waitForBytes(pOffset + first.length);
  assert.ok(got.subarray(pOffset).equals(first));
  await p.closed();
  const close = await w.waitFrame((f) => f.opcode === 8);
  assert.equal(close.payload.readUInt16BE(0), 1000);
});

test(`a message of exactly tunnelBufferBytes is relayed; one byte more is closed 1009 (RELAY_WS_MESSAGE_TOO_LARGE) and none of that frame is relayed`, async () => {
  const { w, p, pOffset } = await pairRawWs(relay.url('tcp'));
  const exact = randomBytes(BUFFER);
  w.socket.write(frame(2, exact));
  const got = await p.waitForBytes(pOffset + BUFFER, 5000);
  assert.ok(got.subarray(pOffset).equals(exact));
  w.socket.write(frame(2, randomBytes(BUFFER + 1)));
  const close = await w.waitFrame((f) => f.opcode === 8);
  assert.equal(close.payload.readUInt16BE(0), 1009);
  await p.closed();
  assert.equal(p.received().length, pOffset + BUFFER);
});

test('a fragmented message crossing tunnelBufferBytes: earlier fragments relayed, the crossing frame refused (1009)', async () => {
  const { w, p, pOffset } = await pairRawWs(relay.url('tcp'));
  const first = randomBytes(BUFFER - 10);
  w.socket.write(frame(1, Buffer.from('x'.repeat(0)), { fin: false }));
  w.socket.write(frame(0, first, { fin: false }));
  await p.waitForBytes(pOffset + first.length);
  w.socket.write(frame(0, randomBytes(11), { fin: true }));
  const close = await w.waitFrame((f) => f.opcode === 8);
  assert.equal(close.payload.readUInt16BE(0), 1009);
  await p.closed();
  assert.ok(p.received().subarray(pOffset).equals(first));
});

test('an unmasked frame after pairing: close 1002; the partner gets what came before, then is closed', async () => {
  const { w, p, pOffset } = await pairRawWs(relay.url('unix'));
  const ok = randomBytes(300);
  w.socket.write(frame(2, ok));
  w.socket.write(frame(2, randomBytes(20), { mask: false }));
  const close = await w.waitFrame((f) => f.opcode === 8);
  assert.equal(close.payload.readUInt16BE(0), 1002);
  await p.closed();
  assert.ok(p.received().subarray(pOffset).equals(ok));
});

test('binary vs text toward each transport: stream partners get the bytes exactly; a WS partner gets text while the sender is text-only and valid UTF-8, binary after', async () => {
  for (const partner of ['tcp', 'tls', 'unix', 'ws', 'wss'] as const) {
    const { w, p, pOffset } = await pairRawWs(relay.url(partner));
    const text = Buffer.from('héllo ✓ wörld');
    w.socket.write(frame(1, text));
    await p.waitForBytes(pOffset + text.length);
    // The raw WS side sent text only so far; toward it, valid UTF-8 goes as text.
    p.send(Buffer.from('answer ✓'), { binary: false });
    await w.waitFrame((f) => f.payload.toString() === 'answer ✓');
    const bin = randomBytes(200);
    w.socket.write(frame(2, bin));
    const got = await p.waitForBytes(pOffset + text.length + bin.length);
    assert.ok(got.subarray(pOffset).equals(Buffer.concat([text, bin])), partner);
    if (partner === 'ws' || partner === 'wss') {
      const fr = p.frames().slice(-2);
      assert.equal(fr.length, 2);
      assert.equal(fr[0]!.binary, false, `${partner}: text stays text`);
    }
    // Now the raw side has sent binary: valid UTF-8 toward it goes as binary.
    p.send(Buffer.from('second'), { binary: false });
    const f2 = await w.waitFrame((f) => f.payload.toString() === 'second');
    assert.equal(f2.opcode, 2);
    w.socket.destroy();
    await p.closed();
  }
});

test('pings during a busy tunnel: every data byte arrives exactly, every ping answered in order', async () => {
  const { w, p, pOffset } = await pairRawWs(relay.url('tcp'));
  const data = randomBytes(2 * 1024 * 1024);
  let pings = 0;
  for (let off = 0; off < data.length; off += 16384) {
    // At most a few pongs outstanding at a time: `ws` drops a peer with more than 60 unflushed (below).
    const pieces = [frame(2, data.subarray(off, off + 16384))];
    for (let k = 0; k < 4; k++) pieces.push(frame(9, Buffer.from(`p${pings++}`)));
    w.socket.write(Buffer.concat(pieces));
    await until(() => w.frames.filter((f) => f.opcode === 10).length === pings, 5000, 'pongs');
  }
  const got = await p.waitForBytes(pOffset + data.length, 10000);
  assert.ok(got.subarray(pOffset).equals(data));
  assert.deepEqual(
    w.frames.filter((f) => f.opcode === 10).map((f) => f.payload.toString()),
    Array.from({ length: pings }, (_, i) => `p${i}`),
  );
  assert.equal(w.frames.filter((f) => f.opcode === 8).length, 0, 'no close');
  w.socket.destroy();
  await p.closed();
});

test('a ping flood (hundreds of pings in one write, more than 60 pongs unflushed): only the flooder is dropped, its partner closed; a neighbour tunnel goes on', async () => {
  const neighbour = await pair(relay.url('ws'), relay.url('tcp'));
  const { w, p } = await pairRawWs(relay.url('tcp'));
  const pieces: Buffer[] = [];
  for (let k = 0; k < 500; k++) pieces.push(frame(9, Buffer.from(`flood-${k}`)), frame(2, randomBytes(100)));
  w.socket.write(Buffer.concat(pieces));
  await deadline(w.ended, 5000, 'flooder dropped');
  await p.closed();
  const probe = randomBytes(20_000);
  neighbour.a.send(probe, { binary: true });
  neighbour.b.send(probe);
  assert.ok((await neighbour.b.waitForBytes(neighbour.bOffset + probe.length)).subarray(neighbour.bOffset).equals(probe));
  assert.ok((await neighbour.a.waitForBytes(neighbour.aOffset + probe.length)).subarray(neighbour.aOffset).equals(probe));
  neighbour.a.destroy();
  await neighbour.b.closed();
});

for (const [x, y] of [['tcp', 'tcp'], ['tls', 'ws'], ['wss', 'unix'], ['ws', 'tcp'], ['unix', 'tls']] as const) {
  test(`half-close ${x} → ${y}: data then FIN reach ${y}, which may still answer; both then end`, async () => {
    const { a, b, aOffset, bOffset } = await pair(relay.url(x), relay.url(y));
    const down = randomBytes(200_000);
    for (let off = 0; off < down.length; off += 50_000) a.send(down.subarray(off, off + 50_000), { binary: true });
    if (x === 'ws' || x === 'wss') {
      // A WebSocket has no half-close: its close ends the whole link; the partner still gets every byte.
      a.end();
      const got = await b.waitForBytes(bOffset + down.length, 10000);
      assert.ok(got.subarray(bOffset).equals(down));
      await b.closed();
      return;
    }
    a.end();
    const got = await b.waitForBytes(bOffset + down.length, 10000);
    assert.ok(got.subarray(bOffset).equals(down));
    if (y === 'ws') {
      assert.deepEqual(await b.closed(), { code: 1011, reason: 'Tunnel client disconnected' });
      // The stream side still gets its end.
      await a.closed();
      return;
    }
    await b.closed();
    const up = randomBytes(150_000);
    b.send(up);
    const back = await a.waitForBytes(aOffset + up.length, 10000);
    assert.ok(back.subarray(aOffset).equals(up));
    b.end();
    await until(() => a.socket!.destroyed && b.socket!.destroyed, 5000, 'both sockets closed');
  });
}

test('a partner that never reads while the other floods: the relay holds about tunnelBufferBytes for it and the sender is paused; every byte arrives once it reads', async () => {
  for (const [x, y] of [['tcp', 'tcp'], ['ws', 'tcp'], ['tcp', 'ws'], ['wss', 'tls'], ['ws', 'wss'], ['tls', 'unix'], ['unix', 'wss']] as const) {
    const { a, b, bOffset } = await pair(relay.url(x), relay.url(y));
    b.pause();
    const t = [...relay.server.tunnels].at(-1)!;
    const total = 8 * 1024 * 1024;
    const data = randomBytes(total);
    // Write in slices while the relay lets us: the sender's own buffer grows once the relay stops reading.
    let sent = 0;
    while (sent < total) {
      const slice = data.subarray(sent, sent + 65536);
      a.send(slice, { binary: true });
      sent += slice.length;
      if (a.socket !== undefined ? a.socket.writableLength > 4 * 1024 * 1024 : a.ws!.bufferedAmount > 4 * 1024 * 1024) break;
    }
    // Let the relay settle: what it holds for b stays near the buffer (plus a read or a message in flight).
    let maxHeld = 0;
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 10));
      maxHeld = Math.max(maxHeld, t.b.link.pendingBytes);
    }
    // The buffer, plus at most one read (256 KiB) that found it nearly full.
    assert.ok(maxHeld <= BUFFER + 256 * 1024 + 64, `${x}→${y}: relay held ${maxHeld} bytes for a reader that does not read`);
    while (sent < total) {
      const slice = data.subarray(sent, sent + 65536);
      a.send(slice, { binary: true });
      sent += slice.length;
    }
    b.resume();
    const got = await b.waitForBytes(bOffset + total, 20000);
    assert.ok(got.subarray(bOffset).equals(data), `${x}→${y}`);
    a.destroy();
    await b.closed();
  }
});

test('a reset from one side while the other has bytes queued toward it: the other side is closed, the relay survives, a neighbour tunnel is unaffected', async () => {
  const neighbour = await pair(relay.url('tcp'), relay.url('ws'));
  for (const [x, y] of [['tcp', 'tcp'], ['tls', 'tcp'], ['ws', 'unix'], ['tcp', 'wss']] as const) {
    const { a, b } = await pair(relay.url(x), relay.url(y));
    b.pause();
    for (let i = 0; i < 32; i++) a.send(randomBytes(65536), { binary: true });
    for (let i = 0; i < 16; i++) b.send(randomBytes(65536), { binary: true });
    await new Promise((r) => setTimeout(r, 50));
    if (b.kind === 'tcp') b.socket!.resetAndDestroy();
    else b.destroy();
    await a.closed();
  }
  const ping = randomBytes(5000);
  neighbour.a.send(ping);
  const got = await neighbour.b.waitForBytes(neighbour.bOffset + ping.length);
  assert.ok(got.subarray(neighbour.bOffset).equals(ping));
  neighbour.a.destroy();
  await neighbour.b.closed();
});

test('many tunnels closing at once, and tunnels whose two sides close together: every socket ends, nothing is left', async () => {
  const kinds = ['tcp', 'tls', 'ws', 'wss', 'unix'] as const;
  const pairs = [];
  for (let i = 0; i < 20; i++) pairs.push(await pair(relay.url(kinds[i % 5]!), relay.url(kinds[(i * 3 + 1) % 5]!)));
  const before = relay.server.tunnels.size;
  for (const [i, p] of pairs.entries()) {
    p.a.send(randomBytes(30_000), { binary: true });
    p.b.send(randomBytes(30_000), { binary: true });
    if (i % 3 === 0) {
      p.a.destroy();
      p.b.destroy();
    } else if (i % 3 === 1) {
      p.a.end();
      p.b.end();
    } else p.a.destroy();
  }
  await Promise.all(pairs.flatMap((p) => [p.a.closed(8000), p.b.closed(8000)]));
  await until(() => relay.server.tunnels.size <= before - pairs.length, 8000, 'tunnels gone');
});

const splice = loadSplice();
test('kernel relay hand-off mid-stream with bytes in flight both ways (tcp ↔ unix): every byte exact, then a half-close still works', { skip: splice === undefined ? 'native addon not built' : false }, async () => {
  const dir = tempDir();
  const r = await startRelay({
    splice: { afterBytes: 4096 },
    limits: { tunnelBufferBytes: BUFFER },
    listeners: [
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { kind: 'unix', path: join(dir, 'relay.sock') },
    ],
  });
  try {
    for (const [x, y] of [['tcp', 'unix'], ['unix', 'tcp'], ['tcp', 'tcp']] as const) {
      const { a, b, aOffset, bOffset } = await pair(r.url(x), r.url(y));
      const ab = randomBytes(3 * 1024 * 1024 + 17);
      const ba = randomBytes(2 * 1024 * 1024 + 5);
      // Small writes first, so the hand-off falls in the middle of both streams.
      for (let off = 0; off < 64 * 1024; off += 1000) {
        a.send(ab.subarray(off, Math.min(off + 1000, 64 * 1024)));
        b.send(ba.subarray(off, Math.min(off + 1000, 64 * 1024)));
      }
      a.send(ab.subarray(64 * 1024));
      b.send(ba.subarray(64 * 1024));
      const gb = await b.waitForBytes(bOffset + ab.length, 15000);
      const ga = await a.waitForBytes(aOffset + ba.length, 15000);
      assert.ok(gb.subarray(bOffset).equals(ab), `${x}→${y}`);
      assert.ok(ga.subarray(aOffset).equals(ba), `${y}→${x}`);
      assert.ok([...r.server.tunnels].some((t) => t.spliced), 'handed to the kernel');
      a.end();
      await b.closed();
      const last = randomBytes(10_000);
      b.send(last);
      const g2 = await a.waitForBytes(aOffset + ba.length + last.length, 5000);
      assert.ok(g2.subarray(aOffset + ba.length).equals(last));
      b.end();
      await a.closed();
    }
  } finally {
    await r.close();
  }
});

test('toward a text-only WebSocket peer, a chunk ending in an unfinished UTF-8 sequence that is never finished still arrives whole (a request waiting for its answer is not held back)', async () => {
  for (const tail of [[0xe2], [0xe2, 0x82], [0xf0, 0x9f, 0x98]]) {
    const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url('ws'));
    const req = Buffer.from([0x41, 0x42, ...tail]);
    a.send(req);
    const got = await b.waitForBytes(bOffset + req.length, 3000);
    assert.ok(got.subarray(bOffset).equals(req), `tail ${tail.join(',')}`);
    // The answer comes back, and the stream goes on exactly.
    b.send('ok');
    await a.waitFor('ok');
    const more = Buffer.from('€ and more ✓');
    a.send(more);
    const got2 = await b.waitForBytes(bOffset + req.length + more.length);
    assert.ok(got2.subarray(bOffset).equals(Buffer.concat([req, more])));
    a.destroy();
    await b.closed();
  }
});

test('kernel relay: FIN, a reset, or both sides closing at the very moment of the hand-off (no fd closed under the kernel relay: every tunnel gets its final event, the process can exit); many spliced tunnels closing at once; every socket ends and a neighbour goes on', { skip: splice === undefined ? 'native addon not built' : false }, async () => {
  const dir = tempDir();
  const r = await startRelay({
    splice: { afterBytes: 1000 },
    timeouts: { halfCloseMs: 3000, closeFlushMs: 2000 },
    listeners: [
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { kind: 'unix', path: join(dir, 'relay.sock') },
    ],
  });
  try {
    const neighbour = await pair(r.url('tcp'), r.url('unix'));
    // FIN right behind the bytes that trigger the hand-off: the data, then the FIN, reach b; b answers.
    for (const [x, y] of [['tcp', 'unix'], ['unix', 'tcp']] as const) {
      const { a, b, aOffset, bOffset } = await pair(r.url(x), r.url(y));
      const down = randomBytes(300_000);
      a.socket!.end(down);
      const got = await b.waitForBytes(bOffset + down.length, 8000);
      assert.ok(got.subarray(bOffset).equals(down));
      await b.closed();
      const up = randomBytes(200_000);
      b.socket!.end(up);
      const back = await a.waitForBytes(aOffset + up.length, 8000);
      assert.ok(back.subarray(aOffset).equals(up));
      await a.closed();
    }
    // Both sides write past afterBytes and close at once; one resets mid-hand-off.
    const many = [];
    for (let i = 0; i < 12; i++) many.push(await pair(r.url(i % 2 === 0 ? 'tcp' : 'unix'), r.url('tcp')));
    await Promise.all(many.map(async (p, i) => {
      p.a.send(randomBytes(5000));
      p.b.send(randomBytes(5000));
      if (i % 3 === 0) {
        p.a.socket!.end();
        p.b.socket!.end();
      } else if (i % 3 === 1) {
        // A reset while the relay's last JavaScript write toward it is under way: Node learns of the
        // failure a tick after the write left its buffer, when the fd may already be the kernel relay's.
        p.b.socket!.resetAndDestroy();
      } else {
        await new Promise((res) => setTimeout(res, 20));
        p.a.destroy();
        p.b.destroy();
      }
    }));
    await Promise.all(many.flatMap((p) => [p.a.closed(8000), p.b.closed(8000)]));
    await until(() => r.server.tunnels.size === 1, 8000, 'only the neighbour left');
    const probe = randomBytes(100_000);
    neighbour.a.send(probe);
    neighbour.b.send(probe);
    assert.ok((await neighbour.b.waitForBytes(neighbour.bOffset + probe.length)).subarray(neighbour.bOffset).equals(probe));
    assert.ok((await neighbour.a.waitForBytes(neighbour.aOffset + probe.length)).subarray(neighbour.aOffset).equals(probe));
  } finally {
    await r.close();
  }
  // Every tunnel the kernel relay took got its final event: none holds a pipe (nor keeps the process alive).
  await until(() => splice!.stats().pagesUsed === 0, 3000, 'every kernel-relay tunnel ended');
});

test('both sides send and end at the same moment: each gets every byte of the other, then both sockets end', async () => {
  for (const [x, y] of [['tcp', 'tls'], ['unix', 'tcp'], ['tls', 'tls'], ['ws', 'tcp'], ['wss', 'ws']] as [string, string][]) {
    const { a, b, aOffset, bOffset } = await pair(relay.url(x), relay.url(y));
    const ab = randomBytes(60_000);
    const ba = randomBytes(50_000);
    a.send(ab, { binary: true });
    b.send(ba, { binary: true });
    a.end();
    b.end();
    const gb = await b.waitForBytes(bOffset + ab.length, 8000).catch(() => b.received());
    const ga = await a.waitForBytes(aOffset + ba.length, 8000).catch(() => a.received());
    // A WebSocket's close ends its link whole: what its partner sent after that close may be dropped, never changed.
    if (x !== 'ws' && x !== 'wss' && y !== 'ws') assert.ok(gb.subarray(bOffset).equals(ab), `${x}→${y}`);
    else assert.ok(ab.subarray(0, gb.length - bOffset).equals(gb.subarray(bOffset)), `${x}→${y} prefix`);
    if (y !== 'ws' && x !== 'ws' && x !== 'wss') assert.ok(ga.subarray(aOffset).equals(ba), `${y}→${x}`);
    else assert.ok(ba.subarray(0, ga.length - aOffset).equals(ga.subarray(aOffset)), `${y}→${x} prefix`);
    await a.closed(8000);
    await b.closed(8000);
    if (a.socket !== undefined) await until(() => a.socket!.destroyed || a.socket!.readableEnded, 8000, 'a ended');
  }
});
