/**
 * The card bridge front end: line-protocol listeners (TCP, TLS) → admission → LineSession, over one
 * CardService built from the configured backends; plus, when enabled, the CloudFoxy REST API and
 * foxyproxy's HTTP API served over the same cards.
 *
 * `close({graceMs})` stops listening, lets every connection finish the requests it has (reading no more),
 * destroys what is left after `graceMs`, closes the REST servers and the backends, and resolves when every
 * connection is gone.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { RateLimitedWarnings, type Logger } from '../core/log.ts';
import { Lifecycle, type CloseOptions, type Service } from '../core/lifecycle.ts';
import { Admission, describeAddress, listen, stopListening } from '../core/net.ts';
import { ConnectionTracker, DEFAULT_GRACE_MS, refuseConnection } from '../core/connections.ts';
import { AllowList, enforceAllowList } from '../core/allow-list.ts';
import { ByteBudget } from '../core/budget.ts';
import { loadTlsFiles, type TlsServerOptions } from '../core/tls.ts';
import { GatewayError, errorSpec } from '../core/errors.ts';
import type { CardBridgeConfig } from './config.ts';
import type { CardBackend } from './backends/types.ts';
import { createBackends } from './backends/index.ts';
import { CardService } from './cards.ts';
import { LineSession } from './session.ts';
import type { ExecuteContext } from './commands.ts';
import { createCloudFoxyApi, type HttpApi } from './rest/cloudfoxy.ts';
import { createFoxyproxyApi } from './rest/foxyproxy.ts';

export interface CardBridgeDeps {
  readonly log: Logger;
  /** Directory relative paths in the config are resolved against. */
  readonly baseDir: string;
  /** Replaces the configured backends (tests, library use). */
  readonly backends?: readonly CardBackend[];
}

export interface BoundCardListener {
  readonly kind: 'tcp' | 'tls' | 'cloudfoxy-api' | 'foxyproxy-api';
  readonly url: string;
  readonly port: number;
}

export interface CardBridgeServer extends Service {
  readonly cards: CardService;
  readonly listeners: readonly BoundCardListener[];
  readonly sessions: ReadonlySet<LineSession>;
  /** Bytes charged now to the memory budget shared by every line connection (limits.maxBufferedBytes). */
  readonly bufferedBytes: number;
  /**
   * Applies what can change while running: the TLS certificate of the `tls` listeners (new handshakes
   * use it; open connections keep theirs). @throws GatewayError CORE_TLS_MATERIAL (the old one stays).
   */
  reload(next: CardBridgeConfig): Promise<void>;
  /** `reload` in two steps: checks the files, resolves with the function that applies them (cannot fail). */
  prepareReload(next: CardBridgeConfig): Promise<() => void>;
}

