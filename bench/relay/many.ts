/**
 * The many-tunnel section of bench:relay: N busy tunnels (64 and 512 by default) plus one quiet ping
 * tunnel, over TCP and WS, through the gateway and beside the same load through `socat -b 262144` and
 * haproxy in TCP mode (and, for TCP, the gateway with the kernel relay off and a bare Node `pipe()`
 * forwarder). One run, rounds interleaved (every path once per round, then the next round).
 *
 * Processes: the sender peer writes on every busy connection as fast as backpressure allows; the receiver
 * peer counts what each connection receives (never echoes); a third peer, the pinger, holds both ends of
 * the quiet connection (a tunnel's two sides, or a connection through the forwarder to its own echo sink),
 * so the ping measures the relaying process and not a busy client's event loop. Forwarders get a second
 * listener for the ping (socat forks a process per connection anyway; haproxy and the pipe forwarder
 * serve both listeners in one process), so the ping always crosses the same relaying process as the load.
 *
 * Per path and round: after a ramp, a window of `seconds`: total throughput (bytes the receiver counted),
 * per-tunnel fairness (Jain's index and slowest/mean), back-to-back 64-byte pings (p50, p99, count),
 * relaying process CPU seconds per GiB and its RSS peak. Tables show the median round.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerCommand } from './types.ts';

export interface ManyPeer {
  call<T = undefined>(command: WorkerCommand, timeoutMs?: number): Promise<T>;
}

export interface ManyDeps {
  readonly root: string;
  readonly dir: string;
  readonly counts: number[];
  readonly seconds: number;
  readonly rounds: number;
  readonly inflight: number;
  /** Milliseconds between a ping's answer and the next ping (`--many-ping-gap-ms`; 0 = back to back). */
  readonly pingGapMs: number;
  /** Only these paths (`--many-paths tunnel,jsTunnel,socat,haproxy,pipe`) and transports; default all. */
  readonly onlyPaths?: readonly string[] | undefined;
  readonly transports?: readonly ('tcp' | 'ws' | 'tls' | 'wss')[] | undefined;
  /** Sender, receiver (counting sinks), pinger (echo sinks); the caller owns their lifecycle. */
  readonly s: ManyPeer;
  readonly r: ManyPeer;
  readonly pinger: ManyPeer;
  /** The gateways (kernel relay on, and off), already running; their listening ports per transport. */
  readonly gateway: { pid: number; port: Record<'tcp' | 'ws', number> & Partial<Record<'tls' | 'wss', number>> };
  readonly jsGateway: { pid: number; port: Record<'tcp' | 'ws', number> & Partial<Record<'tls' | 'wss', number>> } | undefined;
  cpuSeconds(pid: number): number;
  memory(pid: number): { rssKib: number; hwmKib: number };
  resetPeak(pid: number): boolean;
  sampleMemory(pid: number): { stop(): number };
  childrenOf(pid: number): number[];
  waitForPort(port: number, ms: number): Promise<void>;
  stopChild(child: ChildProcess, ms: number): Promise<void>;
  say(msg: string): void;
}

type PathName = 'tunnel' | 'jsTunnel' | 'socat' | 'haproxy' | 'pipe';
const LABEL: Record<PathName, string> = { tunnel: 'Gatehouse', jsTunnel: 'GH JS path', socat: 'socat', haproxy: 'haproxy', pipe: 'node pipe' };

