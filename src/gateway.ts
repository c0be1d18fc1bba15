/**
 * The composition root: a validated config → the enabled front ends → one Service.
 * Front ends never know about each other; this file is the only place that names them all.
 */
import { fileURLToPath } from 'node:url';
import { isAbsolute, join, relative, sep } from 'node:path';
import type { Logger } from './core/log.ts';
import { composeServices, type Service } from './core/lifecycle.ts';
import { GatewayError } from './core/errors.ts';
import type { GatewayConfig } from './config.ts';
import type { RelayServer } from './relay/server.ts';
import type { CardBridgeServer } from './card-bridge/server.ts';
import type { SealedApiServer } from './sealed-api/server.ts';
import type { OpsServer } from './ops/server.ts';
import type { GatewayMetrics } from './ops/metrics.ts';
import type { LogLevel } from './core/log.ts';

export interface GatewayDeps {
  readonly log: Logger;
  /** Directory relative paths in the config refer to (the config file's directory, or the cwd). */
  readonly baseDir: string;
  /** Applies a new log level to every logger (reload); the owner of the root logger provides it. */
  readonly setLogLevel?: (level: LogLevel) => void;
  /** The relay's rendezvous table when the caller provides it (a `serve --workers` worker: the primary's). */
  readonly rendezvous?: import('./relay/rendezvous.ts').Rendezvous<import('./relay/session.ts').Session>;
  /** Appended to `[cluster] nodeId` (a worker's `-w<n>`, so workers of one machine are distinct nodes in Redis). */
  readonly nodeIdSuffix?: string;
  /** The cluster's shared state when the caller provides it (a `serve --workers` worker without Redis: the primary's). */
  readonly shared?: import('./core/cluster/shared-state.ts').SharedState;
  /** Forwarding between workers of one machine (given by `serve --workers` with the primary's table). */
  readonly forward?: import('./relay/cluster/forward.ts').ForwardSetup;
  /** This worker's stable slot among the machine's workers (0-based), for per-worker forward ports. */
  readonly workerSlot?: number;
  /** The tunnel-proxy mode's directory of servers when the caller provides it (a worker: the primary's). */
  readonly tpDirectory?: import('./relay/cluster/tp-directory.ts').TpDirectory;
  /** `serve --workers` without Redis: the channel clients move to other workers over (relay/cluster/handoff.ts). */
  readonly handoff?: import('./relay/cluster/handoff.ts').HandoffChannel;
  /**
   * Set in a `serve --workers` worker: the channel to the primary, which serves the ops listener and the
   * relay's monitor socket for the whole machine (ops/workers.ts); this process answers its questions.
   */
  readonly primary?: import('./ops/workers.ts').PrimaryChannel;
}

/** What one reload did. */
export interface ReloadReport {
  /** Parts that failed to reload (each logged with its error; their previous state stays in force). */
  readonly failed: readonly string[];
  /** Keys that changed in the file but take effect only after a restart. */
  readonly restartNeeded: readonly string[];
}

export interface Gateway extends Service {
  readonly relay: RelayServer | undefined;
  readonly cardBridge: CardBridgeServer | undefined;
  readonly sealedApi: SealedApiServer | undefined;
  /** The ops listener (/metrics, /healthz, /readyz), when `[ops]` is enabled. */
  readonly ops: OpsServer | undefined;
  /**
   * Applies a re-read config without dropping anything (SIGHUP): TLS certificates of every listener, the
   * relay's token file, the sealed API's keys and registry, the log level. Every other changed key is
   * logged once as "restart needed". Never rejects: a failure is logged and reported.
   */
  reload(next: GatewayConfig): Promise<ReloadReport>;
  /**
   * A SIGHUP whose config file could not be read or validated: logs `err` (its code and every problem,
   * with the file and key) once at error and counts a failed reload. Nothing changes.
   */
  reloadRefused(err: unknown): void;
  /**
   * Human-readable lines saying how to reach each enabled front end; the CLI lines start with `command`
   * (default: `cliCommand()`).
   */
  describe(command?: string): string[];
}

/**
 * How a person runs the CLI of this copy of Gatehouse: `gatehouse` when it is an installed package (it
 * lives under a node_modules folder, and npm put the command on PATH), `npx gatehouse` in a checkout when
 * the working directory is inside it (elsewhere npx would fetch whatever the registry calls `gatehouse`),
 * else `node <checkout>/bin/gatehouse.js`.
 */
export function cliCommand(cwd = process.cwd()): string {
  const root = fileURLToPath(new URL('..', import.meta.url));
  if (root.split(sep).includes('node_modules')) return 'gatehouse';
  const inside = relative(root, cwd);
  return inside === '' || (!inside.startsWith('..') && !isAbsolute(inside)) ? 'npx gatehouse' : `node ${join(root, 'bin', 'gatehouse.js')}`;
}

