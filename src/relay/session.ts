/**
 * One relay client from connect to tunnel: the only place a socket (a Link) meets the protocol.
 *
 * Phases, each with its own deadline:
 *   handshake      Hello / Introspect / Authenticate; inactive timeout, re-armed by every chunk
 *   authenticating the authenticator runs; authentication timeout (→ AuthenticationErrorTimeout) and
 *                  the JSON-RPC timeout (→ `Command timed out`)
 *   waiting        authenticated, alone; alone timeout; any byte from the client closes it
 *   tunnel         handed to a Tunnel (tunnel.ts), which owns the link from then on
 * Every error is answered (where the protocol has an answer), then the link is flushed and closed with
 * the catalogue's reason. Authentication and the rendezvous offer after it share one deadline
 * (`jsonRpcMs`): a rendezvous that stalls or fails closes the client, never leaves it without a timer.
 * Backpressure before the tunnel: while more than `limits.maxUnreadAnswerBytes` of answers wait to be read,
 * the client is not read (its requests wait); a deadline that passes meanwhile drops it
 * (RELAY_UNREAD_ANSWERS).
 * Every entry point (link events, timers, promise continuations) runs inside the session's fault
 * boundary: a bug closes this client with CORE_INTERNAL and nothing else.
 */
import { randomUUID } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { Logger } from '../core/log.ts';
import { errorSpec, type ErrorCode } from '../core/errors.ts';
import { FaultBoundary, asError } from '../core/fault.ts';
import type { FailureBackoff } from '../core/backoff.ts';
import type { RelayConfig } from './config.ts';
import type { Link } from './links.ts';
import { MessageSplitter } from './protocol/framing.ts';
import { decodeRequest, errorResponse, successResponse } from './protocol/jsonrpc.ts';
import { introspect, type AuthenticationError } from './protocol/api.ts';
import type { Authenticator, AuthResult } from './authenticators/types.ts';
import type { OfferResult, Rendezvous, RendezvousKey } from './rendezvous.ts';
import type { ForwardResult } from './cluster/forward.ts';
import type { MovedClient } from './cluster/handoff.ts';
import { sameUuid } from './uuid.ts';
import { relayAuthChannel, type RelayAuthEvent } from '../core/events.ts';

export type SessionState = 'handshake' | 'authenticating' | 'waiting' | 'pairing' | 'tunnel' | 'closed';

/** What a session needs from its server. */
export interface SessionContext {
  readonly config: RelayConfig;
  readonly authenticator: Authenticator;
  readonly rendezvous: Rendezvous<Session>;
  readonly backoff: FailureBackoff;
  readonly log: Logger;
  /** Called with two sessions whose (token, nonce) matched; the tunnel takes both links over. */
  establish(first: Session, second: Session, key: RendezvousKey): void;
  /** The link is gone; drop the session from the server's registry. */
  forget(session: Session): void;
  /**
   * Claims a partner waiting on another node (a `paired-remote` offer) from that node, over a forward
   * stream (cluster/forward.ts). Rejects when the node cannot be reached or is not one of ours.
   */
  claimRemote(session: Session, offer: Extract<OfferResult<Session>, { kind: 'paired-remote' }>): Promise<ForwardResult>;
  /** Runs the tunnel between this session and the forward stream to its partner's node (`first`: its partner waited). */
  establishRemote(session: Session, forwarded: Extract<ForwardResult, { ok: true }>, address: string, key: RendezvousKey): void;
  /**
   * This session left after its offer paired it with a partner on another node (the partner's entry is
   * this node's tunnel lease now): tells that node, which closes the partner as a local pair closes it
   * (RELAY_PARTNER_CLOSED). Rejects when the node cannot be reached.
   */
  dropRemote(session: Session, offer: Extract<OfferResult<Session>, { kind: 'paired-remote' }>): Promise<void>;
  /**
   * `serve --workers`: moves this client (its socket and what it said) to the worker where its partner
   * waits (cluster/handoff.ts) instead of forwarding. True when it went: this session is over here, its
   * tunnel is the other worker's. False (nothing changed) when it cannot move: it is forwarded.
   */
  handOff?(session: Session, offer: Extract<OfferResult<Session>, { kind: 'paired-remote' }>, requestId: number, attempt: number): boolean;
}