/** Sinks: counting sinks in the receiver (one per forwarder, so each group is one port), echo sinks in the pinger. */
const COUNT_SINK: Record<'socat' | 'haproxy' | 'pipe', Record<'tcp' | 'ws', number>> = {
  socat: { tcp: 21360, ws: 21362 },
  haproxy: { tcp: 21361, ws: 21363 },
  pipe: { tcp: 21364, ws: 21365 },
};
const ECHO_SINK: Record<'tcp' | 'ws', number> = { tcp: 21305, ws: 21306 };
/** Forwarder listeners: busy and ping, per transport. */
const FWD: Record<'socat' | 'haproxy' | 'pipe', Record<'tcp' | 'ws', { busy: number; ping: number }>> = {
  socat: { tcp: { busy: 21350, ping: 21351 }, ws: { busy: 21352, ping: 21353 } },
  haproxy: { tcp: { busy: 21354, ping: 21355 }, ws: { busy: 21356, ping: 21357 } },
  pipe: { tcp: { busy: 21358, ping: 21359 }, ws: { busy: 21366, ping: 21367 } },
};

interface Round {
  gbps: number;
  counts: number[];
  jain: number;
  minOverMean: number;
  pingP50Ms: number;
  pingP99Ms: number;
  pings: number;
  cpuSecPerGib: number;
  rssPeakMb: number;
  /** Gateway paths: tunnels (busy and ping) the kernel relay held at mid-window (kernelPathTunnels). */
  kernelTunnels: number;
  /** Gateway paths: the process's pipe fds at mid-window (a kernel-path tunnel with pipes holds 4). */
  pipeFds: number;
}

export interface ManyResult {
  transport: 'tcp' | 'ws' | 'tls' | 'wss';
  tunnels: number;
  paths: PathName[];
  rounds: Record<string, Round[]>;
  failed: Record<string, number>;
}

/**
 * Tunnels the kernel relay holds in process `pid`: its epoll set registers both sockets of each with
 * EPOLLET, which libuv (level-triggered) never uses, so counting EPOLLET socket registrations in
 * /proc/PID/fdinfo needs no help from the gateway. NaN when /proc cannot be read. (scanFds also counts
 * the process's pipe fds: 4 per kernel-path tunnel that has its pipes, a few of the process's own.)
 */
export function kernelPathTunnels(pid: number): number {
  return scanFds(pid).tunnels;
}

