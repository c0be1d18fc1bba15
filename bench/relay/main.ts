/**
 * `npm run bench:relay [-- --quick] [-- --only tcp,ws]`: the relay benchmark (docs/benchmarks.md).
 *
 * Processes: the gateway (`node --import tsx src/cli/main.ts serve` with a generated config), two peers
 * (worker.ts: R receives/echoes, S sends) and, for TCP, a `socat -b 262144` forwarder. This process only
 * coordinates over IPC and samples the gateway's /proc entries, so no load shares the gateway's loop.
 *
 * Per transport (TCP, TLS, WS, WSS), in one run:
 *   throughput  N bytes (1 GiB; --quick 256 MiB) through one tunnel, straight to a sink (direct), and
 *               through socat (TCP); gateway RSS peak and CPU during the tunnelled transfer
 *   round trip  64-byte ping-pong, p50/p99, for the same three paths
 *   idle memory a fresh gateway, 5,000 idle tunnels (--quick 1,000): RSS delta / tunnels
 *   setup rate  (TCP) tunnels established per second, JSON-RPC handshake included, 64 in flight
 * TCP is measured in two topologies: sender and receiver in separate peer processes, and in one process
 * (`--topology one,two`, default both). Then the many-tunnel section (many.ts: 64 and 512 busy tunnels
 * plus a ping tunnel, TCP and WS, beside socat and haproxy; `--many 64,512`, `--many-seconds`,
 * `--many-rounds`, `--many-ping-gap-ms`, `--many-paths`, `--many-transports tcp,ws` (also `tls`, `wss`:
 * through the gateway only), `--no-many`, `--many-only`).
 * Then the tunnel-proxy section (tunnel-proxy.ts): one server connection with 1, 16 and 256 clients beside
 * the same number of legacy tunnels (`--tp-only` runs only it, `--no-tp` skips it).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  appendFileSync,
  mkdtempSync,
  writeFileSync,
  readFileSync,
  rmSync,
  openSync,
  closeSync,
  symlinkSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ZodType } from 'zod';
import type { Transport, WorkerCommand } from './types.ts';
import { commandNodeFlags } from '../command-flags.ts';
import { renderReport, type TransportResult } from './report.ts';
import { runTunnelProxySection } from './tunnel-proxy.ts';
import { runManySection } from './many.ts';
import { Peer, stopChild } from './peer.ts';

/** The load worker of the relay sections. */
const WORKER = 'bench/relay/worker.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ALL: Transport[] = ['tcp', 'tls', 'ws', 'wss'];
/** Fixed ports below the ephemeral range (see the spec's performance facts). */
const GATEWAY_PORT: Record<Transport, number> = { ws: 21212, tcp: 21213, tls: 21214, wss: 21215 };
/** The second gateway (kernel relay off), for the TCP table's "JS tunnel" column, listens 10 ports up. */
const JS_GATEWAY_OFFSET = 10;
const SINK_PORT: Record<Transport, number> = { tcp: 21301, tls: 21302, ws: 21303, wss: 21304 };
const SOCAT_PORT = 21310;
const PIPE_PORT = 21311;

