/**
 * Fault isolation: a bug met while handling one connection closes that connection, never the process.
 *
 * Each connection owns one `FaultBoundary`. Every entry point the event loop calls for that connection
 * (socket events, timers, promise continuations) runs through it. The first exception is logged once at
 * error with its stack (code CORE_INTERNAL), the connection's `onFault` closes it, and every later event
 * of that connection is ignored. If `onFault` itself throws, the boundary falls back to `destroy`.
 * Expected ends (EOF, resets, shutdown) never come here: they are not errors.
 */
import { GatewayError } from './errors.ts';
import type { Logger } from './log.ts';

export class FaultBoundary {
  #tripped = false;

  /**
   * @param log the connection's logger (the error line carries its bindings), or a function that makes it
   * @param onFault closes the connection with CORE_INTERNAL (answer the peer if the protocol can)
   * @param destroy the last resort when `onFault` fails too
   */
  constructor(
    private readonly log: Logger | (() => Logger),
    private readonly onFault: (err: GatewayError) => void,
    private readonly destroy: () => void,
  ) {}

  /** True once a fault closed this connection. */
  get tripped(): boolean {
    return this.#tripped;
  }

  /** Runs `fn` inside the boundary. */
  run(fn: () => void): void {
    if (this.#tripped) return;
    try {
      fn();
    } catch (err) {
      this.trip(err);
    }
  }

  /** Wraps an event handler so it runs inside the boundary. */
  wrap<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      if (this.#tripped) return;
      try {
        fn(...args);
      } catch (err) {
        this.trip(err);
      }
    };
  }

  /** A rejection handler for this connection's promises: `p.catch(boundary.catch)`. */
  readonly catch = (err: unknown): void => this.trip(err);

  /** Records a fault and closes the connection (once). */
  trip(err: unknown): void {
    if (this.#tripped) return;
    this.#tripped = true;
    const internal = new GatewayError('CORE_INTERNAL', 'internal error while handling a connection; it was closed', { cause: err });
    try {
      const log = typeof this.log === 'function' ? this.log() : this.log;
      log.error({ code: internal.code, err }, internal.message);
    } catch {
      // A logger that throws must not stop the connection from closing.
    }
    try {
      this.onFault(internal);
    } catch {
      try {
        this.destroy();
      } catch {
        // Nothing more can be done for this connection; the process goes on.
      }
    }
  }
}

/** `err` as an Error (a thrown non-Error is wrapped), for rejecting promises with what a callee threw. */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** undici reports `fetch failed` with the socket error as `cause`; the cause (its code and message) is what a log line should say. */
export function describeFetchError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause: unknown = err.cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code !== undefined ? `${code} (${cause.message})` : cause.message;
  }
  return err.message;
}
