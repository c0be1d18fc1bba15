/**
 * `npm run bench:cards`: APDU round trips per second and p50/p99 latency through the line protocol (TCP on
 * loopback, persistent connections, one APDU per request) against calling the same backend directly, in the
 * same run, with 1, 8 and 64 concurrent clients over 16 simulated cards; then the same over the PC/SC path
 * (pcscd + vpcd, our simulator as the card) when pcscd can be started here, followed by the PC/SC
 * isolation figures: one APDU through the bridge beside the same APDU straight through pcscd (the binding
 * in this process, its own context), a quick card's APDU and READERS while the other card runs a 5 s APDU,
 * and how long a card that never answers takes to get its C089 (and what the other card does meanwhile).
 *
 * Line-protocol clients run in a worker thread (their own event loop, the other core); the direct calls
 * run on the main thread with the bridge idle. Env: BENCH_MS (per cell, default 2000), BENCH_PORT (24101),
 * BENCH_COMMAND_MS (the bridge's commandMs in the isolation runs, default 7000).
 */
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { createCardBridgeServer } from '../../src/card-bridge/server.ts';
import { SimulatorBackend } from '../../src/card-bridge/backends/simulator.ts';
import { PcscBackend, loadPcsc } from '../../src/card-bridge/backends/pcsc.ts';
import type { CardBackend } from '../../src/card-bridge/backends/types.ts';
import { runClients } from './client-worker.ts';
import { startPcscd } from '../../test/card-bridge/pcscd.ts';
import { startVpcdCards, type VpcdCards } from '../../test/card-bridge/vpcd-worker.ts';
import { oneShot } from '../../test/card-bridge/helpers.ts';
import type { PcscModule } from '../../src/card-bridge/backends/pcsc/binding.ts';
import type { RunningPcscd } from '../../test/card-bridge/pcscd.ts';

const MS = Number(process.env.BENCH_MS ?? 2000);
const PORT = Number(process.env.BENCH_PORT ?? 24101);
const APDU = '80EE000004DEADBEEF';
const APDU_BYTES = Buffer.from(APDU, 'hex');
const COMMAND_MS = Number(process.env.BENCH_COMMAND_MS ?? 7000);
/** The slow vpcd card answers this after SLOW_MS (everything else at once). */
const SLOW_APDU = '80EE000001AA';
const SLOW_MS = 5000;
/** The other vpcd card never answers this, nor anything after it until it is taken out. */
const STALL_APDU = '80EE000002BBBB';