/** How often a client is offered again when the partner it paired with on another node had just left. */
const MAX_REMOTE_RETRIES = 3;

let nextSessionId = 1;

export class Session {
  readonly id = nextSessionId++;
  /** When the client connected (kept when it moves to another worker). */
  connectedAt = Date.now();
  state: SessionState = 'handshake';
  name = '';
  uuid = '';
  userName = '';
  /** Relayed bytes received from this client, and every byte sent to it (nymea's rx/txDataCount). */
  rxBytes = 0;
  txBytes = 0;
  /** Per-connection id shown by the monitor, a uuid in braces as nymea shows it. */
  connectionId = `{${randomUUID()}}`;
  key: RendezvousKey | undefined;
  #log: Logger | undefined;

  readonly #ctx: SessionContext;
  readonly #splitter: MessageSplitter;
  #timer: NodeJS.Timeout | undefined;
  #timerCode: ErrorCode | undefined;
  #auth: AbortController | undefined;
  /** An Authenticate is being decided and its outcome not yet published (metrics count the real answer). */
  #authOpen = false;
  /**
   * Before the tunnel: more than `limits.maxUnreadAnswerBytes` of answers wait to be read by the client. Its
   * link is paused and the requests already read wait in `#held` until the last answer sent is flushed.
   */
  #readerBehind = false;
  #held: Buffer[] = [];
  /** Fault isolation for this connection (see the file header). */
  readonly boundary: FaultBoundary;

  constructor(
    readonly link: Link,
    ctx: SessionContext,
  ) {
    this.#ctx = ctx;
    this.#splitter = new MessageSplitter(ctx.config.limits.maxMessageBytes);
    this.boundary = new FaultBoundary(
      () => this.log,
      () => this.fail('CORE_INTERNAL'),
      () => link.destroy(),
    );
    link.attach({
      data: (chunk, binary) => this.#onData(chunk, binary),
      end: () => this.#onPeerEnd(),
      close: () => this.linkClosed(),
      drain: () => undefined,
      fault: this.boundary.catch,
    });
    this.#arm(ctx.config.timeouts.inactiveMs, 'RELAY_INACTIVE_TIMEOUT');
  }

