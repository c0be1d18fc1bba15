/**
 * The monitor socket (unix), compatible with nymea-remoteproxy's monitor:
 * - 1.8.4 style: once a second the server pushes the statistics as one indented JSON document + "\n";
 *   a monitor client that writes anything else is dropped;
 * - 1.9 style: a request `{"method":"refresh","params":{"printAll":false}}` is answered with the same
 *   document as compact JSON + "\n" (the client then gets no pushes).
 * The first push waits one interval, so a 1.9 client that asks at once never sees an indented document.
 *
 * The socket serves a `MonitorSource`: this process's relay (`createMonitor`), or, in the primary of
 * `serve --workers N`, every worker's document merged into one (`mergeMonitorDocuments`; the format is
 * the same, so nymea monitor clients see the machine as one relay). Also here: `nodeSummary`, the short
 * view a node publishes to Redis (relay/cluster/presence.ts). Statistics are read from the live server;
 * nothing is persisted on the data path.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../core/log.ts';
import { listen, stopListening } from '../core/net.ts';
import type { RelayConfig } from './config.ts';
import type { Session } from './session.ts';
import type { Tunnel, TunnelParty } from './tunnel.ts';
import { toCompactJson, toIndentedJson } from './protocol/json.ts';
import { normalizeUuid } from './uuid.ts';
import type { TunnelProxy } from './tunnel-proxy/service.ts';
import { RemoteParty } from './cluster/remote-party.ts';

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

/** The nymea monitor document (keys as nymea writes them; Qt sorts them when printing). */
export type MonitorDocument = Record<string, unknown>;

/** The traffic totals the throughput figures are computed from (bytes since start). */
export interface MonitorTraffic {
  readonly relay: number;
  readonly tunnelProxy: number;
}

/**
 * What a monitor socket serves. `read` builds the whole document (its throughput fields are set by the
 * socket from `traffic`, read every interval whether or not a monitor client is connected).
 */
export interface MonitorSource {
  read(): Promise<MonitorDocument>;
  traffic(): Promise<MonitorTraffic>;
}

/** Largest request a monitor client may send (a refresh request is ~50 bytes). */
const MAX_MONITOR_REQUEST_BYTES = 4096;
/** Refresh requests of one client still being answered; a client that asks faster is dropped. */
const MAX_PENDING_REFRESHES = 8;
/** A monitor that does not read is not allowed to grow our memory past this. */
const MAX_MONITOR_BACKLOG_BYTES = 1024 * 1024;

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

const EMPTY_TUNNEL_PROXY = (): Record<string, unknown> => ({ clientConnectionsCount: 0, serverConnectionsCount: 0, totalClientCount: 0, transports: {}, troughput: 0, tunnelConnections: [] });

/** The document of a relay with nothing connected (nymea's form with no clients). */
export function emptyMonitorDocument(config: Pick<RelayConfig, 'hello'>): MonitorDocument {
  return {
    apiVersion: config.hello.apiVersion,
    proxyStatistic: { clientCount: 0, clients: [], total: { totalClientCount: 0, totalTraffic: 0, totalTunnelCount: 0 }, troughput: 0, tunnelCount: 0, tunnels: [] },
    serverName: config.hello.name,
    serverVersion: config.hello.version,
    tunnelProxyStatistic: EMPTY_TUNNEL_PROXY(),
  };
}

/**
 * The most of a client's chosen name a document shows (UTF-16 units; longer ones are cut and end with `…`).
 * A name is one request's worth of text (up to a socket read, ~64 KiB): every client's in full made a
 * document of hundreds of MB, built once per interval.
 */
export const MAX_SHOWN_NAME_CHARS = 256;

const shownName = (name: string): string => (name.length > MAX_SHOWN_NAME_CHARS ? `${name.slice(0, MAX_SHOWN_NAME_CHARS)}…` : name);