interface Options {
  quick: boolean;
  only: Transport[];
  bytes: number;
  chunk: number;
  rttCount: number;
  /** Transfer rounds per path (the median counts). */
  rounds: number;
  idleTunnels: number;
  rateTunnels: number;
  inflight: number;
  logLevel: string;
  json: boolean;
  /** Repository whose src/ the gateway runs (a private copy with an experiment); default: this one. */
  repo: string;
  /** Run the gateway from a tsc build instead of the TypeScript sources through tsx. */
  compiled: boolean;
  /** relay.limits.tunnelBufferBytes for the run (default: the gateway's own default). */
  tunnelBufferKib: number | undefined;
  /** Run the tunnel-proxy section (default), or only it. */
  tp: boolean;
  tpOnly: boolean;
  /** TCP single-tunnel topologies: peers in two processes (`two`), sender and receiver in one (`one`). */
  topologies: ('one' | 'two')[];
  /** The many-tunnel section: busy tunnel counts, window seconds, rounds; off with --no-many. */
  many: boolean;
  manyOnly: boolean;
  manyCounts: number[];
  manySeconds: number;
  manyRounds: number;
  /** Milliseconds between a ping's answer and the next (`--many-ping-gap-ms`, default 0: back to back). */
  manyPingGapMs: number;
  /** The many-tunnel section's paths and transports (`--many-paths`, `--many-transports`); default all. */
  manyPaths: string[] | undefined;
  manyTransports: ('tcp' | 'ws' | 'tls' | 'wss')[] | undefined;
  /** Only the transfers and round trips of each transport (no idle-memory or setup-rate part). */
  transferOnly: boolean;
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const value = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, dflt: number) => {
    const v = value(name);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
    return n;
  };
  const only = (value('--only') ?? ALL.join(',')).split(',').map((s) => s.trim()) as Transport[];
  for (const t of only)
    if (!ALL.includes(t)) throw new Error(`--only: unknown transport ${t} (tcp, tls, ws, wss)`);
  return {
    quick,
    only,
    bytes: num('--mib', quick ? 256 : 1024) * 1024 * 1024,
    chunk: num('--chunk-kib', 256) * 1024,
    rttCount: num('--rtt', quick ? 2000 : 10000),
    rounds: num('--rounds', 3),
    idleTunnels: num('--tunnels', quick ? 1000 : 5000),
    rateTunnels: num('--rate-tunnels', quick ? 2000 : 6000),
    inflight: num('--inflight', 64),
    logLevel: value('--log-level') ?? 'info',
    json: argv.includes('--json'),
    repo: value('--repo') ?? ROOT,
    compiled: argv.includes('--compiled'),
    tp: !argv.includes('--no-tp') && !argv.includes('--many-only'),
    tpOnly: argv.includes('--tp-only'),
    topologies: (value('--topology') ?? 'two,one').split(',').map((t) => {
      if (t !== 'one' && t !== 'two') throw new Error(`--topology: ${t} (one, two)`);
      return t;
    }),
    many: !argv.includes('--no-many') && !argv.includes('--tp-only'),
    manyOnly: argv.includes('--many-only'),
    manyCounts: (value('--many') ?? '64,512').split(',').map((n) => {
      const v = Number(n);
      if (!Number.isInteger(v) || v <= 0) throw new Error('--many needs tunnel counts, e.g. 64,512');
      return v;
    }),
    manySeconds: num('--many-seconds', quick ? 3 : 5),
    manyRounds: num('--many-rounds', quick ? 1 : 3),
    manyPingGapMs: num('--many-ping-gap-ms', 0),
    transferOnly: argv.includes('--transfer-only'),
    manyPaths: value('--many-paths')?.split(','),
    manyTransports: value('--many-transports')?.split(',').map((t) => {
      if (t !== 'tcp' && t !== 'ws' && t !== 'tls' && t !== 'wss') throw new Error(`--many-transports: ${t} (tcp, ws, tls, wss: the last two through the gateway only)`);
      return t;
    }),
    tunnelBufferKib:
      value('--tunnel-buffer-kib') === undefined ? undefined : num('--tunnel-buffer-kib', 1024),
  };
}

const say = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- files: certificate and gateway config ----

function makeCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

/**
 * Other front ends in the gateway's schema (of the repository under test) are switched off when they
 * accept `enabled = false`, so the run measures the relay alone.
 */
async function otherSectionsOff(repo: string): Promise<string> {
  const mod = (await import(pathToFileURL(join(repo, 'src/config.ts')).href)) as {
    gatewayConfigSchema: ZodType & { shape: Record<string, unknown> };
  };
  const gatewayConfigSchema = mod.gatewayConfigSchema;
  const shape = gatewayConfigSchema.shape;
  let out = '';
  for (const key of Object.keys(shape)) {
    if (key === 'relay' || key === 'log' || key === 'shutdown') continue;
    if (gatewayConfigSchema.safeParse({ [key]: { enabled: false } }).success)
      out += `\n[${key}]\nenabled = false\n`;
  }
  return out;
}

