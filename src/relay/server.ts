/**
 * The relay front end: listeners (TCP, TLS, unix, WS, WSS) → admission → Session → Tunnel.
 *
 * `createRelayServer(config, deps)` returns a Service. `close({graceMs})` stops listening, tells every
 * client that is not in a tunnel "Stop server", lets tunnels run for up to `graceMs`, then closes them
 * with the same reason and resolves once every connection is gone.
 *
 * Every raw socket a listener accepts (TLS handshakes, HTTP upgrades and refused connections included) is
 * tracked from accept to close (core/connections.ts), so `close()` always ends, whatever peers do.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { chmod } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { RateLimitedWarnings, type Logger } from '../core/log.ts';
import { Lifecycle, type CloseOptions, type Service } from '../core/lifecycle.ts';
import { Admission, listen, stopListening, describeAddress, type ListenAddress } from '../core/net.ts';
import { ConnectionTracker, DEFAULT_GRACE_MS, refuseConnection } from '../core/connections.ts';
import { FailureBackoff, SharedFailureBackoff } from '../core/backoff.ts';
import { loadTlsFiles, type TlsServerOptions } from '../core/tls.ts';
import { errorSpec, GatewayError } from '../core/errors.ts';
import { asError } from '../core/fault.ts';
import type { RelayConfig, RelayListenerConfig } from './config.ts';
import { StreamLink, WsLink, type Link } from './links.ts';
import { Session, type SessionContext } from './session.ts';
import { Tunnel, type TunnelParty } from './tunnel.ts';
import { MemoryRendezvous, type Rendezvous, type RendezvousKey } from './rendezvous.ts';
import { errorResponse } from './protocol/jsonrpc.ts';
import type { Authenticator } from './authenticators/types.ts';
import { createAuthenticator } from './authenticators/index.ts';
import { createMonitor, type Monitor } from './monitor.ts';
import { loadSplice, describePipeBudget, type SpliceStats } from './splice.ts';
import { createTunnelProxy, type TunnelProxy } from './tunnel-proxy/service.ts';
import { ForwardListener, forwardConnect, forwardLinkKind, type ClaimVerdict, type ForwardClaim, type ForwardSetup, type PartyInfo } from './cluster/forward.ts';
import { RemoteParty } from './cluster/remote-party.ts';
import { closeHandle, isHandoffMessage, socketFromHandle, workerOfNode, type HandoffChannel, type HandoffMessage } from './cluster/handoff.ts';
import type { TpDirectory } from './cluster/tp-directory.ts';
import { sameUuid } from './uuid.ts';

export interface RelayDeps {
  readonly log: Logger;
  /** Directory that relative paths in the config are resolved against (the config file's). */
  readonly baseDir: string;
  /** Overrides the configured authenticator (library use). */
  readonly authenticator?: Authenticator;
  /** Overrides the in-memory rendezvous table (a shared directory). */
  readonly rendezvous?: Rendezvous<Session>;
  /** Forwarding between nodes (with a shared rendezvous table that supports it): listener and key. */
  readonly forward?: ForwardSetup;
  /** The cluster's shared state: the failed-auth back-off counts across nodes and workers (core/backoff.ts). */
  readonly shared?: import('../core/cluster/shared-state.ts').SharedState;
  /** The tunnel-proxy mode's shared directory of servers (with `forward`: the mode spans nodes). */
  readonly tpDirectory?: TpDirectory;
  /** `serve --workers` without Redis: plain clients move to their partner's worker (cluster/handoff.ts). */
  readonly handoff?: HandoffChannel;
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
  /** Clients this worker moved to the worker their partner waited in (cluster/handoff.ts). */
  readonly movedClients: number;
  /** Relayed bytes, both paths. */
  readonly totalTraffic: number;
  /** The part of totalTraffic the kernel relay moved (after syncTraffic()). */
  readonly kernelTraffic: number;
}

