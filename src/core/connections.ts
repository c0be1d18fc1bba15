/**
 * Every socket ends: the connection tracker and the drain every front end's `close()` runs, and the one
 * way to refuse a connection.
 *
 * The tracker holds each raw socket a listener accepted (TLS handshakes and HTTP upgrades included) from
 * accept to close, so shutdown can always destroy what is left and `close()` cannot hang on a peer that
 * keeps its side open. It knows nothing of protocols: a front end says how to tell its peers (the
 * `finish` step of `drain`), the tracker makes sure the sockets go.
 */
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Admission } from './net.ts';

/** Anything socket-like we can end and destroy (net.Socket, tls.TLSSocket, an upgrade's Duplex). */
export type EndableSocket = Duplex;

/** Shutdown grace when `close()` is called without one (the config's `shutdown.graceMs` is passed normally). */
export const DEFAULT_GRACE_MS = 10_000;

export class ConnectionTracker {
  readonly #sockets = new Set<EndableSocket>();
  readonly #waiters = new Set<() => void>();

  /** Open sockets right now. */
  get size(): number {
    return this.#sockets.size;
  }

  /** Tracks every connection `server` accepts (its raw TCP/unix socket, before any TLS or HTTP). */
  watch(server: Server): void {
    server.on('connection', (socket: EndableSocket) => this.add(socket));
  }

  /** Tracks one socket until it closes. Idempotent. */
  add(socket: EndableSocket): void {
    if (this.#sockets.has(socket) || socket.destroyed) return;
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      if (this.#sockets.size === 0) for (const w of [...this.#waiters]) w();
    });
  }

  /**
   * Stops tracking a socket that must not be destroyed (a leak chosen over corruption, e.g. a socket whose
   * fd a native thread may still use): `whenEmpty` no longer waits for it, `destroyAll` skips it.
   */
  forget(socket: EndableSocket): void {
    if (!this.#sockets.delete(socket)) return;
    if (this.#sockets.size === 0) for (const w of [...this.#waiters]) w();
  }

  /** Destroys every tracked socket now. */
  destroyAll(): void {
    for (const s of this.#sockets) s.destroy();
  }

  /** Resolves once no socket is open, or after `timeoutMs` (then false). */
  whenEmpty(timeoutMs = Infinity): Promise<boolean> {
    if (this.#sockets.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (empty: boolean) => {
        this.#waiters.delete(onEmpty);
        if (timer !== undefined) clearTimeout(timer);
        resolve(empty);
      };
      const onEmpty = () => done(true);
      this.#waiters.add(onEmpty);
      if (Number.isFinite(timeoutMs)) timer = setTimeout(() => done(false), Math.max(0, timeoutMs));
    });
  }

  /**
   * The shutdown drain, the same for every front end: wait up to `graceMs` for connections to finish on
   * their own; then `finish()` (tell the remaining peers we are going, flush) and wait up to `flushMs`;
   * then `beforeDestroy()` (bounded by the caller; it may `forget` sockets that must stay open), destroy
   * whatever is left and resolve once every socket has closed.
   * The caller has stopped accepting and told idle peers before calling this.
   */
  async drain(options: { readonly graceMs: number; readonly flushMs: number; readonly finish?: () => void; readonly beforeDestroy?: () => Promise<void> }): Promise<void> {
    if (!(await this.whenEmpty(options.graceMs))) {
      options.finish?.();
      if (!(await this.whenEmpty(options.flushMs))) {
        await options.beforeDestroy?.();
        this.destroyAll();
      }
    }
    await this.whenEmpty();
  }
}

/**
 * Refuses a connection: writes `answer` (the protocol's refusal, if it has one), ends our side, and
 * destroys the socket after `closeFlushMs` whatever the peer does (a peer that keeps its side open must
 * not hold the socket). Errors on the socket are expected here and ignored.
 */
export function refuseConnection(socket: EndableSocket, answer: string | undefined, closeFlushMs: number): void {
  socket.on('error', () => undefined);
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), closeFlushMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  if (answer === undefined) socket.end();
  else socket.end(answer);
}

/**
 * Admits every connection `server` accepts against `admission` (total and per address) before any byte
 * is read: for HTTP listeners, where the protocol has no answer before a request. A refused connection is
 * destroyed at once and reported through `onRefused` (log it at warn); an admitted one holds its slot
 * until it closes.
 */
export function admitConnections(
  server: Server,
  admission: Admission,
  onRefused: (code: 'CORE_LIMIT_CONNECTIONS' | 'CORE_LIMIT_CONNECTIONS_PER_IP', remote: string) => void,
): void {
  // Before the server's own listener, so a refused socket never reaches the TLS or HTTP layer.
  server.prependListener('connection', (socket: Socket) => {
    const remote = socket.remoteAddress ?? 'unknown';
    const slot = admission.admit(remote);
    if (!slot.ok) {
      socket.destroy();
      onRefused(slot.code, remote);
      return;
    }
    socket.once('close', slot.release);
  });
}