/** This process's relay as a monitor document; throughput fields 0 until `setThroughput`. */
export function monitorDocument(relay: MonitoredRelay, config: Pick<RelayConfig, 'hello'>): MonitorDocument {
  relay.syncTraffic();
  const clientsDoc = [...relay.sessions].map((s) => ({
    address: s.link.remoteAddress,
    authenticated: s.authenticated,
    id: s.connectionId,
    name: shownName(s.name),
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
      troughput: 0,
      tunnelCount: relay.tunnels.size,
      tunnels: tunnelsDoc,
    },
    serverName: config.hello.name,
    serverVersion: config.hello.version,
    // With the tunnel-proxy mode off the section is present and empty, as in nymea with no servers.
    tunnelProxyStatistic: relay.tunnelProxy?.statistics(0) ?? EMPTY_TUNNEL_PROXY(),
  };
}

/** Whether a tunnel's other client sits on another node or worker (the tunnel is forwarded). */
export function isForwarded(t: Pick<Tunnel, 'a' | 'b'>): boolean {
  return t.a instanceof RemoteParty || t.b instanceof RemoteParty;
}

/**
 * Tunnels counted so that a sum over every node counts each tunnel once: a forwarded tunnel is relayed by
 * both nodes (one leg each) and counted only on the node whose client has the smaller connection id (both
 * nodes know both ids from the forward handshake).
 */
export function tunnelsCountedOnce(tunnels: Iterable<Pick<Tunnel, 'a' | 'b'>>): number {
  let n = 0;
  for (const t of tunnels) {
    if (t.a instanceof RemoteParty) n += t.b.connectionId < t.a.connectionId ? 1 : 0;
    else if (t.b instanceof RemoteParty) n += t.a.connectionId < t.b.connectionId ? 1 : 0;
    else n++;
  }
  return n;
}

/** This process's traffic totals. */
export function relayTraffic(relay: MonitoredRelay): MonitorTraffic {
  relay.syncTraffic();
  return { relay: relay.stats.totalTraffic, tunnelProxy: relay.tunnelProxy?.registry.totals.traffic ?? 0 };
}

function objectAt(parent: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = Object.hasOwn(parent, key) ? parent[key] : undefined;
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
function numberAt(parent: Record<string, unknown>, key: string): number {
  const v = Object.hasOwn(parent, key) ? parent[key] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}
function arrayAt(parent: Record<string, unknown>, key: string): unknown[] {
  const v = Object.hasOwn(parent, key) ? parent[key] : undefined;
  return Array.isArray(v) ? v : [];
}

/** Sets the throughput fields (bytes in the last interval) of a document, in place. */
export function setThroughput(doc: MonitorDocument, throughput: MonitorTraffic): MonitorDocument {
  objectAt(doc, 'proxyStatistic').troughput = throughput.relay;
  objectAt(doc, 'tunnelProxyStatistic').troughput = throughput.tunnelProxy;
  return doc;
}

/**
 * Several processes' documents as one (the primary of `serve --workers N`): counts and totals summed,
 * clients, tunnels and tunnel-proxy servers listed together (connection ids are UUIDs, unique across
 * processes). The format is nymea's, unchanged. No document: the empty one.
 */
export function mergeMonitorDocuments(config: Pick<RelayConfig, 'hello'>, docs: readonly MonitorDocument[]): MonitorDocument {
  const out = emptyMonitorDocument(config);
  const p = objectAt(out, 'proxyStatistic');
  const total = objectAt(p, 'total');
  const tp = objectAt(out, 'tunnelProxyStatistic');
  const transports = new Map<string, number>();
  const clients: unknown[] = [];
  const tunnels: unknown[] = [];
  /** A tunnel forwarded between two workers is in both documents (one leg each): listed once. */
  const seen = new Set<string>();
  let duplicates = 0;
  const tpServers: unknown[] = [];
  for (const doc of docs) {
    const dp = objectAt(doc, 'proxyStatistic');
    const dt = objectAt(dp, 'total');
    p.clientCount = (p.clientCount as number) + numberAt(dp, 'clientCount');
    p.tunnelCount = (p.tunnelCount as number) + numberAt(dp, 'tunnelCount');
    for (const k of ['totalClientCount', 'totalTraffic', 'totalTunnelCount']) total[k] = (total[k] as number) + numberAt(dt, k);
    // A loop, not a spread: a worker may list more clients than one call takes arguments (~120,000).
    for (const c of arrayAt(dp, 'clients')) clients.push(c);
    for (const t of arrayAt(dp, 'tunnels')) {
      const o = typeof t === 'object' && t !== null ? (t as Record<string, unknown>) : {};
      const key = [String(o.clientOne), String(o.clientTwo)].sort().join('|');
      if (seen.has(key)) {
        duplicates++;
        continue;
      }
      seen.add(key);
      tunnels.push(t);
    }
    const dtp = objectAt(doc, 'tunnelProxyStatistic');
    for (const k of ['clientConnectionsCount', 'serverConnectionsCount', 'totalClientCount']) tp[k] = (tp[k] as number) + numberAt(dtp, k);
    if (Object.hasOwn(dtp, 'totalTraffic')) tp.totalTraffic = numberAt(tp, 'totalTraffic') + numberAt(dtp, 'totalTraffic');
    for (const [kind, n] of Object.entries(objectAt(dtp, 'transports'))) if (typeof n === 'number') transports.set(kind, (transports.get(kind) ?? 0) + n);
    for (const c of arrayAt(dtp, 'tunnelConnections')) tpServers.push(c);
  }
  p.clients = clients;
  p.tunnels = tunnels;
  p.tunnelCount = (p.tunnelCount as number) - duplicates;
  tp.transports = Object.fromEntries(transports);
  tp.tunnelConnections = tpServers;
  return out;
}

/** One side of a tunnel in a node's summary. */
export interface PeerSummary {
  readonly id: string;
  readonly name: string;
  readonly userName: string;
  readonly address: string;
}

/** What a node publishes about its relay (relay/cluster/presence.ts): counts and its tunnels. */
export interface NodeSummary {
  /** Client connections now (any state), by transport. */
  readonly connections: Record<string, number>;
  readonly clients: number;
  /** Authenticated clients waiting for their partner. */
  readonly waiting: number;
  /** Tunnels this node relays, forwarded ones included (a forwarded tunnel is relayed by both its nodes). */
  readonly tunnels: number;
  /** Of `tunnels`, those whose other client sits on another node (also listed by that node). */
  readonly forwarded: number;
  /** Since the node started: client connections, tunnels, bytes relayed. */
  readonly totalClients: number;
  readonly totalTunnels: number;
  readonly totalTraffic: number;
  /** Its tunnels (at most `maxTunnels`, oldest first): both sides, bytes, since when (s since 1970). */
  readonly tunnelList: readonly { readonly one: PeerSummary; readonly two: PeerSummary; readonly bytes: number; readonly timestamp: number }[];
  /** Tunnels left out of `tunnelList` by its bound. */
  readonly tunnelsNotListed: number;
}

/** This process's relay as a node summary (the tunnel list bounded by `maxTunnels`). */
export function nodeSummary(relay: MonitoredRelay, maxTunnels: number): NodeSummary {
  relay.syncTraffic();
  const connections: Record<string, number> = { tcp: 0, tls: 0, ws: 0, wss: 0, unix: 0 };
  let clients = 0;
  let waiting = 0;
  for (const s of relay.sessions) {
    if (s.state === 'closed') continue;
    clients++;
    if (s.state === 'waiting') waiting++;
    const kind = s.link.kind;
    connections[kind] = (Object.hasOwn(connections, kind) ? (connections[kind] ?? 0) : 0) + 1;
  }
  const peer = (s: TunnelParty): PeerSummary => ({ id: s.connectionId, name: shownName(s.name), userName: s.userName, address: s.link.remoteAddress });
  const tunnelList: NodeSummary['tunnelList'][number][] = [];
  let forwarded = 0;
  for (const t of relay.tunnels) if (isForwarded(t)) forwarded++;
  for (const t of relay.tunnels) {
    if (tunnelList.length >= maxTunnels) break;
    tunnelList.push({ one: peer(t.a), two: peer(t.b), bytes: t.a.rxBytes + t.b.rxBytes, timestamp: seconds(t.createdAt) });
  }
  return {
    connections,
    clients,
    waiting,
    tunnels: relay.tunnels.size,
    forwarded,
    totalClients: relay.stats.totalClientCount,
    totalTunnels: relay.stats.totalTunnelCount,
    totalTraffic: relay.stats.totalTraffic,
    tunnelList,
    tunnelsNotListed: relay.tunnels.size - tunnelList.length,
  };
}

/** This process's relay as a monitor source. */
export function localMonitorSource(relay: MonitoredRelay, config: Pick<RelayConfig, 'hello'>): MonitorSource {
  return {
    read: () => Promise.resolve(monitorDocument(relay, config)),
    traffic: () => Promise.resolve(relayTraffic(relay)),
  };
}

export interface MonitorSocket {
  readonly path: string;
  start(): Promise<void>;
  close(): Promise<void>;
  /** Bytes moved in the last interval, as the documents show it. */
  readonly throughput: MonitorTraffic;
}

/** Serves `source` on the unix socket `path` (nymea's 1.8.4 pushes and 1.9 refresh requests). */
export function serveMonitorSocket(source: MonitorSource, deps: { log: Logger; path: string; intervalMs: number }): MonitorSocket {
  const log = deps.log.child({ component: 'monitor' });
  /** Connected monitor clients; `pushing` turns false once a client speaks the 1.9 refresh protocol. */
  const clients = new Map<Socket, { pushing: boolean; pending: number; queue: Promise<void> }>();
  let last: MonitorTraffic | undefined;
  let throughput: MonitorTraffic = { relay: 0, tunnelProxy: 0 };
  let tick: NodeJS.Timeout | undefined;
  let ticking = false;
  let server: Server | undefined;

  const read = async (): Promise<MonitorDocument> => setThroughput(await source.read(), throughput);

  const onConnection = (socket: Socket): void => {
    const client = { pushing: true, pending: 0, queue: Promise.resolve() };
    clients.set(socket, client);
    socket.on('error', () => undefined);
    socket.on('close', () => clients.delete(socket));
    let buffered = '';
    socket.setEncoding('utf8');
    const answer = (): void => {
      if (client.pending >= MAX_PENDING_REFRESHES) {
        log.warn('monitor client sent refresh requests faster than they are answered; dropped');
        socket.destroy();
        return;
      }
      client.pending++;
      // Answers go out in request order, each once its document is read.
      client.queue = client.queue
        .then(read)
        .then((doc) => {
          if (socket.destroyed) return;
          // As for pushes: a client that asks and never reads may not grow our memory past the backlog.
          if (socket.writableLength > MAX_MONITOR_BACKLOG_BYTES) {
            log.warn('monitor client does not read its answers; dropped');
            socket.destroy();
            return;
          }
          socket.write(`${toCompactJson(doc)}\n`);
        })
        .catch((err: unknown) => {
          log.error({ err, code: 'CORE_INTERNAL' }, 'monitor request failed; client closed');
          socket.destroy();
        })
        .finally(() => client.pending--);
    };
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
        if (typeof req !== 'object' || req === null || !Object.hasOwn(req, 'method') || (req as { method?: unknown }).method !== 'refresh') {
          log.warn('monitor client wrote something other than a refresh request; dropped');
          socket.destroy();
          return;
        }
        client.pushing = false;
        answer();
        if (socket.destroyed) return;
      }
    };
    socket.on('data', (text: string) => {
      try {
        onText(text);
      } catch (err) {
        // Fault isolation: a bug while answering one monitor client closes that client only.
        log.error({ err, code: 'CORE_INTERNAL' }, 'monitor request failed; client closed');
        socket.destroy();
      }
    });
  };

  async function push(): Promise<void> {
    const now = await source.traffic();
    // A replaced worker starts its counters at 0: never a negative rate.
    throughput = last === undefined ? { relay: 0, tunnelProxy: 0 } : { relay: Math.max(0, now.relay - last.relay), tunnelProxy: Math.max(0, now.tunnelProxy - last.tunnelProxy) };
    last = now;
    const pushing = [...clients].filter(([, c]) => c.pushing).map(([s]) => s);
    if (pushing.length === 0) return;
    // Qt's indented output already ends in "\n"; nymea appends another.
    const doc = `${toIndentedJson(await read())}\n`;
    for (const c of pushing) {
      if (c.destroyed) continue;
      if (c.writableLength > MAX_MONITOR_BACKLOG_BYTES) {
        log.warn('monitor client does not read its pushes; dropped');
        c.destroy();
        continue;
      }
      c.write(doc);
    }
  }

  return {
    path: deps.path,
    get throughput() {
      return throughput;
    },
    async start() {
      const s = createServer(onConnection);
      await mkdir(dirname(deps.path), { recursive: true });
      await listen(s, { path: deps.path }, 'relay monitor');
      server = s;
      const first = source.traffic().then((t) => {
        last = t;
      });
      await first;
      tick = setInterval(() => {
        // A slow source (workers answering over IPC) skips ticks instead of piling them up.
        if (ticking) return;
        ticking = true;
        push()
          .catch((err: unknown) => log.error({ err, code: 'CORE_INTERNAL' }, 'monitor update failed'))
          .finally(() => (ticking = false));
      }, deps.intervalMs);
      tick.unref();
    },
    async close() {
      if (tick !== undefined) clearInterval(tick);
      for (const c of clients.keys()) c.destroy();
      if (server !== undefined) await stopListening(server);
    },
  };
}

export function createMonitor(relay: MonitoredRelay, config: RelayConfig, deps: { log: Logger; path: string }): Monitor {
  const socket = serveMonitorSocket(localMonitorSource(relay, config), { log: deps.log, path: deps.path, intervalMs: config.monitor.intervalMs });
  return {
    path: deps.path,
    snapshot: () => setThroughput(monitorDocument(relay, config), socket.throughput),
    start: () => socket.start(),
    close: () => socket.close(),
  };
}
