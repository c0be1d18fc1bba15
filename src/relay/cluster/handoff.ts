/**
 * Moving a client between `serve --workers` processes instead of forwarding its bytes.
 *
 * When a client's partner waits in another worker, forwarding (forward.ts) runs the tunnel through both
 * workers: every byte is read and written twice on the machine, so two workers relayed less than one.
 * A plain TCP or WebSocket client can instead be moved: its worker stops reading it between messages
 * (after its Authenticate, before the answer), takes the socket's file descriptor away from Node and
 * sends it, with what the session knew, to the partner's worker; that worker wraps the descriptor in a
 * new socket (and, for WebSocket, a new `ws` WebSocket on it), answers the Authenticate and pairs the two
 * locally, so the tunnel has one relay and the kernel relay can take it whole. TLS (the session keys live
 * in OpenSSL's state) and streams with bytes already read, queued or mid-frame are never moved: they are
 * forwarded as before.
 *
 * Route: worker → primary → worker over node:cluster's IPC channels (a worker can only talk to its
 * primary). The primary moves the rendezvous slot's tunnel to the receiving worker in the same step, so
 * the key is released by whoever ends up holding the tunnel. When the receiving worker is gone the
 * primary sends the client back to its sender, which offers it again. What crosses the channels: the
 * descriptor (SCM_RIGHTS), the client's name, uuid, user, monitor id, its token and nonce (the rendezvous
 * key, needed to release or offer again), between processes of one gateway, never logged.
 */
import { Socket, type SocketConstructorOpts } from 'node:net';

/** What a session knew about its client when it moved (all from the client's Authenticate). */
export interface MovedClient {
  readonly kind: 'tcp' | 'ws';
  readonly remote: string;
  readonly name: string;
  readonly uuid: string;
  readonly userName: string;
  readonly connectionId: string;
  readonly connectedAt: number;
  /** The Authenticate request's id: the receiving worker answers it. */
  readonly requestId: number;
  readonly token: string;
  readonly nonce: string;
  /** Offers made so far (a partner found gone means offering again, a bounded number of times). */
  readonly attempt: number;
}

/** Worker → primary → worker, with the client's socket handle. */
export interface HandoffMessage {
  readonly gh: 'handoff';
  /** The receiving worker's cluster id. */
  readonly to: number;
  /** The rendezvous slot whose tunnel moves with the client (ipc-rendezvous.ts). */
  readonly slot: string;
  /** The partner's ref in the receiving worker (`paired-remote`). */
  readonly ref: string;
  readonly client: MovedClient;
  /** Set by the primary: the receiving worker was gone, so the client came back to its sender. */
  readonly bounced?: boolean;
}

const STRING_FIELDS = ['remote', 'name', 'uuid', 'userName', 'connectionId', 'token', 'nonce'] as const;

export function isHandoffMessage(m: unknown): m is HandoffMessage {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  if (r.gh !== 'handoff' || typeof r.to !== 'number' || typeof r.slot !== 'string' || typeof r.ref !== 'string') return false;
  const c = r.client;
  if (typeof c !== 'object' || c === null) return false;
  const cl = c as Record<string, unknown>;
  return (
    (cl.kind === 'tcp' || cl.kind === 'ws') &&
    STRING_FIELDS.every((f) => typeof cl[f] === 'string') &&
    typeof cl.connectedAt === 'number' &&
    typeof cl.requestId === 'number' &&
    typeof cl.attempt === 'number'
  );
}

/** A socket's native handle (libuv's TCP wrap), as node:child_process passes it. */
export type SocketHandle = object & { close?: (cb?: () => void) => void };

/** The channel a worker moves clients over: `process` in a cluster worker. */
export interface HandoffChannel {
  send(message: unknown, handle: SocketHandle, options: { keepOpen?: boolean }, callback: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown, handle?: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown, handle?: unknown) => void): unknown;
}

type Internals = Socket & { _handle?: (SocketHandle & { readStop?: () => number; onread?: unknown }) | null; connecting?: boolean };

/**
 * Takes a plain TCP socket's handle away from Node, or returns undefined (nothing changed) when the socket
 * cannot move whole: not TCP, closing, or holding bytes read but not consumed or written but not flushed.
 * Afterwards the socket has no handle: destroying it only emits its events (and gives its server's count
 * back); the descriptor stays open until the handle is closed (`closeHandle`, after sending it).
 */
export function detachHandle(socket: Socket): SocketHandle | undefined {
  const s = socket as Internals;
  const h = s._handle;
  if (h === undefined || h === null || h.constructor.name !== 'TCP') return undefined;
  if (s.destroyed || s.connecting || s.writableLength > 0 || s.readableLength > 0 || !s.writable) return undefined;
  s.pause();
  h.readStop?.();
  h.onread = () => undefined;
  s._handle = null;
  return h;
}

export function closeHandle(h: SocketHandle): void {
  try {
    h.close?.();
  } catch {
    // Already closed.
  }
}

/** A socket around a handle received from another process (reading starts at once). */
export function socketFromHandle(handle: unknown): Socket {
  return new Socket({ handle, readable: true, writable: true, allowHalfOpen: true } as SocketConstructorOpts);
}

/** The worker number in a node name the primary's table gives (`worker-<id>`), or undefined. */
export function workerOfNode(node: string): number | undefined {
  const m = /^worker-(\d{1,9})$/.exec(node);
  return m === null ? undefined : Number(m[1]);
}