function scanFds(pid: number): { tunnels: number; pipeFds: number } {
  try {
    let sockets = 0;
    let pipeFds = 0;
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (target.startsWith('pipe:')) pipeFds++;
      if (target !== 'anon_inode:[eventpoll]') continue;
      for (const m of readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').matchAll(/^tfd:\s*\d+\s+events:\s*([0-9a-f]+)/gm)) {
        if ((parseInt(m[1]!, 16) & 0x80000000) !== 0) sockets++;
      }
    }
    return { tunnels: Math.floor(sockets / 2), pipeFds };
  } catch {
    return { tunnels: NaN, pipeFds: NaN };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function startSocat(listen: number, to: number): ChildProcess {
  const child = spawn('socat', ['-b', '262144', `TCP-LISTEN:${listen},bind=127.0.0.1,reuseaddr,fork,backlog=1024`, `TCP:127.0.0.1:${to}`], { stdio: 'ignore' });
  child.on('error', () => undefined);
  return child;
}

function startHaproxy(dir: string): ChildProcess {
  const pairs: [number, number][] = [];
  for (const t of ['tcp', 'ws'] as const) {
    pairs.push([FWD.haproxy[t].busy, COUNT_SINK.haproxy[t]]);
    pairs.push([FWD.haproxy[t].ping, ECHO_SINK[t]]);
  }
  const cfg = [
    'global',
    '  maxconn 9000', // two fds per connection, under the 20,000 open-files cap
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 10m',
    '  timeout server 10m',
    ...pairs.flatMap(([from, to]) => [`listen l${from}`, `  bind 127.0.0.1:${from}`, `  server s${to} 127.0.0.1:${to}`]),
    '',
  ].join('\n');
  const path = join(dir, 'haproxy.cfg');
  writeFileSync(path, cfg);
  const child = spawn('haproxy', ['-db', '-q', '-f', path], { stdio: 'ignore' });
  child.on('error', () => undefined);
  return child;
}

function startPipe(root: string): ChildProcess {
  const args: string[] = [];
  for (const t of ['tcp', 'ws'] as const) args.push(`${FWD.pipe[t].busy}:${COUNT_SINK.pipe[t]}`, `${FWD.pipe[t].ping}:${ECHO_SINK[t]}`);
  return spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/relay/pipe-forwarder.ts'), ...args], { cwd: root, stdio: 'ignore' });
}

/** Runs the section; returns the rendered tables. */
export async function runManySection(d: ManyDeps): Promise<{ text: string; results: ManyResult[] }> {
  const { s, r, pinger } = d;
  const say = (msg: string) => d.say(msg);
  for (const t of ['tcp', 'ws'] as const) {
    for (const f of ['socat', 'haproxy', 'pipe'] as const) await r.call({ cmd: 'listen', transport: t, port: COUNT_SINK[f][t], count: true });
    await pinger.call({ cmd: 'listen', transport: t, port: ECHO_SINK[t] });
  }
  const socats: ChildProcess[] = [];
  for (const t of ['tcp', 'ws'] as const) socats.push(startSocat(FWD.socat[t].busy, COUNT_SINK.socat[t]), startSocat(FWD.socat[t].ping, ECHO_SINK[t]));
  const haproxy = startHaproxy(d.dir);
  const pipe = startPipe(d.root);
  const results: ManyResult[] = [];
  try {
    for (const t of ['tcp', 'ws'] as const) for (const f of ['socat', 'haproxy', 'pipe'] as const) await d.waitForPort(FWD[f][t].busy, 10_000);
    const relayPids = (path: PathName): number[] => {
      if (path === 'tunnel') return [d.gateway.pid];
      if (path === 'jsTunnel') return d.jsGateway === undefined ? [] : [d.jsGateway.pid];
      if (path === 'haproxy') return haproxy.pid === undefined ? [] : [haproxy.pid];
      if (path === 'pipe') return pipe.pid === undefined ? [] : [pipe.pid];
      return socats.flatMap((c) => (c.pid === undefined ? [] : [c.pid, ...d.childrenOf(c.pid)]));
    };
    let seq = 0;
    for (const tunnels of d.counts) {
      for (const transport of d.transports ?? (['tcp', 'ws'] as const)) {
        // TLS and WSS: the gateway only (the forwarders would pass the encrypted bytes through, a different job).
        const all: PathName[] = transport === 'tcp' ? ['tunnel', 'jsTunnel', 'socat', 'haproxy', 'pipe'] : transport === 'ws' ? ['tunnel', 'socat', 'haproxy', 'pipe'] : ['tunnel'];
        const paths = all.filter((p) => (p !== 'jsTunnel' || d.jsGateway !== undefined) && (d.onlyPaths === undefined || d.onlyPaths.includes(p)));
        if (paths.length === 0) continue;
        say(`many: ${tunnels} busy ${transport} tunnels + 1 ping, paths ${paths.join(', ')}`);
        const groups = new Map<PathName, { send: string; recv: string; ping: string }>();
        const failed: Record<string, number> = {};
        for (const path of paths) {
          const id = `m${process.pid}-${seq++}-${path}-${transport}-${tunnels}`;
          const ping = `ping-${id}`;
          if (path === 'tunnel' || path === 'jsTunnel') {
            const port = (path === 'tunnel' ? d.gateway : d.jsGateway!).port[transport];
            if (port === undefined) throw new Error(`the gateway has no ${transport} listener`);
            const [a, b] = await Promise.all([
              s.call<{ failed: number }>({ cmd: 'open', group: id, transport, port, count: tunnels, tunnel: true, inflight: d.inflight }, 300_000),
              r.call<{ failed: number }>({ cmd: 'open', group: id, transport, port, count: tunnels, tunnel: true, inflight: d.inflight }, 300_000),
            ]);
            failed[path] = Math.max(a.failed, b.failed);
            await Promise.all([
              pinger.call({ cmd: 'tunnel', name: ping, transport, port, token: ping }),
              pinger.call({ cmd: 'tunnel', name: `${ping}.rx`, transport, port, token: ping }),
            ]);
            groups.set(path, { send: id, recv: id, ping });
          } else {
            if (transport !== 'tcp' && transport !== 'ws') continue; // not among the paths (above)
            const a = await s.call<{ failed: number }>({ cmd: 'open', group: id, transport, port: FWD[path][transport].busy, count: tunnels, tunnel: false, inflight: d.inflight }, 300_000);
            failed[path] = a.failed;
            await pinger.call({ cmd: 'connect', name: ping, transport, port: FWD[path][transport].ping });
            groups.set(path, { send: id, recv: `sink:${COUNT_SINK[path][transport]}`, ping });
          }
          if ((failed[path] ?? 0) > 0) say(`  ${path}: ${failed[path]} of ${tunnels} connections failed`);
        }
        const rounds: Record<string, Round[]> = Object.fromEntries(paths.map((p) => [p, []]));
        const windowMs = d.seconds * 1000;
        if (paths.includes('tunnel')) {
          // Warm-up: each tunnel reaches the kernel relay after splice.afterBytes (256 KiB) on the JavaScript
          // path; without this the first round measured a mix (at 512 tunnels on a loaded machine, as few as
          // 23 were handed over by its mid-window). 4 KiB pings carry the ping tunnel past it too.
          const g = groups.get('tunnel')!;
          await Promise.all([
            s.call({ cmd: 'blast', group: g.send, ms: 2000, chunk: 256 * 1024 }, 120_000),
            pinger.call({ cmd: 'rttFor', name: g.ping, ms: 1500, size: 4096 }, 60_000),
          ]);
          await sleep(1000);
        }
        for (let round = 0; round < d.rounds; round++) {
          for (const path of paths) {
            const g = groups.get(path)!;
            const blast = s.call<{ bytes: number }>({ cmd: 'blast', group: g.send, ms: windowMs + 1200, chunk: 256 * 1024 }, windowMs + 120_000);
            await sleep(800); // ramp: every connection writing, buffers filled
            const pids = relayPids(path);
            for (const pid of pids.slice(0, 1)) d.resetPeak(pid);
            // socat's first pid is only its listener (a process per connection): no RSS figure for it.
            const sampler = pids[0] === undefined || path === 'socat' ? undefined : d.sampleMemory(pids[0]);
            const cpu0 = pids.reduce((sum, pid) => sum + d.cpuSeconds(pid), 0);
            await r.call({ cmd: 'countStart', group: g.recv });
            const t0 = process.hrtime.bigint();
            const ping = pinger.call<{ p50Us: number; p99Us: number; count: number }>({ cmd: 'rttFor', name: g.ping, ms: windowMs, size: 64, gapMs: d.pingGapMs }, windowMs + 60_000);
            await sleep(windowMs / 2);
            const onKernel = path === 'tunnel' || path === 'jsTunnel' ? scanFds(pids[0]!) : { tunnels: NaN, pipeFds: NaN };
            await sleep(windowMs / 2);
            const counts = await r.call<number[]>({ cmd: 'countStop', group: g.recv });
            const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
            const cpu = relayPids(path).reduce((sum, pid) => sum + d.cpuSeconds(pid), 0) - cpu0;
            const rss = sampler === undefined ? NaN : Math.max(sampler.stop(), d.memory(pids[0]!).hwmKib);
            const p = await ping;
            await blast;
            const total = counts.reduce((a, b) => a + b, 0);
            const mean = total / Math.max(1, counts.length);
            const sq = counts.reduce((a, b) => a + b * b, 0);
            rounds[path]!.push({
              gbps: (total * 8) / seconds / 1e9,
              counts,
              jain: sq === 0 ? 0 : (total * total) / (counts.length * sq),
              minOverMean: mean === 0 ? 0 : Math.min(...counts) / mean,
              pingP50Ms: p.p50Us / 1000,
              pingP99Ms: p.p99Us / 1000,
              pings: p.count,
              cpuSecPerGib: total === 0 ? NaN : cpu / (total / 2 ** 30),
              rssPeakMb: (rss / 1024) * 1.048576,
              kernelTunnels: onKernel.tunnels,
              pipeFds: onKernel.pipeFds,
            });
            say(`  round ${round + 1} ${path}: ${((total * 8) / seconds / 1e9).toFixed(2)} Gbit/s, ping p50 ${(p.p50Us / 1000).toFixed(2)} ms p99 ${(p.p99Us / 1000).toFixed(2)} ms (${p.count})`);
            await sleep(1000); // the last window's bytes drain before the next path starts
          }
        }
        results.push({ transport, tunnels, paths, rounds, failed });
        await Promise.all([s.call({ cmd: 'drop' }), r.call({ cmd: 'drop' }), pinger.call({ cmd: 'drop' })]);
        await sleep(1000);
      }
    }
  } finally {
    for (const c of [...socats, haproxy, pipe]) await d.stopChild(c, 3000);
  }
  return { text: renderMany(results, d), results };
}

const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  return rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

export function renderMany(results: ManyResult[], d: Pick<ManyDeps, 'seconds' | 'rounds' | 'pingGapMs'>): string {
  const pings = d.pingGapMs > 0 ? `64-byte pings ${d.pingGapMs} ms apart` : 'back-to-back 64-byte pings';
  const out: string[] = ['', `Many tunnels: N busy tunnels + 1 quiet ping tunnel (${pings}), ${d.seconds} s windows, median of ${d.rounds} rounds (paths interleaved)`];
  for (const res of results) {
    const med = (path: PathName, pick: (x: Round) => number) => median(res.rounds[path]!.map(pick));
    const rows: string[][] = [[`${res.transport.toUpperCase()} × ${res.tunnels}`, ...res.paths.map((p) => LABEL[p])]];
    const row = (label: string, pick: (x: Round) => number, digits = 2) => rows.push([label, ...res.paths.map((p) => f(med(p, pick), digits))]);
    row('total Gbit/s', (x) => x.gbps);
    row('per tunnel Mbit/s (mean)', (x) => (x.gbps * 1000) / res.tunnels, 1);
    row('fairness (Jain, 1 = even)', (x) => x.jain, 3);
    row('slowest tunnel / mean', (x) => x.minOverMean, 2);
    row('ping p50 ms', (x) => x.pingP50Ms, 2);
    row('ping p99 ms', (x) => x.pingP99Ms, 2);
    row('  pings in the window', (x) => x.pings, 0);
    row('relay CPU s per GiB', (x) => x.cpuSecPerGib, 2);
    row('relay RSS peak MB', (x) => x.rssPeakMb, 1);
    // Fewest and most over the rounds (the ping tunnel reaches the kernel after splice.afterBytes of pings).
    const spread = (xs: number[]) => (xs.some(Number.isNaN) ? '-' : Math.min(...xs) === Math.max(...xs) ? f(xs[0]!, 0) : `${f(Math.min(...xs), 0)}-${f(Math.max(...xs), 0)}`);
    rows.push([`on the kernel path (of ${res.tunnels + 1})`, ...res.paths.map((p) => spread(res.rounds[p]!.map((x) => x.kernelTunnels)))]);
    rows.push(['  of them with pipes (pipe fds / 4)', ...res.paths.map((p) => spread(res.rounds[p]!.map((x) => Math.floor(x.pipeFds / 4))))]);
    if (Object.values(res.failed).some((n) => n > 0)) rows.push(['connections failed', ...res.paths.map((p) => String(res.failed[p] ?? 0))]);
    out.push('', table(rows));
  }
  return `${out.join('\n')}\n`;
}
