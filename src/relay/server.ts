/**
 * The relay front end: listeners (TCP, TLS, unix, WS, WSS) → admission → Session → Tunnel.
 *
 * `createRelayServer(config, deps)` returns a Service. `close({graceMs})` stops listening, tells every
 * client that is not in a tunnel "Stop server", lets tunnels run for up to `graceMs`, then closes them
 * with the same reason and resolves once every connection is gone.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { chmod } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '../core/log.ts';
import type { CloseOptions, Service, ServiceState } from '../core/lifecycle.ts';
import { Admission, listen, stopListening, describeAddress, type ListenAddress } from '../core/net.ts';
import { loadTlsFiles, type TlsServerOptions } from '../core/tls.ts';
import { errorSpec, GatewayError } from '../core/errors.ts';
import type { RelayConfig, RelayListenerConfig } from './config.ts';
import { StreamLink, WsLink, type Link } from './links.ts';
import { Session, type SessionContext } from './session.ts';
import { Tunnel } from './tunnel.ts';
import { MemoryRendezvous, type Rendezvous, type RendezvousKey } from './rendezvous.ts';
import { AuthBackoff } from './backoff.ts';
import { errorResponse } from './protocol/jsonrpc.ts';
import type { Authenticator } from './authenticators/types.ts';
import { createAuthenticator } from './authenticators/index.ts';
import { createMonitor, type Monitor } from './monitor.ts';
import { loadSplice } from './splice.ts';

export interface RelayDeps {
  readonly log: Logger;
  /** Directory that relative paths in the config are resolved against (the config file's). */
  readonly baseDir: string;
  /** Overrides the configured authenticator (library use). */
  readonly authenticator?: Authenticator;
  /** Overrides the in-memory rendezvous table (a shared directory). */
  readonly rendezvous?: Rendezvous<Session>;
}

/** A bound listener, for logs and the "how to connect" banner. */
export interface BoundListener {
  readonly kind: RelayListenerConfig['kind'];
  readonly url: string;
  readonly port: number;
}

export interface RelayStats {
  readonly totalClientCount: number;
  readonly totalTunnelCount: number;
  readonly totalTraffic: number;
}

export interface RelayServer extends Service {
  readonly listeners: readonly BoundListener[];
  readonly sessions: ReadonlySet<Session>;
  readonly tunnels: ReadonlySet<Tunnel>;
  readonly stats: RelayStats;
  readonly monitorPath: string | undefined;
  /** Folds bytes moved by the kernel relay into the session and server counters. */
  syncTraffic(): void;
}

