/**
 * The messages between the PC/SC backend (the gateway's process) and its host processes (host.ts), sent
 * over the child-process IPC channel with structured-clone serialisation (byte strings arrive as
 * Uint8Array). One monitor host watches readers; one reader host per reader runs that reader's calls.
 */

/** What a host is started as (its first argv entry after the script). */
export type HostRole = 'monitor' | 'reader';

/** Parent → monitor host. */
export type MonitorInit = { readonly t: 'init'; readonly reconnectMs: number; readonly pollMs: number };

/** Parent → reader host. At most one `transmit`/`reset` is in flight; `cancel` aims at it. */
export type ReaderRequest =
  | { readonly t: 'init'; readonly terminal: string }
  | { readonly t: 'transmit'; readonly id: number; readonly apdu: Uint8Array }
  | { readonly t: 'reset'; readonly id: number }
  | { readonly t: 'cancel' }
  /** The card in the reader changed: forget the connection to the old one. */
  | { readonly t: 'drop' }
  | { readonly t: 'close' };

export interface ReaderEntry {
  readonly name: string;
  /** ATR hex; '' = no card. */
  readonly atr: string;
}

/** Host → parent. */
export type HostMessage =
  | { readonly t: 'ready' }
  | { readonly t: 'readers'; readonly readers: readonly ReaderEntry[] }
  /** The monitor's heartbeat (every pollMs): its event loop turns, no PC/SC call holds it. */
  | { readonly t: 'alive' }
  | { readonly t: 'unavailable'; readonly reason: string }
  | { readonly t: 'result'; readonly id: number; readonly ok: true; readonly data: Uint8Array }
  | { readonly t: 'result'; readonly id: number; readonly ok: false; readonly message: string }
  | { readonly t: 'closed' };

/** A loose shape check of what a host sent (our own code, but a crashed or confused host must not throw here). */
export function isHostMessage(m: unknown): m is HostMessage {
  if (typeof m !== 'object' || m === null || !Object.hasOwn(m, 't')) return false;
  const t = (m as { t: unknown }).t;
  switch (t) {
    case 'ready':
    case 'alive':
    case 'closed':
      return true;
    case 'readers':
      return Array.isArray((m as { readers?: unknown }).readers);
    case 'unavailable':
      return typeof (m as { reason?: unknown }).reason === 'string';
    case 'result': {
      const r = m as { id?: unknown; ok?: unknown; data?: unknown; message?: unknown };
      return (
        typeof r.id === 'number' &&
        (r.ok === true ? r.data instanceof Uint8Array : r.ok === false && typeof r.message === 'string')
      );
    }
    default:
      return false;
  }
}
