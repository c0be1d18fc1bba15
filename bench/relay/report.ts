/** Renders the relay benchmark's tables and the PASS/MISS lines for the issue's targets. */
import { cpus } from 'node:os';
import type { Transport } from './types.ts';

export interface PathNumbers {
  gbps: number;
  seconds: number;
  gbpsRange: [number, number];
  p50Us: number;
  p99Us: number;
}

export interface TransportResult {
  transport: Transport;
  direct: PathNumbers;
  socat?: PathNumbers & { cpuSecPerGib?: number };
  pipe?: PathNumbers & { cpuSecPerGib?: number };
  /** The same tunnel on a gateway with the kernel relay (splice) switched off: the JavaScript data path. */
  jsTunnel?: PathNumbers & { rssPeakMib?: number; cpuSecPerGib?: number };
  tunnel: PathNumbers & { rssPeakMib?: number; cpuSecPerGib?: number };
  idle: { baseMib: number; kibPerTunnel: number; tunnels: number; seconds: number };
  gatewayIdleRssMib: number;
  rate?: { perSecond: number; failed: number; cpuUsPerTunnel: number };
  /** `one`: the main table itself was measured with sender and receiver in one process. */
  topology?: 'one';
  /** The same paths with sender and receiver in one process (TCP). */
  oneProcess?: Partial<Record<'direct' | 'socat' | 'pipe' | 'tunnel' | 'jsTunnel', PathNumbers & { cpuSecPerGib?: number }>>;
}

export interface RunInfo {
  bytes: number;
  rounds: number;
  idleTunnels: number;
  rateTunnels: number;
  inflight: number;
  wallSeconds: number;
  quick: boolean;
  gateway: string;
  /** 1-minute load average at the start and end of the run (other work on the machine skews results). */
  load: string;
}

function os(): string {
  return `${cpus().length} CPUs, Node ${process.version}`;
}

const f = (n: number | undefined, digits = 1) =>
  n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '),
    )
    .join('\n');
}

function mark(ok: boolean): string {
  return ok ? 'PASS' : 'MISS';
}

