/**
 * The sealed API front end: one HTTP(S) listener, one endpoint (`POST <path>`, default /v1/rpc). This
 * factory only wires the parts and owns the lifecycle (idle → starting → running → closing → closed):
 * - listener.ts: the HTTP(S) server, its timeouts and connection caps;
 * - handle-request.ts: the checks in the spec's order (body.ts reads, authenticate.ts authenticates,
 *   horizon.ts guards restarts, run-action.ts runs the action, respond.ts writes the answer);
 * - live-keys.ts, registry.ts, replay.ts: server keys, clients and the replay cache, reloaded while running;
 * - actions/ and managed-files.ts: what can be called.
 * Every authentication failure is the same `401 {"error":"unauthorized"}`; after authentication errors
 * travel sealed with the matching HTTP status.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { chmod, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from '../core/log.ts';
import { Lifecycle, type CloseOptions, type Service } from '../core/lifecycle.ts';
import { listen, stopListening } from '../core/net.ts';
import { loadTlsFiles } from '../core/tls.ts';
import type { SealedApiConfig } from './config.ts';
import type { ServerPublicInfo } from './keys.ts';
import { ClientRegistry } from './registry.ts';
import { DirectoryReplayStore, MemoryReplayStore, type ReplayStore } from './replay.ts';
import { ActionRegistry, loadModule, pingAction, timeAction } from './actions/index.ts';
import { FileManager, fileActions } from './actions/files.ts';
import { AddressBook } from './proxy.ts';
import { FailureBackoff, SharedFailureBackoff } from '../core/backoff.ts';
import type { SharedState } from '../core/cluster/shared-state.ts';
import { SharedReplayStore } from './cluster/shared-replay.ts';
import { RegistrySync } from './cluster/registry-sync.ts';
import { ConnectionTracker, DEFAULT_GRACE_MS } from '../core/connections.ts';
import { sealedPaths } from './admin.ts';
import { LiveServerKeys } from './live-keys.ts';
import { ReplayHorizon } from './horizon.ts';
import { createAuthenticator } from './authenticate.ts';
import { createActionRunner } from './run-action.ts';
import { createRequestHandler } from './handle-request.ts';
import { createListener } from './listener.ts';
import { ensureDemoFile, managedFiles } from './managed-files.ts';
import { sendPlain } from './respond.ts';

export interface SealedApiDeps {
  readonly log: Logger;
  readonly baseDir: string;
  /** A replay store shared by several gateway processes (default: in memory). */
  readonly replayStore?: ReplayStore;
  /**
   * The cluster's shared state (`[cluster]`: Redis, or the primary of `serve --workers`): the replay
   * cache and the failed-auth back-off hold across nodes, and (Redis) registry changes reach every node.
   */
  readonly shared?: SharedState;
  /** Clock (tests). */
  readonly now?: () => number;
}

export interface SealedApiServer extends Service {
  /** `http://127.0.0.1:1214/v1/rpc` once started. */
  readonly url: string;
  readonly port: number;
  readonly keyFile: string;
  readonly registryFile: string;
  /** The public keys clients pin (after start). */
  serverInfo(): ServerPublicInfo;
  readonly registry: ClientRegistry;
  readonly actions: ActionRegistry;
  /** Entries in the replay cache now (metrics). */
  readonly replayEntries: number;
  /**
   * Reloads server keys and registry now (the watchers do it by themselves too) and, given the new
   * config, the TLS certificate (new handshakes use it; open connections keep theirs).
   * @throws GatewayError CORE_TLS_MATERIAL (the old certificate stays in force).
   */
  reload(next?: SealedApiConfig): Promise<void>;
}

