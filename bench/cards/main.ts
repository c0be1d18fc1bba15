/**
 * `npm run bench:cards`: APDU round trips per second and p50/p99 latency through the line protocol (TCP on
 * loopback, persistent connections, one APDU per request) against calling the same backend directly, in the
 * same run, with 1, 8 and 64 concurrent clients over 16 simulated cards; then the same over the PC/SC path
 * (pcscd + vpcd, our simulator as the card) when pcscd can be started here.
 *
 * Line-protocol clients run in a worker thread (their own event loop, the other core); the direct calls
 * run on the main thread with the bridge idle. Env: BENCH_MS (per cell, default 2000), BENCH_PORT (24101).
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

const MS = Number(process.env.BENCH_MS ?? 2000);
const PORT = Number(process.env.BENCH_PORT ?? 24101);
const APDU = '80EE000004DEADBEEF';
const APDU_BYTES = Buffer.from(APDU, 'hex');

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

async function measure(clients: number, op: (worker: number) => Promise<boolean>): Promise<{ ops: number; p50: number; p99: number; errors: number }> {
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

async function runPath(path: string, backend: CardBackend, terminals: readonly string[], clientCounts: readonly number[], rows: Row[], ready?: () => Promise<void>): Promise<void> {
  const config = validateConfig(cardBridgeConfigSchema, { listeners: [{ kind: 'tcp', host: '127.0.0.1', port: PORT }] });
  const server = createCardBridgeServer(config, { log: silentLogger(), baseDir: process.cwd(), backends: [backend] });
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
      const r = await runClients({ port: PORT, clients: n, terminals, ms: MS, apdu: APDU, expect: 'DEADBEEF9000' });
      const sorted = r.latencies.sort();
      const line = { ops: sorted.length / (r.elapsedMs / 1000), p50: pct(sorted, 50), p99: pct(sorted, 99), errors: r.errors };
      rows.push({ path, mode: 'line protocol', clients: n, cards: terminals.length, ...line });
    }
  } finally {
    await server.close({ graceMs: 1000 });
  }
}

function table(rows: readonly Row[]): string {
  const head = ['path', 'mode', 'clients', 'cards', 'APDU/s', 'p50 ms', 'p99 ms', 'errors', 'added p50 ms'];
  const lines = rows.map((r) => {
    const direct = rows.find((d) => d.path === r.path && d.clients === r.clients && d.mode === 'backend direct');
    const added = r.mode === 'line protocol' && direct !== undefined ? (r.p50 - direct.p50).toFixed(3) : '';
    return [r.path, r.mode, String(r.clients), String(r.cards), r.ops.toFixed(0), r.p50.toFixed(3), r.p99.toFixed(3), String(r.errors), added];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cols: string[]) => `| ${cols.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [fmt(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...lines.map(fmt)].join('\n');
}

const rows: Row[] = [];
const names = Array.from({ length: 16 }, (_, i) => `Bench ${String(i).padStart(2, '0')}`);
const cardsCfg = validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'simulator', cards: names.map((name) => ({ name })) }] }).backends[0];
if (cardsCfg?.kind !== 'simulator') throw new Error('unreachable');
const sim = new SimulatorBackend(cardsCfg.cards);
process.stderr.write(`simulator: 16 cards, ${MS} ms per cell…\n`);
await runPath('simulator', sim, names, [1, 8, 64], rows);

let pcscNote = '';
const loaded = await loadPcsc();
const pcscd = 'error' in loaded ? `binding not available: ${loaded.error}` : await startPcscd();
if (typeof pcscd === 'string') {
  pcscNote = `PC/SC path skipped: ${pcscd}`;
} else {
  let vpcdCards: VpcdCards | undefined;
  try {
    // The cards run in a worker thread: an in-process card would deadlock synchronous PC/SC calls.
    vpcdCards = await startVpcdCards(cardsCfg.cards.slice(0, 2), pcscd.port, undefined);
    const pcscCfg = validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'pcsc', readerFilter: ['Gatehouse VPCD'] }] }).backends[0];
    if (pcscCfg?.kind !== 'pcsc') throw new Error('unreachable');
    const pcsc = new PcscBackend(pcscCfg, silentLogger());
    process.stderr.write('pcsc: 2 vpcd cards through pcscd…\n');
    // runPath's server starts the backend and closes it at the end.
    await runPath('pcsc (pcscd+vpcd)', pcsc, pcscd.readers, [1, 8], rows, async () => {
      const deadline = Date.now() + 15000;
      while (pcsc.readers().filter((r) => r.atr !== undefined).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    });
  } finally {
    await vpcdCards?.close();
    await pcscd.stop();
  }
}

process.stdout.write(`\nCard bridge benchmark (${MS} ms per cell, APDU ${APDU} echo, one APDU per request)\n\n${table(rows)}\n`);
if (pcscNote !== '') process.stdout.write(`\n${pcscNote}\n`);