export function renderReport(results: TransportResult[], info: RunInfo): string {
  const out: string[] = [];
  const size = info.bytes >= 2 ** 30 ? `${info.bytes / 2 ** 30} GiB` : `${info.bytes / 2 ** 20} MiB`;
  out.push(
    `Relay benchmark: ${size} per transfer (median of ${info.rounds} rounds), 64-byte round trips, ${info.idleTunnels} idle tunnels; wall ${info.wallSeconds.toFixed(0)} s${info.quick ? " (--quick: not the issue's sizes)" : ''}`,
  );
  out.push(
    `Gateway: ${info.gateway}. Sender and receiver in two peer processes unless a table says otherwise; ${os()}; load average ${info.load}.`,
  );
  const targets: string[] = [];
  for (const r of results) {
    const name = r.transport.toUpperCase() + (r.topology === 'one' ? ' (one client process)' : '');
    const refs: [string, PathNumbers & { cpuSecPerGib?: number }][] = [];
    if (r.socat) refs.push(['socat', r.socat]);
    if (r.pipe) refs.push(['node pipe', r.pipe]);
    if (r.jsTunnel) refs.push(['JS tunnel', r.jsTunnel]);
    const ratio = (a: number, b: number | undefined) => (b === undefined ? '' : f(a / b, 2));
    const row = (
      label: string,
      pick: (p: PathNumbers & { cpuSecPerGib?: number }) => number | undefined,
      digits: number,
      ratios: boolean,
    ) => [
      label,
      f(pick(r.tunnel), digits),
      f(pick(r.direct), digits),
      ...refs.map(([, p]) => f(pick(p), digits)),
      ratios ? ratio(pick(r.tunnel)!, pick(r.direct)) : '',
      ...refs.map(([, p]) => (ratios ? ratio(pick(r.tunnel)!, pick(p)) : '')),
    ];
    const blank = refs.map(() => '');
    const rows: string[][] = [
      [name, 'tunnel', 'direct', ...refs.map(([n]) => n), 'tun/direct', ...refs.map(([n]) => `tun/${n}`)],
    ];
    rows.push(row('throughput Gbit/s', (p) => p.gbps, 2, true));
    rows.push(row('  slowest round', (p) => p.gbpsRange[0], 2, false));
    rows.push(row('  fastest round', (p) => p.gbpsRange[1], 2, false));
    rows.push(row('RTT p50 µs', (p) => p.p50Us, 1, true));
    rows.push(row('RTT p99 µs', (p) => p.p99Us, 1, true));
    rows.push(row('relay CPU s per GiB', (p) => p.cpuSecPerGib, 2, false));
    const one = (label: string, value: string) => [label, value, '', ...blank, '', ...blank];
    rows.push(
      row(
        `gateway RSS peak during ${size}, MB`,
        (p) => ('rssPeakMib' in p ? (p.rssPeakMib as number) * 1.048576 : undefined),
        1,
        false,
      ),
    );
    rows.push(one('gateway RSS before it, MB', f(r.gatewayIdleRssMib * 1.048576)));
    rows.push(one(`idle KiB per tunnel (${r.idle.tunnels})`, f(r.idle.kibPerTunnel, 2)));
    rows.push(one('idle KiB per tunnelled connection', f(r.idle.kibPerTunnel / 2, 2)));
    rows.push(one(`  (${r.idle.tunnels} tunnels opened in)`, `${f(r.idle.seconds)} s`));
    if (r.rate) rows.push(one(`tunnels/s (${info.inflight} in flight)`, f(r.rate.perSecond, 0)));
    if (r.rate) rows.push(one('  gateway CPU µs per tunnel set up', f(r.rate.cpuUsPerTunnel, 0)));
    out.push('', table(rows));
    const o = r.oneProcess;
    if (o?.tunnel !== undefined && o.direct !== undefined) {
      const oRefs = (['socat', 'pipe', 'jsTunnel'] as const).filter((k) => o[k] !== undefined);
      const label = { socat: 'socat', pipe: 'node pipe', jsTunnel: 'JS tunnel' } as const;
      const oRows: string[][] = [[`${name}, one client process`, 'tunnel', 'direct', ...oRefs.map((k) => label[k]), ...oRefs.map((k) => `tun/${label[k]}`)]];
      const oRow = (lab: string, pick: (p: PathNumbers & { cpuSecPerGib?: number }) => number | undefined, digits: number, ratios: boolean) =>
        oRows.push([lab, f(pick(o.tunnel!), digits), f(pick(o.direct!), digits), ...oRefs.map((k) => f(pick(o[k]!), digits)), ...oRefs.map((k) => (ratios ? f(pick(o.tunnel!)! / pick(o[k]!)!, 2) : ''))]);
      oRow('throughput Gbit/s', (p) => p.gbps, 2, true);
      oRow('  slowest round', (p) => p.gbpsRange[0], 2, false);
      oRow('  fastest round', (p) => p.gbpsRange[1], 2, false);
      oRow('RTT p50 µs', (p) => p.p50Us, 1, true);
      oRow('RTT p99 µs', (p) => p.p99Us, 1, true);
      oRow('relay CPU s per GiB', (p) => p.cpuSecPerGib, 2, false);
      out.push('', table(oRows));
      if (o.socat !== undefined)
        targets.push(
          `${mark(o.tunnel.gbps >= o.socat.gbps && o.tunnel.p50Us <= o.socat.p50Us)}  TCP one client process: throughput ≥ 1.0× socat and p50 ≤ 1.0× socat's (issue 12): ${f(o.tunnel.gbps / o.socat.gbps, 2)}×, ${f(o.tunnel.p50Us / o.socat.p50Us, 2)}×`,
        );
    }

    const t = r.tunnel;
    if (r.transport === 'tcp') {
      if (r.socat) {
        targets.push(
          `${mark(t.gbps >= 0.9 * r.socat.gbps)}  TCP throughput ≥ 0.9× socat: ${f(t.gbps / r.socat.gbps, 2)}×`,
        );
        targets.push(
          `${mark(t.p50Us <= 1.2 * r.socat.p50Us)}  TCP p50 round trip ≤ 1.2× socat's: ${f(t.p50Us / r.socat.p50Us, 2)}× (${f(t.p50Us)} vs ${f(r.socat.p50Us)} µs)`,
        );
        targets.push(
          `${mark(t.gbps >= r.socat.gbps && t.p50Us <= r.socat.p50Us)}  TCP ${r.topology === 'one' ? 'one' : 'two'} client processes: throughput ≥ 1.0× socat and p50 ≤ 1.0× socat's (issue 12): ${f(t.gbps / r.socat.gbps, 2)}×, ${f(t.p50Us / r.socat.p50Us, 2)}×`,
        );
      }
      targets.push(
        `${mark(t.gbps >= 0.45 * r.direct.gbps)}  TCP throughput ≥ 0.45× direct: ${f(t.gbps / r.direct.gbps, 2)}×`,
      );
    } else {
      targets.push(
        `${mark(t.gbps >= 0.5 * r.direct.gbps)}  ${name} throughput ≥ 0.5× direct: ${f(t.gbps / r.direct.gbps, 2)}×`,
      );
    }
    const rssMb = (t.rssPeakMib ?? NaN) * 1.048576;
    targets.push(`${mark(rssMb < 100)}  ${name} gateway RSS during ${size} < 100 MB: ${f(rssMb)} MB`);
    const perConn = r.idle.kibPerTunnel / 2;
    targets.push(
      `${mark(perConn < 10)}  ${name} idle memory < 10 KiB per tunnelled connection: ${f(perConn, 2)} KiB (${f(r.idle.kibPerTunnel, 2)} per tunnel)`,
    );
    if (r.jsTunnel) {
      const js = r.jsTunnel;
      const vs = r.socat ? `, ${f(js.gbps / r.socat.gbps, 2)}× socat` : '';
      targets.push(
        `info  TCP with the kernel relay off (JS data path): ${f(js.gbps, 2)} Gbit/s = ${f(js.gbps / r.direct.gbps, 2)}× direct${vs}; RSS peak ${f((js.rssPeakMib ?? NaN) * 1.048576)} MB`,
      );
    }
    if (r.rate)
      targets.push(
        `${mark(r.rate.perSecond >= 3000)}  TCP tunnels ≥ 3,000/s: ${f(r.rate.perSecond, 0)}/s${r.rate.failed > 0 ? ` (${r.rate.failed} failed)` : ''}`,
      );
  }
  out.push('', 'Targets (issue 2):', ...targets.map((l) => `  ${l}`), '');
  return out.join('\n');
}
