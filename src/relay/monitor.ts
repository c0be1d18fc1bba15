/**
 * The monitor socket (unix), compatible with nymea-remoteproxy's monitor:
 * - 1.8.4 style: once a second the server pushes the statistics as one indented JSON document + "\n";
 *   a monitor client that writes anything else is dropped;
 * - 1.9 style: a request `{"method":"refresh","params":{"printAll":false}}` is answered with the same
 *   document as compact JSON + "\n" (the client then gets no pushes).
 * The first push waits one interval, so a 1.9 client that asks at once never sees an indented document.
 * Statistics are read from the live server; nothing is persisted on the data path.
 */
import { createServer, type Socket } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../core/log.ts';
import { listen, stopListening } from '../core/net.ts';
import type { RelayConfig } from './config.ts';
import type { Session } from './session.ts';
import type { Tunnel } from './tunnel.ts';
import { toCompactJson, toIndentedJson } from './protocol/json.ts';
import { normalizeUuid } from './uuid.ts';
import type { TunnelProxy } from './tunnel-proxy/service.ts';

/** What the monitor reads from the relay. */
export interface MonitoredRelay {
  readonly sessions: ReadonlySet<Session>;
  readonly tunnels: ReadonlySet<Tunnel>;
  readonly stats: { readonly totalClientCount: number; readonly totalTunnelCount: number; readonly totalTraffic: number };
  syncTraffic(): void;
  /** The tunnel-proxy mode, when enabled (its section is empty otherwise). */
  readonly tunnelProxy?: TunnelProxy | undefined;
}

export interface Monitor {
  readonly path: string;
  start(): Promise<void>;
  close(): Promise<void>;
  /** The current document (exposed for the CLI and tests). */
  snapshot(): Record<string, unknown>;
}

/** Largest request a monitor client may send (a refresh request is ~50 bytes). */
const MAX_MONITOR_REQUEST_BYTES = 4096;

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

export function createMonitor(relay: MonitoredRelay, config: RelayConfig, deps: { log: Logger; path: string }): Monitor {
  const log = deps.log.child({ component: 'monitor' });
  /** Connected monitor clients; `pushing` turns false once a client speaks the 1.9 refresh protocol. */
  const clients = new Map<Socket, { pushing: boolean }>();
  let lastTraffic = relay.stats.totalTraffic;
  let throughput = 0;
  let lastTpTraffic = 0;
  let tpThroughput = 0;
  let tick: NodeJS.Timeout | undefined;

  const snapshot = (): Record<string, unknown> => {
    relay.syncTraffic();
    const clientsDoc = [...relay.sessions].map((s) => ({
      address: s.link.remoteAddress,
      authenticated: s.authenticated,
      id: s.connectionId,
      name: s.name,
      rxDataCount: s.rxBytes,
      timestamp: seconds(s.connectedAt),
      tunnelConnected: s.state === 'tunnel',
      txDataCount: s.txBytes,
      userName: s.userName,
      uuid: normalizeUuid(s.uuid),
    }));
    const tunnelsDoc = [...relay.tunnels].map((t) => ({ clientOne: t.a.connectionId, clientTwo: t.b.connectionId, timestamp: seconds(t.createdAt) }));
    return {
      apiVersion: config.hello.apiVersion,
      proxyStatistic: {
        clientCount: relay.sessions.size,
        clients: clientsDoc,
        total: {
          totalClientCount: relay.stats.totalClientCount,
          totalTraffic: relay.stats.totalTraffic,
          totalTunnelCount: relay.stats.totalTunnelCount,
        },
        troughput: throughput,
        tunnelCount: relay.tunnels.size,
        tunnels: tunnelsDoc,
      },
      serverName: config.hello.name,
      serverVersion: config.hello.version,
      // With the tunnel-proxy mode off the section is present and empty, as in nymea with no servers.
      tunnelProxyStatistic: relay.tunnelProxy?.statistics(tpThroughput) ?? { clientConnectionsCount: 0, serverConnectionsCount: 0, totalClientCount: 0, transports: {}, troughput: 0, tunnelConnections: [] },
    };
  };

  const server = createServer((socket) => {
    const client = { pushing: true };
    clients.set(socket, client);
    socket.on('error', () => undefined);
    socket.on('close', () => clients.delete(socket));
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      try {
        onText(text);
      } catch (err) {
        // Fault isolation: a bug while answering one monitor client closes that client only.
        log.error({ err, code: 'CORE_INTERNAL' }, 'monitor request failed; client closed');
        socket.destroy();
      }
    });
    const onText = (text: string): void => {
      buffered += text;
      if (buffered.length > MAX_MONITOR_REQUEST_BYTES) {
        socket.destroy();
        return;
      }
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0 || buffered.trimEnd().endsWith('}')) {
        const line = nl >= 0 ? buffered.slice(0, nl) : buffered;
        buffered = nl >= 0 ? buffered.slice(nl + 1) : '';
        if (line.trim() === '') continue;
        let req: unknown;
        try {
          req = JSON.parse(line);
        } catch {
          req = undefined;
        }
        if (typeof req !== 'object' || req === null || (req as { method?: unknown }).method !== 'refresh') {
          log.warn('monitor client wrote something other than a refresh request; dropped');
          socket.destroy();
          return;
        }
        client.pushing = false;
        socket.write(`${toCompactJson(snapshot())}\n`);
      }
    };
  });

  return {
    path: deps.path,
    snapshot,
    async start() {
      await mkdir(dirname(deps.path), { recursive: true });
      await listen(server, { path: deps.path }, 'relay monitor');
      tick = setInterval(() => {
        try {
          push();
        } catch (err) {
          log.error({ err, code: 'CORE_INTERNAL' }, 'monitor update failed');
        }
      }, config.monitor.intervalMs);
      tick.unref();
      function push(): void {
        relay.syncTraffic();
        throughput = relay.stats.totalTraffic - lastTraffic;
        lastTraffic = relay.stats.totalTraffic;
        const tpTraffic = relay.tunnelProxy?.registry.totals.traffic ?? 0;
        tpThroughput = tpTraffic - lastTpTraffic;
        lastTpTraffic = tpTraffic;
        if (clients.size === 0) return;
        let doc: string | undefined;
        for (const [c, { pushing }] of clients) {
          if (!pushing) continue;
          // A monitor that does not read is not allowed to grow our memory.
          if (c.writableLength > 1024 * 1024) {
            c.destroy();
            continue;
          }
          // Qt's indented output already ends in "\n"; nymea appends another.
          doc ??= `${toIndentedJson(snapshot())}\n`;
          c.write(doc);
        }
      }
    },
    async close() {
      if (tick !== undefined) clearInterval(tick);
      for (const c of clients.keys()) c.destroy();
      await stopListening(server);
    },
  };
}