  /** A child logger for this connection, made on first use (most connections never log). */
  get log(): Logger {
    return (this.#log ??= this.#ctx.log.child({
      session: this.id,
      transport: this.link.kind,
      remote: this.link.remoteAddress,
    }));
  }

  /** The link is gone (called by the link's owner: this session, or the tunnel once it took over). */
  linkClosed(): void {
    if (this.state !== 'closed' && this.state !== 'tunnel' && this.state !== 'pairing') this.#leave();
    this.#ctx.forget(this);
  }

  /** Logs a failed rendezvous call made on this client's behalf (a store we depend on; not the client's fault). */
  readonly #rendezvousFailed = (err: unknown): void => {
    this.log.error({ err, code: 'RELAY_RENDEZVOUS_FAILED' }, 'rendezvous call failed');
  };

  get authenticated(): boolean {
    return this.state === 'waiting' || this.state === 'pairing' || this.state === 'tunnel';
  }

  /** Sends a JSON-RPC line (response or notification), counting its bytes. */
  sendText(text: string, onFlushed?: () => void): void {
    const bytes = Buffer.byteLength(text);
    this.txBytes += bytes;
    // Answers can be much larger than their requests (Introspect: ~2 KiB for 40 bytes): past the limit,
    // stop reading this client until what it was sent so far is flushed (writes flush in order).
    const preTunnel = this.state === 'handshake' || this.state === 'authenticating' || this.state === 'waiting';
    if (!preTunnel || this.#readerBehind || this.link.pendingBytes + bytes <= this.#ctx.config.limits.maxUnreadAnswerBytes) {
      this.link.sendText(text, onFlushed);
      return;
    }
    this.#readerBehind = true;
    this.link.pause();
    this.link.sendText(text, () => {
      onFlushed?.();
      this.boundary.run(() => this.#readerCaughtUp());
    });
  }

  /** The client read its answers: handle the requests held meanwhile, then read again. */
  #readerCaughtUp(): void {
    if (!this.#readerBehind) return;
    this.#readerBehind = false;
    const held = this.#held;
    this.#held = [];
    this.#process(held);
    if (!this.#readerBehind && (this.state === 'handshake' || this.state === 'authenticating' || this.state === 'waiting')) this.link.resume();
  }

  /**
   * Closes this client with a catalogue reason after flushing what is pending. Optionally answers a
   * request first with the code's JSON-RPC text (`answerId`).
   */
  fail(code: ErrorCode, answer?: { id: number; text?: string }): void {
    if (this.state === 'closed') return;
    // A phase deadline passed while the client was not reading its answers: nothing more to send it.
    if (this.#readerBehind && (code === 'RELAY_INACTIVE_TIMEOUT' || code === 'RELAY_COMMAND_TIMEOUT' || code === 'RELAY_ALONE_TIMEOUT')) return this.#drop('RELAY_UNREAD_ANSWERS');
    this.#answered(code);
    const spec = errorSpec(code);
    if (answer !== undefined)
      this.sendText(errorResponse(answer.id, answer.text ?? spec.jsonRpcText ?? spec.summary));
    const level = code === 'RELAY_SHUTDOWN' || code === 'RELAY_PARTNER_CLOSED' ? 'debug' : 'info';
    this.log[level]({ code, state: this.state }, spec.close?.reason ?? spec.summary);
    this.#leave();
    this.link.finish(spec.close);
  }

  /** Stops everything of the handshake phases; the tunnel takes over the link. */
  enterPairing(): void {
    this.#clearTimer();
    this.state = 'pairing';
    if (this.#readerBehind) {
      this.#readerBehind = false;
      this.link.resume();
    }
  }

  #leave(): void {
    const was = this.state;
    this.state = 'closed';
    this.#clearTimer();
    this.#auth?.abort();
    if (was === 'waiting' && this.key !== undefined)
      this.#ctx.rendezvous.withdraw(this.key, this).catch(this.#rendezvousFailed);
  }

  #onPeerEnd(): void {
    // Before a tunnel, a client that stops sending has left: close our side too.
    if (this.state === 'tunnel' || this.state === 'pairing') return;
    if (this.state !== 'closed') {
      this.#leave();
      this.link.finish();
    }
  }

  /** Starts the phase deadline `code`; re-arming the running one only refreshes it (cheap per chunk). */
  #arm(ms: number, code: ErrorCode): void {
    if (this.#timer !== undefined && this.#timerCode === code) {
      this.#timer.refresh();
      return;
    }
    this.#clearTimer();
    this.#timerCode = code;
    this.#timer = setTimeout(() => this.boundary.run(() => this.fail(code)), ms);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerCode = undefined;
  }

  #onData(chunk: Buffer, binary: boolean): void {
    if (this.state === 'closed' || this.state === 'tunnel' || this.state === 'pairing') return;
    if (binary) return this.fail('RELAY_BINARY_NOT_EXPECTED');
    // Qt's QWebSocket refuses a text frame that is not UTF-8 (close 1007) before nymea sees it; inside a
    // tunnel we relay bytes exactly (FIX), and on streams the JSON parser judges the bytes.
    if ((this.link.kind === 'ws' || this.link.kind === 'wss') && !isUtf8(chunk)) return this.fail('RELAY_WS_INVALID_UTF8');
    if (this.state === 'waiting') return this.fail('RELAY_DATA_BEFORE_TUNNEL');
    if (this.state === 'handshake') this.#arm(this.#ctx.config.timeouts.inactiveMs, 'RELAY_INACTIVE_TIMEOUT');
    let messages: Buffer[];
    try {
      messages = this.#splitter.pushBytes(chunk);
    } catch {
      return this.fail('RELAY_MESSAGE_TOO_LARGE');
    }
    this.#process(messages);
  }

  /**
   * Handles whole messages in order; while the client is behind on reading its answers (sendText) the
   * rest wait in `#held` (at most what one read brought: reading is paused).
   */
  #process(messages: Buffer[]): void {
    for (let i = 0; i < messages.length; i++) {
      if (this.#readerBehind) {
        this.#held.push(...messages.slice(i));
        return;
      }
      // While the authenticator runs the client is not authenticated yet: like nymea, answer its other
      // requests at once. Once authenticated, anything it sends is data before the tunnel.
      if (this.state === 'handshake' || this.state === 'authenticating') this.#handle(messages[i]!);
      else if (this.state === 'waiting') return this.fail('RELAY_DATA_BEFORE_TUNNEL');
      else return;
    }
  }

  /** Closes this client at once, nothing flushed (for a client that does not read what it is sent). */
  #drop(code: ErrorCode): void {
    if (this.state === 'closed') return;
    this.#answered(code);
    this.log.info({ code, state: this.state }, errorSpec(code).close?.reason ?? errorSpec(code).summary);
    this.#leave();
    this.link.destroy();
  }

  #handle(message: Uint8Array): void {
    const decoded = decodeRequest(message);
    if (!decoded.ok) {
      const { id, error, text } = decoded.failure;
      return this.fail(error.code, { id, text });
    }
    const { id, method, params } = decoded.request;
    switch (method) {
      case 'RemoteProxy.Hello': {
        const h = this.#ctx.config.hello;
        this.sendText(
          successResponse(id, {
            apiVersion: h.apiVersion,
            name: h.name,
            server: h.server,
            version: h.version,
          }),
        );
        return;
      }
      case 'RemoteProxy.Introspect':
        this.sendText(successResponse(id, introspect()));
        return;
      case 'Authentication.Authenticate':
        // A second Authenticate while the first is still being decided counts as data, as after it.
        if (this.state === 'authenticating') return this.fail('RELAY_DATA_BEFORE_TUNNEL');
        this.#authenticate(id, params);
        return;
    }
  }

  #authenticate(id: number, params: Readonly<Record<string, string>>): void {
    const ip = this.link.remoteAddress;
    if (this.#ctx.backoff.blocked(ip)) {
      this.#publishAuth('RELAY_LIMIT_AUTH_BACKOFF');
      return this.fail('RELAY_LIMIT_AUTH_BACKOFF', { id });
    }
    this.state = 'authenticating';
    this.#authOpen = true;
    this.name = params.name ?? '';
    this.uuid = params.uuid ?? '';
    const token = params.token ?? '';
    const nonce = params.nonce ?? '';
    const { authenticationMs, jsonRpcMs } = this.#ctx.config.timeouts;
    const abort = new AbortController();
    this.#auth = abort;
    let settled = false;
    const settle = (result: AuthResult, timedOut = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(authTimer);
      // Aborting costs a DOMException with a stack: only a timed-out authenticator needs telling.
      if (timedOut) abort.abort();
      this.#auth = undefined;
      if (this.state !== 'authenticating') return;
      this.#afterAuthentication(id, { token, nonce }, result);
    };
    const authTimer = setTimeout(
      () => this.boundary.run(() => settle({ error: 'AuthenticationErrorTimeout' }, true)),
      authenticationMs,
    );
    // One deadline for the whole answer to Authenticate: the authenticator and the rendezvous offer after it.
    this.#clearTimer();
    this.#timerCode = 'RELAY_COMMAND_TIMEOUT';
    this.#timer = setTimeout(
      () =>
        this.boundary.run(() => {
          settled = true;
          clearTimeout(authTimer);
          abort.abort();
          this.fail('RELAY_COMMAND_TIMEOUT', { id });
        }),
      jsonRpcMs,
    );
    let pending: Promise<AuthResult>;
    try {
      pending = this.#ctx.authenticator.authenticate(
        { uuid: this.uuid, name: this.name, token, nonce, remoteAddress: ip },
        abort.signal,
      );
    } catch (err) {
      // An authenticator that throws instead of rejecting is treated the same way.
      pending = Promise.reject(asError(err));
    }
    pending
      .then(
        (result) => settle(result),
        (err: unknown) => {
          this.log.warn({ err, authenticator: this.#ctx.authenticator.kind }, 'authenticator failed');
          settle({ error: 'AuthenticationErrorProxyError' });
        },
      )
      .catch(this.boundary.catch);
  }

  #afterAuthentication(id: number, key: RendezvousKey, result: AuthResult): void {
    // Published with the answer the client gets, not the authenticator's verdict: a failed rendezvous
    // after a good token is a ProxyError (Redis away), and a refusal without an answer is its code.
    const reply = this.#replier(id);
    if (result.error !== 'AuthenticationErrorNoError') {
      this.#ctx.backoff.fail(this.link.remoteAddress);
      this.log.warn({ authenticationError: result.error }, 'authentication failed');
      reply(result.error);
      return this.fail('RELAY_AUTHENTICATION_FAILED');
    }
    this.userName = result.user ?? '';
    this.key = key;
    this.#offer(id, key, reply, 0);
  }

  /** Answers the Authenticate request `id` (and publishes its outcome once). */
  #replier(id: number): (error: AuthenticationError) => void {
    return (error) => {
      this.#answered(error);
      this.sendText(successResponse(id, { authenticationError: error }));
    };
  }

  /**
   * This client moved here from another worker after its Authenticate (cluster/handoff.ts): the key's
   * tunnel is this worker's now. Claims the partner waiting here (`ref`) and pairs as a local pair does,
   * answering the Authenticate; a partner that left (or a client sent back, `ref` '') means offering
   * again. The Authenticate deadline starts afresh.
   */
  resumeMoved(client: MovedClient, ref: string): void {
    this.name = client.name;
    this.uuid = client.uuid;
    this.userName = client.userName;
    this.connectionId = client.connectionId;
    this.connectedAt = client.connectedAt;
    const id = client.requestId;
    const key: RendezvousKey = { token: client.token, nonce: client.nonce };
    this.key = key;
    this.state = 'authenticating';
    this.#authOpen = true;
    this.#clearTimer();
    this.#timerCode = 'RELAY_COMMAND_TIMEOUT';
    this.#timer = setTimeout(() => this.boundary.run(() => this.fail('RELAY_COMMAND_TIMEOUT', { id })), this.#ctx.config.timeouts.jsonRpcMs);
    const reply = this.#replier(id);
    const partner = ref === '' ? undefined : this.#ctx.rendezvous.claimRemote?.(ref);
    if (partner !== undefined && partner.state === 'waiting' && !partner.link.closed)
      return this.#afterOffer(id, key, { kind: 'paired', partner }, reply, client.attempt);
    if (partner !== undefined) partner.fail('RELAY_PARTNER_CLOSED');
    this.#offerAgain(id, key, reply, client.attempt, () => {
      this.log.warn({ code: 'RELAY_FORWARD_FAILED' }, 'the partner left while this client moved to it; given up');
    });
  }

  /**
   * The partner this client was paired with had left: give the key back and offer again, at most
   * MAX_REMOTE_RETRIES times; past that, `givenUp` logs and the client gets ProxyError.
   */
  #offerAgain(id: number, key: RendezvousKey, reply: (error: AuthenticationError) => void, attempt: number, givenUp: () => void): void {
    const rv = this.#ctx.rendezvous;
    if (attempt >= MAX_REMOTE_RETRIES) {
      rv.release(key).catch(this.#rendezvousFailed);
      this.#clearTimer();
      givenUp();
      reply('AuthenticationErrorProxyError');
      return this.fail('RELAY_FORWARD_FAILED');
    }
    rv.release(key).then(
      () => this.boundary.run(() => {
        if (this.state === 'authenticating') this.#offer(id, key, reply, attempt + 1);
      }),
      (err: unknown) => this.boundary.run(() => {
        this.#rendezvousFailed(err);
        if (this.state !== 'authenticating') return;
        reply('AuthenticationErrorProxyError');
        this.fail('RELAY_RENDEZVOUS_FAILED');
      }),
    );
  }

  /** This client went to another worker (handOff): nothing of it is left here but its closing link. */
  #movedAway(): void {
    this.state = 'closed';
    this.#clearTimer();
    this.#authOpen = false;
    this.link.destroy();
  }

  /** Offers this client to the rendezvous table (again, `attempt` > 0, after a remote partner had left). */
  #offer(id: number, key: RendezvousKey, reply: (error: AuthenticationError) => void, attempt: number): void {
    const rv = this.#ctx.rendezvous;
    let offered: Promise<OfferResult<Session>>;
    try {
      offered = rv.offer(key, this);
    } catch (err) {
      offered = Promise.reject(asError(err));
    }
    offered.then(
      (offer) => this.boundary.run(() => this.#afterOffer(id, key, offer, reply, attempt)),
      (err: unknown) =>
        this.boundary.run(() => {
          this.#rendezvousFailed(err);
          if (this.state !== 'authenticating') return;
          reply('AuthenticationErrorProxyError');
          this.fail('RELAY_RENDEZVOUS_FAILED');
        }),
    );
  }

  #afterOffer(
    id: number,
    key: RendezvousKey,
    offer: OfferResult<Session>,
    reply: (error: AuthenticationError) => void,
    attempt: number,
  ): void {
    const rv = this.#ctx.rendezvous;
    if (this.state !== 'authenticating') {
      // The client left (or its deadline passed) while the offer was on its way: undo it.
      if (offer.kind === 'waiting') rv.withdraw(key, this).catch(this.#rendezvousFailed);
      if (offer.kind === 'paired') {
        rv.release(key).catch(this.#rendezvousFailed);
        offer.partner.fail('RELAY_PARTNER_CLOSED');
      }
      // The partner on the other node left the table with this offer: without word it would wait there,
      // unfindable, until its alone timeout. Its node closes it as a local partner is closed.
      if (offer.kind === 'paired-remote') {
        rv.release(key).catch(this.#rendezvousFailed);
        this.#ctx.dropRemote(this, offer).catch((err: unknown) => {
          this.log.warn({ err: asError(err).message, code: 'RELAY_FORWARD_FAILED', partnerNode: offer.node }, 'could not tell the partner node that this client left');
        });
      }
      return;
    }
    // The forward handshake still runs under the Authenticate deadline.
    if (offer.kind === 'paired-remote') return this.#pairRemote(id, key, offer, reply, attempt);
    this.#clearTimer();
    switch (offer.kind) {
      case 'tunnel-exists':
        return this.fail('RELAY_TUNNEL_EXISTS');
      case 'too-many-waiting':
        return this.fail('RELAY_LIMIT_WAITING_PER_TOKEN', { id });
      case 'partner-elsewhere':
        // The partner waits on another node and this node cannot reach it (yet): a clear refusal.
        this.log.info({ partnerNode: offer.node }, 'partner waits on another node; refused');
        reply('AuthenticationErrorProxyError');
        return this.fail('RELAY_PARTNER_ON_OTHER_NODE');
      case 'waiting':
        reply('AuthenticationErrorNoError');
        this.state = 'waiting';
        // The child logger is made on first use: not for a debug line nobody reads (memory and setup rate).
        if (this.#ctx.log.isLevelEnabled('debug')) this.log.debug('authenticated, waiting for partner');
        if (this.#hasPendingInput()) return this.fail('RELAY_DATA_BEFORE_TUNNEL');
        this.#arm(this.#ctx.config.timeouts.aloneMs, 'RELAY_ALONE_TIMEOUT');
        return;
      case 'paired': {
        const partner = offer.partner;
        if (sameUuid(partner.uuid, this.uuid)) {
          // As nymea: the second client is closed before its reply is written; the first too.
          rv.release(key).catch(this.#rendezvousFailed);
          const code = key.nonce === '' ? 'RELAY_DUPLICATE_UUID' : 'RELAY_CLIENT_LOOP';
          partner.fail(code);
          return this.fail(code);
        }
        reply('AuthenticationErrorNoError');
        if (this.#hasPendingInput()) {
          rv.release(key).catch(this.#rendezvousFailed);
          partner.fail('RELAY_PARTNER_CLOSED');
          return this.fail('RELAY_DATA_BEFORE_TUNNEL');
        }
        this.#ctx.establish(partner, this, key);
        return;
      }
    }
  }

  /**
   * The partner waits on another node: claim it there over a forward stream, then run the tunnel through
   * it. The key is this node's from the offer on, so every way out releases it. A partner that left in
   * the meantime (`gone`) means offering again; a duplicate uuid is judged by the partner's node (which
   * closes the partner) and closes this client the same way a local pair does.
   */
  #pairRemote(
    id: number,
    key: RendezvousKey,
    offer: Extract<OfferResult<Session>, { kind: 'paired-remote' }>,
    reply: (error: AuthenticationError) => void,
    attempt: number,
  ): void {
    const rv = this.#ctx.rendezvous;
    const giveBack = (): void => {
      rv.release(key).catch(this.#rendezvousFailed);
    };
    // Between workers of one machine a plain client moves to its partner instead (nothing read beyond
    // its Authenticate, no answer held back: anything else goes the forward way, which judges it).
    if (this.#ctx.handOff !== undefined && this.#splitter.bufferedBytes === 0 && this.#held.length === 0 && !this.#readerBehind && this.#ctx.handOff(this, offer, id, attempt)) return this.#movedAway();
    let claimed: Promise<ForwardResult>;
    try {
      claimed = this.#ctx.claimRemote(this, offer);
    } catch (err) {
      claimed = Promise.reject(asError(err));
    }
    claimed.then(
      (r) =>
        this.boundary.run(() => {
          if (this.state !== 'authenticating') {
            if (r.ok) r.socket.destroy();
            giveBack();
            return;
          }
          if (!r.ok) {
            if (r.code === 'gone' && attempt < MAX_REMOTE_RETRIES) return this.#offerAgain(id, key, reply, attempt, () => undefined);
            giveBack();
            this.#clearTimer();
            if (r.code === 'RELAY_DUPLICATE_UUID' || r.code === 'RELAY_CLIENT_LOOP') return this.fail(r.code);
            this.log.warn({ code: 'RELAY_FORWARD_FAILED', partnerNode: offer.node, answer: r.code }, 'the partner node refused the tunnel');
            reply('AuthenticationErrorProxyError');
            return this.fail('RELAY_FORWARD_FAILED');
          }
          this.#clearTimer();
          reply('AuthenticationErrorNoError');
          if (this.#hasPendingInput()) {
            r.socket.destroy();
            giveBack();
            return this.fail('RELAY_DATA_BEFORE_TUNNEL');
          }
          this.#ctx.establishRemote(this, r, offer.address, key);
        }),
      (err: unknown) =>
        this.boundary.run(() => {
          giveBack();
          this.log.warn({ err: asError(err).message, code: 'RELAY_FORWARD_FAILED', partnerNode: offer.node }, 'could not reach the partner node');
          if (this.state !== 'authenticating') return;
          this.#clearTimer();
          reply('AuthenticationErrorProxyError');
          this.fail('RELAY_FORWARD_FAILED');
        }),
    );
  }

  /** The open Authenticate ended with `result` (an AuthenticationError name, or the closing code): published once. */
  #answered(result: string): void {
    if (!this.#authOpen) return;
    this.#authOpen = false;
    this.#publishAuth(result);
  }

  /** Tells observers (metrics) how an Authenticate ended and how long the handshake took. */
  #publishAuth(result: string): void {
    if (!relayAuthChannel.hasSubscribers) return;
    const event: RelayAuthEvent = { result, transport: this.link.kind, seconds: (Date.now() - this.connectedAt) / 1000 };
    relayAuthChannel.publish(event);
  }

  /** True when the client sent anything beyond its Authenticate request (whitespace aside). */
  #hasPendingInput(): boolean {
    if (this.#held.length > 0) return true;
    const rest = this.#splitter.drain();
    return rest.some((b) => !(b === 0x20 || (b >= 0x09 && b <= 0x0d)));
  }
}
