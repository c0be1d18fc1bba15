/**
 * The lifecycle every front end follows: `start()` binds and accepts; `close({graceMs})` stops accepting,
 * tells peers, waits up to `graceMs` for work to drain, then destroys what is left, and resolves only when
 * every connection is gone. States move one way: idle → starting → running → closing → closed.
 * Libraries never install signal handlers or call `process.exit`; the CLI owns signals.
 */
import { GatewayError } from './errors.ts';

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
 * The state machine every front end's Service runs on, so all of them answer a double start, a close
 * before start and a second close the same way.
 */
export class Lifecycle {
  #state: ServiceState = 'idle';
  #closing: Promise<void> | undefined;

  constructor(readonly name: string) {}

  get state(): ServiceState {
    return this.#state;
  }
  get running(): boolean {
    return this.#state === 'running';
  }

  /** idle → starting. @throws GatewayError CORE_INTERNAL when started twice or after close. */
  beginStart(): void {
    if (this.#state !== 'idle') throw new GatewayError('CORE_INTERNAL', `${this.name}: start() called while ${this.#state}`);
    this.#state = 'starting';
  }

  /** starting → running. */
  started(): void {
    if (this.#state === 'starting') this.#state = 'running';
  }

  /** A failed start: nothing is left bound. */
  failed(): void {
    this.#state = 'closed';
  }

  /**
   * Runs `stop` once, however often close() is called; a service that never started closes at once.
   * `stop` runs in state closing; the state is closed when it settles.
   */
  close(stop: () => Promise<void>): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    if (this.#state === 'idle' || this.#state === 'closed') {
      this.#state = 'closed';
      this.#closing = Promise.resolve();
      return this.#closing;
    }
    this.#state = 'closing';
    this.#closing = stop().finally(() => {
      this.#state = 'closed';
    });
    return this.#closing;
  }
}

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
