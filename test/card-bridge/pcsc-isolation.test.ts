/**
 * PC/SC isolation through the real stack (line protocol → PcscBackend and its host processes → pcscd →
 * vpcd → simulated cards in a worker thread). One vpcd reader, two slots (vpcd 3.3 offers no more): the
 * "slow" card answers `80EE000001…` after SLOW_MS (2.5 s; the benchmark uses 5 s) and everything else at once; the "quick" card answers at
 * once but gets stuck for good on `80EE000002…` (never answers again until taken out). Limits are ratios
 * with margins, not benchmarks (`npm run bench:cards` measures). Skips only when pcscd or the binding is
 * missing here, and fails instead on CI (GATEHOUSE_REQUIRE_PCSC=1).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { PcscBackend, loadPcsc } from '../../src/card-bridge/backends/pcsc.ts';
import type { PcscModule } from '../../src/card-bridge/backends/pcsc/binding.ts';
import { startVpcdCards, type VpcdCards } from './vpcd-worker.ts';
import { pcscdOrSkip, type RunningPcscd } from './pcscd.ts';
import { oneShot, pollUntil, simCards, testLogger, startBridge, type StartedBridge } from './helpers.ts';

// The benchmark (bench/cards) uses the 5 s slow APDU; the test keeps the same shape at half the wait.
const SLOW_MS = 2500;
const COMMAND_MS = 3500;
const ECHO = '80EE000004DEADBEEF';
const ECHOED = '>1:DEADBEEF9000\n@@\n';
/** Answered after SLOW_MS by the slow card. */
const SLOW_APDU = '80EE000001AA';
const SLOW_ANSWER = '>1:AA9000\n@@\n';
/** Never answered by the quick card (nor anything after it). */
const STALL_APDU = '80EE000002BBBB';
const TIMED_OUT = '>1:C089\n@@\n';

let pcscd: RunningPcscd | undefined;
let skip: string | undefined;
let bridge: StartedBridge | undefined;
let backend: PcscBackend | undefined;
let cards: VpcdCards | undefined;
let pcsc: PcscModule | undefined;
let slow = '';
let quick = '';

/** Polls `pred` (every 25 ms) until it holds; throws after 20000 ms. */
const until = (pred: () => boolean, what: string, ms = 20000): Promise<void> => pollUntil(pred, what, ms);

async function timed<T>(f: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const s = performance.now();
  const value = await f();
  return { value, ms: performance.now() - s };
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Sends READERS every `everyMs` until stopped; returns each one's latency (checking each answer). */
function probeReaders(everyMs = 25): { stop: () => Promise<number[]> } {
  const out: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const l = await timed(readersLine);
      assert.match(l.value, /^>1:[A-Za-z0-9+/=|]*\n@@\n$/);
      out.push(l.ms);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return out;
    },
  };
}

/** One APDU to `terminal` over a fresh connection, through the bridge. */
const apdu = (terminal: string, hex = ECHO) => oneShot(bridge!.port, `>${terminal}\n>1:APDU:${hex}\n\n`);
const readersLine = () => oneShot(bridge!.port, '>*\n>1:READERS\n\n');

before(async () => {
  const started = await pcscdOrSkip();
  if (typeof started === 'string') {
    skip = started;
    return;
  }
  const loaded = await loadPcsc();
  if ('error' in loaded) return;
  pcsc = loaded.module;
  pcscd = started;
  [slow, quick] = pcscd.readers;
  cards = await startVpcdCards(simCards([{ name: 'slow' }, { name: 'quick' }]), pcscd.port, undefined, [
    { delayMs: SLOW_MS, delayPrefixes: [SLOW_APDU.slice(0, 10)] },
    { stallPrefixes: [STALL_APDU.slice(0, 10)] },
  ]);
  const cfg = validateConfig(cardBridgeConfigSchema, {
    backends: [{ kind: 'pcsc', readerFilter: ['Gatehouse VPCD'] }],
  }).backends[0];
  assert.ok(cfg?.kind === 'pcsc');
  backend = new PcscBackend(cfg, testLogger());
  bridge = await startBridge({ backends: [backend], config: { timeouts: { commandMs: COMMAND_MS } } });
  await until(
    () => backend!.readers().filter((r) => r.atr !== undefined).length === 2,
    'both vpcd cards to appear',
  );
  // Connect both cards once (their hosts started when the readers appeared).
  for (const t of [slow, quick])
    assert.equal(await oneShot(bridge.port, `>${t}\n>1:RESET\n\n`), '>1:3B021450\n@@\n');
});

after(async () => {
  await bridge?.close();
  // Taking the cards out also frees pcscd's thread that waits on the stuck card.
  await cards?.close();
  await pcscd?.stop();
});

/** The quick card's APDU straight through pcscd (own context in this process, no bridge). */
async function directQuick(n: number): Promise<number[]> {
  const p = pcsc!;
  const ctx = new p.Context();
  try {
    const reader = ctx.listReaders().find((r) => r.name === quick);
    assert.ok(reader !== undefined);
    const card = await reader.connect(p.SCARD_SHARE_SHARED, p.SCARD_PROTOCOL_T0 | p.SCARD_PROTOCOL_T1);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = await timed(() => card.transmit(Buffer.from(ECHO, 'hex')));
      assert.equal(r.value.toString('hex').toUpperCase(), 'DEADBEEF9000');
      out.push(r.ms);
    }
    card.disconnect(p.SCARD_LEAVE_CARD);
    return out;
  } finally {
    ctx.close();
  }
}

