/**
 * Fairness of the JavaScript data path: a quiet tunnel's round trip does not wait behind busy tunnels.
 * The busy tunnels' clients run in a child process (so they do not share the relay's event loop); the
 * quiet tunnel's two clients ping-pong 64 bytes through the relay in this process. Generous margins: this
 * guards the property (one busy socket cannot hold the event loop for a whole burst), it is no benchmark.
 * Before read-turns.ts the p99 here was 220-250 ms (up to 32 reads of 64 KiB per socket per turn); after
 * it 5-20 ms on the same shared 2-core machine. The WebSocket variant sends 256 KiB messages: charged per
 * message, a busy WS tunnel yielded only between whole messages (WS_P95_MS below, before and after); since
 * then a tunnel's WS sides read their frames as they arrive (links.ts, WsLink.streamFrames). Both bounds
 * hold on an idle machine; under a load average past ~10 from other work, every build so far has missed
 * the WS p50 bound now and then.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { startRelay, pair, deadline } from '../helpers/relay.ts';

const BUSY_TUNNELS = 16;
const PINGS = 100;
/**
 * The pings go on for at least this long: the load's rate is measured over the same window, and a window
 * of a few tens of ms (fast pings) could fall where the load process simply was not scheduled.
 */
const MIN_WINDOW_MS = 1000;

/**
 * The load: `count` tunnels (both sides in this child), each side A writing 256 KiB chunks as fast as
 * backpressure allows, side B discarding. Prints `ready` once every tunnel is established; exits on
 * SIGTERM, when its parent goes, or after 60 s on its own.
 */
const LOAD = `
import { connect } from 'node:net';
import { randomUUID } from 'node:crypto';
const [port, count] = process.argv.slice(1).map(Number);
setTimeout(() => process.exit(0), 60000).unref();
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
const chunk = Buffer.alloc(256 * 1024, 7);
function side(token, name) {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', reject);
    let text = '';
    const onData = (b) => {
      text += b.toString('latin1');
      if (text.includes('RemoteProxy.TunnelEstablished')) { s.off('data', onData); resolve(s); }
    };
    s.on('data', onData);
    s.write(JSON.stringify({ id: 1, method: 'Authentication.Authenticate', params: { name, token, uuid: randomUUID() } }) + '\\n');
  });
}
const pairs = await Promise.all(Array.from({ length: count }, (_, i) => Promise.all([side('busy-' + i, 'a'), side('busy-' + i, 'b')])));
for (const [a, b] of pairs) {
  b.on('data', () => undefined);
  a.on('data', () => undefined);
  const pump = () => { while (a.write(chunk)); };
  a.on('drain', pump);
  pump();
}
process.stdout.write('ready\\n');
`;

/**
 * Starts a relay on the JS path, a quiet tunnel over `kind`, and BUSY_TUNNELS busy ones in a child process
 * running `load`; pings through the quiet one PINGS times, and on until MIN_WINDOW_MS have passed. Returns
 * the sorted round trips and the load moved meanwhile.
 */
async function quietPings(kind: 'tcp' | 'ws', load: string, loadArg: (relay: Awaited<ReturnType<typeof startRelay>>) => string) {
  const relay = await startRelay({ splice: { enabled: false } });
  const quiet = await pair(relay.url(kind), relay.url(kind));
  const child = spawn(process.execPath, ['--input-type=module', '-e', load, loadArg(relay), String(BUSY_TUNNELS)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await deadline(
      new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (b: Buffer) => {
          if (b.toString().includes('ready')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`load process exited (${code})`)));
      }),
      20_000,
      `the busy ${kind} tunnels`,
    );
    // Let the load reach full speed, then ping.
    await new Promise((r) => setTimeout(r, 500));
    const trafficBefore = relay.server.stats.totalTraffic;
    const t0 = performance.now();
    const { a, b } = quiet;
    let aSeen = quiet.aOffset;
    let bSeen = quiet.bOffset;
    const rtts: number[] = [];
    for (let i = 0; i < PINGS || performance.now() - t0 < MIN_WINDOW_MS; i++) {
      const ping = randomBytes(64);
      const start = performance.now();
      a.send(ping);
      bSeen += 64;
      assert.ok((await b.waitForBytes(bSeen, 10_000)).subarray(bSeen - 64).equals(ping));
      b.send(ping);
      aSeen += 64;
      assert.ok((await a.waitForBytes(aSeen, 10_000)).subarray(aSeen - 64).equals(ping));
      rtts.push(performance.now() - start);
    }
    const seconds = (performance.now() - t0) / 1000;
    const movedMib = (relay.server.stats.totalTraffic - trafficBefore) / 2 ** 20;
    rtts.sort((x, y) => x - y);
    const at = (q: number) => rtts[Math.floor(rtts.length * q)]!;
    return { p50: at(0.5), p95: at(0.95), p99: at(0.99), movedMib, seconds };
  } finally {
    child.kill('SIGTERM');
    await relay.close();
  }
}