/** True when the gateway under test has the kernel relay switch (`relay.splice.enabled`). */
async function hasSpliceSwitch(repo: string): Promise<boolean> {
  const mod = (await import(pathToFileURL(join(repo, 'src/config.ts')).href)) as {
    gatewayConfigSchema: ZodType;
  };
  return mod.gatewayConfigSchema.safeParse({ relay: { splice: { enabled: false } } }).success;
}

/** Writes a gateway config; `jsOnly` turns the kernel relay off and moves the listeners up. */
async function writeConfig(dir: string, opts: Options, jsOnly = false): Promise<string> {
  const { logLevel, repo } = opts;
  const offset = jsOnly ? JS_GATEWAY_OFFSET : 0;
  const listeners = ALL.map(
    (t) => `  { kind = "${t}", host = "127.0.0.1", port = ${GATEWAY_PORT[t] + offset} },`,
  ).join('\n');
  const toml = `# generated by bench/relay/main.ts
[log]
level = "${logLevel}"

[shutdown]
graceMs = 500

[relay]
listeners = [
${listeners}
]

[relay.tls]
certFile = "cert.pem"
keyFile = "key.pem"

[relay.timeouts]
# 5,000 tunnels opened 64 at a time: the first side of a pair may wait a while for its partner.
aloneMs = 60000

[relay.limits]
# every benchmark connection comes from 127.0.0.1
maxConnectionsPerIp = 20000
${opts.tunnelBufferKib === undefined ? '' : `tunnelBufferBytes = ${opts.tunnelBufferKib * 1024}\n`}
[relay.authenticator]
kind = "dev"

[relay.monitor]
path = "monitor${jsOnly ? '-js' : ''}.sock"
${jsOnly ? '\n[relay.splice]\nenabled = false\n' : ''}${await otherSectionsOff(repo)}`;
  const path = join(dir, jsOnly ? 'gatehouse-js.toml' : 'gatehouse.toml');
  writeFileSync(path, toml);
  return path;
}

// ---- processes ----

interface GatewayProc {
  readonly pid: number;
  stop(): Promise<void>;
}