export function createCardBridgeServer(config: CardBridgeConfig, deps: CardBridgeDeps): CardBridgeServer {
  const log = deps.log.child({ frontEnd: 'card-bridge' });
  const backends = deps.backends ?? createBackends(config.backends, { baseDir: deps.baseDir, log });
  const cards = new CardService(backends, {
    commandMs: config.timeouts.commandMs,
    lockWaitMs: config.timeouts.lockWaitMs,
    maxQueuedPerCard: config.limits.maxQueuedPerCard,
    autoGetResponse: config.autoGetResponse,
    readerNameStyle: config.readerNameStyle,
    log,
  });
  const sessions = new Set<LineSession>();
  /** Every accepted TCP socket, including TLS handshakes that have not become sessions yet. */
  const tracker = new ConnectionTracker();
  const servers: NetServer[] = [];
  const tlsServers: import('node:tls').Server[] = [];
  const apis: HttpApi[] = [];
  const bound: BoundCardListener[] = [];
  const admission = new Admission(config.limits);
  const budget = new ByteBudget(config.limits.maxBufferedBytes);
  let preferred: readonly string[] = [];
  const lifecycle = new Lifecycle('card bridge');
  /** Refusals are logged at most once per code every 10 s (a flood must not flood the log). */
  const refusals = new RateLimitedWarnings(log, 10_000, Date.now, 'card-bridge');

  const exec: ExecuteContext = { cards, log, preferred: () => preferred };

  function onSocket(socket: Socket): void {
    const remote = socket.remoteAddress ?? 'unknown';
    if (!lifecycle.running) return refuse(socket, new GatewayError('CORE_SHUTTING_DOWN'));
    const slot = admission.admit(remote);
    if (!slot.ok) return refuse(socket, new GatewayError(slot.code));
    try {
      const session = new LineSession(socket, {
        config,
        exec,
        log,
        budget,
        closed: (s) => {
          slot.release();
          sessions.delete(s);
        },
      });
      sessions.add(session);
    } catch (err) {
      // Fault isolation: a bug while setting a connection up closes that connection only.
      slot.release();
      log.error({ err, code: 'CORE_INTERNAL' }, 'connection setup failed; connection closed');
      socket.destroy();
    }
  }

  function refuse(socket: Socket, err: GatewayError): void {
    refusals.warn(err.code, { code: err.code, remote: socket.remoteAddress }, 'connection refused');
    // Refused (connection limits, shutting down): one `C089` (busy) answer line, then close.
    refuseConnection(socket, `>:${errorSpec('CARD_QUEUE_FULL').lineResult!}\n@@\n`, config.timeouts.closeFlushMs);
  }

  async function start(): Promise<void> {
    lifecycle.beginStart();
    try {
      await cards.start();
      const needsTls = config.listeners.some((l) => l.kind === 'tls');
      const tlsOpts: TlsServerOptions | undefined = needsTls && config.tls !== undefined ? await loadTlsFiles(config.tls, deps.baseDir) : undefined;
      for (const l of config.listeners) {
        const server =
          l.kind === 'tcp'
            ? createNetServer({ allowHalfOpen: true, noDelay: true }, onSocket)
            : createTlsServer({ ...tlsOpts, allowHalfOpen: true, handshakeTimeout: config.timeouts.requestReadMs }, onSocket);
        if (l.kind === 'tls') {
          tlsServers.push(server as import('node:tls').Server);
          // Admission only sees sockets that finished their handshake: cap the ones still in it too (node
          // destroys connections past this at accept).
          server.maxConnections = config.limits.maxConnections;
          // With a listener, Node no longer destroys the failed socket itself (handshake timeout included).
          server.on('tlsClientError', (err: Error, tlsSocket: Socket) => {
            log.debug({ err: err.message }, 'tls handshake failed');
            tlsSocket.destroy();
          });
        }
        enforceAllowList(server, new AllowList(l.allowFrom), (remote) => refusals.warn(`CARD_CLIENT_NOT_ALLOWED ${l.kind}`, { code: 'CARD_CLIENT_NOT_ALLOWED', remote, listener: l.kind }, 'connection refused'));
        tracker.watch(server);
        const port = await listen(server, { host: l.host, port: l.port }, `card bridge ${l.kind} listener`);
        servers.push(server);
        bound.push({ kind: l.kind, port, url: `${l.kind}://${describeAddress({ host: l.host, port })}` });
      }
      if (config.cloudfoxyApi.enabled) {
        const api = createCloudFoxyApi(cards, { token: config.cloudfoxyApi.token!, log, startedAt: Date.now(), maxConnections: config.limits.maxConnections, maxConnectionsPerIp: config.limits.maxConnectionsPerIp, allowFrom: config.cloudfoxyApi.allowFrom });
        const port = await api.listen(config.cloudfoxyApi.host, config.cloudfoxyApi.port);
        apis.push(api);
        bound.push({ kind: 'cloudfoxy-api', port, url: `http://${describeAddress({ host: config.cloudfoxyApi.host, port })}/api/v1/` });
      }
      if (config.foxyproxyApi.enabled) {
        const api = createFoxyproxyApi(exec, {
          token: config.foxyproxyApi.token!,
          log,
          maxConnections: config.limits.maxConnections, maxConnectionsPerIp: config.limits.maxConnectionsPerIp, allowFrom: config.foxyproxyApi.allowFrom,
          select: (names) => {
            preferred = names;
          },
        });
        const port = await api.listen(config.foxyproxyApi.host, config.foxyproxyApi.port);
        apis.push(api);
        bound.push({ kind: 'foxyproxy-api', port, url: `http://${describeAddress({ host: config.foxyproxyApi.host, port })}/api/v1.0/` });
      }
    } catch (err) {
      await Promise.allSettled([...servers.map(stopListening), ...apis.map((a) => a.close(0)), cards.close()]);
      servers.length = 0;
      lifecycle.failed();
      throw err;
    }
    lifecycle.started();
    log.info({ listeners: bound.map((b) => b.url), readers: cards.readers().length }, 'card bridge listening');
  }

  async function doClose(graceMs: number): Promise<void> {
    // server.close() only calls back once every connection is gone, so drain them before waiting on it.
    const stopped = Promise.all(servers.map(stopListening));
    // Every connection stops reading now, answers what it has, then ends; the grace period bounds that.
    for (const s of sessions) s.drain();
    await tracker.drain({ graceMs, flushMs: 0 });
    await stopped;
    await Promise.allSettled(apis.map((a) => a.close(graceMs)));
    await cards.close();
    log.info('card bridge stopped');
  }

  async function prepareReload(next: CardBridgeConfig): Promise<() => void> {
    const tls = next.tls;
    if (tlsServers.length === 0 || tls === undefined) return () => undefined;
    const opts = await loadTlsFiles(tls, deps.baseDir);
    return () => {
      for (const s of tlsServers) s.setSecureContext(opts);
      log.info({ certFile: tls.certFile }, 'TLS certificate reloaded');
    };
  }

  return {
    name: 'card-bridge',
    cards,
    listeners: bound,
    sessions,
    get bufferedBytes() {
      return budget.usedBytes;
    },
    start,
    async reload(next: CardBridgeConfig) {
      (await prepareReload(next))();
    },
    prepareReload,
    close(options: CloseOptions = {}) {
      return lifecycle.close(() => doClose(options.graceMs ?? DEFAULT_GRACE_MS));
    },
  };
}