test('PC/SC isolation: while one card runs a slow (2.5 s) APDU, another card answers at its own speed and READERS at once', async (t) => {
  if (skip !== undefined) return t.skip(skip);
  const directs = await directQuick(8);
  const direct = median(directs);
  const slowAnswer = timed(() => apdu(slow, SLOW_APDU));
  await new Promise((r) => setTimeout(r, 300));
  const probe = probeReaders();
  const during: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await timed(() => apdu(quick));
    assert.equal(r.value, ECHOED);
    during.push(r.ms);
  }
  const directDuring = median(await directQuick(4));
  // The quick card taken out and put back while the slow APDU runs: the list follows, READERS stays quick.
  await cards!.remove(1);
  await until(
    () => backend!.readers().find((r) => r.terminal === quick)?.atr === undefined,
    'the quick card to go',
  );
  await cards!.insert(1);
  await until(
    () => backend!.readers().find((r) => r.terminal === quick)?.atr !== undefined,
    'the quick card to come back',
  );
  assert.equal(await apdu(quick), ECHOED);
  const listing = await probe.stop();
  const s = await slowAnswer;
  assert.equal(s.value, SLOW_ANSWER);
  assert.ok(s.ms >= SLOW_MS - 100, `the slow card answered after ${s.ms.toFixed(0)} ms`);
  t.diagnostic(
    `quick card: direct ${direct.toFixed(1)} ms (${directDuring.toFixed(1)} ms during the slow APDU); through the bridge during the slow APDU ${median(during).toFixed(1)} ms (max ${Math.max(...during).toFixed(1)}); READERS median ${median(listing).toFixed(1)} ms, max ${Math.max(...listing).toFixed(1)} ms`,
  );
  // vpcd's latencies come in ~44 ms steps (Nagle and delayed ACKs): the worst case is set against the worst direct one.
  assert.ok(
    median(during) < 2 * direct + 100,
    `quick card during the slow APDU: median ${median(during).toFixed(1)} ms vs ${direct.toFixed(1)} ms direct`,
  );
  assert.ok(
    Math.max(...during) < 2 * Math.max(...directs) + 100,
    `quick card during the slow APDU: up to ${Math.max(...during).toFixed(1)} ms vs ${Math.max(...directs).toFixed(1)} ms direct`,
  );
  assert.ok(median(listing) < 50, `READERS median ${median(listing).toFixed(1)} ms`);
  assert.ok(Math.max(...listing) < 250, `READERS max ${Math.max(...listing).toFixed(1)} ms`);
});

test('PC/SC isolation: a card that never answers gets C089 at commandMs; the other card keeps working', async (t) => {
  if (skip !== undefined) return t.skip(skip);
  const stuck = timed(() => apdu(quick, STALL_APDU));
  const probe = probeReaders();
  const alive: number[] = [];
  const deadline = performance.now() + COMMAND_MS - 500;
  while (performance.now() < deadline) {
    const r = await timed(() => apdu(slow));
    assert.equal(r.value, ECHOED);
    alive.push(r.ms);
    await new Promise((r) => setTimeout(r, 200));
  }
  const s = await stuck;
  const listing = await probe.stop();
  assert.equal(s.value, TIMED_OUT);
  assert.ok(
    s.ms >= COMMAND_MS - 50 && s.ms < COMMAND_MS + 1500,
    `the stuck card answered after ${s.ms.toFixed(0)} ms (commandMs ${COMMAND_MS})`,
  );
  t.diagnostic(
    `stuck card: C089 after ${s.ms.toFixed(0)} ms; the other card meanwhile median ${median(alive).toFixed(1)} ms; READERS max ${Math.max(...listing).toFixed(1)} ms`,
  );
  assert.ok(Math.max(...listing) < 250, `READERS max ${Math.max(...listing).toFixed(1)} ms`);

  // Afterwards the other card answers (at once, and at its slow pace), and the stuck card again gets its
  // error at commandMs (its lock was freed, its host replaced) instead of hanging.
  const again = timed(() => apdu(quick));
  const slowAgain = timed(() => apdu(slow, SLOW_APDU));
  assert.equal(await apdu(slow), ECHOED);
  const [a, sl] = await Promise.all([again, slowAgain]);
  assert.equal(a.value, TIMED_OUT);
  assert.ok(a.ms < COMMAND_MS + 1500, `second call to the stuck card: ${a.ms.toFixed(0)} ms`);
  assert.equal(sl.value, SLOW_ANSWER);
  assert.ok(backend!.hostsStarted(quick) >= 2, 'the stuck host was replaced');
  assert.equal(backend!.hostsStarted(slow), 1, 'the other card kept its host');

  // Taken out and put back, the stuck card works again through a fresh host.
  await cards!.remove(1);
  await until(
    () => backend!.readers().find((r) => r.terminal === quick)?.atr === undefined,
    'the stuck card to go',
  );
  await cards!.insert(1);
  await until(
    () => backend!.readers().find((r) => r.terminal === quick)?.atr !== undefined,
    'the card to come back',
  );
  assert.equal(await apdu(quick), ECHOED);
});
