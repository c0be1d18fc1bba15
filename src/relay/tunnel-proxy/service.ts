/**
 * The tunnel-proxy mode inside the relay front end: the connections its listeners accept, the registry of
 * servers and clients, the monitor's view, and the shutdown steps the relay's `close()` runs.
 *
 * It owns no listener: the relay's server.ts binds `[relay.tunnelProxy].listeners` with the same code as
 * its own (TLS, WebSocket, admission, connection tracking, fault isolation) and hands every accepted link
 * to `adopt`. Shutdown follows the relay: connections not yet registered are told at once
 * (`tellUnregistered`), servers and their clients run for the grace period and are then finished
 * (`finishAll`) with "Stop server".
 */
import type { Logger } from '../../core/log.ts';
import type { RelayConfig } from '../config.ts';
import type { Link } from '../links.ts';
import { TpConnection, type TpContext } from './connection.ts';
import { Registry } from './registry.ts';
import { ServerLeg } from './server-leg.ts';

export interface TunnelProxy {
  readonly registry: Registry;
  readonly connections: ReadonlySet<TpConnection>;
  /** Takes over an accepted link; `release` frees its admission slot when the link is gone. */
  adopt(link: Link, release: () => void): void;
  /** Shutdown, first step: every connection that has not registered is told "Stop server" and closed. */
  tellUnregistered(): void;
  /** Shutdown, after the grace period: every server and client is finished with "Stop server". */
  finishAll(): void;
  /** Shutdown, last step: drop what is left. */
  destroyAll(): void;
  /** The monitor's `tunnelProxyStatistic` section (nymea 1.9+ field names, typo included). */
  statistics(throughput: number): Record<string, unknown>;
}

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

export function createTunnelProxy(config: RelayConfig, deps: { readonly log: Logger }): TunnelProxy {
  const log = deps.log.child({ mode: 'tunnel-proxy' });
  const registry = new Registry();
  const connections = new Set<TpConnection>();
  const slots = new Map<TpConnection, () => void>();
  const ctx: TpContext = {
    config: config.tunnelProxy,
    maxMessageBytes: config.limits.maxMessageBytes,
    tunnelBufferBytes: config.limits.tunnelBufferBytes,
    closeFlushMs: config.timeouts.closeFlushMs,
    log,
    registry,
    forget(conn) {
      connections.delete(conn);
      slots.get(conn)?.();
      slots.delete(conn);
    },
  };

  return {
    registry,
    connections,
    adopt(link, release) {
      registry.totals.connections++;
      let conn: TpConnection;
      try {
        conn = new TpConnection(link, ctx);
      } catch (err) {
        release();
        log.error({ err, code: 'CORE_INTERNAL' }, 'tunnel-proxy connection setup failed; connection closed');
        link.destroy();
        return;
      }
      connections.add(conn);
      slots.set(conn, release);
      if (link.closed) ctx.forget(conn);
    },
    tellUnregistered() {
      for (const c of connections) if (c.role === 'none') c.fail('RELAY_SHUTDOWN');
    },
    finishAll() {
      // Clients first, so they hear "Stop server" rather than "Server disconnected".
      for (const c of connections) if (c.role === 'client') c.fail('RELAY_SHUTDOWN');
      for (const c of connections) c.fail('RELAY_SHUTDOWN');
    },
    destroyAll() {
      for (const c of connections) c.link.destroy();
    },
    statistics(throughput) {
      const transports: Record<string, number> = {};
      for (const c of connections) transports[c.link.kind] = (transports[c.link.kind] ?? 0) + 1;
      const servers = [...registry.servers.values()].map((s: ServerLeg) => ({
        address: s.remoteAddress,
        clientConnections: [...s.clients].map((c) => ({
          address: c.conn.link.remoteAddress,
          clientUuid: `{${c.uuid}}`,
          id: c.conn.connectionId,
          name: c.name,
          rxDataCount: c.conn.rxBytes,
          socketAddress: c.address,
          timestamp: seconds(c.conn.connectedAt),
          txDataCount: c.conn.txBytes,
        })),
        id: s.conn.connectionId,
        name: s.name,
        paused: s.paused,
        rxDataCount: s.conn.rxBytes,
        serverUuid: `{${s.uuid}}`,
        timestamp: seconds(s.conn.connectedAt),
        txDataCount: s.conn.txBytes,
      }));
      return {
        clientConnectionsCount: registry.clients.size,
        serverConnectionsCount: registry.servers.size,
        totalClientCount: connections.size,
        totalTraffic: registry.totals.traffic,
        transports,
        troughput: throughput,
        tunnelConnections: servers,
      };
    },
  };
}
