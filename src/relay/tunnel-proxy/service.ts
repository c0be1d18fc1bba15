/**
 * The tunnel-proxy mode inside the relay front end: the connections its listeners accept, the registry of
 * servers and clients, the monitor's view, and the shutdown steps the relay's `close()` runs.
 *
 * It owns no listener: the relay's server.ts binds `[relay.tunnelProxy].listeners` with the same code as
 * its own (TLS, WebSocket, admission, connection tracking, fault isolation) and hands every accepted link
 * to `adopt`. Shutdown follows the relay: connections not yet registered are told at once
 * (`tellUnregistered`), servers and their clients run for the grace period and are then finished
 * (`finishAll`) with "Stop server".
 *
 * Across nodes (`deps.cluster`: a shared directory and the forward setup, see cluster.ts): servers are
 * registered in the directory, a client of a server elsewhere is forwarded there, and `claimForward`
 * (the relay's forward claim handler of kind `tp`) takes in clients forwarded from other nodes as clients
 * of a server here. Such a client counts here as a connection (monitor, shutdown) but took no admission
 * slot: its own node admitted it.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../../core/log.ts';
import type { RelayConfig } from '../config.ts';
import type { Link } from '../links.ts';
import type { ClaimVerdict, ForwardClaim, ForwardSetup, PartyInfo } from '../cluster/forward.ts';
import type { TpDirectory } from '../cluster/tp-directory.ts';
import { ForwardedClientLink, transportKind } from '../cluster/tp-forward.ts';
import { parseUuid } from '../protocol/tunnel-proxy-api.ts';
import { TpConnection, type TpContext } from './connection.ts';
import { Registry } from './registry.ts';
import { ServerLeg } from './server-leg.ts';
import { RemoteClientLeg } from './remote-client-leg.ts';
import { createTpCluster } from './cluster.ts';

/** What the mode needs to span nodes (given by the relay when it has a directory and a forward setup). */
export interface TpClusterDeps {
  readonly directory: TpDirectory;
  readonly forward: ForwardSetup;
  /** This node's forward address, once its forward listener listens. */
  readonly address: () => string | undefined;
}

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
  /**
   * A client forwarded from another node claims a server registered here (forward claim kind `tp`):
   * refused with a catalogue code as a local registration would be, or adopted as a client of it.
   */
  claimForward(claim: ForwardClaim): ClaimVerdict;
  /** The monitor's `tunnelProxyStatistic` section (nymea 1.9+ field names, typo included). */
  statistics(throughput: number): Record<string, unknown>;
}

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

export function createTunnelProxy(config: RelayConfig, deps: { readonly log: Logger; readonly cluster?: TpClusterDeps | undefined }): TunnelProxy {
  const log = deps.log.child({ mode: 'tunnel-proxy' });
  const registry = new Registry();
  const cluster = deps.cluster === undefined ? undefined : createTpCluster({ ...deps.cluster, log });
  /** Set when shutdown starts: no more clients are taken in from other nodes. */
  let closing = false;
  const tpLimits = config.tunnelProxy.limits;
  const streamHighWater = Math.min(tpLimits.clientBufferBytes, tpLimits.serverBufferBytes);
  const connections = new Set<TpConnection>();
  const slots = new Map<TpConnection, () => void>();
  const ctx: TpContext = {
    config: config.tunnelProxy,
    maxMessageBytes: config.limits.maxMessageBytes,
    tunnelBufferBytes: config.limits.tunnelBufferBytes,
    maxUnreadAnswerBytes: config.limits.maxUnreadAnswerBytes,
    closeFlushMs: config.timeouts.closeFlushMs,
    log,
    registry,
    cluster,
    forget(conn) {
      connections.delete(conn);
      slots.get(conn)?.();
      slots.delete(conn);
    },
  };

  // Redis lost our entry and another node registered the uuid since: it registered first now.
  cluster?.directory.onLost((key) => {
    const uuid = cluster.serverOfRef(key);
    const server = uuid === undefined ? undefined : registry.servers.get(uuid);
    if (server === undefined) return;
    server.conn.log.warn({ code: 'RELAY_TP_ALREADY_REGISTERED' }, 'tunnel-proxy server uuid now registered on another node; this server connection is closed');
    server.conn.fail('RELAY_TP_ALREADY_REGISTERED');
  });

  function adoptForwarded(socket: Socket, party: PartyInfo, clientUuid: string, server: ServerLeg): void {
    registry.totals.connections++;
    const link = new ForwardedClientLink(transportKind(party.user), party.remote, socket, cluster?.streamKind ?? 'tcp', streamHighWater, config.timeouts.closeFlushMs);
    let conn: TpConnection;
    try {
      conn = new TpConnection(link, ctx, party.connectionId);
    } catch (err) {
      log.error({ err, code: 'CORE_INTERNAL' }, 'forwarded tunnel-proxy client setup failed; stream closed');
      link.destroy();
      return;
    }
    connections.add(conn);
    conn.boundary.run(() => {
      if (server.conn.role !== 'server') return conn.fail('RELAY_TP_SERVER_GONE');
      conn.adoptRemoteClient(clientUuid, party.name, server);
    });
    if (link.closed) ctx.forget(conn);
  }

  return {
    registry,
    connections,
    claimForward(claim) {
      const gone = { ok: false, code: 'gone' } as const;
      if (cluster === undefined || closing) return gone;
      const uuid = cluster.serverOfRef(claim.ref);
      const server = uuid === undefined ? undefined : registry.servers.get(uuid);
      const clientUuid = parseUuid(claim.party.uuid);
      if (server === undefined || server.conn.role !== 'server' || clientUuid === null) return gone;
      if (registry.hasClient(clientUuid)) return { ok: false, code: 'RELAY_TP_ALREADY_REGISTERED' };
      if (registry.hasServer(clientUuid)) return { ok: false, code: 'RELAY_TP_UUID_CROSS_REGISTRATION' };
      if (server.clientCount >= config.tunnelProxy.limits.maxClientsPerServer) return { ok: false, code: 'RELAY_TP_LIMIT_CLIENTS_PER_SERVER' };
      return {
        ok: true,
        party: { name: server.name, uuid: server.uuid, connectionId: server.conn.connectionId, remote: server.remoteAddress, user: server.conn.link.kind, node: cluster.node },
        adopt: (socket) => adoptForwarded(socket, claim.party, clientUuid, server),
      };
    },
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
      closing = true;
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
      const remoteClients = [...registry.clients.values()]
        .filter((c): c is RemoteClientLeg => c instanceof RemoteClientLeg)
        .map((c) => ({
          address: c.conn.link.remoteAddress,
          clientUuid: `{${c.uuid}}`,
          id: c.conn.connectionId,
          name: c.name,
          rxDataCount: c.conn.rxBytes,
          serverName: c.server.name,
          serverNode: c.server.node,
          serverUuid: `{${c.server.uuid}}`,
          timestamp: seconds(c.conn.connectedAt),
          txDataCount: c.conn.txBytes,
        }));
      return {
        clientConnectionsCount: registry.clients.size,
        ...(remoteClients.length === 0 ? {} : { forwardedClientConnections: remoteClients }),
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
