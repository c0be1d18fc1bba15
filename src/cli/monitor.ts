/**
 * `gatehouse monitor`: shows the relay's monitor socket live in the terminal (clients, tunnels,
 * throughput), or prints one compact JSON document with `--json` (scripts).
 */
import { Command } from 'commander';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { defaultConfig, loadGatewayConfig } from '../config.ts';
import { dirname } from 'node:path';
import { EXIT } from './exit.ts';

/** Parses one monitor line; a socket that is not the monitor gets a message and exit 69, not a stack. */
function parseDoc(line: string, path: string): MonitorDoc {
  try {
    const doc = JSON.parse(line) as unknown;
    if (doc !== null && typeof doc === 'object' && !Array.isArray(doc)) return doc;
  } catch {
    // fall through
  }
  process.stderr.write(`gatehouse monitor: ${path} is not a Gatehouse monitor socket (it sent something that is not JSON)\n`);
  process.exit(EXIT.unavailable);
}

interface MonitorDoc {
  serverName?: string;
  serverVersion?: string;
  proxyStatistic?: {
    clientCount?: number;
    tunnelCount?: number;
    troughput?: number;
    clients?: { id: string; address: string; name: string; uuid: string; userName: string; authenticated: boolean; tunnelConnected: boolean; rxDataCount: number; txDataCount: number; timestamp: number }[];
    tunnels?: { clientOne: string; clientTwo: string; timestamp: number }[];
    total?: { totalClientCount?: number; totalTunnelCount?: number; totalTraffic?: number };
  };
  tunnelProxyStatistic?: {
    serverConnectionsCount?: number;
    clientConnectionsCount?: number;
    troughput?: number;
    tunnelConnections?: {
      name: string;
      serverUuid: string;
      address: string;
      rxDataCount: number;
      txDataCount: number;
      timestamp: number;
      paused?: boolean;
      clientConnections?: { name: string; clientUuid: string; address: string; socketAddress?: number; rxDataCount: number; txDataCount: number; timestamp: number }[];
    }[];
  };
}

/** Human-readable byte counts: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** Renders one monitor document as the terminal view. */
export function renderMonitor(doc: MonitorDoc, nowMs = Date.now()): string {
  const p = doc.proxyStatistic ?? {};
  const lines = [
    `${doc.serverName ?? '?'} ${doc.serverVersion ?? ''}   clients ${p.clientCount ?? 0}   tunnels ${p.tunnelCount ?? 0}   throughput ${formatBytes(p.troughput ?? 0)}/s   total ${formatBytes(p.total?.totalTraffic ?? 0)} in ${p.total?.totalTunnelCount ?? 0} tunnels`,
    '',
    'ID        ADDRESS                 NAME                  STATE        RX          TX          AGE',
  ];
  for (const c of p.clients ?? []) {
    const state = c.tunnelConnected ? 'tunnel' : c.authenticated ? 'waiting' : 'connecting';
    const age = Math.max(0, Math.round(nowMs / 1000 - c.timestamp));
    lines.push(
      `${c.id.slice(1, 9).padEnd(10)}${c.address.padEnd(24)}${c.name.slice(0, 21).padEnd(22)}${state.padEnd(13)}${formatBytes(c.rxDataCount).padEnd(12)}${formatBytes(c.txDataCount).padEnd(12)}${age}s`,
    );
  }
  if ((p.tunnels ?? []).length > 0) {
    lines.push('', 'TUNNELS');
    for (const t of p.tunnels ?? []) lines.push(`  ${t.clientOne.slice(1, 9)} <-> ${t.clientTwo.slice(1, 9)}   up ${Math.max(0, Math.round(nowMs / 1000 - t.timestamp))}s`);
  }
  const tp = doc.tunnelProxyStatistic;
  if ((tp?.tunnelConnections ?? []).length > 0) {
    lines.push('', `TUNNEL PROXY   servers ${tp?.serverConnectionsCount ?? 0}   clients ${tp?.clientConnectionsCount ?? 0}   throughput ${formatBytes(tp?.troughput ?? 0)}/s`);
    for (const srv of tp?.tunnelConnections ?? []) {
      const age = Math.max(0, Math.round(nowMs / 1000 - srv.timestamp));
      lines.push(`  server ${srv.name.slice(0, 24).padEnd(25)}${srv.serverUuid.slice(1, 9).padEnd(10)}${srv.address.padEnd(24)}RX ${formatBytes(srv.rxDataCount).padEnd(11)}TX ${formatBytes(srv.txDataCount).padEnd(11)}${age}s${srv.paused === true ? '   paused (a client is not reading)' : ''}`);
      for (const c of srv.clientConnections ?? []) {
        lines.push(`    #${String(c.socketAddress ?? '?').padEnd(6)}${c.name.slice(0, 21).padEnd(22)}${c.address.padEnd(24)}RX ${formatBytes(c.rxDataCount).padEnd(11)}TX ${formatBytes(c.txDataCount).padEnd(11)}${Math.max(0, Math.round(nowMs / 1000 - c.timestamp))}s`);
      }
    }
  }
  return lines.join('\n');
}

async function socketPath(opts: { socket?: string; config?: string }): Promise<string> {
  if (opts.socket !== undefined) return resolve(opts.socket);
  const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
  const base = opts.config === undefined ? process.cwd() : dirname(resolve(opts.config));
  return resolve(base, config.relay.monitor.path);
}

export function monitorCommand(): Command {
  return new Command('monitor')
    .description("Watch the relay live: clients, tunnels, throughput (reads the monitor socket).")
    .option('-s, --socket <path>', 'monitor socket path (default: from the config)')
    .option('-c, --config <file>', 'config file to take the socket path from')
    .option('--json', 'print one JSON document and exit')
    .action(async (opts: { socket?: string; config?: string; json?: boolean }) => {
      const path = await socketPath(opts);
      const socket = connect({ path });
      socket.on('error', (err) => {
        process.stderr.write(`gatehouse monitor: cannot read ${path}: ${err.message}\n`);
        process.exit(EXIT.unavailable);
      });
      socket.setEncoding('utf8');
      let buffer = '';
      if (opts.json === true) {
        socket.write('{"method":"refresh","params":{"printAll":true}}\n');
        socket.on('data', (text: string) => {
          buffer += text;
          const nl = buffer.indexOf('\n');
          if (nl < 0) return;
          const line = buffer.slice(0, nl);
          parseDoc(line, path);
          process.stdout.write(`${line}\n`);
          socket.destroy();
        });
        return;
      }
      const refresh = () => socket.write('{"method":"refresh","params":{"printAll":false}}\n');
      socket.on('connect', refresh);
      const timer = setInterval(refresh, 1000);
      socket.on('close', () => {
        clearInterval(timer);
        process.stdout.write('\nmonitor socket closed\n');
        process.exit(0);
      });
      socket.on('data', (text: string) => {
        buffer += text;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          process.stdout.write(`\x1b[2J\x1b[H${renderMonitor(parseDoc(line, path))}\n`);
        }
      });
    });
}