export interface RelayServer extends Service {
  readonly listeners: readonly BoundListener[];
  readonly sessions: ReadonlySet<Session>;
  readonly tunnels: ReadonlySet<Tunnel>;
  readonly stats: RelayStats;
  readonly monitorPath: string | undefined;
  /** The tunnel-proxy mode (`[relay.tunnelProxy]`), when enabled. */
  readonly tunnelProxy: TunnelProxy | undefined;
  /** The tunnel-proxy mode's bound listeners. */
  readonly tunnelProxyListeners: readonly BoundListener[];
  /** Where other nodes reach this node's forward listener (set once it listens). */
  readonly forwardAddress: string | undefined;
  /**
   * Handlers of forward claims by kind (`rv`: a waiting relay client); another mode adds its own kind.
   * A handler decides synchronously (see cluster/forward.ts).
   */
  readonly forwardClaims: Map<string, (claim: ForwardClaim) => ClaimVerdict>;
  /** Folds bytes moved by the kernel relay into the session and server counters. */
  syncTraffic(): void;
  /**
   * Running tunnels by data path: `kernel` (held by the kernel relay now) and `js` (the rest: TLS or WS
   * sides, the kernel relay off or unavailable, before `splice.afterBytes`, or refused by the addon: out of memory).
   */
  readonly dataPaths: { kernel: number; js: number };
  /** The kernel relay's own counts (pipes, pipe-less and light tunnels, spin time), when it is in use. */
  kernelStats(): SpliceStats | undefined;
  /**
   * Applies what can change while running (SIGHUP): the TLS certificate of every tls and wss listener
   * (new handshakes use it, open connections keep theirs) and the authenticator's files (token file).
   * @throws GatewayError CORE_TLS_MATERIAL (the old certificate stays in force).
   */
  reload(next: RelayConfig): Promise<void>;
  /**
   * `reload` in two steps: reads and checks every file (certificate, token file) and resolves with the
   * function that applies them (which cannot fail). @throws as `reload`, having applied nothing.
   */
  prepareReload(next: RelayConfig): Promise<() => void>;
}

/**
 * Connections tls, ws and wss listeners hold past the admission limits (in total, and per address) while
 * their handshakes run: those are then refused with the limit's error; further ones are closed at accept.
 */
const ACCEPT_SLACK = 16;

