/**
 * `npm run bench:cluster [-- options]`: the scale-out benchmark (issue 11, docs/benchmarks.md "Scale-out").
 * Not part of CI. Every figure is a ratio against a baseline measured in the same run, rounds interleaved
 * (each path once per round, then the next round; the median round counts).
 *
 * Processes: real gateways (`gatehouse serve --config … --workers N`; sources through tsx, or a tsc
 * build with `--compiled`), a real `redis-server` on a unix socket, and the relay bench's load workers
 * (bench/relay/worker.ts): one sender and one receiver process, each holding one client of every tunnel.
 * This process only coordinates over IPC and reads /proc, so no load shares a gateway's event loop.
 *
 *   1. throughput  WS and TLS, N busy tunnels (64): total Gbit/s with `--workers 2` vs `--workers 1`,
 *                  relay CPU s/GiB, and how the machine's cores were shared (gateway, sender, receiver,
 *                  everything else on this shared machine)
 *   2. cross-node  one tunnel whose clients sit on two gateway processes joined through Redis vs a
 *                  same-node tunnel on the same gateway: bulk throughput, 64-byte round trip p50/p99, TCP
 *                  (with the kernel relay's tunnel count on each node) and WS
 *   3. pairing     tunnels established per second (JSON-RPC handshake included, each closed once up):
 *                  across two nodes through Redis (half the pairs A→B, half B→A), on one Redis node,
 *                  `--workers 2` without Redis, and one process without Redis (the baseline)
 *
 * Options: --quick, --compiled, --only throughput,cross,pairing, --rounds N (3), --seconds S (busy window,
 * 5), --tunnels N (64), --mib M (bytes per cross-node transfer, 512), --rtt N (round trips per path, 6000),
 * --pairings N (per path and round, 6000), --warmup N (pairings per path first, 3000), --inflight N (64), --log-level L (info, as bench:relay),
 * --paths single,workers2,redisOne,redisCross (the pairing paths to run; all by default, `single` always: the
 * baseline), --keep (leave the work dir). BENCH_GATEWAY_NODE_ARGS adds node flags to every gateway process (e.g.
 * `--cpu-prof --cpu-prof-dir=/tmp/prof`; workers inherit them).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Peer } from '../relay/peer.ts';
import { kernelPathTunnels } from '../relay/many.ts';
import type { WorkerCommand } from '../relay/types.ts';
import { startRedis, type TestRedis } from '../../test/cluster/redis-server.ts';
import {
  childrenOf,
  cpuOf,
  cpuSeconds,
  sysOf,
  gatewayCommand,
  loadAverage,
  machineBusySeconds,
  makeCert,
  median,
  say,
  sleep,
  startGateway,
  writeConfig,
  type GatewayProc,
  type GatewaySpec,
  type Transport,
} from './procs.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WORKER = 'bench/relay/worker.ts';

type Section = 'throughput' | 'cross' | 'pairing';
const SECTIONS: readonly Section[] = ['throughput', 'cross', 'pairing'];

interface Options {
  quick: boolean;
  compiled: boolean;
  only: Section[];
  rounds: number;
  seconds: number;
  tunnels: number;
  bytes: number;
  rttCount: number;
  pairings: number;
  /** Pairings per path before the measured rounds (JIT and pools warm in every process, each worker its own). */
  warmup: number;
  inflight: number;
  /** The pairing paths to run (section 3); `single` is always among them (the baseline). */
  pairPaths: PairPath[];
  logLevel: string;
  keep: boolean;
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const value = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, dflt: number): number => {
    const v = value(name);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
    return n;
  };
  if (argv.includes('--help')) {
    process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*?|^ \* ?/gm, '') + '\n');
    process.exit(0);
  }
  const only = (value('--only') ?? SECTIONS.join(',')).split(',') as Section[];
  for (const s of only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section ${s} (${SECTIONS.join(', ')})`);
  const paths = (value('--paths') ?? PAIR_PATHS.join(',')).split(',') as PairPath[];
  for (const p of paths) if (!PAIR_PATHS.includes(p)) throw new Error(`--paths: unknown pairing path ${p} (${PAIR_PATHS.join(', ')})`);
  return {
    quick,
    compiled: argv.includes('--compiled'),
    only,
    rounds: num('--rounds', quick ? 1 : 3),
    seconds: num('--seconds', quick ? 2 : 5),
    tunnels: num('--tunnels', 64),
    bytes: num('--mib', quick ? 128 : 512) * 2 ** 20,
    rttCount: num('--rtt', quick ? 1500 : 6000),
    pairings: num('--pairings', quick ? 1500 : 6000),
    warmup: num('--warmup', quick ? 500 : 3000),
    inflight: num('--inflight', 64),
    pairPaths: PAIR_PATHS.filter((p) => p === 'single' || paths.includes(p)),
    logLevel: value('--log-level') ?? 'info',
    keep: argv.includes('--keep'),
  };
}

/** Fixed ports below the ephemeral range, apart from bench:relay's (212xx, 213xx) so both can run. */
const portsFrom = (base: number): Record<Transport, number> => ({ tcp: base, tls: base + 1, ws: base + 2, wss: base + 3 });
const SINGLE = portsFrom(22600);
const WORKERS2 = portsFrom(22610);
const NODE_A = portsFrom(22620);
const NODE_B = portsFrom(22630);

interface Ctx {
  readonly opts: Options;
  readonly s: Peer<WorkerCommand>;
  readonly r: Peer<WorkerCommand>;
  readonly peerPids: { s: number; r: number };
  readonly gw: Partial<Record<'single' | 'workers2' | 'nodeA' | 'nodeB', GatewayProc>>;
  readonly redis: TestRedis | undefined;
}

let seq = 0;
const uniq = (label: string) => `${label}-${process.pid}-${seq++}`;

/** CPU seconds of the parties of one measurement, and of the whole machine, at one moment. */
function cpuSnapshot(ctx: Ctx, relay: number[]): { relay: number; relaySys: number; s: number; r: number; machine: number; t: bigint } {
  return { relay: cpuOf(relay), relaySys: sysOf(relay), s: cpuSeconds(ctx.peerPids.s), r: cpuSeconds(ctx.peerPids.r), machine: machineBusySeconds(), t: process.hrtime.bigint() };
}

/** Cores each party used between two snapshots; `others` is the rest of this shared machine. */
interface Share {
  relay: number;
  s: number;
  r: number;
  others: number;
  relayCpuSec: number;
  /** The kernel's part of relayCpuSec (system time: socket calls, loopback delivery). */
  relaySysSec: number;
}
function share(a: ReturnType<typeof cpuSnapshot>, b: ReturnType<typeof cpuSnapshot>): Share {
  const sec = Number(b.t - a.t) / 1e9;
  const relay = (b.relay - a.relay) / sec;
  const s = (b.s - a.s) / sec;
  const r = (b.r - a.r) / sec;
  return { relay, s, r, others: Math.max(0, (b.machine - a.machine) / sec - relay - s - r), relayCpuSec: b.relay - a.relay, relaySysSec: b.relaySys - a.relaySys };
}

/** Tunnels a gateway's log says were established since `from` bytes, and how many of them were forwarded. */
function established(gw: GatewayProc, from: number): { local: number; forwardedSides: number; size: number } {
  const text = readFileSync(gw.logPath, 'utf8');
  let local = 0;
  let forwardedSides = 0;
  for (const line of text.slice(from).split('\n')) {
    if (!line.includes('"tunnel established"')) continue;
    if (/"sessions":\[-\d+,|,-\d+\]/.test(line)) forwardedSides++;
    else local++;
  }
  return { local, forwardedSides, size: text.length };
}
const logSize = (gw: GatewayProc): number => readFileSync(gw.logPath, 'utf8').length;

// ---- 1. throughput, 64 busy tunnels, --workers 2 vs --workers 1 ----

interface TpRound {
  gbps: number;
  cpuSecPerGib: number;
  share: Share;
}
interface TpResult {
  transport: 'ws' | 'tls';
  rounds: Record<'w1' | 'w2', TpRound[]>;
  failed: Record<'w1' | 'w2', number>;
  forwarded: number;
}

async function throughput(ctx: Ctx, transport: 'ws' | 'tls'): Promise<TpResult> {
  const { s, r, opts } = ctx;
  const variants = { w1: ctx.gw.single!, w2: ctx.gw.workers2! } as const;
  const groups = new Map<'w1' | 'w2', string>();
  const failed = { w1: 0, w2: 0 };
  let forwarded = 0;
  for (const v of ['w1', 'w2'] as const) {
    const gw = variants[v];
    const id = uniq(`tp-${v}-${transport}`);
    const from = logSize(gw);
    const port = gw.spec.ports[transport];
    const [a, b] = await Promise.all([
      s.call<{ failed: number }>({ cmd: 'open', group: id, transport, port, count: opts.tunnels, tunnel: true, inflight: opts.inflight }, 300_000),
      r.call<{ failed: number }>({ cmd: 'open', group: id, transport, port, count: opts.tunnels, tunnel: true, inflight: opts.inflight }, 300_000),
    ]);
    failed[v] = Math.max(a.failed, b.failed);
    if (failed[v] > 0) say(`  ${v}: ${failed[v]} of ${opts.tunnels} tunnels failed`);
    if (v === 'w2') {
      await sleep(500); // the log is written asynchronously
      forwarded = Math.floor(established(gw, from).forwardedSides / 2);
    }
    groups.set(v, id);
  }
  const rounds: TpResult['rounds'] = { w1: [], w2: [] };
  const windowMs = opts.seconds * 1000;
  for (let round = 0; round < opts.rounds; round++) {
    for (const v of ['w1', 'w2'] as const) {
      const id = groups.get(v)!;
      const gw = variants[v];
      const blast = s.call<{ bytes: number }>({ cmd: 'blast', group: id, ms: windowMs + 1200, chunk: 256 * 1024 }, windowMs + 120_000);
      await sleep(800); // ramp: every connection writing, buffers filled
      const pids = gw.pids();
      await r.call({ cmd: 'countStart', group: id });
      const a = cpuSnapshot(ctx, pids);
      await sleep(windowMs);
      const counts = await r.call<number[]>({ cmd: 'countStop', group: id });
      const b = cpuSnapshot(ctx, pids);
      await blast;
      const total = counts.reduce((x, y) => x + y, 0);
      const seconds = Number(b.t - a.t) / 1e9;
      const sh = share(a, b);
      const res: TpRound = { gbps: (total * 8) / seconds / 1e9, cpuSecPerGib: total === 0 ? NaN : sh.relayCpuSec / (total / 2 ** 30), share: sh };
      rounds[v].push(res);
      say(`  ${transport} round ${round + 1} ${v}: ${res.gbps.toFixed(2)} Gbit/s, cores gateway ${sh.relay.toFixed(2)} sender ${sh.s.toFixed(2)} receiver ${sh.r.toFixed(2)} others ${sh.others.toFixed(2)}`);
      await sleep(1000); // the window's bytes drain before the next variant starts
    }
  }
  await Promise.all([s.call({ cmd: 'drop' }), r.call({ cmd: 'drop' })]);
  await sleep(1000);
  return { transport, rounds, failed, forwarded };
}

// ---- 2. one tunnel across two nodes (Redis) vs on one node ----

interface XPath {
  gbps: number[];
  cpuSecPerGib: number[];
  p50Us: number[];
  p99Us: number[];
}
interface XResult {
  transport: 'tcp' | 'ws';
  paths: Record<'same' | 'cross', XPath>;
  /** Tunnels the kernel relay held after the transfers on node A (the same-node tunnel and one half of the other) and node B. */
  kernel: [number, number];
}

async function crossNode(ctx: Ctx, transport: 'tcp' | 'ws'): Promise<XResult> {
  const { s, r, opts } = ctx;
  const A = ctx.gw.nodeA!;
  const B = ctx.gw.nodeB!;
  // The receiver (echo side) sits on node A in both paths; the sender on A (same) or B (cross).
  const senderNode = { same: A, cross: B } as const;
  for (const path of ['same', 'cross'] as const) {
    const token = uniq(`x-${path}-${transport}`);
    await Promise.all([
      r.call({ cmd: 'tunnel', name: path, transport, port: A.spec.ports[transport], token }),
      s.call({ cmd: 'tunnel', name: path, transport, port: senderNode[path].spec.ports[transport], token }),
    ]);
  }
  const out: XResult['paths'] = {
    same: { gbps: [], cpuSecPerGib: [], p50Us: [], p99Us: [] },
    cross: { gbps: [], cpuSecPerGib: [], p50Us: [], p99Us: [] },
  };
  const rttRounds = Math.max(3, opts.rounds);
  for (let round = 0; round < rttRounds; round++) {
    for (const path of ['same', 'cross'] as const) {
      const res = await s.call<{ p50Us: number; p99Us: number }>({ cmd: 'rtt', name: path, count: Math.ceil(opts.rttCount / rttRounds), warmup: 200, size: 64 });
      out[path].p50Us.push(res.p50Us);
      out[path].p99Us.push(res.p99Us);
    }
  }
  const pids = () => [...A.pids(), ...B.pids()];
  for (let round = 0; round < opts.rounds; round++) {
    for (const path of ['same', 'cross'] as const) {
      await r.call({ cmd: 'expect', bytes: opts.bytes });
      const cpu0 = cpuOf(pids());
      const { ns } = await s.call<{ ns: number }>({ cmd: 'bulk', name: path, bytes: opts.bytes, chunk: 256 * 1024 }, 300_000);
      const cpu = cpuOf(pids()) - cpu0;
      out[path].gbps.push((opts.bytes * 8) / ns);
      out[path].cpuSecPerGib.push(cpu / (opts.bytes / 2 ** 30));
      say(`  ${transport} round ${round + 1} ${path}: ${((opts.bytes * 8) / ns).toFixed(2)} Gbit/s`);
      await sleep(300);
    }
  }
  const kernel: [number, number] = [kernelPathTunnels(A.pid), kernelPathTunnels(B.pid)];
  await Promise.all([s.call({ cmd: 'drop' }), r.call({ cmd: 'drop' })]);
  await sleep(500);
  return { transport, paths: out, kernel };
}

// ---- 3. pairings per second ----

type PairPath = 'single' | 'workers2' | 'redisOne' | 'redisCross';
const PAIR_PATHS: readonly PairPath[] = ['single', 'workers2', 'redisOne', 'redisCross'];
interface PairRound {
  perSecond: number;
  failed: number;
  relayCpuUsPerPair: number;
  /** `--workers 2`: the primary's part (it accepts every connection and passes it to a worker). */
  primaryCpuUsPerPair: number;
  /** Redis paths: redis-server's part. */
  redisCpuUsPerPair: number;
  /** Each gateway's part (two nodes: A, B), µs per pairing. */
  perGatewayUs: number[];
  share: Share;
}

async function pairingRun(ctx: Ctx, path: PairPath, count: number): Promise<PairRound> {
  const { s, r, opts } = ctx;
  const gws = path === 'single' ? [ctx.gw.single!] : path === 'workers2' ? [ctx.gw.workers2!] : path === 'redisOne' ? [ctx.gw.nodeA!] : [ctx.gw.nodeA!, ctx.gw.nodeB!];
  const relayPids = [...gws.flatMap((g) => g.pids()), ...(path.startsWith('redis') && ctx.redis !== undefined ? [ctx.redis.pid] : [])];
  const many = (peer: Peer<WorkerCommand>, prefix: string, port: number, n: number, inflight: number) =>
    peer.call<{ failed: number; firstError?: string }>({ cmd: 'many', transport: 'tcp', port, prefix, count: n, inflight, keep: false }, 300_000);
  const primary0 = path === 'workers2' ? cpuSeconds(gws[0]!.pid) : NaN;
  const gw0 = gws.map((g) => cpuOf(g.pids()));
  const redisPid = path.startsWith('redis') && ctx.redis !== undefined ? ctx.redis.pid : undefined;
  const redis0 = redisPid === undefined ? NaN : cpuSeconds(redisPid);
  const a = cpuSnapshot(ctx, relayPids);
  let results: { failed: number; firstError?: string }[];
  if (path !== 'redisCross') {
    const prefix = uniq(`pair-${path}`);
    const port = gws[0]!.spec.ports.tcp;
    results = await Promise.all([many(r, prefix, port, count, opts.inflight), many(s, prefix, port, count, opts.inflight)]);
  } else {
    // Half the pairs have the receiver's client on A and the sender's on B, half the other way round.
    const [pa, pb] = [uniq('pair-ab'), uniq('pair-ba')];
    const [A, B] = [gws[0]!.spec.ports.tcp, gws[1]!.spec.ports.tcp];
    const half = Math.floor(count / 2);
    const lanes = Math.max(1, Math.floor(opts.inflight / 2));
    const [r1, s1, r2, s2] = await Promise.all([many(r, pa, A, half, lanes), many(s, pa, B, half, lanes), many(r, pb, B, count - half, lanes), many(s, pb, A, count - half, lanes)]);
    results = [{ failed: r1.failed + r2.failed }, { failed: s1.failed + s2.failed }];
    for (const x of [r1, s1, r2, s2]) if (x.firstError !== undefined) results[0]!.firstError ??= x.firstError;
  }
  const b = cpuSnapshot(ctx, relayPids);
  const primarySec = cpuSeconds(gws[0]!.pid) - primary0;
  const redisSec = redisPid === undefined ? NaN : cpuSeconds(redisPid) - redis0;
  const gwSec = gws.map((g, i) => cpuOf(g.pids()) - gw0[i]!);
  const failed = Math.max(...results.map((x) => x.failed));
  const firstError = results.find((x) => x.firstError !== undefined)?.firstError;
  if (failed > 0) say(`  ${path}: ${failed} pairings failed (${firstError ?? ''})`);
  const seconds = Number(b.t - a.t) / 1e9;
  const sh = share(a, b);
  const perPair = (sec: number) => (sec * 1e6) / Math.max(1, count - failed);
  return { perSecond: (count - failed) / seconds, failed, relayCpuUsPerPair: perPair(sh.relayCpuSec), primaryCpuUsPerPair: perPair(primarySec), redisCpuUsPerPair: perPair(redisSec), perGatewayUs: gwSec.map(perPair), share: sh };
}

async function pairing(ctx: Ctx): Promise<{ rounds: Record<PairPath, PairRound[]>; forwardedW2: { forwarded: number; total: number } }> {
  const { opts } = ctx;
  say(`pairing: warm-up (${opts.warmup} per path)`);
  for (const path of opts.pairPaths) await pairingRun(ctx, path, opts.warmup);
  await sleep(1000);
  const rounds = Object.fromEntries(PAIR_PATHS.map((p) => [p, [] as PairRound[]])) as Record<PairPath, PairRound[]>;
  const w2 = ctx.gw.workers2;
  let forwarded = 0;
  let total = 0;
  for (let round = 0; round < opts.rounds; round++) {
    for (const path of opts.pairPaths) {
      const from = path === 'workers2' && w2 !== undefined ? logSize(w2) : 0;
      const res = await pairingRun(ctx, path, opts.pairings);
      rounds[path].push(res);
      say(`  pairing round ${round + 1} ${path}: ${res.perSecond.toFixed(0)}/s, relay ${res.relayCpuUsPerPair.toFixed(0)} µs CPU per pairing${res.perGatewayUs.length > 1 ? ` (${res.perGatewayUs.map((x) => x.toFixed(0)).join(' + ')} gateways)` : ''}; cores relay ${res.share.relay.toFixed(2)} clients ${(res.share.s + res.share.r).toFixed(2)} others ${res.share.others.toFixed(2)}`);
      if (path === 'workers2' && w2 !== undefined) {
        await sleep(500);
        const e = established(w2, from);
        forwarded += e.forwardedSides / 2;
        total += e.local + e.forwardedSides / 2;
      }
      await sleep(1500); // closes settle, TIME_WAIT sockets are the kernel's
    }
  }
  return { rounds, forwardedW2: { forwarded, total } };
}

// ---- report ----

const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '-');
const met = (ok: boolean) => (ok ? 'met' : 'MISSED');

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  return rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

function renderThroughput(results: TpResult[], opts: Options): string {
  const out = [`1. Throughput, ${opts.tunnels} busy tunnels, ${opts.seconds} s windows, median of ${opts.rounds} rounds: --workers 2 vs --workers 1`];
  for (const res of results) {
    const med = (v: 'w1' | 'w2', pick: (x: TpRound) => number) => median(res.rounds[v].map(pick));
    const rows: string[][] = [[`${res.transport.toUpperCase()} × ${opts.tunnels}`, '--workers 1', '--workers 2', 'ratio']];
    const row = (label: string, pick: (x: TpRound) => number, digits = 2, ratio = false) => {
      const [a, b] = [med('w1', pick), med('w2', pick)];
      rows.push([label, f(a, digits), f(b, digits), ratio ? `${f(b / a)}×` : '']);
    };
    row('total Gbit/s', (x) => x.gbps, 2, true);
    rows.push(['  range (rounds)', ...(['w1', 'w2'] as const).map((v) => `${f(Math.min(...res.rounds[v].map((x) => x.gbps)))}–${f(Math.max(...res.rounds[v].map((x) => x.gbps)))}`), '']);
    row('relay CPU s/GiB', (x) => x.cpuSecPerGib, 2, true);
    row('cores: gateway', (x) => x.share.relay);
    row('cores: sender process', (x) => x.share.s);
    row('cores: receiver process', (x) => x.share.r);
    row('cores: rest of machine', (x) => x.share.others);
    row('Gbit/s per gateway core', (x) => x.gbps / x.share.relay, 2, true);
    out.push('', table(rows));
    const ratio = med('w2', (x) => x.gbps) / med('w1', (x) => x.gbps);
    out.push(`  tunnels forwarded between the two workers: ${res.forwarded} of ${opts.tunnels}; failed: w1 ${res.failed.w1}, w2 ${res.failed.w2}`);
    out.push(`  target ≥ 1.6×: ${f(ratio)}× ${met(ratio >= 1.6)}`);
  }
  return out.join('\n');
}

function renderCross(results: XResult[], opts: Options): string {
  const out = [`2. One tunnel, clients on two nodes (two gateway processes, one Redis) vs both on one node: ${opts.bytes / 2 ** 20} MiB transfers (median of ${opts.rounds}), ${opts.rttCount} × 64-byte round trips`];
  for (const res of results) {
    const { same, cross } = res.paths;
    const rows: string[][] = [[res.transport.toUpperCase(), 'same node', 'two nodes', 'ratio']];
    const row = (label: string, a: number, b: number, digits = 2) => rows.push([label, f(a, digits), f(b, digits), `${f(b / a)}×`]);
    row('throughput Gbit/s', median(same.gbps), median(cross.gbps));
    row('relay CPU s/GiB (both nodes)', median(same.cpuSecPerGib), median(cross.cpuSecPerGib));
    row('RTT p50 µs', median(same.p50Us), median(cross.p50Us), 0);
    row('RTT p99 µs', median(same.p99Us), median(cross.p99Us), 0);
    out.push('', table(rows));
    if (res.transport === 'tcp') out.push(`  kernel relay after the transfers: node A holds ${res.kernel[0]} tunnels (the same-node one and its half of the two-node one), node B ${res.kernel[1]} (its half)`);
    const t = median(cross.gbps) / median(same.gbps);
    const l = median(cross.p50Us) / median(same.p50Us);
    out.push(`  targets: throughput ≥ 0.6×: ${f(t)}× ${met(t >= 0.6)}; RTT p50 ≤ 2×: ${f(l)}× ${met(l <= 2)}`);
  }
  return out.join('\n');
}

function renderPairing(res: Awaited<ReturnType<typeof pairing>>, opts: Options): string {
  const label: Record<PairPath, string> = { single: '1 process', workers2: '--workers 2', redisOne: 'Redis, 1 node', redisCross: 'Redis, 2 nodes' };
  const med = (p: PairPath, pick: (x: PairRound) => number) => median(res.rounds[p].map(pick));
  const paths = opts.pairPaths;
  const rows: string[][] = [['TCP pairings', ...paths.map((p) => label[p])]];
  const row = (name: string, pick: (x: PairRound) => number, digits = 2) => rows.push([name, ...paths.map((p) => f(med(p, pick), digits))]);
  row('pairings/s', (x) => x.perSecond, 0);
  rows.push(['  range (rounds)', ...paths.map((p) => `${f(Math.min(...res.rounds[p].map((x) => x.perSecond)), 0)}–${f(Math.max(...res.rounds[p].map((x) => x.perSecond)), 0)}`)]);
  rows.push(['ratio to 1 process', ...paths.map((p) => `${f(med(p, (x) => x.perSecond) / med('single', (x) => x.perSecond))}×`)]);
  row('relay CPU µs/pairing', (x) => x.relayCpuUsPerPair, 0);
  row('  of which kernel (sys)', (x) => x.relayCpuUsPerPair * (x.share.relaySysSec / x.share.relayCpuSec), 0);
  row('  of which the primary', (x) => x.primaryCpuUsPerPair, 0);
  row('  of which redis-server', (x) => x.redisCpuUsPerPair, 0);
  rows.push(['  each gateway (A + B)', ...paths.map((p) => {
    const parts = [0, 1].map((i) => median(res.rounds[p].map((x) => x.perGatewayUs[i] ?? NaN)));
    return Number.isFinite(parts[1]!) ? `${f(parts[0]!, 0)} + ${f(parts[1]!, 0)}` : '-';
  })]);
  row('cores: relay (+ redis)', (x) => x.share.relay);
  row('cores: client processes', (x) => x.share.s + x.share.r);
  row('cores: rest of machine', (x) => x.share.others);
  row('failed', (x) => x.failed, 0);
  const single = med('single', (x) => x.perSecond);
  const targets: string[] = [];
  if (paths.includes('redisCross')) {
    const cross = med('redisCross', (x) => x.perSecond);
    targets.push(`across two nodes ≥ 2,000/s: ${f(cross, 0)}/s ${met(cross >= 2000)}`);
  }
  if (paths.includes('workers2')) {
    const w2 = med('workers2', (x) => x.perSecond);
    targets.push(`--workers 2 per worker ≥ 0.8× one process: ${f(w2 / 2 / single)}× ${met(w2 / 2 / single >= 0.8)} (total ${f(w2 / single)}×)`);
  }
  return [
    `3. Pairings per second: ${opts.pairings} per path and round (each tunnel closed once established), ${opts.inflight} in flight per client process, median of ${opts.rounds} rounds`,
    '',
    table(rows),
    ...(paths.includes('workers2') ? [`  --workers 2: ${res.forwardedW2.forwarded} of ${res.forwardedW2.total} pairings forwarded between the workers`] : []),
    ...(targets.length > 0 ? [`  targets: ${targets.join('; ')}`] : []),
  ].join('\n');
}

// ---- main ----

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-cluster-'));
  const tls = makeCert(dir);
  const load0 = loadAverage();
  const started = Date.now();
  say(`work dir ${dir}; load average ${load0}; sections ${opts.only.join(', ')}`);
  const needs = {
    single: opts.only.includes('throughput') || opts.only.includes('pairing'),
    workers2: opts.only.includes('throughput') || (opts.only.includes('pairing') && opts.pairPaths.includes('workers2')),
    nodes: opts.only.includes('cross') || (opts.only.includes('pairing') && opts.pairPaths.some((p) => p.startsWith('redis'))),
  };
  const redis = needs.nodes ? await startRedis() : undefined;
  const command = gatewayCommand(ROOT, dir, opts.compiled);
  const specs: [keyof Ctx['gw'], GatewaySpec][] = [];
  if (needs.single) specs.push(['single', { name: 'single', ports: SINGLE, workers: 1 }]);
  if (needs.workers2) specs.push(['workers2', { name: 'workers2', ports: WORKERS2, workers: 2 }]);
  if (redis !== undefined)
    specs.push(['nodeA', { name: 'nodeA', ports: NODE_A, workers: 1, redis: { socket: redis.socket, nodeId: 'bench-a' } }], ['nodeB', { name: 'nodeB', ports: NODE_B, workers: 1, redis: { socket: redis.socket, nodeId: 'bench-b' } }]);
  const gw: Ctx['gw'] = {};
  const env = { ...process.env, BENCH_CERT: tls.cert, BENCH_KEY: tls.key };
  const before = new Set(childrenOf(process.pid));
  const s = new Peer<WorkerCommand>('sender', ROOT, WORKER, env);
  const sPid = childrenOf(process.pid).find((p) => !before.has(p)) ?? -1;
  before.add(sPid);
  const r = new Peer<WorkerCommand>('receiver', ROOT, WORKER, env);
  const rPid = childrenOf(process.pid).find((p) => !before.has(p)) ?? -1;
  const ctx: Ctx = { opts, s, r, peerPids: { s: sPid, r: rPid }, gw, redis };
  const text: string[] = [];
  try {
    for (const [key, spec] of specs) gw[key] = await startGateway(command, dir, spec, writeConfig(dir, spec, opts.logLevel, tls));
    await sleep(1000);
    if (opts.only.includes('throughput')) {
      const res: TpResult[] = [];
      for (const t of ['ws', 'tls'] as const) {
        say(`throughput: ${t}, ${opts.tunnels} busy tunnels, --workers 1 vs 2`);
        res.push(await throughput(ctx, t));
      }
      text.push(renderThroughput(res, opts));
    }
    if (opts.only.includes('cross')) {
      const res: XResult[] = [];
      for (const t of ['tcp', 'ws'] as const) {
        say(`cross-node: ${t}, one tunnel, same node vs two nodes`);
        res.push(await crossNode(ctx, t));
      }
      text.push(renderCross(res, opts));
    }
    if (opts.only.includes('pairing')) {
      say('pairing rate');
      text.push(renderPairing(await pairing(ctx), opts));
    }
  } finally {
    await Promise.all([s.exit(), r.exit()]);
    for (const g of Object.values(gw)) await g.stop();
    await redis?.stop();
  }
  const load1 = loadAverage();
  const head = [
    '',
    `Scale-out benchmark (npm run bench:cluster -- ${process.argv.slice(2).join(' ')}), ${new Date().toISOString().slice(0, 10)}`,
    `gateway: ${command.label}, log level ${opts.logLevel}; redis-server on a unix socket; load: bench/relay/worker.ts, one sender and one receiver process`,
    `machine: ${readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter((l) => l.startsWith('processor')).length} cores, load average ${load0} → ${load1}; wall ${((Date.now() - started) / 1000).toFixed(0)} s`,
    '',
  ];
  process.stdout.write(`${head.join('\n')}\n${text.join('\n\n')}\n`);
  if (!opts.keep) rmSync(dir, { recursive: true, force: true });
  else say(`work dir kept: ${dir}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:cluster failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