/** Extra node flags for the gateway (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`), space-separated. */
const GATEWAY_NODE_ARGS = (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
/** Where the gateway's stdout goes (appended), e.g. for `--trace-gc`; unset: only read for the start line. */
const GATEWAY_STDOUT = process.env.BENCH_GATEWAY_STDOUT;

/**
 * How the gateway is started: from src through tsx (default), or a tsc build in the work dir; with the
 * command's node flags, then BENCH_GATEWAY_NODE_ARGS (later flags win).
 */
function gatewayCommand(opts: Options, dir: string): { args: string[]; cwd: string } {
  const nodeArgs = [...commandNodeFlags(opts.repo), ...GATEWAY_NODE_ARGS];
  if (!opts.compiled)
    return {
      args: [...nodeArgs, '--import', 'tsx', join(opts.repo, 'src/cli/main.ts')],
      cwd: opts.repo,
    };
  const out = join(dir, 'build');
  try {
    execFileSync(
      join(ROOT, 'node_modules/.bin/tsc'),
      ['-p', join(opts.repo, 'tsconfig.build.json'), '--outDir', join(out, 'dist'), '--sourceMap', 'false'],
      { cwd: opts.repo, stdio: 'pipe' },
    );
  } catch (err) {
    // Type errors elsewhere in the tree (work in progress) still emit JavaScript; only a missing entry is fatal.
    if (!existsSync(join(out, 'dist/cli/main.js'))) throw err;
    say('tsc reported type errors; running the JavaScript it emitted anyway');
  }
  writeFileSync(join(out, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(opts.repo, 'node_modules'), join(out, 'node_modules'));
  // src/relay/splice.ts finds the optional addon at ../../native from its own directory.
  if (existsSync(join(opts.repo, 'native'))) symlinkSync(join(opts.repo, 'native'), join(out, 'native'));
  return { args: [...nodeArgs, join(out, 'dist/cli/main.js')], cwd: out };
}

async function startGateway(
  command: { args: string[]; cwd: string },
  configPath: string,
  logPath: string,
): Promise<GatewayProc> {
  const logFd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [...command.args, 'serve', '--config', configPath], {
    cwd: command.cwd,
    stdio: ['ignore', 'pipe', logFd],
  });
  closeSync(logFd);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`gateway did not start within 30 s; log: ${logPath}`)),
      30_000,
    );
    child.stdout!.on('data', (b: Buffer) => {
      // What node flags print (e.g. --trace-gc through BENCH_GATEWAY_NODE_ARGS) goes to this file.
      if (GATEWAY_STDOUT !== undefined) appendFileSync(GATEWAY_STDOUT, b);
      if (out.includes('Gatehouse is running')) return;
      out += b.toString();
      if (out.includes('Gatehouse is running')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code} during start; log: ${logPath}`));
    });
  });
  const pid = child.pid!;
  say(`gateway pid ${pid}`);
  return {
    pid,
    stop: () => stopChild(child, 15_000),
  };
}

function startSocat(toPort: number): ChildProcess {
  const child = spawn(
    'socat',
    ['-b', '262144', `TCP-LISTEN:${SOCAT_PORT},bind=127.0.0.1,reuseaddr,fork`, `TCP:127.0.0.1:${toPort}`],
    { stdio: 'ignore' },
  );
  child.on('error', () => undefined);
  return child;
}

function startPipeForwarder(toPort: number): ChildProcess {
  return spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'bench/relay/pipe-forwarder.ts'), String(PIPE_PORT), String(toPort)],
    { cwd: ROOT, stdio: 'ignore' },
  );
}

/** Direct children of a process (socat forks one per connection). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .split(' ')
      .filter((x) => x !== '')
      .map(Number);
  } catch {
    return [];
  }
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port} after ${ms} ms`);
    await sleep(50);
  }
}

/** Whether the first gateway loaded the splice addon, from its "relay listening" log line. */
function kernelRelayState(logPath: string): string {
  const m = /"kernelRelay":(true|false)/.exec(readFileSync(logPath, 'utf8'));
  return m === null ? 'unknown' : m[1] === 'true' ? 'on' : 'off (addon not loaded)';
}

// ---- /proc sampling ----

/** Resident set and its peak, in KiB. */
function memory(pid: number): { rssKib: number; hwmKib: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssKib: field('VmRSS'), hwmKib: field('VmHWM') };
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0); false when the kernel refuses. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU seconds of a process. */
function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0; // gone
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function sampleMemory(pid: number): { stop(): number } {
  let peak = 0;
  const tick = () => {
    try {
      peak = Math.max(peak, memory(pid).rssKib);
    } catch {
      /* process gone */
    }
  };
  const timer = setInterval(tick, 10);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return peak;
    },
  };
}

// ---- measurements ----

interface PathResult {
  gbps: number;
  seconds: number;
  /** Slowest and fastest round. */
  gbpsRange: [number, number];
  p50Us: number;
  p99Us: number;
}

interface Ctx {
  readonly opts: Options;
  readonly r: Peer<WorkerCommand>;
  readonly s: Peer<WorkerCommand>;
}

let tokenSeq = 0;

type PathName = 'direct' | 'socat' | 'pipe' | 'tunnel' | 'jsTunnel';
const FORWARDER_PORT = { socat: SOCAT_PORT, pipe: PIPE_PORT } as const;

/** Rounds of the round-trip test; the paths take turns, so a noisy moment does not hit only one. */
const RTT_ROUNDS = 3;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Opens one connection per path, runs the round-trip test in interleaved rounds (median of the rounds'
 * p50 and p99), then moves `bytes` over each path; the gateway's RSS and CPU are sampled during the
 * tunnelled transfer.
 */