export function createRelayServer(config: RelayConfig, deps: RelayDeps): RelayServer {
  const log = deps.log.child({ frontEnd: 'relay' });
  const sessions = new Set<Session>();
  const tunnels = new Set<Tunnel>();
  const bound: BoundListener[] = [];
  const tpBound: BoundListener[] = [];
  const tpCluster = deps.tpDirectory !== undefined && deps.forward !== undefined ? { directory: deps.tpDirectory, forward: deps.forward, address: () => forwardAddress } : undefined;
  const tunnelProxy = config.tunnelProxy.enabled ? createTunnelProxy(config, { log, cluster: tpCluster }) : undefined;
  const servers: { server: NetServer | HttpServer; wss?: WebSocketServer }[] = [];
  /** Listeners that terminate TLS (tls, wss), for certificate reloads. */
  const tlsServers: import('node:tls').Server[] = [];
  const admission = new Admission(config.limits);
  /**
   * tls, ws and wss listeners: connections counted from their TCP accept, before their TLS handshake or
   * HTTP upgrade reaches `admission`. Without it a stranger that never finished either held a connection no
   * limit counted until the handshake deadline, so one address could take every file the process has. The
   * slack above the admission limits keeps a client past those answered with its limit's error (after its
   * handshake); past these, a connection is closed at accept, unanswered.
   */
  const accepted = new Admission({ maxConnections: config.limits.maxConnections + ACCEPT_SLACK, maxConnectionsPerIp: config.limits.maxConnectionsPerIp + ACCEPT_SLACK });
  const tracker = new ConnectionTracker();
  /** Admission slots of live sessions, released when the session's link is gone. */
  const slots = new Map<Session, () => void>();
  const backoff = deps.shared === undefined
    ? new FailureBackoff(config.limits.maxAuthFailuresPerIp, config.limits.authFailureWindowMs)
    : new SharedFailureBackoff({ maxFailures: config.limits.maxAuthFailuresPerIp, windowMs: config.limits.authFailureWindowMs, shared: deps.shared, scope: 'relay', log });
  const rendezvous: Rendezvous<Session> = deps.rendezvous ?? new MemoryRendezvous<Session>(config.limits.maxWaitingPerToken);
  let authenticator: Authenticator | undefined = deps.authenticator;
  let monitor: Monitor | undefined;
  const lifecycle = new Lifecycle('relay');
  /** Refusals are logged at most once per code every 10 s (a flood must not flood the log). */
  const refusals = new RateLimitedWarnings(log, 10_000, Date.now, 'relay');
  let idleSweep: NodeJS.Timeout | undefined;
  let forwardListener: ForwardListener | undefined;
  let forwardAddress: string | undefined;
  const forwardClaims = new Map<string, (claim: ForwardClaim) => ClaimVerdict>();
  const stats = { totalClientCount: 0, totalTunnelCount: 0, movedClients: 0, totalTraffic: 0, kernelTraffic: 0 };
  let notificationId = 0;
  const { highWater, closeFlushMs } = { highWater: config.limits.tunnelBufferBytes, closeFlushMs: config.timeouts.closeFlushMs };

  const tunnelCtx = {
    rendezvous,
    log,
    halfCloseMs: config.timeouts.halfCloseMs,
    closeFlushMs,
    nextNotificationId: () => notificationId++,
    countTraffic: (n: number, kernel?: boolean) => {
      stats.totalTraffic += n;
      if (kernel === true) stats.kernelTraffic += n;
    },
    closed: (t: Tunnel) => {
      tunnels.delete(t);
    },
    splice: config.splice.enabled ? loadSplice() : undefined,
    spliceAfterBytes: config.splice.afterBytes,
    tunnelBufferBytes: config.limits.tunnelBufferBytes,
  };

  const sessionCtx = (): SessionContext => ({
    config,
    authenticator: authenticator!,
    rendezvous,
    backoff,
    log,
    establish(first: Session, second: Session, key: RendezvousKey) {
      startTunnel(first, second, key);
    },
    claimRemote(s, offer) {
      const f = deps.forward;
      if (f === undefined) return Promise.reject(new Error('this node has no cluster key to forward with'));
      return forwardConnect(offer.address, f.key, { kind: 'rv', ref: offer.ref, party: partyInfo(s) }, f.handshakeMs, f.tls, trackClaim);
    },
    dropRemote(s, offer) {
      const f = deps.forward;
      if (f === undefined) return Promise.resolve();
      return forwardConnect(offer.address, f.key, { kind: 'rvleft', ref: offer.ref, party: partyInfo(s) }, f.handshakeMs, f.tls, trackClaim).then((r) => {
        if (r.ok) r.socket.destroy();
      });
    },
    establishRemote(s, forwarded, address, key) {
      claims.delete(forwarded.socket);
      const link = new StreamLink(forwardLinkKind(deps.forward, address), forwarded.socket, highWater, closeFlushMs);
      // The partner waited: it is the tunnel's first side, as in a local pair.
      startTunnel(new RemoteParty(link, forwarded.party), s, key);
    },
    ...(deps.handoff === undefined ? {} : { handOff: handOff(deps.handoff) }),
    forget(s: Session) {
      sessions.delete(s);
      slots.get(s)?.();
      slots.delete(s);
    },
  });
  let ctx: SessionContext | undefined;

  function startTunnel(first: TunnelParty, second: TunnelParty, key: RendezvousKey): void {
    const t = new Tunnel(first, second, key, tunnelCtx);
    tunnels.add(t);
    stats.totalTunnelCount++;
    t.start();
  }

  /** Outgoing forward streams still in their handshake (not a tunnel yet): shutdown ends them at once. */
  const claims = new Set<Socket>();
  /** A claim's outgoing stream is one of our connections from its first moment. */
  function trackClaim(socket: Socket): void {
    tracker.add(socket);
    claims.add(socket);
    socket.once('close', () => claims.delete(socket));
  }

  /** Gives a key's tunnel back to the table (a call to a store we depend on: a failure is logged). */
  function releaseKey(key: RendezvousKey): void {
    rendezvous.release(key).catch((err: unknown) => log.error({ err, code: 'RELAY_RENDEZVOUS_FAILED' }, 'rendezvous call failed'));
  }

  /** Sends a client to the worker its partner waits in (see cluster/handoff.ts); false when it cannot go. */
  function handOff(channel: HandoffChannel): NonNullable<SessionContext['handOff']> {
    return (s, offer, requestId, attempt) => {
      const to = workerOfNode(offer.node);
      const kind = s.link.kind;
      const key = s.key;
      if (to === undefined || (kind !== 'tcp' && kind !== 'ws') || key === undefined || rendezvous.tunnelMovedOut === undefined) return false;
      const handle = s.link.detachForMove?.();
      if (handle === undefined) return false;
      const slot = rendezvous.tunnelMovedOut(key);
      const client = { kind, remote: s.link.remoteAddress, name: s.name, uuid: s.uuid, userName: s.userName, connectionId: s.connectionId, connectedAt: s.connectedAt, requestId, token: key.token, nonce: key.nonce, attempt };
      const message: HandoffMessage = { gh: 'handoff', to, slot: slot ?? '', ref: offer.ref, client };
      // The primary never got it: the tunnel is still ours in its table; give the key back.
      const notSent = (err: Error): void => {
        log.warn({ err: err.message, code: 'RELAY_FORWARD_FAILED' }, 'could not move a client to its partner\'s worker');
        rendezvous.tunnelMovedIn?.(key);
        releaseKey(key);
      };
      try {
        channel.send(message, handle, {}, (err) => {
          closeHandle(handle);
          if (err === null) stats.movedClients++;
          else notSent(err);
        });
      } catch (err) {
        closeHandle(handle);
        notSent(asError(err));
      }
      return true;
    };
  }

  /** The first plain WebSocket listener's server: its options make a moved client's WebSocket. */
  let plainWss: WebSocketServer | undefined;

  /**
   * A client moved here from another worker (or came back, `bounced`): its socket gets a link and a
   * session again, which answers its Authenticate and pairs it (Session.resumeMoved).
   */
  function adoptMoved(m: HandoffMessage, handle: unknown): void {
    const c = m.client;
    const key = { token: c.token, nonce: c.nonce };
    rendezvous.tunnelMovedIn?.(key);
    const socket = socketFromHandle(handle);
    tracker.add(socket);
    let link: Link;
    if (c.kind === 'tcp') link = new StreamLink('tcp', socket, highWater, closeFlushMs);
    else {
      const wss = plainWss;
      if (wss === undefined) {
        socket.destroy();
        releaseKey(key);
        return;
      }
      const o = wss.options as typeof wss.options & { maxBufferedChunks?: number; maxFragments?: number };
      // As ws's own server makes one after an upgrade (a server-side WebSocket: no address).
      const ws = new (WebSocket as unknown as new (a: null, p: undefined, o: object) => WebSocket & { setSocket(socket: Socket, head: Buffer, opts: object): void })(null, undefined, o);
      ws.setSocket(socket, Buffer.alloc(0), { allowSynchronousEvents: o.allowSynchronousEvents, maxBufferedChunks: o.maxBufferedChunks, maxFragments: o.maxFragments, maxPayload: o.maxPayload, skipUTF8Validation: o.skipUTF8Validation });
      const wsLink = new WsLink('ws', ws, c.remote, highWater, closeFlushMs);
      wsLink.setMaxMessageBytes(config.limits.maxMessageBytes, errorSpec('RELAY_MESSAGE_TOO_LARGE').close);
      link = wsLink;
    }
    // Counted against this worker's per-address limit where there is room (it was admitted by its first).
    const slot = admission.admit(link.remoteAddress);
    const session = new Session(link, ctx!);
    sessions.add(session);
    slots.set(session, slot.ok ? slot.release : () => undefined);
    // A client that is gone by now is found so by its pairing (its partner is closed as in a local pair).
    if (!lifecycle.running) {
      releaseKey(key);
      session.fail('RELAY_SHUTDOWN');
      return;
    }
    session.boundary.run(() => session.resumeMoved(c, m.bounced === true ? '' : m.ref));
  }

  const onHandoff = (m: unknown, handle?: unknown): void => {
    if (!isHandoffMessage(m)) return;
    if (handle === undefined || handle === null) return;
    // After the promise continuations of everything that came before on the channel: the primary's
    // answer that made the partner wait can arrive in the same read as this client, and the partner is
    // only in this worker's list of waiting parties once that answer's continuation ran.
    setImmediate(() => {
      try {
        adoptMoved(m, handle);
      } catch (err) {
        log.error({ err, code: 'CORE_INTERNAL' }, 'adopting a moved client failed; connection closed');
        closeHandle(handle);
        releaseKey({ token: m.client.token, nonce: m.client.nonce });
      }
    });
  };

  function partyInfo(s: Session): PartyInfo {
    return { name: s.name, uuid: s.uuid, connectionId: s.connectionId, remote: s.link.remoteAddress, user: s.userName, node: deps.forward?.node ?? '' };
  }

  /**
   * Another node paired with a client waiting here: hand it over (it leaves the table here), or say it is
   * gone. A duplicate uuid closes our client as a local pair would, and the claimer closes its own.
   */
  function claimWaiting(claim: ForwardClaim): ClaimVerdict {
    const a = rendezvous.claimRemote?.(claim.ref);
    if (a === undefined || a.state !== 'waiting' || a.link.closed || a.key === undefined || !lifecycle.running) return { ok: false, code: 'gone' };
    const key = a.key;
    if (sameUuid(a.uuid, claim.party.uuid)) {
      const code = key.nonce === '' ? 'RELAY_DUPLICATE_UUID' : 'RELAY_CLIENT_LOOP';
      a.fail(code);
      return { ok: false, code };
    }
    return {
      ok: true,
      party: partyInfo(a),
      adopt: (socket: Socket) => {
        const listenAddr = deps.forward?.listen;
        const link = new StreamLink(forwardLinkKind(deps.forward, listenAddr !== undefined && 'path' in listenAddr ? listenAddr.path : ''), socket, highWater, closeFlushMs);
        startTunnel(a, new RemoteParty(link, claim.party), key);
      },
    };
  }
  forwardClaims.set('rv', claimWaiting);
  // The claimer's client left after pairing with ours in the table: ours is closed, as in a local pair.
  forwardClaims.set('rvleft', (claim) => {
    const a = rendezvous.claimRemote?.(claim.ref);
    if (a !== undefined && a.state === 'waiting') a.fail('RELAY_PARTNER_CLOSED');
    return { ok: false, code: 'gone' };
  });
  if (tunnelProxy !== undefined) forwardClaims.set('tp', (claim) => tunnelProxy.claimForward(claim));

  /** Admits a connection or refuses it with the limit's own error; returns the release function. */
  function admit(remote: string): (() => void) | GatewayError {
    if (!lifecycle.running) return new GatewayError('CORE_SHUTTING_DOWN');
    const slot = admission.admit(remote);
    if (!slot.ok) return new GatewayError(slot.code);
    return slot.release;
  }

  function adopt(link: Link, release: () => void): void {
    stats.totalClientCount++;
    let session: Session;
    try {
      session = new Session(link, ctx!);
    } catch (err) {
      release();
      log.error({ err, code: 'CORE_INTERNAL' }, 'session setup failed; connection closed');
      link.destroy();
      return;
    }
    sessions.add(session);
    slots.set(session, release);
    // A link that closed during setup never calls back: release now.
    if (link.closed) ctx!.forget(session);
  }

  function refuseStream(socket: Socket, err: GatewayError): void {
    refusals.warn(err.code, { code: err.code, remote: socket.remoteAddress }, 'connection refused');
    const text = err.spec.jsonRpcText;
    refuseConnection(socket, text === undefined ? undefined : errorResponse(-1, text), closeFlushMs);
  }

  /** A tls, ws or wss listener's raw connection: counted until it closes, or closed at once past the limits. */
  function gateAccept(raw: Socket): void {
    const slot = accepted.admit(raw.remoteAddress ?? 'unknown');
    if (!slot.ok) {
      refusals.warn(`accept:${slot.code}`, { code: slot.code, remote: raw.remoteAddress, phase: 'accept' }, 'connection closed at accept: too many connections before their handshakes');
      raw.on('error', () => undefined);
      raw.destroy();
      return;
    }
    raw.once('close', slot.release);
  }

  /** Where an admitted link goes: the legacy relay's session, or the tunnel-proxy mode. */
  type Adopt = (link: Link, release: () => void) => void;

  function onStream(kind: 'tcp' | 'tls' | 'unix', socket: Socket, adoptLink: Adopt = adopt, linkHighWater = highWater): void {
    const remote = kind === 'unix' ? 'unix' : (socket.remoteAddress ?? 'unknown');
    const release = admit(remote);
    if (release instanceof GatewayError) return refuseStream(socket, release);
    adoptLink(new StreamLink(kind, socket, linkHighWater, closeFlushMs), release);
  }

  function onUpgrade(kind: 'ws' | 'wss', wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer, adoptLink: Adopt = adopt, linkHighWater = highWater): void {
    const remote = req.socket.remoteAddress ?? 'unknown';
    const release = admit(remote);
    if (release instanceof GatewayError) {
      refusals.warn(release.code, { code: release.code, remote }, 'websocket refused');
      const status = release.spec.httpStatus;
      const body = release.spec.close?.reason ?? release.message;
      refuseConnection(
        socket,
        `HTTP/1.1 ${status} ${status === 429 ? 'Too Many Requests' : 'Service Unavailable'}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Gatehouse-Error: ${release.code}\r\n\r\n${body}`,
        closeFlushMs,
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      req.socket.setNoDelay(true);
      const link = new WsLink(kind, ws, remote, linkHighWater, closeFlushMs);
      // Before the tunnel, a message may be no larger than a JSON-RPC message on a stream.
      link.setMaxMessageBytes(config.limits.maxMessageBytes, errorSpec('RELAY_MESSAGE_TOO_LARGE').close);
      adoptLink(link, release);
    });
  }

  /** Runs a listener's per-connection callback; a throw destroys that socket only (fault isolation). */
  function isolated<A extends unknown[]>(socketOf: (...args: A) => Duplex, fn: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      try {
        fn(...args);
      } catch (err) {
        log.error({ err, code: 'CORE_INTERNAL' }, 'connection setup failed; connection closed');
        socketOf(...args).destroy();
      }
    };
  }

  async function startListener(l: RelayListenerConfig, tlsOpts: TlsServerOptions | undefined, tp?: TunnelProxy): Promise<void> {
    const adoptLink: Adopt = tp === undefined ? adopt : (link, release) => tp.adopt(link, release);
    // Tunnel-proxy legs check their own limits; the link's mark only decides when it reports a drain.
    const tpLimits = config.tunnelProxy.limits;
    const hw = tp === undefined ? highWater : Math.min(tpLimits.clientBufferBytes, tpLimits.serverBufferBytes);
    let server: NetServer | HttpServer;
    let wss: WebSocketServer | undefined;
    const handshakeTimeout = config.timeouts.inactiveMs;
    switch (l.kind) {
      case 'tcp':
      case 'unix':
        server = createNetServer({ allowHalfOpen: true, noDelay: true }, isolated((s: Socket) => s, (s: Socket) => onStream(l.kind, s, adoptLink, hw)));
        break;
      case 'tls':
        server = createTlsServer({ ...tlsOpts, allowHalfOpen: true, handshakeTimeout }, isolated((s: TLSSocket) => s, (s: TLSSocket) => onStream('tls', s, adoptLink, hw)));
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
        // Until the upgrade the handshake phase's deadline holds. Node checks headersTimeout only every
        // connectionsCheckingInterval (30 s by default) and never for a connection that sends nothing: an
        // idle-socket timeout as well (ws clears it when it takes the socket over).
        const httpTimeouts = { headersTimeout: handshakeTimeout, requestTimeout: handshakeTimeout, connectionsCheckingInterval: Math.min(1000, handshakeTimeout) };
        const http = l.kind === 'ws' ? createHttpServer(httpTimeouts, handler) : createHttpsServer({ ...tlsOpts, handshakeTimeout, ...httpTimeouts }, handler);
        http.timeout = handshakeTimeout;
        // skipUTF8Validation: relayed text frames pass byte for byte (nymea mangles invalid UTF-8), and the
        // JSON-RPC phase treats any bytes as input to its own parser.
        // maxPayload is the pre-tunnel limit; a tunnel raises it per connection (WsLink.setMaxMessageBytes).
        const w = new WebSocketServer({ noServer: true, maxPayload: config.limits.maxMessageBytes, perMessageDeflate: false, clientTracking: false, skipUTF8Validation: true });
        wss = w;
        const kind = l.kind;
        if (kind === 'ws' && tp === undefined) plainWss ??= w;
        http.on(
          'upgrade',
          isolated(
            (_req: IncomingMessage, socket: Duplex, _head: Buffer) => socket,
            (req: IncomingMessage, socket: Duplex, head: Buffer) => onUpgrade(kind, w, req, socket, head, adoptLink, hw),
          ),
        );
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
    tracker.watch(server);
    if (l.kind !== 'tcp' && l.kind !== 'unix') server.on('connection', gateAccept);
    const port = await listen(server, addr, `relay ${tp === undefined ? '' : 'tunnel-proxy '}${l.kind} listener`);
    if (l.kind === 'unix' && 'path' in addr) await chmod(addr.path, parseInt(l.mode, 8));
    servers.push(wss === undefined ? { server } : { server, wss });
    if (l.kind === 'tls' || l.kind === 'wss') tlsServers.push(server as import('node:tls').Server);
    const hostPart = 'path' in addr ? addr.path : describeAddress({ host: addr.host, port });
    (tp === undefined ? bound : tpBound).push({ kind: l.kind, port, url: l.kind === 'unix' ? `unix:${hostPart}` : `${l.kind}://${hostPart}` });
  }

  const relay: RelayServer = {
    name: 'relay',
    listeners: bound,
    tunnelProxy,
    tunnelProxyListeners: tpBound,
    get forwardAddress() {
      return forwardAddress;
    },
    forwardClaims,
    sessions,
    tunnels,
    stats,
    syncTraffic() {
      for (const t of tunnels) t.sync();
    },
    get monitorPath() {
      return monitor?.path;
    },
    get dataPaths() {
      let kernel = 0;
      for (const t of tunnels) if (t.spliced) kernel++;
      return { kernel, js: tunnels.size - kernel };
    },
    kernelStats: () => tunnelCtx.splice?.stats(),
    async reload(next: RelayConfig) {
      (await relay.prepareReload(next))();
    },
    async prepareReload(next: RelayConfig) {
      // Every file is read and checked before anything is applied: a bad token file leaves the
      // certificate in force too, and a failure in another front end leaves both.
      const tls = tlsServers.length > 0 && next.tls !== undefined ? { files: next.tls, opts: await loadTlsFiles(next.tls, deps.baseDir) } : undefined;
      const a = authenticator;
      const applyTokens = a?.prepareReload !== undefined ? await a.prepareReload() : (await a?.reload?.(), () => undefined);
      return () => {
        applyTokens();
        if (tls !== undefined) {
          for (const s of tlsServers) s.setSecureContext(tls.opts);
          log.info({ certFile: tls.files.certFile, listeners: tlsServers.length }, 'TLS certificate reloaded');
        }
      };
    },

    async start() {
      lifecycle.beginStart();
      try {
        authenticator ??= await createAuthenticator(config.authenticator, { log, baseDir: deps.baseDir });
        ctx = sessionCtx();
        tunnelCtx.splice?.setSpinMicros(config.splice.spinMicros);
        const tpListeners = tunnelProxy === undefined ? [] : config.tunnelProxy.listeners;
        const needsTls = [...config.listeners, ...tpListeners].some((l) => l.kind === 'tls' || l.kind === 'wss');
        const tlsOpts =
          needsTls && config.tls !== undefined
            ? await loadTlsFiles(config.tls, deps.baseDir)
            : undefined;
        for (const l of config.listeners) await startListener(l, tlsOpts);
        for (const l of tpListeners) await startListener(l, tlsOpts, tunnelProxy);
        if (deps.forward !== undefined && rendezvous.advertise !== undefined) {
          const f = deps.forward;
          forwardListener = new ForwardListener({
            key: f.key,
            handshakeMs: f.handshakeMs,
            log,
            tls: f.tls,
            onClaim: (claim) => {
              const handler = forwardClaims.get(claim.kind);
              return handler === undefined ? { ok: false, code: 'unknown_kind' } : handler(claim);
            },
          });
          tracker.watch(forwardListener.server);
          forwardAddress = f.advertise(await forwardListener.listen(f.listen));
          rendezvous.advertise(forwardAddress);
        }
        deps.handoff?.on('message', onHandoff);
        if (config.monitor.enabled) {
          monitor = createMonitor(relay, config, { log, path: resolvePath(deps.baseDir, config.monitor.path) });
          await monitor.start();
        }
      } catch (err) {
        await Promise.all(servers.map((s) => stopListening(s.server)));
        await forwardListener?.close();
        await authenticator?.close?.();
        lifecycle.failed();
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
      lifecycle.started();
      log.info({ listeners: bound.map((b) => b.url), authenticator: authenticator.kind, kernelRelay: tunnelCtx.splice !== undefined, ...(tunnelCtx.splice === undefined ? {} : { kernelPipeBudget: describePipeBudget(tunnelCtx.splice.budgetPages) }), ...(tunnelProxy === undefined ? {} : { tunnelProxyListeners: tpBound.map((b) => b.url) }), ...(forwardAddress === undefined ? {} : { forwardAddress }) }, 'relay listening');
    },

    close(options: CloseOptions = {}) {
      return lifecycle.close(async () => {
        const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
        if (idleSweep !== undefined) clearInterval(idleSweep);
        const listenersClosed = Promise.all(servers.map((s) => stopListening(s.server)));
        await forwardListener?.close();
        deps.handoff?.off('message', onHandoff);
        await monitor?.close();
        const stop = errorSpec('RELAY_SHUTDOWN').close;
        const kernelHeld = new Set<TunnelParty>();
        // Clients not in a tunnel are told at once (with the claims they have in flight on other nodes);
        // tunnels may run for the grace period.
        for (const c of claims) c.destroy();
        for (const s of sessions) if (s.state !== 'tunnel' && s.state !== 'pairing') s.fail('RELAY_SHUTDOWN');
        tunnelProxy?.tellUnregistered();
        await tracker.drain({
          graceMs,
          flushMs: closeFlushMs,
          finish: () => {
            for (const t of tunnels) t.close(stop);
            tunnelProxy?.finishAll();
            for (const s of sessions) if (s.state !== 'tunnel' && s.state !== 'pairing') s.fail('RELAY_SHUTDOWN');
          },
          // A spliced tunnel's sockets go when the kernel relay confirms its stop (the final event destroys
          // them): closed earlier, its thread could splice an fd number Node has closed and reused. Wait up
          // to closeFlushMs more; sockets still unconfirmed then are leaked (never closed), not destroyed.
          beforeDestroy: async () => {
            const held = () => [...tunnels].filter((t) => t.spliced);
            for (let until = Date.now() + closeFlushMs; held().length > 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
            const stuck = held();
            if (stuck.length === 0) return;
            for (const t of stuck) {
              for (const s of [t.a, t.b]) {
                kernelHeld.add(s);
                if (s.link instanceof StreamLink) tracker.forget(s.link.rawSocket);
              }
            }
            log.error({ tunnels: stuck.map((t) => t.id), waitedMs: closeFlushMs }, 'kernel relay did not confirm stopping these tunnels; their sockets are left open (leaked) rather than closed under its thread');
          },
        });
        for (const s of sessions) if (!kernelHeld.has(s)) s.link.destroy();
        tunnelProxy?.destroyAll();
        // A listener's close callback waits for all its connections, leaked ones included: the listening
        // sockets are closed already, so with a leak we do not wait for it.
        if (kernelHeld.size === 0) await listenersClosed;
        await authenticator?.close?.();
        log.info('relay closed');
      });
    },
  };
  return relay;
}