test('JS path: a quiet tunnel beside 16 busy ones pings with p95 under 100 ms', async () => {
  const r = await quietPings('tcp', LOAD, (relay) => String(relay.port('tcp')));
  const note = `p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms; busy tunnels moved ${r.movedMib.toFixed(0)} MiB in ${r.seconds.toFixed(1)} s`;
  process.stderr.write(`fairness: ${note}\n`);
  // The load was real (tens of MiB per second even on a slow, shared machine)…
  assert.ok(r.movedMib / r.seconds > 20, `the busy tunnels barely moved: ${note}`);
  // …and the quiet tunnel did not queue behind it. p95, not p99: a few scheduling hiccups on a shared CI
  // machine must not fail it, while the old behaviour (every ping behind a whole burst) fails it always.
  assert.ok(r.p95 < 100, `ping through a quiet tunnel (p95 ${r.p95.toFixed(1)} ms): ${note}`);
});

/** The WebSocket load: like LOAD, over `ws`, side A sending 256 KiB binary messages while `ws` buffers < 1 MiB. */
const WS_LOAD = `
import { WebSocket } from 'ws';
import { randomUUID } from 'node:crypto';
const [url, count] = [process.argv[1], Number(process.argv[2])];
setTimeout(() => process.exit(0), 60000).unref();
process.on('SIGTERM', () => process.exit(0));
const chunk = Buffer.alloc(256 * 1024, 7);
function side(token, name) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('error', reject);
    const onMessage = (m) => {
      if (m.toString('latin1').includes('RemoteProxy.TunnelEstablished')) { ws.off('message', onMessage); resolve(ws); }
    };
    ws.on('message', onMessage);
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'Authentication.Authenticate', params: { name, token, uuid: randomUUID() } }) + '\\n'));
  });
}
const pairs = await Promise.all(Array.from({ length: count }, (_, i) => Promise.all([side('wsbusy-' + i, 'a'), side('wsbusy-' + i, 'b')])));
for (const [a, b] of pairs) {
  b.on('message', () => undefined);
  a.on('message', () => undefined);
  const pump = () => { while (a.bufferedAmount < 1024 * 1024) a.send(chunk, { binary: true }); setImmediate(pump); };
  pump();
}
process.stdout.write('ready\\n');
`;

/**
 * Measured on the shared 2-core machine, 16 busy WS tunnels: charged per message p50 12.8-15.6 ms (p95
 * 18-26); charged per raw socket read p50 3.8-4.6 ms (p95 8-19). The p50 bound tells the two apart with a
 * 2x margin; the p95 bound is the TCP test's guard against a ping queued behind whole bursts.
 */
const WS_P50_MS = 10;
const WS_P95_MS = 100;

test(`JS path, WebSocket: a quiet WS tunnel beside 16 busy ones (256 KiB messages) pings with p50 under ${WS_P50_MS} ms, p95 under ${WS_P95_MS} ms`, async () => {
  const r = await quietPings('ws', WS_LOAD, (relay) => relay.url('ws'));
  const note = `p50 ${r.p50.toFixed(1)} ms, p95 ${r.p95.toFixed(1)} ms; busy WS tunnels moved ${r.movedMib.toFixed(0)} MiB in ${r.seconds.toFixed(1)} s`;
  process.stderr.write(`ws fairness: ${note}\n`);
  assert.ok(r.movedMib / r.seconds > 20, `the busy WS tunnels barely moved: ${note}`);
  assert.ok(r.p50 < WS_P50_MS && r.p95 < WS_P95_MS, `ping through a quiet WS tunnel: ${note}`);
});