async function measureTransport(
  ctx: Ctx,
  transport: Transport,
  paths: PathName[],
  gatewayPids: Partial<Record<PathName, number>>,
  forwarderPids: Partial<Record<PathName, () => number[]>>,
): Promise<Record<PathName, PathResult & { rssPeakMib?: number; cpuSecPerGib?: number }>> {
  const { r, s, opts } = ctx;
  for (const path of paths) {
    if (path === 'tunnel' || path === 'jsTunnel') {
      const token = `bench-${process.pid}-${tokenSeq++}`;
      const port = GATEWAY_PORT[transport] + (path === 'jsTunnel' ? JS_GATEWAY_OFFSET : 0);
      // The receiving side's name differs, so one process can hold both sides (the one-process topology).
      await Promise.all([
        r.call({ cmd: 'tunnel', name: `${path}.rx`, transport, port, token }),
        s.call({ cmd: 'tunnel', name: path, transport, port, token }),
      ]);
    } else {
      await s.call({
        cmd: 'connect',
        name: path,
        transport,
        port: path === 'direct' ? SINK_PORT[transport] : FORWARDER_PORT[path],
      });
    }
  }
  const rtts = new Map<PathName, { p50Us: number; p99Us: number }[]>(paths.map((p) => [p, []]));
  for (let round = 0; round < RTT_ROUNDS; round++) {
    for (const path of paths) {
      const res = await s.call<{ p50Us: number; p99Us: number }>({
        cmd: 'rtt',
        name: path,
        count: Math.ceil(opts.rttCount / RTT_ROUNDS),
        warmup: Math.min(500, opts.rttCount),
        size: 64,
      });
      rtts.get(path)!.push(res);
    }
  }
  // Transfers: `rounds` rounds, the paths taking turns; the median round counts, RSS peak is the largest.
  const runs = new Map<PathName, { ns: number; cpuSec: number; rssPeakKib: number }[]>(
    paths.map((p) => [p, []]),
  );
  for (let round = 0; round < opts.rounds; round++) {
    for (const path of paths) {
      await r.call({ cmd: 'expect', bytes: opts.bytes });
      let sampler: { stop(): number } | undefined;
      const gatewayPid = gatewayPids[path];
      const pids = gatewayPid !== undefined ? [gatewayPid] : (forwarderPids[path]?.() ?? []);
      const cpu = () => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
      const cpu0 = cpu();
      if (gatewayPid !== undefined) {
        resetPeak(gatewayPid);
        sampler = sampleMemory(gatewayPid);
      }
      const { ns } = await s.call<{ ns: number }>(
        { cmd: 'bulk', name: path, bytes: opts.bytes, chunk: opts.chunk },
        300_000,
      );
      let rssPeakKib = NaN;
      if (sampler !== undefined && gatewayPid !== undefined)
        rssPeakKib = Math.max(sampler.stop(), memory(gatewayPid).hwmKib);
      runs.get(path)!.push({ ns, cpuSec: pids.length > 0 ? cpu() - cpu0 : NaN, rssPeakKib });
      await sleep(200);
    }
  }
  const out: Partial<Record<PathName, PathResult & { rssPeakMib?: number; cpuSecPerGib?: number }>> = {};
  for (const path of paths) {
    const rs = runs.get(path)!;
    const ns = median(rs.map((x) => x.ns));
    const samples = rtts.get(path)!;
    const result: PathResult & { rssPeakMib?: number; cpuSecPerGib?: number } = {
      gbps: (opts.bytes * 8) / ns,
      seconds: ns / 1e9,
      gbpsRange: [
        Math.min(...rs.map((x) => (opts.bytes * 8) / x.ns)),
        Math.max(...rs.map((x) => (opts.bytes * 8) / x.ns)),
      ],
      p50Us: median(samples.map((x) => x.p50Us)),
      p99Us: median(samples.map((x) => x.p99Us)),
    };
    if (gatewayPids[path] !== undefined) result.rssPeakMib = Math.max(...rs.map((x) => x.rssPeakKib)) / 1024;
    if (rs.every((x) => Number.isFinite(x.cpuSec)))
      result.cpuSecPerGib = median(rs.map((x) => x.cpuSec)) / (opts.bytes / 2 ** 30);
    out[path] = result;
  }
  await s.call({ cmd: 'drop' });
  await r.call({ cmd: 'drop' });
  await sleep(200);
  return out as Record<PathName, PathResult & { rssPeakMib?: number; cpuSecPerGib?: number }>;
}