export function createSealedApiServer(config: SealedApiConfig, deps: SealedApiDeps): SealedApiServer {
  const log = deps.log.child({ frontEnd: 'sealed-api' });
  const now = deps.now ?? Date.now;
  const { stateDir, keyFile, publicFile, registryFile, backupDir } = sealedPaths(config, deps.baseDir);
  const keys = new LiveServerKeys(keyFile, publicFile, log);
  const registry = new ClientRegistry(registryFile, log, config.reloadCheckMs);
  const shared = deps.shared;
  /** Requests issued before this instant are refused (set at start; raised when Redis lost its data). */
  let notBeforeMs = 0;
  // Across machines only Redis holds the replay cache; between workers a replay directory does as well.
  const sharedReplay =
    deps.replayStore === undefined && shared !== undefined && (shared.kind === 'redis' || config.replayDir === undefined)
      ? new SharedReplayStore(shared, config.limits.maxReplayEntries, now)
      : undefined;
  const dirStore =
    deps.replayStore === undefined && sharedReplay === undefined && config.replayDir !== undefined
      ? new DirectoryReplayStore(
          resolve(deps.baseDir, config.replayDir),
          config.limits.maxReplayEntries,
          config.timeouts.replaySweepMs,
          log,
        )
      : undefined;
  const replay = deps.replayStore ?? sharedReplay ?? dirStore ?? new MemoryReplayStore(config.limits.maxReplayEntries);
  // Only a cache in memory forgets on restart (this process's, or the primary's between workers); a
  // directory or Redis remembers by itself (a Redis that lost its data is handled by onReset below).
  const horizon = new ReplayHorizon(
    join(stateDir, 'replay-horizon'),
    log,
    deps.replayStore === undefined && dirStore === undefined && shared?.kind !== 'redis',
  );
  const registrySync =
    shared?.redis === undefined
      ? undefined
      : new RegistrySync({ shared: shared.redis, registry, log, pollMs: config.reloadCheckMs });
  const backoff =
    shared === undefined
      ? new FailureBackoff(config.limits.maxAuthFailuresPerIp, config.limits.authFailureWindowMs)
      : new SharedFailureBackoff({
          maxFailures: config.limits.maxAuthFailuresPerIp,
          windowMs: config.limits.authFailureWindowMs,
          shared,
          scope: 'sealed',
          log,
          now,
        });
  // Redis lost its data (restarted empty): requests accepted before could be replayed to it. Refuse every
  // request issued before this moment (clients retry with a fresh one).
  const offReset = shared?.onReset(() => {
    notBeforeMs = Math.max(notBeforeMs, now());
    log.warn({ code: 'SEALED_REPLAY_STORE_FAILED' }, 'shared replay cache was lost: requests issued before now are refused');
  });
  const actions = new ActionRegistry();
  const fileManager = new FileManager({
    files: managedFiles(config, stateDir),
    baseDir: deps.baseDir,
    backupDir,
    maxFileBytes: config.limits.maxFileBytes,
    lockWaitMs: config.timeouts.fileLockMs,
    log,
  });
  const runner = createActionRunner({ log, actionMs: config.timeouts.actionMs });
  let server: Server | undefined;
  const lifecycle = new Lifecycle('sealed API');
  const tracker = new ConnectionTracker();
  let port = 0;
  const handler = createRequestHandler({
    config,
    log,
    now,
    running: () => lifecycle.running,
    backoff,
    addresses: new AddressBook(config.limits.maxKnownAddresses, config.timeouts.addressTtlMs),
    authenticate: createAuthenticator({
      config,
      registry,
      ring: () => keys.ring,
      notBeforeMs: () => notBeforeMs,
      now,
    }),
    replay,
    horizon,
    actions,
    runner,
    ring: () => keys.ring,
  });
  const scheme = config.tls === undefined ? 'http' : 'https';

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    handler.handle(req, res).catch((err: unknown) => {
      // Fault isolation: a bug answers this request 500 (and closes its connection), nothing else.
      log.error({ err, code: 'CORE_INTERNAL' }, 'sealed API request failed');
      res.setHeader('connection', 'close');
      if (!res.headersSent) sendPlain(res, 'CORE_INTERNAL', 'internal');
      else res.destroy();
    });
  };

  return {
    name: 'sealed-api',
    get url() {
      return `${scheme}://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}${config.path}`;
    },
    get port() {
      return port;
    },
    keyFile,
    registryFile,
    registry,
    actions,
    serverInfo() {
      return keys.info;
    },
    get replayEntries() {
      return replay.size;
    },
    async reload(next?: SealedApiConfig) {
      // The certificate is checked first: a bad one leaves the keys and the registry as they were too.
      const https = next?.tls !== undefined && server !== undefined && 'setSecureContext' in server ? (server as import('node:https').Server) : undefined;
      const tls = https !== undefined && next?.tls !== undefined ? await loadTlsFiles(next.tls, deps.baseDir) : undefined;
      await keys.load(false);
      await registry.reload();
      if (https !== undefined && tls !== undefined) {
        https.setSecureContext(tls);
        log.info({ certFile: next?.tls?.certFile }, 'TLS certificate reloaded');
      }
    },
    async start() {
      lifecycle.beginStart();
      try {
        await mkdir(stateDir, { recursive: true, mode: 0o700 });
        await chmod(stateDir, 0o700);
        await keys.load(true);
        await registry.start();
        await registrySync?.start();
        await dirStore?.start();
        await ensureDemoFile(config, stateDir);
        await fileManager.start();
        actions.add(pingAction);
        actions.add(timeAction);
        for (const a of fileActions(fileManager)) actions.add(a);
        for (const [name, m] of Object.entries(config.modules))
          actions.add(await loadModule(name, m.file, deps.baseDir));
        server = await createListener(config, { log, baseDir: deps.baseDir, now }, onRequest);
        tracker.watch(server);
        port = await listen(server, { host: config.host, port: config.port }, 'sealed API');
        // Requests issued before this process started, or before the previous one's replay horizon, are
        // refused: the previous process may have accepted them and its replay cache is gone.
        notBeforeMs = Math.max(now(), await horizon.load());
        keys.watch(config.reloadCheckMs);
        lifecycle.started();
        log.info({ url: this.url, kid: keys.ring.current.kid, actions: actions.names() }, 'sealed API listening');
      } catch (err) {
        registry.stop();
        await registrySync?.stop();
        dirStore?.stop();
        if (server !== undefined) await stopListening(server);
        lifecycle.failed();
        throw err;
      }
    },
    close(options: CloseOptions = {}) {
      return lifecycle.close(async () => {
        registry.stop();
        await registrySync?.stop();
        offReset?.();
        if (backoff instanceof SharedFailureBackoff) backoff.detach();
        dirStore?.stop();
        keys.stop();
        if (server !== undefined) {
          const stopped = stopListening(server);
          server.closeIdleConnections();
          // Requests in flight may finish within the grace period; then actions are aborted and every
          // connection (keep-alive, mid-handshake, mid-request) is destroyed.
          if (handler.inFlight > 0) {
            await new Promise<void>((done) => {
              const off = handler.onIdle(() => {
                clearTimeout(timer);
                off();
                done();
              });
              const timer = setTimeout(() => {
                off();
                done();
              }, options.graceMs ?? DEFAULT_GRACE_MS);
            });
          }
          runner.abortAll();
          server.closeAllConnections();
          await tracker.drain({ graceMs: 0, flushMs: 0 });
          await stopped;
        }
        log.info('sealed API closed');
      });
    },
  };
}
