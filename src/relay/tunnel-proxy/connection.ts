/**
 * One tunnel-proxy connection from accept to registration: the JSON-RPC handshake of nymea 1.9+
 * (`RemoteProxy.Hello`/`Introspect`, `TunnelProxy.Ping`, `RegisterServer`, `RegisterClient`), the inactive
 * timeout (from connect, not re-armed by traffic, as nymea 1.13), and the hand-over of the link to a
 * ServerLeg or ClientLeg once registered. The connection stays the link's identity (id, logger, fault
 * boundary, JSON output) for its whole life; the legs own the data path.
 *
 * Every error answers as nymea 1.13 does (`tunnelProxyError` values in a success response, or the
 * JSON-RPC error texts of the legacy relay) and, where nymea closes, closes with its reason. A bug in
 * any handler closes this connection with CORE_INTERNAL (FaultBoundary) and nothing else.
 *
 * In a cluster (`ctx.cluster`, tunnel-proxy/cluster.ts) two registrations wait for it: RegisterServer
 * claims the uuid in the shared directory first, and RegisterClient for a server on another node is
 * answered once that node accepted the client (the client then gets a RemoteClientLeg). While one waits,
 * the uuid counts as taken here, the link is paused and what still arrives is held (at most
 * `tunnelBufferBytes`) for the new role's data path, as bytes that follow a registration are; the inactive
 * timer keeps running, so the wait is bounded.
 */
import { randomUUID } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { Logger } from '../../core/log.ts';
import { errorSpec, type ErrorCode } from '../../core/errors.ts';
import { FaultBoundary } from '../../core/fault.ts';
import type { TunnelProxyConfig } from '../config.ts';
import { StreamLink, WsLink, type Link, type LinkHandlers } from '../links.ts';
import { asError } from '../../core/fault.ts';
import type { PartyInfo } from '../cluster/forward.ts';
import { MessageSplitter } from '../protocol/framing.ts';
import { errorResponse, successResponse } from '../protocol/jsonrpc.ts';
import { CONTROL_ADDRESS, encodeFrame } from '../protocol/slip.ts';
import { decodeTunnelProxyRequest, tunnelProxyIntrospect, type TunnelProxyError, type TunnelProxyRequest } from '../protocol/tunnel-proxy-api.ts';
import type { Registry } from './registry.ts';
import { ServerLeg } from './server-leg.ts';
import { ClientLeg } from './client-leg.ts';
import { RemoteClientLeg } from './remote-client-leg.ts';
import type { TpCluster } from './cluster.ts';

/** What a tunnel-proxy connection needs from its service. */
export interface TpContext {
  readonly config: TunnelProxyConfig;
  /** Incomplete JSON held before registration, and the largest control message of a server (relay limit). */
  readonly maxMessageBytes: number;
  /** The largest WebSocket message once registered (relay limits.tunnelBufferBytes). */
  readonly tunnelBufferBytes: number;
  /** Answers a peer may leave unread before its registration (relay limits.maxUnreadAnswerBytes). */
  readonly maxUnreadAnswerBytes: number;
  readonly closeFlushMs: number;
  readonly log: Logger;
  readonly registry: Registry;
  /** The link is gone: drop the connection and release its admission slot. */
  forget(conn: TpConnection): void;
  /** Present when servers and clients may sit on different nodes. */
  readonly cluster?: TpCluster | undefined;
}

export type TpRole = 'none' | 'server' | 'client' | 'closed';

let nextConnectionId = 1;

/**
 * The link's owner until registration. One small object per connection whose methods live on the
 * prototype, instead of a handler object holding a closure per event (several closures and their
 * context for every connection: what an idle client keeps is what its memory costs).
 */
class HandshakeEvents implements LinkHandlers {
  constructor(private readonly conn: TpConnection) {}
  data(chunk: Buffer, binary: boolean): void {
    this.conn.handshakeData(chunk, binary);
  }
  end(): void {
    this.conn.handshakeEnd();
  }
  close(): void {
    this.conn.linkClosed();
  }
  drain(): void {
    // Nothing waits for a drain before registration.
  }
  fault(err: unknown): void {
    this.conn.boundary.trip(err);
  }
}