/** Idle memory per tunnel on a fresh gateway; the peers hold the client sides. */
async function measureIdle(
  ctx: Ctx,
  transport: Transport,
  pid: number,
): Promise<{ baseMib: number; kibPerTunnel: number; tunnels: number; seconds: number }> {
  const { r, s, opts } = ctx;
  const port = GATEWAY_PORT[transport];
  const many = (prefix: string, count: number, keep: boolean) =>
    Promise.all(
      [r, s].map((p) =>
        p.call<{ ms: number; failed: number; firstError?: string }>(
          { cmd: 'many', transport, port, prefix, count, inflight: opts.inflight, keep },
          240_000,
        ),
      ),
    );
  // Warm up (JIT, lazily loaded code, first buffers) so the baseline already holds them.
  await many(`warm-${transport}`, 200, false);
  await sleep(1000);
  const before = memory(pid).rssKib;
  const t0 = Date.now();
  const res = await many(`idle-${transport}`, opts.idleTunnels, true);
  const seconds = (Date.now() - t0) / 1000;
  const failed = Math.max(...res.map((x) => x.failed));
  if (failed > 0)
    say(
      `  ${transport}: ${failed} idle tunnels failed (${res.find((x) => x.firstError !== undefined)?.firstError ?? ''})`,
    );
  await sleep(2000);
  const after = memory(pid).rssKib;
  const tunnels = opts.idleTunnels - failed;
  await Promise.all([r.call({ cmd: 'drop' }), s.call({ cmd: 'drop' })]);
  return { baseMib: before / 1024, kibPerTunnel: (after - before) / tunnels, tunnels, seconds };
}

