/**
 * The Prometheus metrics of one gateway process (prom-client, its own Registry, not the global one).
 *
 * Two sources, neither of which couples a front end to this module:
 * - gauges and totals are read from the running front ends at scrape time (`MetricSources`);
 * - outcomes (authentications, card commands, APDU latency, sealed API requests and refusals) arrive as
 *   `node:diagnostics_channel` events the front ends publish (core/events.ts).
 * Label values are closed sets (transports, states, catalogue codes, HTTP statuses), names the operator
 * configured (registered actions) or hardware reader names capped at `maxReaderLabels` (then `other`).
 * Nothing a client chose becomes a label: no addresses, tokens, client names or made-up action names.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CardApduEvent, CardCommandEvent, RelayAuthEvent, SealedRefusalEvent, SealedRequestEvent, ConnectionRefusedEvent } from '../core/events.ts';
import type { RelayServer } from '../relay/server.ts';
import type { CardBridgeServer } from '../card-bridge/server.ts';
import type { SealedApiServer } from '../sealed-api/server.ts';
import type { ClusterView } from '../relay/cluster/presence.ts';
import { isForwarded, tunnelsCountedOnce } from '../relay/monitor.ts';

/** What the metrics read from the running gateway at scrape time. */
export interface MetricSources {
  readonly version: string;
  readonly relay?: Pick<RelayServer, 'sessions' | 'tunnels' | 'stats' | 'syncTraffic' | 'tunnelProxy' | 'dataPaths' | 'kernelStats'> | undefined;
  readonly cardBridge?: Pick<CardBridgeServer, 'cards'> | undefined;
  readonly sealedApi?: Pick<SealedApiServer, 'replayEntries'> | undefined;
  /** Each enabled front end and whether it is listening and not draining. */
  readiness(): ReadonlyMap<string, boolean>;
  /** With `[cluster] redisUrl`: every live node as published in Redis (relay/cluster/presence.ts). */
  readonly cluster?: { view(): Promise<ClusterView> } | undefined;
}