/** The front ends a config enables, by section name (`relay`, `cardBridge`, `sealedApi`). */
export function enabledFrontEnds(config: GatewayConfig): string[] {
  return (['relay', 'cardBridge', 'sealedApi'] as const).filter((name) => config[name].enabled);
}

/** The config error for a config that enables no front end. */
export const NO_FRONT_END = 'no front end is enabled: add a [relay], [cardBridge] or [sealedApi] section to the config file';

/**
 * Builds the enabled front ends. Each is imported only when enabled, so a gateway that runs only the
 * relay never loads the other front ends' code and libraries (memory: a few MB each).
 * @throws GatewayError CORE_CONFIG_INVALID when no front end is enabled.
 */
export async function createGateway(config: GatewayConfig, deps: GatewayDeps): Promise<Gateway> {
  if (enabledFrontEnds(config).length === 0) throw new GatewayError('CORE_CONFIG_INVALID', NO_FRONT_END);
  // [cluster] redisUrl: the relay pairs through Redis with the other nodes (this file owns its connection).
  const cluster = deps.rendezvous === undefined && config.relay.enabled && config.cluster.enabled && config.cluster.redisUrl !== undefined && config.cluster.secret !== undefined
    ? new (await import('./relay/cluster/rendezvous-redis.ts')).RedisRendezvous<import('./relay/session.ts').Session>({
        redisUrl: config.cluster.redisUrl,
        secret: config.cluster.secret,
        nodeId: `${config.cluster.nodeId}${deps.nodeIdSuffix ?? ''}`,
        aloneMs: config.relay.timeouts.aloneMs,
        maxWaitingPerToken: config.relay.limits.maxWaitingPerToken,
        tunnelLeaseMs: config.cluster.tunnelLeaseMs,
        keyPrefix: config.cluster.keyPrefix,
        commandTimeoutMs: config.cluster.redisCommandTimeoutMs,
        log: deps.log.child({ part: 'cluster' }),
      })
    : undefined;
  // Nodes joined through Redis forward tunnels to each other with a key derived from the cluster secret.
  const forward =
    cluster !== undefined && config.cluster.secret !== undefined
      ? (await import('./relay/cluster/forward.ts')).clusterForwardSetup(
          config.cluster,
          config.cluster.secret.reveal(),
          `${config.cluster.nodeId}${deps.nodeIdSuffix ?? ''}`,
          deps.workerSlot,
          config.cluster.forwardTls === undefined ? undefined : await (await import('./core/tls.ts')).loadTlsFiles(config.cluster.forwardTls, deps.baseDir),
        )
      : deps.forward;
  // The tunnel-proxy mode across nodes: its directory of servers on the same Redis (or the primary's, given).
  const tpDirectory =
    cluster !== undefined && config.relay.tunnelProxy.enabled && config.cluster.redisUrl !== undefined && config.cluster.secret !== undefined
      ? new (await import('./relay/cluster/tp-directory.ts')).RedisTpDirectory({
          redisUrl: config.cluster.redisUrl,
          secret: config.cluster.secret,
          nodeId: `${config.cluster.nodeId}${deps.nodeIdSuffix ?? ''}`,
          leaseMs: config.cluster.tunnelLeaseMs,
          keyPrefix: config.cluster.keyPrefix,
          commandTimeoutMs: config.cluster.redisCommandTimeoutMs,
          log: deps.log.child({ part: 'cluster' }),
        })
      : deps.tpDirectory;
  // [cluster] redisUrl: the limits that must hold across nodes (failed-auth back-off, the sealed API's replay
  // cache and registry) share one Redis connection pair (core/cluster/shared-state.ts; this file owns it).
  const shared = deps.shared ?? (config.cluster.enabled && config.cluster.redisUrl !== undefined && config.cluster.secret !== undefined
    ? new (await import('./core/cluster/shared-state.ts')).RedisSharedState({
        redisUrl: config.cluster.redisUrl,
        secret: config.cluster.secret,
        nodeId: `${config.cluster.nodeId}${deps.nodeIdSuffix ?? ''}`,
        keyPrefix: config.cluster.keyPrefix,
        commandTimeoutMs: config.cluster.redisCommandTimeoutMs,
        log: deps.log.child({ part: 'cluster-state' }),
      })
    : undefined);
  // In a worker the primary serves the monitor socket (one path, every worker's clients): none here.
  const relayConfig = deps.primary === undefined ? config.relay : { ...config.relay, monitor: { ...config.relay.monitor, enabled: false } };
  const relay = config.relay.enabled
    ? (await import('./relay/server.ts')).createRelayServer(relayConfig, { ...deps, ...(cluster === undefined ? {} : { rendezvous: cluster }), ...(forward === undefined ? {} : { forward }), ...(shared === undefined ? {} : { shared }), ...(tpDirectory === undefined ? {} : { tpDirectory }) })
    : undefined;
  const cardBridge = config.cardBridge.enabled ? (await import('./card-bridge/server.ts')).createCardBridgeServer(config.cardBridge, deps) : undefined;
  const sealedApi = config.sealedApi.enabled ? (await import('./sealed-api/server.ts')).createSealedApiServer(config.sealedApi, shared === undefined ? deps : { ...deps, shared }) : undefined;
  const parts: Service[] = [relay, cardBridge, sealedApi].filter((s) => s !== undefined);
  const all = composeServices('gateway', parts);
  const log = deps.log;
  /** Set once every front end listens; readiness turns false for all when draining starts. */
  let listening = false;
  let draining = false;
  const readiness = (): ReadonlyMap<string, boolean> => new Map(parts.map((p) => [p.name, listening && !draining]));
  let ops: OpsServer | undefined;
  let metrics: GatewayMetrics | undefined;
  // [cluster] redisUrl: this node publishes its view (presence) for `monitor --cluster` and the metrics.
  let presence: import('./relay/cluster/presence.ts').PresencePublisher | undefined;
  if (config.cluster.enabled && config.cluster.redisUrl !== undefined) {
    const { PresencePublisher, MAX_LISTED_TUNNELS } = await import('./relay/cluster/presence.ts');
    const { nodeSummary } = await import('./relay/monitor.ts');
    const { createRedisClient } = await import('./core/redis.ts');
    const { gatehouseVersion } = await import('./core/version.ts');
    const nodeId = `${config.cluster.nodeId}${deps.nodeIdSuffix ?? ''}`;
    const plog = deps.log.child({ part: 'presence' });
    presence = new PresencePublisher({
      redis: createRedisClient({ redisUrl: config.cluster.redisUrl, commandTimeoutMs: config.cluster.redisCommandTimeoutMs, log: plog, errorCode: 'RELAY_PRESENCE_FAILED', errorMessage: 'redis unreachable; this node is missing from the cluster view until it is back', fields: { node: nodeId } }),
      nodeId,
      keyPrefix: config.cluster.keyPrefix,
      intervalMs: config.cluster.presenceIntervalMs,
      version: gatehouseVersion(),
      forward: () => relay?.forwardAddress,
      summary: () => (relay === undefined ? undefined : nodeSummary(relay, MAX_LISTED_TUNNELS)),
      log: plog,
    });
  }
  if (config.ops.enabled) {
    const { createGatewayMetrics } = await import('./ops/metrics.ts');
    const { createOpsServer } = await import('./ops/server.ts');
    const { gatehouseVersion } = await import('./core/version.ts');
    metrics = createGatewayMetrics({ version: gatehouseVersion(), relay, cardBridge, sealedApi, readiness, cluster: presence }, { maxReaderLabels: config.ops.maxReaderLabels });
    // In a worker the primary serves /metrics (every worker's, summed), /healthz and /readyz.
    if (deps.primary === undefined) ops = createOpsServer(config.ops, { log, metrics, readiness, draining: () => draining });
  }
  if (deps.primary !== undefined) {
    const { answerPrimary } = await import('./ops/workers.ts');
    const { monitorDocument, relayTraffic } = await import('./relay/monitor.ts');
    const registry = metrics?.registry;
    answerPrimary(
      deps.primary,
      {
        ...(registry === undefined ? {} : { metrics: () => registry.getMetricsAsJSON() }),
        ...(relay === undefined || !config.relay.monitor.enabled ? {} : { monitor: () => ({ doc: monitorDocument(relay, config.relay), traffic: relayTraffic(relay) }) }),
      },
      log,
    );
  }
  let logLevel = config.log.level;
  /** Restart-needed keys already reported, so each change is logged once. */
  const reported = new Set<string>();

  async function reload(next: GatewayConfig): Promise<ReloadReport> {
    const { changedKeys, isReloadable } = await import('./ops/reload.ts');
    const failed: string[] = [];
    const attempt = async (part: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        failed.push(part);
        log.error({ err, code: (err as { code?: unknown }).code, part }, 'reload failed; the previous state stays in force');
      }
    };
    // All or nothing: the relay and the card bridge check every file first (each failure is reported), the
    // sealed API (whose keys and registry apply as they load) runs only when they can apply, and they
    // apply only when it did. A front end enabled or disabled in the file is a restart-needed key.
    const apply: (() => void)[] = [];
    const prepare = (part: string, fn: () => Promise<() => void>) => attempt(part, async () => void apply.push(await fn()));
    if (relay !== undefined && next.relay.enabled) await prepare('relay', () => relay.prepareReload(next.relay));
    if (cardBridge !== undefined && next.cardBridge.enabled) await prepare('cardBridge', () => cardBridge.prepareReload(next.cardBridge));
    if (failed.length === 0 && sealedApi !== undefined && next.sealedApi.enabled) await attempt('sealedApi', () => sealedApi.reload(next.sealedApi));
    if (failed.length === 0) for (const fn of apply) fn();
    // Last, and only when every part took: a failed reload leaves the level in force too.
    if (failed.length === 0 && next.log.level !== logLevel) {
      logLevel = next.log.level;
      deps.setLogLevel?.(logLevel);
      log.info({ level: logLevel }, 'log level changed');
    }
    // Compared with the config the process started with: that is what is in force for these keys.
    const restartNeeded = changedKeys(config, next).filter((k) => !isReloadable(k));
    for (const key of restartNeeded) {
      if (reported.has(key)) continue;
      reported.add(key);
      log.warn({ key }, 'restart needed: this change takes effect after a restart');
    }
    metrics?.reloaded(failed.length === 0);
    log.info({ failed, restartNeeded }, 'configuration reloaded');
    return { failed, restartNeeded };
  }

  return {
    name: 'gateway',
    relay,
    cardBridge,
    sealedApi,
    ops,
    reload,
    reloadRefused(err) {
      log.error({ code: (err as { code?: unknown }).code, reason: err instanceof Error ? err.message : String(err) }, 'reload refused: the config file is not valid; nothing changed');
      metrics?.reloaded(false);
    },
    async start() {
      // Ops first: /healthz answers at once and /readyz says 503 while the front ends start.
      await ops?.start();
      try {
        await cluster?.start();
        await tpDirectory?.start();
        await shared?.start();
        await all.start();
        await presence?.start();
      } catch (err) {
        await cluster?.close();
        await tpDirectory?.close();
        await shared?.close();
        await ops?.close();
        throw err;
      }
      listening = true;
    },
    async close(options) {
      draining = true;
      // The front ends drain while the ops listener still answers (/readyz: 503); it closes last.
      await all.close(options ?? { graceMs: config.shutdown.graceMs });
      // A node that stops cleanly leaves the cluster view at once (a dead one when its key expires).
      await presence?.close();
      await cluster?.close();
      await tpDirectory?.close();
      await shared?.close();
      await ops?.close();
    },
    describe(cli = cliCommand()) {
      const lines: string[] = [];
      if (relay !== undefined) {
        lines.push('Relay (nymea-remoteproxy 1.8.4 compatible):');
        for (const l of relay.listeners) lines.push(`  ${l.kind.padEnd(4)} ${l.url}`);
        const monitorPath = relay.monitorPath ?? (deps.primary !== undefined && config.relay.monitor.enabled ? (isAbsolute(config.relay.monitor.path) ? config.relay.monitor.path : join(deps.baseDir, config.relay.monitor.path)) : undefined);
        if (monitorPath !== undefined) lines.push(`  monitor: ${cli} monitor --socket ${monitorPath}`);
        const ws = relay.listeners.find((l) => l.kind === 'ws') ?? relay.listeners[0];
        if (ws !== undefined) {
          const auth = config.relay.authenticator;
          // A token that works with the configured authenticator (dev accepts any; the others need a real one).
          const token = auth.kind === 'dev' || auth.kind === 'mock' ? 'demo' : 'YOUR_TOKEN';
          const why = auth.kind === 'dev' ? 'any token pairs with the dev authenticator' : auth.kind === 'static' ? `a token listed (hashed) in ${auth.file}` : auth.kind === 'mock' ? 'the mock authenticator' : `a token your ${auth.kind} authorizer accepts`;
          lines.push(`  try:     ${cli} tunnel --url ${ws.url} --token ${token}   (run it twice to pair; ${why})`);
        }
      }
      if (cardBridge !== undefined) {
        lines.push('Card bridge (foxyproxy line protocol):');
        for (const l of cardBridge.listeners) lines.push(`  ${l.kind.padEnd(4)} ${l.url}`);
        lines.push(`  cards:   ${cardBridge.cards.readers().length} readers; try: ${cli} card list`);
      }
      if (sealedApi !== undefined) {
        lines.push('Sealed API (end-to-end encrypted JOSE RPC):');
        lines.push(`  http ${sealedApi.url}   server key ${sealedApi.serverInfo().kid}`);
        lines.push(`  clients: ${cli} clients keygen --out me.json && ${cli} clients add --name me --key me.json --allow 'files.*,time' --files '*'`);
        lines.push(`  try:     ${cli} call ${sealedApi.url} time --key me.json`);
      }
      if (ops !== undefined) lines.push(`Ops: ${ops.url}/metrics  ${ops.url}/healthz  ${ops.url}/readyz`);
      return lines;
    },
  };
}