async function measureRate(
  ctx: Ctx,
  gatewayPid: number,
): Promise<{ perSecond: number; failed: number; cpuUsPerTunnel: number }> {
  const { r, s, opts } = ctx;
  const cpu0 = cpuSeconds(gatewayPid);
  const t0 = process.hrtime.bigint();
  const res = await Promise.all(
    [r, s].map((p) =>
      p.call<{ ms: number; failed: number; firstError?: string }>(
        {
          cmd: 'many',
          transport: 'tcp',
          port: GATEWAY_PORT.tcp,
          prefix: `rate-${process.pid}`,
          count: opts.rateTunnels,
          inflight: opts.inflight,
          keep: false,
        },
        240_000,
      ),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const failed = Math.max(...res.map((x) => x.failed));
  if (failed > 0)
    say(
      `  rate: ${failed} tunnels failed (${res.find((x) => x.firstError !== undefined)?.firstError ?? ''})`,
    );
  const cpuUsPerTunnel = ((cpuSeconds(gatewayPid) - cpu0) * 1e6) / (opts.rateTunnels - failed);
  return { perSecond: (opts.rateTunnels - failed) / seconds, failed, cpuUsPerTunnel };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'));
  const { cert, key } = makeCert(dir);
  const configPath = await writeConfig(dir, opts);
  const jsConfigPath = (await hasSpliceSwitch(opts.repo)) ? await writeConfig(dir, opts, true) : undefined;
  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ')[0]!;
  const logPath = join(dir, 'gateway.log');
  const command = gatewayCommand(opts, dir);
  say(
    `work dir ${dir}; ${opts.bytes / 2 ** 20} MiB per transfer, ${opts.rttCount} round trips, ${opts.idleTunnels} idle tunnels${opts.quick ? ' (quick)' : ''}`,
  );
  const env = { ...process.env, BENCH_CERT: cert, BENCH_KEY: key };
  const ctx: Ctx = { opts, r: new Peer<WorkerCommand>('receiver', ROOT, WORKER, env), s: new Peer<WorkerCommand>('sender', ROOT, WORKER, env) };
  const started = Date.now();
  const results: TransportResult[] = [];
  let gateway: GatewayProc | undefined;
  let jsGateway: GatewayProc | undefined;
  let kernelRelay: string | undefined;
  let socat: ChildProcess | undefined;
  let pipe: ChildProcess | undefined;
  const transports = opts.tpOnly || opts.manyOnly ? [] : opts.only;
  let manyText = '';
  try {
    for (const t of transports) await ctx.r.call({ cmd: 'listen', transport: t, port: SINK_PORT[t] });
    for (const transport of transports) {
      say(`${transport}: transfer and round trip`);
      gateway = await startGateway(command, configPath, logPath);
      const idleRss = memory(gateway.pid).rssKib / 1024;
      // The log is written asynchronously: read the start line once the first transfer is done.
      const forwarderPids: Partial<Record<PathName, () => number[]>> = {};
      const gatewayPids: Partial<Record<PathName, number>> = { tunnel: gateway.pid };
      const paths: PathName[] =
        transport === 'tcp' ? ['direct', 'socat', 'pipe', 'tunnel'] : ['direct', 'tunnel'];
      if (transport === 'tcp' && jsConfigPath !== undefined) {
        jsGateway = await startGateway(command, jsConfigPath, logPath);
        gatewayPids.jsTunnel = jsGateway.pid;
        paths.push('jsTunnel');
      }
      if (transport === 'tcp') {
        socat = startSocat(SINK_PORT.tcp);
        pipe = startPipeForwarder(SINK_PORT.tcp);
        await waitForPort(SOCAT_PORT, 5000);
        await waitForPort(PIPE_PORT, 10_000);
        const socatPid = socat.pid!;
        const pipePid = pipe.pid!;
        forwarderPids.socat = () => [socatPid, ...childrenOf(socatPid)];
        forwarderPids.pipe = () => [pipePid];
      }
      const two = opts.topologies.includes('two');
      const one = transport === 'tcp' && opts.topologies.includes('one');
      // The one-process topology: the receiver peer also sends (its sinks and both tunnel sides in one loop).
      const oneCtx: Ctx = { opts, r: ctx.r, s: ctx.r };
      let measuredOne: Awaited<ReturnType<typeof measureTransport>> | undefined;
      if (one && !two) measuredOne = await measureTransport(oneCtx, transport, paths, gatewayPids, forwarderPids);
      const measured = two ? await measureTransport(ctx, transport, paths, gatewayPids, forwarderPids) : measuredOne!;
      if (one && two) {
        say(`${transport}: the same, sender and receiver in one process`);
        measuredOne = await measureTransport(oneCtx, transport, paths, gatewayPids, forwarderPids);
      }
      if (jsGateway !== undefined) await jsGateway.stop();
      jsGateway = undefined;
      const viaSocat = measured.socat;
      const viaPipe = measured.pipe;
      for (const c of [socat, pipe]) if (c !== undefined) await stopChild(c, 2000);
      socat = undefined;
      pipe = undefined;
      const { direct, tunnel } = measured;
      kernelRelay ??= kernelRelayState(logPath);
      await gateway.stop();
      gateway = undefined;
      let idle = { baseMib: NaN, kibPerTunnel: NaN, tunnels: 0, seconds: NaN };
      if (!opts.transferOnly) {
        say(`${transport}: ${opts.idleTunnels} idle tunnels`);
        gateway = await startGateway(command, configPath, logPath);
        idle = await measureIdle(ctx, transport, gateway.pid);
      }
      let rate: { perSecond: number; failed: number; cpuUsPerTunnel: number } | undefined;
      if (transport === 'tcp' && gateway !== undefined) {
        say(`tcp: tunnel setup rate (${opts.rateTunnels} tunnels, ${opts.inflight} in flight)`);
        await sleep(1000);
        rate = await measureRate(ctx, gateway.pid);
      }
      await gateway?.stop();
      gateway = undefined;
      const result: TransportResult = { transport, direct, tunnel, idle, gatewayIdleRssMib: idleRss };
      if (viaSocat !== undefined) result.socat = viaSocat;
      if (viaPipe !== undefined) result.pipe = viaPipe;
      if (measured.jsTunnel !== undefined) result.jsTunnel = measured.jsTunnel;
      if (rate !== undefined) result.rate = rate;
      if (measuredOne !== undefined && two) result.oneProcess = measuredOne;
      if (!two) result.topology = 'one';
      results.push(result);
    }
    if (opts.many) {
      say(`many-tunnel section: ${opts.manyCounts.join(' and ')} busy tunnels`);
      gateway = await startGateway(command, configPath, logPath);
      if (jsConfigPath !== undefined) jsGateway = await startGateway(command, jsConfigPath, logPath);
      const pinger = new Peer<WorkerCommand>('pinger', ROOT, WORKER, env);
      try {
        const ports = (offset: number) => ({ tcp: GATEWAY_PORT.tcp + offset, ws: GATEWAY_PORT.ws + offset, tls: GATEWAY_PORT.tls + offset, wss: GATEWAY_PORT.wss + offset });
        const out = await runManySection({
          root: ROOT,
          dir,
          counts: opts.manyCounts,
          seconds: opts.manySeconds,
          rounds: opts.manyRounds,
          inflight: opts.inflight,
          pingGapMs: opts.manyPingGapMs,
          onlyPaths: opts.manyPaths,
          transports: opts.manyTransports,
          s: ctx.s,
          r: ctx.r,
          pinger,
          gateway: { pid: gateway.pid, port: ports(0) },
          jsGateway: jsGateway === undefined ? undefined : { pid: jsGateway.pid, port: ports(JS_GATEWAY_OFFSET) },
          cpuSeconds,
          memory,
          resetPeak,
          sampleMemory,
          childrenOf,
          waitForPort,
          stopChild,
          say,
        });
        manyText = out.text;
        kernelRelay ??= kernelRelayState(logPath);
      } finally {
        await pinger.exit();
      }
    }
  } finally {
    for (const c of [socat, pipe]) if (c !== undefined) await stopChild(c, 2000);
    for (const g of [gateway, jsGateway]) if (g !== undefined) await g.stop();
    await Promise.all([ctx.r.exit(), ctx.s.exit()]);
  }
  let tpSection = '';
  if (opts.tp || opts.tpOnly) {
    tpSection = await runTunnelProxySection({
      root: ROOT,
      dir,
      quick: opts.quick,
      logLevel: opts.logLevel,
      otherSections: await otherSectionsOff(opts.repo),
      startGateway: (path) => startGateway(command, path, logPath),
      memory,
      resetPeak,
      cpuSeconds,
      sampleMemory,
      say,
    });
  }
  const wall = (Date.now() - started) / 1000;
  if (transports.length > 0) process.stdout.write(
    renderReport(results, {
      bytes: opts.bytes,
      rounds: opts.rounds,
      idleTunnels: opts.idleTunnels,
      rateTunnels: opts.rateTunnels,
      inflight: opts.inflight,
      wallSeconds: wall,
      quick: opts.quick,
      gateway: `${opts.compiled ? 'tsc build' : 'src via tsx'}${opts.repo === ROOT ? '' : ` of ${opts.repo}`}, log level ${opts.logLevel}, kernel relay ${kernelRelay ?? 'unknown'}, node flags ${[...commandNodeFlags(opts.repo), ...GATEWAY_NODE_ARGS].join(' ') || 'none'}${opts.tunnelBufferKib === undefined ? '' : `, tunnelBufferBytes ${opts.tunnelBufferKib} KiB`}`,
      load: `${load0} → ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]!}`,
    }),
  );
  process.stdout.write(manyText);
  process.stdout.write(tpSection);
  if (opts.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  rmSync(dir, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:relay failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
