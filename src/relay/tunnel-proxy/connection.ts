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
 */
import { randomUUID } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { Logger } from '../../core/log.ts';
import { errorSpec, type ErrorCode } from '../../core/errors.ts';
import { FaultBoundary } from '../../core/fault.ts';
import type { TunnelProxyConfig } from '../config.ts';
import { WsLink, type Link } from '../links.ts';
import { MessageSplitter } from '../protocol/framing.ts';
import { errorResponse, successResponse } from '../protocol/jsonrpc.ts';
import { CONTROL_ADDRESS, encodeFrame } from '../protocol/slip.ts';
import { decodeTunnelProxyRequest, tunnelProxyIntrospect, type TunnelProxyError, type TunnelProxyRequest } from '../protocol/tunnel-proxy-api.ts';
import type { Registry } from './registry.ts';
import { ServerLeg } from './server-leg.ts';
import { ClientLeg } from './client-leg.ts';

/** What a tunnel-proxy connection needs from its service. */
export interface TpContext {
  readonly config: TunnelProxyConfig;
  /** Incomplete JSON held before registration, and the largest control message of a server (relay limit). */
  readonly maxMessageBytes: number;
  /** The largest WebSocket message once registered (relay limits.tunnelBufferBytes). */
  readonly tunnelBufferBytes: number;
  readonly closeFlushMs: number;
  readonly log: Logger;
  readonly registry: Registry;
  /** The link is gone: drop the connection and release its admission slot. */
  forget(conn: TpConnection): void;
}

export type TpRole = 'none' | 'server' | 'client' | 'closed';

let nextConnectionId = 1;

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
  leg: ServerLeg | ClientLeg | undefined;
  /** Bytes received from / sent to this connection (JSON included). */
  rxBytes = 0;
  txBytes = 0;
  readonly boundary: FaultBoundary;
  readonly #ctx: TpContext;
  /** The JSON reader before registration; dropped once registered (idle clients stay small). */
  #splitter: MessageSplitter | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** After RegisterServer: every JSON line goes out as a SLIP frame on address 0. */
  #slip = false;
  #log: Logger | undefined;

  constructor(
    readonly link: Link,
    ctx: TpContext,
  ) {
    this.#ctx = ctx;
    this.#splitter = new MessageSplitter(ctx.maxMessageBytes);
    this.boundary = new FaultBoundary(
      () => this.log,
      () => this.fail('CORE_INTERNAL'),
      () => link.destroy(),
    );
    link.attach({
      data: (chunk, binary) => this.#onData(chunk, binary),
      end: () => this.#onEnd(),
      close: () => this.linkClosed(),
      drain: () => undefined,
      fault: this.boundary.catch,
    });
    this.#timer = setTimeout(() => this.boundary.run(() => this.fail('RELAY_TP_INACTIVE_TIMEOUT')), ctx.config.timeouts.inactiveMs);
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
      const frame = encodeFrame(CONTROL_ADDRESS, Buffer.from(text));
      this.txBytes += frame.length;
      this.link.sendData(frame);
    } else {
      this.txBytes += Buffer.byteLength(text);
      this.link.sendText(text);
    }
  }

  /** Closes with a catalogue reason after flushing; optionally answers a request with the code's error text. */
  fail(code: ErrorCode, answer?: { id: number; text?: string }): void {
    if (this.role === 'closed') return;
    const spec = errorSpec(code);
    if (answer !== undefined) this.sendJson(errorResponse(answer.id, answer.text ?? spec.jsonRpcText ?? spec.summary));
    const level = code === 'RELAY_SHUTDOWN' || code === 'RELAY_TP_SERVER_GONE' ? 'debug' : 'info';
    this.log[level]({ code, role: this.role }, spec.close?.reason ?? spec.summary);
    this.#leave();
    this.link.finish(spec.close);
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
    const leg = this.leg;
    this.role = 'closed';
    leg?.gone();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #onEnd(): void {
    // Before registration a peer that stops sending has left.
    if (this.role === 'none') {
      this.#leave();
      this.link.finish();
    }
  }

  #onData(chunk: Buffer, binary: boolean): void {
    if (this.role !== 'none') return;
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
    for (const message of messages) {
      if (this.role !== 'none') break;
      this.#handle(message);
    }
    // Bytes that followed a registration in the same read belong to the new role's data path.
    const role = this.role as TpRole;
    if (role === 'server' || role === 'client') {
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
    const { registry, config } = this.#ctx;
    const allow = config.allowServerUuids;
    if (allow.length > 0 && !allow.includes(uuid)) return this.answerAndClose(id, reply('TunnelProxyErrorForbiddenCall'), 'RELAY_TP_SERVER_NOT_ALLOWED');
    if (registry.servers.has(uuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_ALREADY_REGISTERED');
    if (registry.clients.has(uuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_UUID_CROSS_REGISTRATION');
    if (registry.servers.size >= config.limits.maxServers) return this.fail('RELAY_TP_LIMIT_SERVERS', { id });
    if (registry.serversFrom(this.link.remoteAddress) >= config.limits.maxServersPerIp) return this.fail('RELAY_TP_LIMIT_SERVERS_PER_IP', { id });
    this.#clearTimer();
    // The answer is the last plain JSON on this link; everything after it is SLIP, in both directions.
    this.sendJson(successResponse(id, reply('TunnelProxyErrorNoError')));
    this.#slip = true;
    this.role = 'server';
    this.#raiseMessageLimit();
    if (this.link instanceof WsLink) this.link.sendBinaryOnly();
    const leg = new ServerLeg(this, uuid, name, this.#ctx);
    this.leg = leg;
    registry.addServer(leg);
    this.log.info({ serverUuid: uuid, serverName: name }, 'tunnel-proxy server registered');
  }

  #registerClient(id: number, name: string, clientUuid: string | null, serverUuid: string | null): void {
    const reply = (error: TunnelProxyError) => ({ tunnelProxyError: error });
    if (serverUuid === null || clientUuid === null) return this.sendJson(successResponse(id, reply('TunnelProxyErrorInvalidUuid')));
    const { registry, config } = this.#ctx;
    if (registry.clients.has(clientUuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_ALREADY_REGISTERED');
    if (registry.servers.has(clientUuid)) return this.answerAndClose(id, reply('TunnelProxyErrorAlreadyRegistered'), 'RELAY_TP_UUID_CROSS_REGISTRATION');
    const server = registry.servers.get(serverUuid);
    if (server === undefined) return this.answerAndClose(id, reply('TunnelProxyErrorServerNotFound'), 'RELAY_TP_SERVER_NOT_FOUND');
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

  /** Once registered, WebSocket messages may be as large as the relay's tunnel buffer. */
  #raiseMessageLimit(): void {
    if (this.link instanceof WsLink) this.link.setMaxMessageBytes(this.#ctx.tunnelBufferBytes);
  }
}
