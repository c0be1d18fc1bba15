/**
 * The lifecycle every front end follows: `start()` binds and accepts; `close({graceMs})` stops accepting,
 * tells peers, waits up to `graceMs` for work to drain, then destroys what is left, and resolves only when
 * every connection is gone. States move one way: idle → starting → running → closing → closed.
 * Libraries never install signal handlers or call `process.exit`; the CLI owns signals.
 */

export interface CloseOptions {
  /** How long to let connections drain before destroying them, in milliseconds. */
  readonly graceMs?: number;
}

export interface Service {
  readonly name: string;
  /** Binds listeners. @throws GatewayError CORE_LISTEN_FAILED (and leaves nothing bound). */
  start(): Promise<void>;
  /** Graceful stop; resolves when every connection is closed. Safe to call more than once. */
  close(options?: CloseOptions): Promise<void>;
}

export type ServiceState = 'idle' | 'starting' | 'running' | 'closing' | 'closed';

/**
 * Runs several services as one: starts them in order (closing the started ones again if one fails) and
 * closes them all in parallel.
 */
export function composeServices(name: string, services: readonly Service[]): Service {
  let started: Service[] = [];
  let closing: Promise<void> | undefined;
  return {
    name,
    async start() {
      for (const s of services) {
        try {
          await s.start();
          started.push(s);
        } catch (err) {
          await Promise.allSettled(started.map((x) => x.close({ graceMs: 0 })));
          started = [];
          throw err;
        }
      }
    },
    close(options = {}) {
      closing ??= Promise.allSettled(started.map((s) => s.close(options))).then(() => undefined);
      return closing;
    },
  };
}
