/**
 * The authenticator contract of the relay. An authenticator decides whether a client's token is
 * acceptable; it never sees the socket. The session bounds every call with the authentication timeout
 * (aborting `signal`), maps a thrown error to `AuthenticationErrorProxyError`, and never logs the token.
 */
import type { AuthenticationError } from '../protocol/api.ts';

export interface AuthRequest {
  readonly uuid: string;
  readonly name: string;
  /** The client's secret token. Never log it. */
  readonly token: string;
  /** Empty when the client sent none. */
  readonly nonce: string;
  /** The client's address (`127.0.0.1`, `unix`), for authorizers that want it. */
  readonly remoteAddress: string;
}

export interface AuthResult {
  readonly error: AuthenticationError;
  /** The user the token belongs to, when the authenticator knows it (shown by the monitor). */
  readonly user?: string;
}

export interface Authenticator {
  /** Short name for logs: `dev`, `mock`, `static`, `http`, `lambda`. */
  readonly kind: string;
  /** Decides on one request. Must settle promptly once `signal` aborts. */
  authenticate(request: AuthRequest, signal: AbortSignal): Promise<AuthResult>;
  /** Re-reads what the authenticator loads from files (SIGHUP); rejects when the new file is unusable. */
  reload?(): Promise<unknown>;
  /**
   * Reads and checks what `reload` would, applying nothing: resolves with the function that applies it
   * (which cannot fail), rejects when the new file is unusable. SIGHUP uses it so a reload that fails
   * elsewhere applies none of it.
   */
  prepareReload?(): Promise<() => void>;
  /** Releases watchers and sockets. */
  close?(): Promise<void>;
}