interface Row {
  path: string;
  mode: string;
  clients: number;
  cards: number;
  ops: number;
  p50: number;
  p99: number;
  errors: number;
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function measure(
  clients: number,
  op: (worker: number) => Promise<boolean>,
): Promise<{ ops: number; p50: number; p99: number; errors: number }> {
  const lat: number[] = [];
  let errors = 0;
  const until = performance.now() + MS;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      while (performance.now() < until) {
        const s = performance.now();
        const ok = await op(w);
        lat.push(performance.now() - s);
        if (!ok) errors++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const sorted = Float64Array.from(lat).sort();
  return { ops: lat.length / elapsed, p50: pct(sorted, 50), p99: pct(sorted, 99), errors };
}

async function runPath(
  path: string,
  backend: CardBackend,
  terminals: readonly string[],
  clientCounts: readonly number[],
  rows: Row[],
  ready?: () => Promise<void>,
): Promise<void> {
  const config = validateConfig(cardBridgeConfigSchema, {
    listeners: [{ kind: 'tcp', host: '127.0.0.1', port: PORT }],
  });
  const server = createCardBridgeServer(config, {
    log: silentLogger(),
    baseDir: process.cwd(),
    backends: [backend],
  });
  await server.start();
  try {
    await ready?.();
    for (const n of clientCounts) {
      const signal = new AbortController().signal;
      const direct = await measure(n, async (w) => {
        const r = await backend.transmit(terminals[w % terminals.length]!, APDU_BYTES, signal);
        return r.length === 6;
      });
      rows.push({ path, mode: 'backend direct', clients: n, cards: terminals.length, ...direct });
      const r = await runClients({
        port: PORT,
        clients: n,
        terminals,
        ms: MS,
        apdu: APDU,
        expect: 'DEADBEEF9000',
      });
      const sorted = r.latencies.sort();
      const line = {
        ops: sorted.length / (r.elapsedMs / 1000),
        p50: pct(sorted, 50),
        p99: pct(sorted, 99),
        errors: r.errors,
      };
      rows.push({ path, mode: 'line protocol', clients: n, cards: terminals.length, ...line });
    }
  } finally {
    await server.close({ graceMs: 1000 });
  }
}

function table(rows: readonly Row[]): string {
  const head = ['path', 'mode', 'clients', 'cards', 'APDU/s', 'p50 ms', 'p99 ms', 'errors', 'added p50 ms'];
  const lines = rows.map((r) => {
    const direct = rows.find(
      (d) => d.path === r.path && d.clients === r.clients && d.mode === 'backend direct',
    );
    const added = r.mode === 'line protocol' && direct !== undefined ? (r.p50 - direct.p50).toFixed(3) : '';
    return [
      r.path,
      r.mode,
      String(r.clients),
      String(r.cards),
      r.ops.toFixed(0),
      r.p50.toFixed(3),
      r.p99.toFixed(3),
      String(r.errors),
      added,
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cols: string[]) => `| ${cols.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [fmt(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...lines.map(fmt)].join('\n');
}

interface IsoRow {
  what: string;
  value: string;
  reference: string;
  ratio: string;
}

const stats = (xs: readonly number[]) => {
  const sorted = Float64Array.from(xs).sort();
  return { p50: pct(sorted, 50), p99: pct(sorted, 99), max: sorted[sorted.length - 1] ?? NaN };
};
const timed = async <T>(f: () => Promise<T>): Promise<{ value: T; ms: number }> => {
  const s = performance.now();
  const value = await f();
  return { value, ms: performance.now() - s };
};

/** The quick card's APDU straight through pcscd, `n` times (own context, no bridge). */
async function directApdus(pcsc: PcscModule, reader: string, n: number): Promise<number[]> {
  const ctx = new pcsc.Context();
  try {
    const r = ctx.listReaders().find((x) => x.name === reader);
    if (r === undefined) throw new Error(`no reader ${reader}`);
    const card = await r.connect(pcsc.SCARD_SHARE_SHARED, pcsc.SCARD_PROTOCOL_T0 | pcsc.SCARD_PROTOCOL_T1);
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await timed(() => card.transmit(APDU_BYTES))).ms);
    card.disconnect(pcsc.SCARD_LEAVE_CARD);
    return out;
  } finally {
    ctx.close();
  }
}

/** READERS every 25 ms until stopped. */
function probeReaders(port: number): () => Promise<number[]> {
  const out: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      out.push((await timed(() => oneShot(port, '>*\n>1:READERS\n\n'))).ms);
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  return async () => {
    running = false;
    await loop;
    return out;
  };
}

async function pcscIsolation(pcsc: PcscModule, pcscd: RunningPcscd): Promise<IsoRow[]> {
  const [slow, quick] = pcscd.readers;
  const cfg = validateConfig(cardBridgeConfigSchema, {
    listeners: [{ kind: 'tcp', host: '127.0.0.1', port: PORT }],
    timeouts: { commandMs: COMMAND_MS },
    backends: [{ kind: 'pcsc', readerFilter: ['Gatehouse VPCD'] }],
  });
  const pcscCfg = cfg.backends[0];
  if (pcscCfg?.kind !== 'pcsc') throw new Error('unreachable');
  const backend = new PcscBackend(pcscCfg, silentLogger());
  const server = createCardBridgeServer(cfg, {
    log: silentLogger(),
    baseDir: process.cwd(),
    backends: [backend],
  });
  await server.start();
  const apdu = (t: string, hex = APDU) => oneShot(PORT, `>${t}\n>1:APDU:${hex}\n\n`);
  const rows: IsoRow[] = [];
  const f = (ms: number) => `${ms.toFixed(1)} ms`;
  try {
    const deadline = Date.now() + 15000;
    while (backend.readers().filter((r) => r.atr !== undefined).length < 2 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    for (const t of [slow, quick]) await apdu(t);
    const N = 20;
    const direct = stats(await directApdus(pcsc, quick, N));
    const bridged: number[] = [];
    for (let i = 0; i < N; i++) bridged.push((await timed(() => apdu(quick))).ms);
    const through = stats(bridged);
    rows.push({
      what: 'one APDU, quick card, idle (p50)',
      value: f(through.p50),
      reference: `${f(direct.p50)} pcscd direct`,
      ratio: (through.p50 / direct.p50).toFixed(2),
    });
    const idleReaders: number[] = [];
    for (let i = 0; i < N; i++) idleReaders.push((await timed(() => oneShot(PORT, '>*\n>1:READERS\n\n'))).ms);
    const idleR = stats(idleReaders);

    // A 5 s APDU on the slow card; meanwhile the quick card through the bridge and straight, and READERS.
    const slowCall = timed(() => apdu(slow, SLOW_APDU));
    await new Promise((r) => setTimeout(r, 200));
    const stop = probeReaders(PORT);
    const during: number[] = [];
    const until = performance.now() + SLOW_MS - 1500;
    while (performance.now() < until) during.push((await timed(() => apdu(quick))).ms);
    const directDuring = stats(await directApdus(pcsc, quick, 8));
    const readersDuring = stats(await stop());
    const slowDone = await slowCall;
    const d = stats(during);
    rows.push({
      what: `quick card during a ${SLOW_MS / 1000} s APDU on the other (p50 / max)`,
      value: `${f(d.p50)} / ${f(d.max)}`,
      reference: `${f(direct.p50)} direct idle, ${f(directDuring.p50)} direct during`,
      ratio: `${(d.p50 / direct.p50).toFixed(2)} (max ${(d.max / direct.p50).toFixed(2)})`,
    });
    rows.push({
      what: 'READERS during the slow APDU (p50 / max)',
      value: `${f(readersDuring.p50)} / ${f(readersDuring.max)}`,
      reference: `${f(idleR.p50)} idle p50`,
      ratio: (readersDuring.max / 50).toFixed(2) + ' of 50 ms',
    });
    rows.push({
      what: 'the slow APDU itself',
      value: f(slowDone.ms),
      reference: `${SLOW_MS} ms scripted`,
      ratio: (slowDone.ms / SLOW_MS).toFixed(2),
    });

    // The quick card gets stuck; the slow card (its quick APDUs) and READERS meanwhile.
    const stuck = timed(() => apdu(quick, STALL_APDU));
    const stop2 = probeReaders(PORT);
    const other: number[] = [];
    const until2 = performance.now() + COMMAND_MS - 500;
    while (performance.now() < until2) {
      other.push((await timed(() => apdu(slow))).ms);
      await new Promise((r) => setTimeout(r, 100));
    }
    const s = await stuck;
    const readersStuck = stats(await stop2());
    const o = stats(other);
    rows.push({
      what: `stuck card: answer (${s.value.trim().split('\n')[0] ?? ''})`,
      value: f(s.ms),
      reference: `commandMs ${COMMAND_MS}`,
      ratio: (s.ms / COMMAND_MS).toFixed(3),
    });
    rows.push({
      what: 'other card while one is stuck (p50 / max)',
      value: `${f(o.p50)} / ${f(o.max)}`,
      reference: `${f(direct.p50)} direct idle`,
      ratio: `${(o.p50 / direct.p50).toFixed(2)} (max ${(o.max / direct.p50).toFixed(2)})`,
    });
    rows.push({
      what: 'READERS while one card is stuck (p50 / max)',
      value: `${f(readersStuck.p50)} / ${f(readersStuck.max)}`,
      reference: `${f(idleR.p50)} idle p50`,
      ratio: (readersStuck.max / 50).toFixed(2) + ' of 50 ms',
    });
    const afterMs: number[] = [];
    for (let i = 0; i < 5; i++) afterMs.push((await timed(() => apdu(slow))).ms);
    const after = stats(afterMs);
    rows.push({
      what: 'other card after the stuck call (max of 5)',
      value: f(after.max),
      reference: `${f(direct.p50)} direct idle`,
      ratio: (after.max / direct.p50).toFixed(2),
    });
    rows.push({
      what: 'host processes killed: stuck card / the other',
      value: `${backend.hostsKilled(quick)} / ${backend.hostsKilled(slow)}`,
      reference: 'stuck host killed, the other kept',
      ratio: '',
    });
  } finally {
    await server.close({ graceMs: 1000 });
  }
  return rows;
}

function isoTable(rows: readonly IsoRow[]): string {
  const head = ['PC/SC isolation', 'through the bridge', 'reference', 'ratio'];
  const lines = rows.map((r) => [r.what, r.value, r.reference, r.ratio]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cols: string[]) => `| ${cols.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [fmt(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...lines.map(fmt)].join('\n');
}

const rows: Row[] = [];
const names = Array.from({ length: 16 }, (_, i) => `Bench ${String(i).padStart(2, '0')}`);
const cardsCfg = validateConfig(cardBridgeConfigSchema, {
  backends: [{ kind: 'simulator', cards: names.map((name) => ({ name })) }],
}).backends[0];
if (cardsCfg?.kind !== 'simulator') throw new Error('unreachable');
const sim = new SimulatorBackend(cardsCfg.cards);
process.stderr.write(`simulator: 16 cards, ${MS} ms per cell…\n`);
await runPath('simulator', sim, names, [1, 8, 64], rows);

let pcscNote = '';
let isoRows: IsoRow[] = [];
const loaded = await loadPcsc();
const pcscd = 'error' in loaded ? `binding not available: ${loaded.error}` : await startPcscd();
if (typeof pcscd === 'string' || 'error' in loaded) {
  pcscNote = `PC/SC path skipped: ${typeof pcscd === 'string' ? pcscd : 'no binding'}`;
} else {
  let vpcdCards: VpcdCards | undefined;
  try {
    // The cards run in a worker thread: an in-process card would deadlock synchronous PC/SC calls made
    // here (the direct reference). Slot 0 is slow on SLOW_APDU, slot 1 stalls on STALL_APDU; both answer
    // the benchmark APDU at once.
    vpcdCards = await startVpcdCards(cardsCfg.cards.slice(0, 2), pcscd.port, undefined, [
      { delayMs: SLOW_MS, delayPrefixes: [SLOW_APDU.slice(0, 10)] },
      { stallPrefixes: [STALL_APDU.slice(0, 10)] },
    ]);
    const pcscCfg = validateConfig(cardBridgeConfigSchema, {
      backends: [{ kind: 'pcsc', readerFilter: ['Gatehouse VPCD'] }],
    }).backends[0];
    if (pcscCfg?.kind !== 'pcsc') throw new Error('unreachable');
    const pcsc = new PcscBackend(pcscCfg, silentLogger());
    process.stderr.write('pcsc: 2 vpcd cards through pcscd…\n');
    // runPath's server starts the backend and closes it at the end.
    await runPath('pcsc (pcscd+vpcd)', pcsc, pcscd.readers, [1, 8], rows, async () => {
      const deadline = Date.now() + 15000;
      while (pcsc.readers().filter((r) => r.atr !== undefined).length < 2 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      // The first call of a reader may wait for its host process to start: not part of the measurement.
      for (const t of pcscd.readers) await pcsc.transmit(t, APDU_BYTES, new AbortController().signal);
    });
    process.stderr.write(
      `pcsc isolation: a ${SLOW_MS / 1000} s APDU beside a quick card, then a card that never answers (commandMs ${COMMAND_MS})…\n`,
    );
    isoRows = await pcscIsolation(loaded.module, pcscd);
  } finally {
    await vpcdCards?.close();
    await pcscd.stop();
  }
}

process.stdout.write(
  `\nCard bridge benchmark (${MS} ms per cell, APDU ${APDU} echo, one APDU per request)\n\n${table(rows)}\n`,
);
if (isoRows.length > 0) process.stdout.write(`\n${isoTable(isoRows)}\n`);
if (pcscNote !== '') process.stdout.write(`\n${pcscNote}\n`);