/** The inactive timeout (one function for every connection; the connection is the timer's argument). */
function inactiveTimeout(conn: TpConnection): void {
  conn.boundary.run(() => conn.fail('RELAY_TP_INACTIVE_TIMEOUT'));
}

export class TpConnection {
  readonly id = nextConnectionId++;
  readonly connectedAt = Date.now();
  #connectionId: string | undefined;
  /** Per-connection id shown by the monitor, a uuid in braces as nymea shows it (made on first use). */
  get connectionId(): string {
    return (this.#connectionId ??= `{${randomUUID()}}`);
  }
  role: TpRole = 'none';
  /** Set once registered. */
  leg: ServerLeg | ClientLeg | RemoteClientLeg | undefined;
  /** Bytes received from / sent to this connection (JSON included). */
  rxBytes = 0;
  txBytes = 0;
  /** Made on first use (a fault, a timer or a continuation to run): an idle client never needs one. */
  #boundary: FaultBoundary | undefined;
  readonly #ctx: TpContext;
  /** The JSON reader before registration; dropped once registered (idle clients stay small). */
  #splitter: MessageSplitter | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** After RegisterServer: every JSON line goes out as a SLIP frame on address 0. */
  #slip = false;
  #log: Logger | undefined;
  /** A registration waits for the cluster: input is held until it is decided. */
  #busy = false;
  #held: { chunk: Buffer; binary: boolean }[] | undefined;
  #heldBytes = 0;
  #heldEnd = false;
  /**
   * Before registration: an answer sent past the unread limit (see #unreadLimit) has not been flushed yet.
   * While it has not, the peer is behind on reading its answers: it is not read, and the requests of the
   * read that got it there wait in `#behind` (at most one read) until that answer is flushed.
   */
  #flushWatch = false;
  #behind: Buffer[] | undefined;
  #behindEnd = false;

  constructor(
    readonly link: Link,
    ctx: TpContext,
    /** The monitor id, when another node made it (a forwarded client shows its own node's id). */
    connectionId?: string,
  ) {
    this.#ctx = ctx;
    this.#connectionId = connectionId;
    this.#splitter = new MessageSplitter(ctx.maxMessageBytes);
    link.attach(new HandshakeEvents(this));
    this.#timer = setTimeout(inactiveTimeout, ctx.config.timeouts.inactiveMs, this);
  }

  /**
   * This connection's fault boundary: every entry point the event loop calls for it (link events, timers,
   * promise continuations) runs through it. Made on first use; once tripped it stays (later events ignored).
   */
  get boundary(): FaultBoundary {
    return (this.#boundary ??= new FaultBoundary(
      () => this.log,
      () => this.fail('CORE_INTERNAL'),
      () => this.link.destroy(),
    ));
  }

  /** True once a fault closed this connection (without making a boundary to ask). */
  get faulted(): boolean {
    return this.#boundary?.tripped === true;
  }

