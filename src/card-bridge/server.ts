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
import type { Logger } from '../core/log.ts';
import type { CloseOptions, Service, ServiceState } from '../core/lifecycle.ts';
import { Admission, describeAddress, listen, stopListening } from '../core/net.ts';
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
  const rawSockets = new Set<Socket>();
  const servers: NetServer[] = [];
  const apis: HttpApi[] = [];
  const bound: BoundCardListener[] = [];
  const admission = new Admission(config.limits);
  const gone = new Set<() => void>();
  let preferred: readonly string[] = [];
  let state: ServiceState = 'idle';
  let closing: Promise<void> | undefined;

  const exec: ExecuteContext = { cards, log, preferred: () => preferred };

  function onSocket(socket: Socket): void {
    const remote = socket.remoteAddress ?? 'unknown';
    if (state !== 'running') return refuse(socket, new GatewayError('CORE_SHUTTING_DOWN'));
    const slot = admission.admit(remote);
    if (!slot.ok) return refuse(socket, new GatewayError(slot.code));
    const session = new LineSession(socket, {
      config,
      exec,
      log,
      closed: (s) => {
        slot.release();
        sessions.delete(s);
        if (sessions.size === 0) for (const cb of gone) cb();
      },
    });
    sessions.add(session);
  }

  function refuse(socket: Socket, err: GatewayError): void {
    log.warn({ code: err.code, remote: socket.remoteAddress }, 'connection refused');
    socket.on('error', () => undefined);
    // Refused (connection limits, shutting down): one `C089` (busy) answer line, then close.
    socket.end(`>:${errorSpec('CARD_QUEUE_FULL').lineResult!}\n@@\n`);
    setTimeout(() => socket.destroy(), config.timeouts.closeFlushMs).unref();
  }

  async function start(): Promise<void> {
    if (state !== 'idle') throw new GatewayError('CORE_INTERNAL', 'card bridge started twice');
    state = 'starting';
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
          // Admission only sees sockets that finished their handshake: cap the ones still in it too (node
          // destroys connections past this at accept).
          server.maxConnections = config.limits.maxConnections;
          // With a listener, Node no longer destroys the failed socket itself (handshake timeout included).
          server.on('tlsClientError', (err: Error, tlsSocket: Socket) => {
            log.debug({ err: err.message }, 'tls handshake failed');
            tlsSocket.destroy();
          });
        }
        server.on('connection', (raw: Socket) => {
          rawSockets.add(raw);
          raw.once('close', () => rawSockets.delete(raw));
        });
        const port = await listen(server, { host: l.host, port: l.port }, `card bridge ${l.kind} listener`);
        servers.push(server);
        bound.push({ kind: l.kind, port, url: `${l.kind}://${describeAddress({ host: l.host, port })}` });
      }
      if (config.cloudfoxyApi.enabled) {
        const api = createCloudFoxyApi(cards, { token: config.cloudfoxyApi.token!, log, startedAt: Date.now(), maxConnections: config.limits.maxConnections });
        const port = await api.listen(config.cloudfoxyApi.host, config.cloudfoxyApi.port);
        apis.push(api);
        bound.push({ kind: 'cloudfoxy-api', port, url: `http://${describeAddress({ host: config.cloudfoxyApi.host, port })}/api/v1/` });
      }
      if (config.foxyproxyApi.enabled) {
        const api = createFoxyproxyApi(exec, {
          token: config.foxyproxyApi.token!,
          log,
          maxConnections: config.limits.maxConnections,
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
      state = 'closed';
      throw err;
    }
    state = 'running';
    log.info({ listeners: bound.map((b) => b.url), readers: cards.readers().length }, 'card bridge listening');
  }

  async function doClose(graceMs: number): Promise<void> {
    state = 'closing';
    // server.close() only calls back once every connection is gone, so drain them before waiting on it.
    const stopped = Promise.all(servers.map(stopListening));
    for (const s of sessions) s.drain();
    const allGone = new Promise<void>((resolve) => {
      if (sessions.size === 0) resolve();
      else gone.add(resolve);
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      allGone,
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          for (const s of sessions) s.destroy();
          resolve();
        }, graceMs);
      }),
    ]);
    clearTimeout(timer);
    await allGone;
    for (const raw of rawSockets) raw.destroy();
    await stopped;
    await Promise.allSettled(apis.map((a) => a.close(graceMs)));
    await cards.close();
    state = 'closed';
    log.info('card bridge stopped');
  }

  return {
    name: 'card-bridge',
    cards,
    listeners: bound,
    sessions,
    start,
    close(options: CloseOptions = {}) {
      if (state === 'idle' || state === 'closed') {
        state = 'closed';
        return closing ?? Promise.resolve();
      }
      closing ??= doClose(options.graceMs ?? 0);
      return closing;
    },
  };
}
