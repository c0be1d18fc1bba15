/**
 * The kernel relay (native splice addon) behind plain TCP/unix tunnels: exact bytes both ways, mid-stream
 * hand-off, half-close, resets, backpressure, counters for the monitor, shutdown. Skipped (with a
 * message) only when the addon is not built on this machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startRelay, pair, deadline, rawClient, authenticate, NO_ERROR, TUNNEL_ESTABLISHED } from '../helpers/relay.ts';
import { loadSplice } from '../../src/relay/splice.ts';

const available = loadSplice() !== undefined;
const skip = available ? false : 'native splice addon not built (npm run build:native)';

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  await deadline(new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (cond()) {
        clearInterval(t);
        resolve();
      }
    }, 5);
  }), ms, what);
}

test('spliced at once: 8 MiB of random bytes each way, exactly; counters reach the monitor', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 } });
  try {
    const { a, b, aOffset, bOffset } = await pair(relay.url('tcp'), relay.url('tcp'));
    await until(() => [...relay.server.tunnels].some((t) => t.spliced), 2000, 'hand-off');
    const one = randomBytes(8 * 1024 * 1024);
    const two = randomBytes(8 * 1024 * 1024);
    a.send(one);
    b.send(two);
    assert.ok((await b.waitForBytes(bOffset + one.length, 20000)).subarray(bOffset).equals(one));
    assert.ok((await a.waitForBytes(aOffset + two.length, 20000)).subarray(aOffset).equals(two));
    relay.server.syncTraffic();
    assert.equal(relay.server.stats.totalTraffic, one.length + two.length);
    const sa = [...relay.server.sessions].find((s) => s.name === 'alpha')!;
    assert.equal(sa.rxBytes, one.length);
  } finally {
    await relay.close();
  }
});

test('mid-stream hand-off (unix ↔ tcp) keeps every byte in order', { skip }, async () => {
  const relay = await startRelay({
    splice: { afterBytes: 100_000 },
    listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }, { kind: 'unix', path: 'relay.sock' }],
  });
  try {
    const { a, b, bOffset } = await pair(relay.url('unix'), relay.url('tcp'));
    const data = randomBytes(4 * 1024 * 1024);
    // Small writes so the hand-off happens while bytes are in flight.
    for (let i = 0; i < data.length; i += 7000) a.send(data.subarray(i, i + 7000));
    assert.ok((await b.waitForBytes(bOffset + data.length, 20000)).subarray(bOffset).equals(data));
    assert.ok([...relay.server.tunnels].some((t) => t.spliced));
  } finally {
    await relay.close();
  }
});

test('spliced half-close: FIN reaches the other side after the data; it may answer; then both close', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 } });
  try {
    const { a, b, aOffset, bOffset } = await pair(relay.url('tcp'), relay.url('tcp'));
    await until(() => [...relay.server.tunnels].some((t) => t.spliced), 2000, 'hand-off');
    a.send('request');
    a.end();
    await b.closed();
    assert.equal(b.received().subarray(bOffset).toString(), 'request');
    b.send('response');
    b.end();
    await a.closed();
    assert.equal(a.received().subarray(aOffset).toString(), 'response');
    await until(() => relay.server.sessions.size === 0, 3000, 'sessions to go');
  } finally {
    await relay.close();
  }
});

test('spliced: a reset on one side closes the other', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 } });
  try {
    const { a, b } = await pair(relay.url('tcp'), relay.url('tcp'));
    await until(() => [...relay.server.tunnels].some((t) => t.spliced), 2000, 'hand-off');
    a.socket!.resetAndDestroy();
    await b.closed(3000);
  } finally {
    await relay.close();
  }
});

test('spliced backpressure: a receiver that does not read stalls the sender; nothing is lost', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 } });
  try {
    const { a, b, bOffset } = await pair(relay.url('tcp'), relay.url('tcp'));
    await until(() => [...relay.server.tunnels].some((t) => t.spliced), 2000, 'hand-off');
    b.pause();
    const chunk = randomBytes(64 * 1024);
    let sent = 0;
    let blocked = false;
    for (let i = 0; i < 2000 && !blocked; i++) {
      sent += chunk.length;
      if (!a.socket!.write(chunk)) {
        await new Promise((r) => setTimeout(r, 100));
        blocked = a.socket!.writableLength > 0;
      }
    }
    assert.ok(blocked, 'the sender was stalled');
    assert.ok(sent < 2000 * chunk.length);
    b.resume();
    await b.waitForBytes(bOffset + sent, 20000);
    assert.equal(b.received().length - bOffset, sent);
  } finally {
    await relay.close();
  }
});

test('shutdown stops spliced tunnels after the grace period', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 } });
  const { a, b } = await pair(relay.url('tcp'), relay.url('tcp'));
  await until(() => [...relay.server.tunnels].some((t) => t.spliced), 2000, 'hand-off');
  const t0 = Date.now();
  await deadline(relay.server.close({ graceMs: 300 }), 5000, 'close');
  assert.ok(Date.now() - t0 >= 250);
  await a.closed();
  await b.closed();
});

test('idle timeout sees spliced traffic', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 }, timeouts: { tunnelIdleMs: 400 } });
  try {
    const busy = await pair(relay.url('tcp'), relay.url('tcp'));
    const quiet = await pair(relay.url('tcp'), relay.url('tcp'));
    const pump = setInterval(() => busy.a.send('.'), 50);
    try {
      await quiet.a.closed(3000);
      assert.equal(busy.a.isClosed, false);
    } finally {
      clearInterval(pump);
    }
  } finally {
    await relay.close();
  }
});

test('hand-off racing a FIN: every byte and the half-close still arrive (20 rounds)', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 1000 } });
  try {
    for (let i = 0; i < 20; i++) {
      const { a, b, aOffset, bOffset } = await pair(relay.url('tcp'), relay.url('tcp'));
      const data = randomBytes(3000 + i * 100);
      a.socket!.end(data);
      await b.closed();
      assert.ok(b.received().subarray(bOffset).equals(data), `round ${i}`);
      b.send('ack');
      b.end();
      await a.closed();
      assert.equal(a.received().subarray(aOffset).toString(), 'ack');
    }
  } finally {
    await relay.close();
  }
});

test('both sides send while pairing: held bytes keep their order through an immediate hand-off (10 rounds)', { skip }, async () => {
  const relay = await startRelay({ splice: { afterBytes: 0 } });
  try {
    for (let i = 0; i < 10; i++) {
      const token = `tok-held-${i}`;
      const a = await rawClient(relay.url('tcp'));
      a.send(authenticate(token));
      await a.waitFor(NO_ERROR);
      const one = randomBytes(200_000);
      const two = randomBytes(200_000);
      // Each side writes as soon as it sees its notification, racing the relay's start.
      a.socket!.on('data', (d: Buffer) => {
        if (d.includes(TUNNEL_ESTABLISHED)) a.socket!.write(one);
      });
      const b = await rawClient(relay.url('tcp'));
      b.socket!.on('data', (d: Buffer) => {
        if (d.includes(TUNNEL_ESTABLISHED)) b.socket!.write(two);
      });
      b.send(authenticate(token));
      await b.waitFor(TUNNEL_ESTABLISHED);
      await a.waitFor(TUNNEL_ESTABLISHED);
      const aStart = a.received().indexOf(TUNNEL_ESTABLISHED);
      const bStart = b.received().indexOf(TUNNEL_ESTABLISHED);
      const aOff = a.received().indexOf('\n', aStart) + 1;
      const bOff = b.received().indexOf('\n', bStart) + 1;
      assert.ok((await b.waitForBytes(bOff + one.length, 10000)).subarray(bOff).equals(one), `round ${i}: a → b`);
      assert.ok((await a.waitForBytes(aOff + two.length, 10000)).subarray(aOff).equals(two), `round ${i}: b → a`);
      a.destroy();
      b.destroy();
    }
  } finally {
    await relay.close();
  }
});