  get log(): Logger {
    return (this.#log ??= this.#ctx.log.child({ tpConnection: this.id, transport: this.link.kind, remote: this.link.remoteAddress }));
  }

  /** The peer address as nymea reports it in ClientConnected (`""` for a unix socket). */
  get peerAddress(): string {
    return this.link.kind === 'unix' ? '' : this.link.remoteAddress;
  }

  /** Sends one JSON-RPC line: plain before SLIP, a frame on address 0 after. */
  sendJson(text: string): void {
    if (this.#slip) {
      // The server leg queues control output while the connection has not read what it was sent.
      if (this.leg instanceof ServerLeg) return this.leg.sendControl(text);
      const frame = encodeFrame(CONTROL_ADDRESS, Buffer.from(text));
      this.txBytes += frame.length;
      this.link.sendData(frame);
    } else {
      const bytes = Buffer.byteLength(text);
      this.txBytes += bytes;
      // Answers can be much larger than their requests (Introspect): one that takes the unread answers past
      // the limit is watched until it is flushed (writes flush in order), and the peer is not read meanwhile
      // (handshakeData). Not a byte count: on TLS and WebSocket what one read's answers wrote counts as
      // unread until their writes complete, also for a peer that reads.
      if (this.role === 'none' && !this.#flushWatch && this.link.pendingBytes + bytes > this.#unreadLimit()) {
        this.#flushWatch = true;
        this.link.sendText(text, () => this.boundary.run(() => this.#caughtUp()));
        return;
      }
      this.link.sendText(text);
    }
  }

  #unreadLimit(): number {
    return this.#ctx.maxUnreadAnswerBytes;
  }

  /** The watched answer was flushed: the peer reads. Handles what waited, then reads again. */
  #caughtUp(): void {
    this.#flushWatch = false;
    const held = this.#behind;
    if (held === undefined || this.role === 'closed') return;
    this.#behind = undefined;
    this.#handleMessages(held, 0);
    if (this.#behind !== undefined || (this.role as TpRole) === 'closed') return;
    this.link.resume();
    if (this.#behindEnd) {
      this.#behindEnd = false;
      this.handshakeEnd();
    }
  }

  /** Closes with a catalogue reason after flushing; optionally answers a request with the code's error text. */
  fail(code: ErrorCode, answer?: { id: number; text?: string }): void {
    if (this.role === 'closed') return;
    // The deadline passed while the peer did not read its answers: nothing more is worth sending it.
    if (this.#behind !== undefined && code === 'RELAY_TP_INACTIVE_TIMEOUT') return this.drop('RELAY_TP_UNREAD_ANSWERS');
    const spec = errorSpec(code);
    if (answer !== undefined) this.sendJson(errorResponse(answer.id, answer.text ?? spec.jsonRpcText ?? spec.summary));
    const level = code === 'RELAY_SHUTDOWN' || code === 'RELAY_TP_SERVER_GONE' ? 'debug' : 'info';
    this.log[level]({ code, role: this.role }, spec.close?.reason ?? spec.summary);
    this.#leave();
    this.link.finish(spec.close);
  }

  /** Closes with a close decided on another node (a forwarded client's server node): `close` as it sent it. */
  finishWith(close: { code: number; reason: string } | undefined, why: string): void {
    if (this.role === 'closed') return;
    this.log.debug({ role: this.role, close }, why);
    this.#leave();
    this.link.finish(close);
  }

  /** Drops the link at once (a client that stopped reading: its unread data is worthless). */
  drop(code: ErrorCode): void {
    if (this.role === 'closed') return;
    this.log.info({ code, role: this.role }, errorSpec(code).close?.reason ?? errorSpec(code).summary);
    this.#leave();
    this.link.destroy();
  }

  /** The link is gone (its owner, this connection or a leg, calls this once). */
  linkClosed(): void {
    this.#leave();
    this.#ctx.forget(this);
  }

  #leave(): void {
    if (this.role === 'closed') return;
    this.#clearTimer();
    if (this.#busy) {
      // Paused while a registration waited: the close handshake (WebSocket) must be read.
      this.#busy = false;
      this.#held = undefined;
      this.link.resume();
    }
    const leg = this.leg;
    this.role = 'closed';
    leg?.gone();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Before registration: the peer ended its side (HandshakeEvents). */
  handshakeEnd(): void {
    // A registration is waiting: the end belongs to the role it gets.
    if (this.#busy) {
      this.#heldEnd = true;
      return;
    }
    // Requests wait for the peer to read its answers: they are answered first.
    if (this.#behind !== undefined) {
      this.#behindEnd = true;
      return;
    }
    // Before registration a peer that stops sending has left.
    if (this.role === 'none') {
      this.#leave();
      this.link.finish();
    }
  }

  /** Before registration: bytes from the peer (HandshakeEvents); ignored once it has a role. */
  handshakeData(chunk: Buffer, binary: boolean): void {
    if (this.role !== 'none') return;
    if (this.#busy) return this.#hold(chunk, binary);
    this.rxBytes += chunk.length;
    if (binary) return this.fail('RELAY_BINARY_NOT_EXPECTED');
    if ((this.link.kind === 'ws' || this.link.kind === 'wss') && !isUtf8(chunk)) return this.fail('RELAY_WS_INVALID_UTF8');
    const splitter = this.#splitter;
    if (splitter === undefined) return;
    let messages: Buffer[];
    try {
      messages = splitter.pushBytes(chunk);
    } catch {
      return this.fail('RELAY_MESSAGE_TOO_LARGE');
    }
    // Paused while behind, so at most what was already on its way arrives meanwhile: it waits too.
    if (this.#behind !== undefined) {
      this.#behind.push(...messages);
      if (this.#behind.reduce((n, m) => n + m.length, 0) > this.#ctx.tunnelBufferBytes) this.drop('RELAY_TP_UNREAD_ANSWERS');
      return;
    }
    this.#handleMessages(messages, 0);
  }

  /**
   * Handles whole messages from `from` on, in order. While the peer is behind on reading its answers
   * (sendJson) the rest wait in `#behind` and the link is paused.
   */
  #handleMessages(messages: Buffer[], from: number): void {
    for (let i = from; i < messages.length; i++) {
      if (this.role !== 'none' || this.#busy) break;
      if (this.#flushWatch) {
        this.#behind = messages.slice(i);
        this.link.pause();
        return;
      }
      this.#handle(messages[i]!);
    }
    // Bytes that followed a registration in the same read belong to the new role's data path.
    const role = this.role;
    const splitter = this.#splitter;
    if ((role === 'server' || role === 'client') && splitter !== undefined) {
      const rest = splitter.drain();
      this.#splitter = undefined;
      if (rest.length > 0) this.link.handlers.data(rest, false);
    }
  }

  #handle(message: Buffer): void {
    const decoded = decodeTunnelProxyRequest(message);
    if (!decoded.ok) {
      const { id, error, text } = decoded.failure;
      return this.fail(error.code, { id, text });
    }
    const req = decoded.request;
    if (this.answerCommon(req)) return;
    switch (req.method) {
      case 'TunnelProxy.RegisterServer':
        return this.#registerServer(req.id, req.serverName, req.serverUuid);
      case 'TunnelProxy.RegisterClient':
        return this.#registerClient(req.id, req.clientName, req.clientUuid, req.serverUuid);
      case 'TunnelProxy.DisconnectClient':
        // nymea 1.13: only a registered server may; anyone else is answered AlreadyRegistered and closed.
        return this.answerAndClose(req.id, { tunnelProxyError: 'TunnelProxyErrorAlreadyRegistered' }, 'RELAY_TP_ALREADY_REGISTERED');
      default:
        return;
    }
  }

  /** Hello, Introspect and Ping, the same in every role; true when `req` was one of them. */
  answerCommon(req: TunnelProxyRequest): boolean {
    switch (req.method) {
      case 'RemoteProxy.Hello': {
        const h = this.#ctx.config.hello;
        this.sendJson(successResponse(req.id, { apiVersion: h.apiVersion, name: h.name, server: h.server, version: h.version }));
        return true;
      }
      case 'RemoteProxy.Introspect':
        this.sendJson(successResponse(req.id, tunnelProxyIntrospect()));
        return true;
      case 'TunnelProxy.Ping':
        this.sendJson(successResponse(req.id, { timestamp: req.timestamp }));
        return true;
      default:
        return false;
    }
  }

  /** A success response carrying a tunnelProxyError (nymea's way), then a close with `code`'s reason. */
  answerAndClose(id: number, params: Record<string, unknown>, code: ErrorCode): void {
    this.sendJson(successResponse(id, params));
    this.fail(code);
  }

  #registerServer(id: number, name: string, uuid: string | null): void {
    const reply = (error: TunnelProxyError) => ({ slipEnabled: error === 'TunnelProxyErrorNoError', tunnelProxyError: error });
    if (uuid === null) return this.sendJson(successResponse(id, reply('TunnelProxyErrorInvalidUuid')));
    const { registry, config, cluster } = this.#ctx;
    const allow = config.allowServerUuids;
    if (allow.length > 0 && !allow.includes(uuid)) return this.answerAndClose(id, reply('TunnelProxyErrorForbiddenCall'), 'RELAY_TP_SERVER_NOT_ALLOWED');
    if (registry.hasServer(uuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_ALREADY_REGISTERED');
    if (registry.hasClient(uuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_UUID_CROSS_REGISTRATION');
    if (registry.servers.size + registry.pendingServers.size >= config.limits.maxServers) return this.fail('RELAY_TP_LIMIT_SERVERS', { id });
    if (registry.serversFrom(this.link.remoteAddress) >= config.limits.maxServersPerIp) return this.fail('RELAY_TP_LIMIT_SERVERS_PER_IP', { id });
    if (cluster === undefined) return this.#becomeServer(id, name, uuid);
    // The uuid must be this node's in the whole cluster before the server hears NoError.
    registry.pendingServers.add(uuid);
    this.#beginWait();
    cluster.registerServer(uuid).then(
      (r) => {
        registry.pendingServers.delete(uuid);
        if (this.role === 'closed' || this.faulted) {
          if (r.ok) cluster.serverGone(uuid);
          return;
        }
        this.boundary.run(() => {
          if (!r.ok) {
            this.log.info({ code: 'RELAY_TP_ALREADY_REGISTERED', node: r.node }, 'tunnel-proxy server uuid registered on another node');
            return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_ALREADY_REGISTERED');
          }
          this.#becomeServer(id, name, uuid);
          this.#endWait();
        });
      },
      (err: unknown) => {
        registry.pendingServers.delete(uuid);
        this.boundary.run(() => {
          if (this.role === 'closed') return;
          this.log.warn({ code: 'RELAY_TP_DIRECTORY_FAILED', err: asError(err).message }, 'tunnel-proxy server refused: the shared directory cannot be asked');
          this.answerAndClose(id, reply('TunnelProxyErrorInternalServerError'), 'RELAY_TP_DIRECTORY_FAILED');
        });
      },
    );
  }

  #becomeServer(id: number, name: string, uuid: string): void {
    const reply = (error: TunnelProxyError) => ({ slipEnabled: error === 'TunnelProxyErrorNoError', tunnelProxyError: error });
    this.#clearTimer();
    // The answer is the last plain JSON on this link; everything after it is SLIP, in both directions.
    this.sendJson(successResponse(id, reply('TunnelProxyErrorNoError')));
    this.#slip = true;
    this.role = 'server';
    this.#raiseMessageLimit();
    if (this.link instanceof WsLink) this.link.sendBinaryOnly();
    const leg = new ServerLeg(this, uuid, name, this.#ctx);
    this.leg = leg;
    this.#ctx.registry.addServer(leg);
    this.log.info({ serverUuid: uuid, serverName: name }, 'tunnel-proxy server registered');
  }

  #registerClient(id: number, name: string, clientUuid: string | null, serverUuid: string | null): void {
    const reply = (error: TunnelProxyError) => ({ tunnelProxyError: error });
    if (serverUuid === null || clientUuid === null) return this.sendJson(successResponse(id, reply('TunnelProxyErrorInvalidUuid')));
    const { registry, config, cluster } = this.#ctx;
    if (registry.hasClient(clientUuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_ALREADY_REGISTERED');
    if (registry.hasServer(clientUuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_UUID_CROSS_REGISTRATION');
    const server = registry.servers.get(serverUuid);
    if (server === undefined) {
      if (cluster !== undefined && !registry.pendingServers.has(serverUuid)) return this.#forwardClient(id, name, clientUuid, serverUuid, cluster);
      return this.answerAndClose(id, reply('TunnelProxyErrorServerNotFound'), 'RELAY_TP_SERVER_NOT_FOUND');
    }
    if (server.clientCount >= config.limits.maxClientsPerServer) return this.fail('RELAY_TP_LIMIT_CLIENTS_PER_SERVER', { id });
    this.#clearTimer();
    this.role = 'client';
    this.#raiseMessageLimit();
    const leg = new ClientLeg(this, clientUuid, name, server, this.#ctx);
    this.leg = leg;
    registry.addClient(leg);
    // As nymea: the server hears ClientConnected before the client gets its answer.
    server.addClient(leg);
    this.sendJson(successResponse(id, reply('TunnelProxyErrorNoError')));
    leg.start();
  }

  /**
   * A client of a server on another node: claim it there (its node sends the server ClientConnected as it
   * accepts), then answer the client here and relay it ↔ the forward stream. A refusal there is answered
   * as the same refusal here would be.
   */
  #forwardClient(id: number, name: string, clientUuid: string, serverUuid: string, cluster: TpCluster): void {
    const { registry } = this.#ctx;
    registry.pendingClients.add(clientUuid);
    this.#beginWait();
    // This mode has no user: `user` carries the client's transport, for the server node's monitor.
    const party: PartyInfo = { name, uuid: clientUuid, connectionId: this.connectionId, remote: this.peerAddress, user: this.link.kind, node: cluster.node };
    cluster.connectClient(serverUuid, party).then(
      (r) => {
        registry.pendingClients.delete(clientUuid);
        if (this.role === 'closed' || this.faulted) {
          if (r.ok) r.socket.destroy();
          return;
        }
        this.boundary.run(() => {
          if (!r.ok) return this.#refuseClient(id, r.code);
          const stream = new StreamLink(r.streamKind, r.socket, this.#ctx.tunnelBufferBytes, this.#ctx.closeFlushMs);
          this.#clearTimer();
          this.role = 'client';
          this.#raiseMessageLimit();
          const leg = new RemoteClientLeg(this, clientUuid, name, r.server, stream, this.#ctx);
          this.leg = leg;
          registry.addClient(leg);
          this.sendJson(successResponse(id, { tunnelProxyError: 'TunnelProxyErrorNoError' }));
          leg.start();
          this.#endWait();
        });
        if (r.ok && this.role !== 'client') r.socket.destroy();
      },
      (err: unknown) => {
        registry.pendingClients.delete(clientUuid);
        this.boundary.run(() => {
          if (this.role === 'closed') return;
          this.log.error({ err: asError(err), code: 'CORE_INTERNAL' }, 'forwarding a tunnel-proxy client failed');
          this.#refuseClient(id, 'RELAY_TP_SERVER_NOT_FOUND');
        });
      },
    );
  }

  #refuseClient(id: number, code: ErrorCode): void {
    switch (code) {
      case 'RELAY_TP_ALREADY_REGISTERED':
      case 'RELAY_TP_UUID_CROSS_REGISTRATION':
        return this.answerAndClose(id, { tunnelProxyError: 'TunnelProxyErrorAlreadyRegistered' }, code);
      case 'RELAY_TP_LIMIT_CLIENTS_PER_SERVER':
        return this.fail(code, { id });
      default:
        return this.answerAndClose(id, { tunnelProxyError: 'TunnelProxyErrorServerNotFound' }, 'RELAY_TP_SERVER_NOT_FOUND');
    }
  }

  /**
   * Registers a client that connected to another node as a client of `server` here (the far end of a
   * forwarded client: its link is the forward stream, cluster/tp-forward.ts). Its own node answers it.
   */
  adoptRemoteClient(clientUuid: string, name: string, server: ServerLeg): void {
    this.#clearTimer();
    this.#splitter = undefined;
    this.role = 'client';
    const leg = new ClientLeg(this, clientUuid, name, server, this.#ctx);
    this.leg = leg;
    this.#ctx.registry.addClient(leg);
    // The forward handshake left the stream paused; the server may pause it again for backpressure.
    this.link.resume();
    server.addClient(leg);
    leg.start();
  }

  #beginWait(): void {
    this.#busy = true;
    this.link.pause();
  }

  #hold(chunk: Buffer, binary: boolean): void {
    this.#heldBytes += chunk.length;
    if (this.#heldBytes > this.#ctx.tunnelBufferBytes) {
      this.#held = undefined;
      return this.fail('RELAY_MESSAGE_TOO_LARGE');
    }
    (this.#held ??= []).push({ chunk, binary });
  }

  /** The registration is done (role server or client): what arrived meanwhile goes to the new role. */
  #endWait(): void {
    this.#busy = false;
    const rest = this.#splitter?.drain();
    this.#splitter = undefined;
    const held = this.#held ?? [];
    this.#held = undefined;
    this.#heldBytes = 0;
    this.link.resume();
    const h = this.link.handlers;
    if (rest !== undefined && rest.length > 0) h.data(rest, false);
    for (const x of held) {
      if (this.role === 'closed') return;
      h.data(x.chunk, x.binary);
    }
    if (this.#heldEnd && this.role !== 'closed') h.end();
  }

  /** Once registered, WebSocket messages may be as large as the relay's tunnel buffer. */
  #raiseMessageLimit(): void {
    if (this.link instanceof WsLink) this.link.setMaxMessageBytes(this.#ctx.tunnelBufferBytes);
  }
}