export interface GatewayMetrics {
  readonly registry: Registry;
  /** Counts a SIGHUP reload. */
  reloaded(ok: boolean): void;
  /** Stops listening to the front ends' events. */
  close(): void;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const RELAY_STATES = ['handshake', 'authenticating', 'waiting', 'pairing', 'tunnel'] as const;

/** Sets a counter to a total kept elsewhere (a front end's own monotonic counter). */
function mirror(counter: Counter, value: number, labels?: Record<string, string>): void {
  if (labels === undefined) {
    counter.reset();
    counter.inc(value);
  } else {
    counter.remove(labels);
    counter.inc(labels, value);
  }
}

export function createGatewayMetrics(sources: MetricSources, options: { maxReaderLabels: number }): GatewayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client also names three gauges `*_total`, which promtool (and Prometheus's naming rules) reserve
  // for counters; `nodejs_active_resources` (by type) says the same without the suffix.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);

  new Gauge({
    name: 'gatehouse_info',
    help: 'Gatehouse build information (always 1).',
    labelNames: ['version'],
    registers: [registry],
    // Under `serve --workers` the primary merges the workers' registries (ops/workers.ts): one, not N.
    aggregator: 'first',
    collect() {
      this.set({ version: sources.version }, 1);
    },
  });
  new Gauge({
    name: 'gatehouse_front_end_ready',
    help: '1 while the front end is listening and not draining.',
    labelNames: ['front_end'],
    registers: [registry],
    aggregator: 'min',
    collect() {
      for (const [name, ready] of sources.readiness()) this.set({ front_end: name }, ready ? 1 : 0);
    },
  });
  // A SIGHUP reloads every worker: counted once per machine, not once per worker.
  const reloads = new Counter({ name: 'gatehouse_reloads_total', help: 'Configuration reloads (SIGHUP) by result.', labelNames: ['result'], registers: [registry], aggregator: 'max' });

  const subscriptions: [string, (message: unknown) => void][] = [];
  const on = (channel: string, handler: (message: unknown) => void) => {
    subscribe(channel, handler);
    subscriptions.push([channel, handler]);
  };

  const refused = new Counter({
    name: 'gatehouse_connections_refused_total',
    help: 'Connections a listener refused (limits, allow-lists, shutdown), by front end and catalogue code.',
    labelNames: ['front_end', 'code'],
    registers: [registry],
  });
  on('gatehouse:connection:refused', (m) => {
    const e = m as ConnectionRefusedEvent;
    refused.inc({ front_end: e.frontEnd, code: e.code });
  });

  const relay = sources.relay;
  if (relay !== undefined) {
    new Gauge({
      name: 'gatehouse_relay_connections',
      help: 'Relay client connections now, by transport and state.',
      labelNames: ['transport', 'state'],
      registers: [registry],
      collect() {
        const counts = new Map<string, number>();
        for (const s of relay.sessions) {
          if (s.state === 'closed') continue;
          const key = `${s.link.kind}\u0000${s.state}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        this.reset();
        for (const transport of ['tcp', 'tls', 'ws', 'wss', 'unix'])
          for (const state of RELAY_STATES) this.set({ transport, state }, counts.get(`${transport}\u0000${state}`) ?? 0);
      },
    });
    new Counter({
      name: 'gatehouse_relay_connections_total',
      help: 'Relay client connections accepted since start.',
      registers: [registry],
      collect() {
        mirror(this, relay.stats.totalClientCount);
      },
    });
    new Gauge({
      name: 'gatehouse_relay_tunnels_open',
      help: 'Relay tunnels open now; a tunnel forwarded between nodes or workers is counted on one of its two nodes, so sums count it once.',
      registers: [registry],
      collect() {
        this.set(tunnelsCountedOnce(relay.tunnels));
      },
    });
    new Gauge({
      name: 'gatehouse_relay_tunnels_forwarded',
      help: 'Tunnel legs this process relays whose other client sits on another node or worker (each such tunnel has a leg on both).',
      registers: [registry],
      collect() {
        let n = 0;
        for (const t of relay.tunnels) if (isForwarded(t)) n++;
        this.set(n);
      },
    });
    new Counter({
      name: 'gatehouse_relay_clients_moved_total',
      help: 'Relay clients this worker handed to the worker their partner waited in (serve --workers; their tunnels are not forwarded).',
      registers: [registry],
      collect() {
        mirror(this, relay.stats.movedClients);
      },
    });
    new Counter({
      name: 'gatehouse_relay_tunnels_total',
      help: 'Relay tunnels established since start.',
      registers: [registry],
      collect() {
        mirror(this, relay.stats.totalTunnelCount);
      },
    });
    new Counter({
      name: 'gatehouse_relay_bytes_total',
      help: 'Bytes relayed through tunnels (both directions) by data path: js, or kernel (splice).',
      labelNames: ['path'],
      registers: [registry],
      collect() {
        relay.syncTraffic();
        const { totalTraffic, kernelTraffic } = relay.stats;
        mirror(this, totalTraffic - kernelTraffic, { path: 'js' });
        mirror(this, kernelTraffic, { path: 'kernel' });
      },
    });
    new Gauge({
      name: 'gatehouse_relay_tunnels_by_path',
      help: 'Relay tunnels open now by data path: kernel (held by the kernel relay), js (TLS or WebSocket sides, before splice.afterBytes, or the kernel relay off or unavailable).',
      labelNames: ['path'],
      registers: [registry],
      collect() {
        const { kernel, js } = relay.dataPaths;
        this.set({ path: 'kernel' }, kernel);
        this.set({ path: 'js' }, js);
      },
    });
    new Gauge({
      name: 'gatehouse_relay_kernel_tunnels',
      help: 'Tunnels on the kernel relay by kind: pipeless (no pipe in a direction, the pipe budget being spent: they copy), light (on the thread for tunnels that move little).',
      labelNames: ['kind'],
      registers: [registry],
      collect() {
        const k = relay.kernelStats();
        if (k === undefined) return;
        this.set({ kind: 'pipeless' }, k.pipeless);
        this.set({ kind: 'light' }, k.light);
      },
    });
    new Gauge({
      name: 'gatehouse_relay_kernel_pipe_bytes',
      help: "Capacity of the kernel relay's pipes now, in bytes (the per-user pipe budget it sizes them against is in the start line).",
      registers: [registry],
      collect() {
        const k = relay.kernelStats();
        if (k !== undefined) this.set(k.pagesUsed * 4096);
      },
    });
    new Counter({
      name: 'gatehouse_relay_kernel_spin_seconds_total',
      help: "Seconds the kernel relay's light thread spent polling for events before sleeping (relay.splice.spinMicros).",
      registers: [registry],
      collect() {
        const k = relay.kernelStats();
        if (k !== undefined) mirror(this, k.spinNs / 1e9);
      },
    });
    const auth = new Counter({
      name: 'gatehouse_relay_authentications_total',
      help: 'Relay Authenticate answers by result (the protocol error name, or the refusal code).',
      labelNames: ['result'],
      registers: [registry],
    });
    const handshake = new Histogram({
      name: 'gatehouse_relay_handshake_seconds',
      help: 'From accepting a relay connection to answering its Authenticate request.',
      labelNames: ['transport'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    on('gatehouse:relay:auth', (m) => {
      const e = m as RelayAuthEvent;
      auth.inc({ result: e.result });
      handshake.observe({ transport: e.transport }, e.seconds);
    });
    if (relay.tunnelProxy !== undefined) {
      const tp = relay.tunnelProxy;
      new Counter({
        name: 'gatehouse_relay_tunnel_proxy_traffic_bytes_total',
        help: 'Bytes carried by the tunnel-proxy mode since start (both directions).',
        registers: [registry],
        collect() {
          mirror(this, tp.registry.totals.traffic);
        },
      });
      new Gauge({
        name: 'gatehouse_relay_tunnel_proxy_servers',
        help: 'Registered tunnel-proxy server connections (nymea daemons).',
        registers: [registry],
        collect() {
          this.set(tp.registry.servers.size);
        },
      });
      new Gauge({
        name: 'gatehouse_relay_tunnel_proxy_clients',
        help: 'Registered tunnel-proxy client connections (apps), across all servers.',
        registers: [registry],
        collect() {
          this.set(tp.registry.clients.size);
        },
      });
      new Gauge({
        name: 'gatehouse_relay_tunnel_proxy_connections',
        help: 'Open tunnel-proxy connections, registered or not.',
        registers: [registry],
        collect() {
          this.set(tp.connections.size);
        },
      });
      new Counter({
        name: 'gatehouse_relay_tunnel_proxy_registrations_total',
        help: 'Successful tunnel-proxy registrations since start, by role.',
        labelNames: ['role'],
        registers: [registry],
        collect() {
          mirror(this, tp.registry.totals.servers, { role: 'server' });
          mirror(this, tp.registry.totals.clients, { role: 'client' });
        },
      });
    }
  }

  const cluster = sources.cluster;
  if (cluster !== undefined) {
    // One Redis read per scrape for the four gauges (and none more often than every 500 ms).
    let cached: { atMs: number; view: Promise<ClusterView | undefined> } | undefined;
    const view = (): Promise<ClusterView | undefined> => {
      const now = Date.now();
      if (cached === undefined || now - cached.atMs > 500) cached = { atMs: now, view: cluster.view().catch(() => undefined) };
      return cached.view;
    };
    // Every node (and every worker) reports the same cluster: merged with max, not summed.
    new Gauge({
      name: 'gatehouse_cluster_presence_up',
      help: '1 when this node could read the cluster view (the nodes presence in Redis) at this scrape.',
      registers: [registry],
      aggregator: 'min',
      async collect() {
        this.set((await view()) === undefined ? 0 : 1);
      },
    });
    new Gauge({
      name: 'gatehouse_cluster_nodes',
      help: 'Gateway nodes live in Redis (each publishes its presence every presenceIntervalMs; gone after three).',
      registers: [registry],
      aggregator: 'max',
      async collect() {
        this.set((await view())?.nodes.length ?? 0);
      },
    });
    // Per-node figures, as each node published them (label: its [cluster] nodeId).
    const perNode: [name: string, what: string, pick: (relay: NonNullable<ClusterView['nodes'][number]['relay']>) => number][] = [
      ['gatehouse_cluster_node_tunnels', 'Relay tunnels open', (r) => r.tunnels],
      ['gatehouse_cluster_node_connections', 'Relay client connections', (r) => r.clients],
    ];
    for (const [name, what, pick] of perNode) {
      new Gauge({
        name,
        help: `${what} on each live node, as it published them (label: its [cluster] nodeId).`,
        labelNames: ['node'],
        registers: [registry],
        aggregator: 'max',
        async collect() {
          const v = await view();
          this.reset();
          for (const n of v?.nodes ?? []) this.set({ node: n.node }, n.relay === null ? 0 : pick(n.relay));
        },
      });
    }
  }

  const cardBridge = sources.cardBridge;
  if (cardBridge !== undefined) {
    new Gauge({
      name: 'gatehouse_card_readers',
      help: 'Card readers present now, by whether a card is in them.',
      labelNames: ['card'],
      registers: [registry],
      collect() {
        let present = 0;
        let absent = 0;
        for (const r of cardBridge.cards.readers()) {
          if (r.atr === undefined) absent++;
          else present++;
        }
        this.set({ card: 'present' }, present);
        this.set({ card: 'absent' }, absent);
      },
    });
    const commands = new Counter({
      name: 'gatehouse_card_requests_total',
      help: 'Card bridge commands by command and result code (ok or the catalogue code).',
      labelNames: ['command', 'code'],
      registers: [registry],
    });
    const apdu = new Histogram({
      name: 'gatehouse_card_apdu_seconds',
      help: 'APDU round trips to the card, by reader (readers past the label cap are "other").',
      labelNames: ['reader'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    const readerLabels = new Map<string, string>();
    const readerLabel = (reader: string): string => {
      const known = readerLabels.get(reader);
      if (known !== undefined) return known;
      if (readerLabels.size >= options.maxReaderLabels) return 'other';
      readerLabels.set(reader, reader);
      return reader;
    };
    on('gatehouse:card-bridge:command', (m) => {
      const e = m as CardCommandEvent;
      commands.inc({ command: e.command, code: e.code });
    });
    on('gatehouse:card-bridge:apdu', (m) => {
      const e = m as CardApduEvent;
      apdu.observe({ reader: readerLabel(e.reader) }, e.seconds);
    });
  }

  const sealedApi = sources.sealedApi;
  if (sealedApi !== undefined) {
    const requests = new Counter({
      name: 'gatehouse_sealed_requests_total',
      help: 'Sealed API requests by action (registered names; "none" before authentication) and HTTP status.',
      labelNames: ['action', 'status'],
      registers: [registry],
    });
    const refusals = new Counter({
      name: 'gatehouse_sealed_refusals_total',
      help: 'Sealed API refusals by reason (catalogue code), never by client.',
      labelNames: ['reason'],
      registers: [registry],
    });
    new Gauge({
      name: 'gatehouse_sealed_replay_cache_entries',
      help: 'Entries in the sealed API replay cache.',
      registers: [registry],
      collect() {
        this.set(sealedApi.replayEntries);
      },
    });
    on('gatehouse:sealed-api:request', (m) => {
      const e = m as SealedRequestEvent;
      requests.inc({ action: e.action, status: String(e.status) });
    });
    on('gatehouse:sealed-api:refusal', (m) => refusals.inc({ reason: (m as SealedRefusalEvent).code }));
  }

  return {
    registry,
    reloaded(ok) {
      reloads.inc({ result: ok ? 'ok' : 'failed' });
    },
    close() {
      for (const [channel, handler] of subscriptions.splice(0)) unsubscribe(channel, handler);
    },
  };
}