export function createRelayServer(config: RelayConfig, deps: RelayDeps): RelayServer {
  const log = deps.log.child({ frontEnd: 'relay' });
  const sessions = new Set<Session>();
  const tunnels = new Set<Tunnel>();
  const bound: BoundListener[] = [];
  const servers: { server: NetServer | HttpServer; wss?: WebSocketServer }[] = [];
  const admission = new Admission(config.limits);
  const backoff = new AuthBackoff(config.limits.maxFailedAuthPerIp, config.limits.failedAuthWindowMs);
  const rendezvous = deps.rendezvous ?? new MemoryRendezvous<Session>(config.limits.maxWaitingPerToken);
  let authenticator: Authenticator | undefined = deps.authenticator;
  let monitor: Monitor | undefined;
  let state: ServiceState = 'idle';
  let closing: Promise<void> | undefined;
  let idleSweep: NodeJS.Timeout | undefined;
  const stats = { totalClientCount: 0, totalTunnelCount: 0, totalTraffic: 0 };
  let notificationId = 0;
  const gone = new Set<() => void>();
  const { highWater, closeFlushMs } = { highWater: config.limits.tunnelBufferBytes, closeFlushMs: config.timeouts.closeFlushMs };

  const tunnelCtx = {
    rendezvous,
    log,
    halfCloseMs: config.timeouts.halfCloseMs,
    closeFlushMs,
    nextNotificationId: () => notificationId++,
    countTraffic: (n: number) => {
      stats.totalTraffic += n;
    },
    closed: (t: Tunnel) => {
      tunnels.delete(t);
    },
    splice: config.splice.enabled ? loadSplice() : undefined,
    spliceAfterBytes: config.splice.afterBytes,
  };

  const sessionCtx = (): SessionContext => ({
    config,
    authenticator: authenticator!,
    rendezvous,
    backoff,
    log,
    establish(first: Session, second: Session, key: RendezvousKey) {
      const t = new Tunnel(first, second, key, tunnelCtx);
      tunnels.add(t);
      stats.totalTunnelCount++;
      t.start();
    },
    forget(s: Session) {
      sessions.delete(s);
      if (sessions.size === 0) for (const cb of gone) cb();
    },
  });
  let ctx: SessionContext | undefined;

  /** Admits a connection or refuses it with the limit's own error; returns the release function. */
  function admit(remote: string): (() => void) | GatewayError {
    if (state !== 'running') return new GatewayError('CORE_SHUTTING_DOWN');
    const slot = admission.admit(remote);
    if (!slot.ok) return new GatewayError(slot.code);
    return slot.release;
  }

  function adopt(link: Link, release: () => void): void {
    stats.totalClientCount++;
    const session = new Session(link, ctx!);
    sessions.add(session);
    const prevClose = link.handlers.close;
    link.handlers.close = () => {
      release();
      prevClose();
    };
  }

  function refuseStream(socket: Socket, err: GatewayError): void {
    log.warn({ code: err.code, remote: socket.remoteAddress }, 'connection refused');
    socket.on('error', () => undefined);
    const text = err.spec.jsonRpcText;
    if (text === undefined) socket.end();
    else socket.end(errorResponse(-1, text));
    setTimeout(() => socket.destroy(), closeFlushMs).unref();
  }

  function onStream(kind: 'tcp' | 'tls' | 'unix', socket: Socket): void {
    const remote = kind === 'unix' ? 'unix' : (socket.remoteAddress ?? 'unknown');
    const release = admit(remote);
    if (release instanceof GatewayError) return refuseStream(socket, release);
    adopt(new StreamLink(kind, socket, highWater, closeFlushMs), release);
  }

  function onUpgrade(kind: 'ws' | 'wss', wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const remote = req.socket.remoteAddress ?? 'unknown';
    const release = admit(remote);
    if (release instanceof GatewayError) {
      log.warn({ code: release.code, remote }, 'websocket refused');
      const status = release.spec.httpStatus;
      const body = release.spec.close?.reason ?? release.message;
      socket.on('error', () => undefined);
      socket.end(`HTTP/1.1 ${status} ${status === 429 ? 'Too Many Requests' : 'Service Unavailable'}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Gatehouse-Error: ${release.code}\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      req.socket.setNoDelay(true);
      adopt(new WsLink(kind, ws, remote, highWater, closeFlushMs), release);
    });
  }

  async function startListener(l: RelayListenerConfig, tlsOpts: TlsServerOptions | undefined): Promise<void> {
    let server: NetServer | HttpServer;
    let wss: WebSocketServer | undefined;
    const handshakeTimeout = config.timeouts.inactiveMs;
    switch (l.kind) {
      case 'tcp':
      case 'unix':
        server = createNetServer({ allowHalfOpen: true, noDelay: true }, (s) => onStream(l.kind, s));
        break;
      case 'tls':
        server = createTlsServer({ ...tlsOpts, allowHalfOpen: true, handshakeTimeout }, (s: TLSSocket) => onStream('tls', s));
        // With a listener here Node no longer destroys the socket itself: do it, or a client that never
        // finishes its handshake would hold a connection forever.
        server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
          socket.destroy();
          log.debug({ err: err.message }, 'tls handshake failed');
        });
        break;
      case 'ws':
      case 'wss': {
        const handler = (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
          res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket' }).end('WebSocket upgrade required.\n');
        };
        const http = l.kind === 'ws' ? createHttpServer(handler) : createHttpsServer({ ...tlsOpts, handshakeTimeout }, handler);
        http.headersTimeout = handshakeTimeout;
        http.requestTimeout = handshakeTimeout;
        // skipUTF8Validation: relayed text frames pass byte for byte (nymea mangles invalid UTF-8), and the
        // JSON-RPC phase treats any bytes as input to its own parser.
        const w = new WebSocketServer({ noServer: true, maxPayload: config.limits.tunnelBufferBytes, perMessageDeflate: false, clientTracking: false, skipUTF8Validation: true });
        wss = w;
        const kind = l.kind;
        http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => onUpgrade(kind, w, req, socket, head));
        if (l.kind === 'wss') {
          http.on('tlsClientError', (err: Error, socket: TLSSocket) => {
            socket.destroy();
            log.debug({ err: err.message }, 'tls handshake failed');
          });
        }
        server = http;
        break;
      }
    }
    const addr: ListenAddress = l.kind === 'unix' ? { path: resolvePath(deps.baseDir, l.path) } : { host: l.host, port: l.port };
    // A hard backstop behind the admission limits: the slack lets admission answer the first refused
    // connections with its own error before the kernel-level cap silently drops them.
    server.maxConnections = config.limits.maxConnections + 64;
    const port = await listen(server, addr, `relay ${l.kind} listener`);
    if (l.kind === 'unix' && 'path' in addr) await chmod(addr.path, parseInt(l.mode, 8));
    servers.push(wss === undefined ? { server } : { server, wss });
    const hostPart = 'path' in addr ? addr.path : describeAddress({ host: addr.host, port });
    bound.push({ kind: l.kind, port, url: l.kind === 'unix' ? `unix:${hostPart}` : `${l.kind}://${hostPart}` });
  }

  const relay: RelayServer = {
    name: 'relay',
    listeners: bound,
    sessions,
    tunnels,
    stats,
    syncTraffic() {
      for (const t of tunnels) t.sync();
    },
    get monitorPath() {
      return monitor?.path;
    },

    async start() {
      if (state !== 'idle') throw new Error(`relay server cannot start from state ${state}`);
      state = 'starting';
      try {
        authenticator ??= await createAuthenticator(config.authenticator, { log, baseDir: deps.baseDir });
        ctx = sessionCtx();
        const needsTls = config.listeners.some((l) => l.kind === 'tls' || l.kind === 'wss');
        const tlsOpts =
          needsTls && config.tls !== undefined
            ? await loadTlsFiles(config.tls, deps.baseDir)
            : undefined;
        for (const l of config.listeners) await startListener(l, tlsOpts);
        if (config.monitor.enabled) {
          monitor = createMonitor(relay, config, { log, path: resolvePath(deps.baseDir, config.monitor.path) });
          await monitor.start();
        }
      } catch (err) {
        await Promise.all(servers.map((s) => stopListening(s.server)));
        await authenticator?.close?.();
        state = 'closed';
        throw err;
      }
      if (config.timeouts.tunnelIdleMs > 0) {
        const seen = new WeakMap<Tunnel, { bytes: number; since: number }>();
        const idleMs = config.timeouts.tunnelIdleMs;
        idleSweep = setInterval(() => {
          const now = Date.now();
          for (const t of tunnels) {
            t.sync();
            const last = seen.get(t);
            if (last === undefined || last.bytes !== t.relayedBytes) seen.set(t, { bytes: t.relayedBytes, since: now });
            else if (now - last.since >= idleMs) t.close(errorSpec('RELAY_TUNNEL_IDLE_TIMEOUT').close);
          }
        }, Math.max(50, Math.min(1000, Math.floor(idleMs / 4))));
        idleSweep.unref();
      }
      state = 'running';
      log.info({ listeners: bound.map((b) => b.url), authenticator: authenticator.kind, kernelRelay: tunnelCtx.splice !== undefined }, 'relay listening');
    },

    close(options: CloseOptions = {}) {
      closing ??= (async () => {
        const graceMs = options.graceMs ?? 10_000;
        state = 'closing';
        if (idleSweep !== undefined) clearInterval(idleSweep);
        const listenersClosed = Promise.all(servers.map((s) => stopListening(s.server)));
        await monitor?.close();
        const stop = errorSpec('RELAY_SHUTDOWN').close;
        for (const s of sessions) if (s.state !== 'tunnel' && s.state !== 'pairing') s.fail('RELAY_SHUTDOWN');
        const allGone = () =>
          new Promise<void>((resolve) => {
            if (sessions.size === 0) return resolve();
            gone.add(resolve);
          });
        const timeout = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
        await Promise.race([allGone(), timeout(graceMs)]);
        for (const t of tunnels) t.close(stop);
        await Promise.race([allGone(), timeout(closeFlushMs)]);
        for (const s of sessions) s.link.destroy();
        await allGone();
        for (const { server } of servers) if ('closeAllConnections' in server) server.closeAllConnections();
        await listenersClosed;
        await authenticator?.close?.();
        state = 'closed';
        log.info('relay closed');
      })();
      return closing;
    },
  };
  return relay;
}
