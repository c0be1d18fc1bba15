/**
 * Starts a PC/SC host (host.ts) as a child process and gives the backend a small handle on it: typed
 * messages both ways, its exit (with the tail of its stderr), a graceful close and a kill. From the
 * TypeScript sources the child runs through tsx; from dist/ it runs the compiled host.js.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  isHostMessage,
  type HostMessage,
  type HostRole,
  type MonitorInit,
  type ReaderRequest,
} from './messages.ts';

/** How much of a host's stderr is kept for the log when it dies. */
const STDERR_TAIL_BYTES = 4096;

export interface HostExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The last bytes the host wrote to stderr (a crash's reason), trimmed. */
  readonly stderr: string;
}

export class HostProcess {
  readonly #child: ChildProcess;
  #stderr = '';
  #exit: HostExit | undefined;
  readonly exited: Promise<HostExit>;
  readonly #listeners = new Set<(m: HostMessage) => void>();
  readonly #exitListeners = new Set<(e: HostExit) => void>();
  /** `ready` seen, or why the host could not start (it says so before exiting). */
  #start: { ok: true } | { ok: false; reason: string } | undefined;

  constructor(role: HostRole) {
    const ts = import.meta.url.endsWith('.ts');
    const entry = fileURLToPath(new URL(ts ? './host.ts' : './host.js', import.meta.url));
    this.#child = fork(entry, [role], {
      execArgv: ts ? ['--import', import.meta.resolve('tsx')] : [],
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.#child.stderr?.on('data', (c: Buffer) => {
      this.#stderr = (this.#stderr + c.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    this.exited = new Promise((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.#exit !== undefined) return;
        const exit = { code, signal, stderr: this.#stderr.trim() };
        this.#exit = exit;
        resolve(exit);
        for (const l of this.#exitListeners) l(exit);
        this.#exitListeners.clear();
      };
      this.#child.once('exit', done);
      // A failed spawn emits 'error' and may never emit 'exit'.
      this.#child.once('error', (err) => {
        this.#stderr += `\n${err.message}`;
        done(null, null);
      });
    });
    this.#child.on('message', (m: unknown) => {
      if (!isHostMessage(m)) return;
      if (this.#start === undefined && m.t === 'ready') this.#start = { ok: true };
      if (this.#start === undefined && m.t === 'unavailable') this.#start = { ok: false, reason: m.reason };
      for (const l of this.#listeners) l(m);
    });
    // A host whose channel broke is dead to us; the 'error' on send is reported through `exited`.
    this.#child.on('error', () => undefined);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  onMessage(listener: (m: HostMessage) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Calls `listener` once when the host exits (in a microtask if it has). Returns an unsubscribe. */
  onExit(listener: (e: HostExit) => void): () => void {
    const exit = this.#exit;
    if (exit !== undefined) {
      let live = true;
      queueMicrotask(() => live && listener(exit));
      return () => (live = false);
    }
    this.#exitListeners.add(listener);
    return () => this.#exitListeners.delete(listener);
  }

  /** Sends a message; false when the host is gone (the message is dropped). */
  send(m: MonitorInit | ReaderRequest): boolean {
    if (this.#exit !== undefined || !this.#child.connected) return false;
    try {
      this.#child.send(m, (err) => {
        if (err !== null) this.kill();
      });
      return true;
    } catch {
      return false;
    }
  }

  /** Resolves once the host said `ready` (binding loaded); rejects when it exits first or `ms` passes. */
  ready(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#start !== undefined) {
        if (this.#start.ok) resolve();
        else reject(new Error(this.#start.reason));
        return;
      }
      const cleanup = () => {
        off();
        offExit();
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const off = this.onMessage((m) => {
        if (m.t === 'ready') {
          cleanup();
          resolve();
        } else if (m.t === 'unavailable') {
          cleanup();
          reject(new Error(m.reason));
        }
      });
      const timer = setTimeout(() => {
        cleanup();
        this.kill();
        reject(new Error(`the PC/SC host did not start within ${ms} ms`));
      }, ms);
      const onAbort = () => {
        cleanup();
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const offExit = this.onExit((e) => {
        cleanup();
        reject(
          new Error(
            `the PC/SC host exited at start (${e.code ?? e.signal ?? 'spawn failed'})${e.stderr === '' ? '' : `: ${e.stderr.slice(-300)}`}`,
          ),
        );
      });
    });
  }

  /** Asks the host to finish (`close` message, or closing the channel), then kills it after `graceMs`. */
  async close(graceMs: number, message?: ReaderRequest): Promise<void> {
    if (this.#exit !== undefined) return;
    if (message !== undefined) this.send(message);
    else if (this.#child.connected) this.#child.disconnect();
    const t = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  kill(): void {
    if (this.#exit === undefined) this.#child.kill('SIGKILL');
  }
}
