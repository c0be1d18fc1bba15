/**
 * The gateway's side of one reader's host process: runs that reader's calls one at a time and makes each
 * end by its caller's deadline. When the caller's signal aborts (the card layer's `commandMs`), the call
 * is rejected at once with the signal's reason, the host is told to cancel (SCardCancel), and if the host
 * has not finished the call `cancelGraceMs` later it is killed: the PC/SC context and card connection go
 * with it, and the next call starts a fresh host. A call that is still running holds back the next one
 * (never two calls in one context), at most until that kill.
 */
import { HostProcess } from './host-process.ts';
import type { HostMessage, ReaderRequest } from './messages.ts';

export interface ReaderChannelOptions {
  /** After an aborted call, how long the host may take to end it before it is killed, ms. */
  readonly cancelGraceMs: number;
  /** How long a new host may take to load the binding, ms. */
  readonly startMs: number;
  /** How long a closing host may take to release its card and context, ms. */
  readonly closeMs: number;
  /** Told when a host is killed or dies (for the log). */
  readonly onHostLost: (why: string, stderr: string) => void;
  /** Starts a host process (replaceable in tests). */
  readonly spawn?: () => HostProcess;
}

type Call = { readonly t: 'transmit'; readonly apdu: Uint8Array } | { readonly t: 'reset' };

/** Thrown (as the rejection) when the host answered with a PC/SC error; the backend maps the message. */
export class HostCallError extends Error {}

export class ReaderChannel {
  #host: HostProcess | undefined;
  #starting: Promise<HostProcess> | undefined;
  #tail: Promise<void> = Promise.resolve();
  #seq = 0;
  #closed = false;
  /** Hosts started over this channel's life (tests and the benchmark read it). */
  hostsStarted = 0;
  /** Hosts killed because a call did not end after its cancel. */
  hostsKilled = 0;

  constructor(
    readonly terminal: string,
    private readonly opts: ReaderChannelOptions,
  ) {}

  /** Runs one call. @throws the signal's reason at abort; HostCallError with the PC/SC message; Error when the host died. */
  call(req: Call, signal: AbortSignal): Promise<Buffer> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<Buffer>((resolve, reject) => {
      let done = false;
      const finish = (f: () => void) => {
        if (done) return;
        done = true;
        signal.removeEventListener('abort', onAbort);
        f();
      };
      const onAbort = () => finish(() => reject(signal.reason as Error));
      signal.addEventListener('abort', onAbort, { once: true });
      const prev = this.#tail;
      let release!: () => void;
      this.#tail = new Promise<void>((r) => (release = r));
      prev
        .then(async () => {
          if (done) return;
          const host = await this.#ensureHost(signal);
          if (done) return;
          await this.#run(host, req, signal, (r) =>
            finish(() => (r.ok ? resolve(r.value) : reject(r.error))),
          );
        })
        .catch((err: unknown) => finish(() => reject(err instanceof Error ? err : new Error(String(err)))))
        .finally(release);
    });
  }

  /** Sends one request and settles when the host answered it, died, or was killed after an abort. */
  #run(
    host: HostProcess,
    req: Call,
    signal: AbortSignal,
    answer: (result: { ok: true; value: Buffer } | { ok: false; error: Error }) => void,
  ): Promise<void> {
    const id = ++this.#seq;
    return new Promise<void>((settle) => {
      let killTimer: NodeJS.Timeout | undefined;
      const end = () => {
        off();
        offExit();
        clearTimeout(killTimer);
        signal.removeEventListener('abort', onAbort);
        settle();
      };
      const off = host.onMessage((m: HostMessage) => {
        if (m.t !== 'result' || m.id !== id) return;
        end();
        if (m.ok)
          answer({ ok: true, value: Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength) });
        else answer({ ok: false, error: new HostCallError(m.message) });
      });
      const offExit = host.onExit((e) => {
        end();
        answer({
          ok: false,
          error: new Error(`the PC/SC host for ${this.terminal} exited (${e.code ?? e.signal ?? 'unknown'})`),
        });
      });
      const onAbort = () => {
        host.send({ t: 'cancel' });
        killTimer = setTimeout(() => {
          if (this.#host === host) this.#host = undefined;
          this.hostsKilled++;
          host.kill();
          this.opts.onHostLost(
            `a call did not end within ${this.opts.cancelGraceMs} ms of its cancel; host killed`,
            '',
          );
        }, this.opts.cancelGraceMs);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const msg: ReaderRequest =
        req.t === 'transmit' ? { t: 'transmit', id, apdu: req.apdu } : { t: 'reset', id };
      if (!host.send(msg)) {
        end();
        answer({ ok: false, error: new Error(`the PC/SC host for ${this.terminal} is gone`) });
      }
    });
  }

  #ensureHost(signal: AbortSignal): Promise<HostProcess> {
    if (this.#closed) return Promise.reject(new Error('the PC/SC backend is closed'));
    if (this.#host?.alive === true) return Promise.resolve(this.#host);
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    const starting = this.#starting;
    // The start goes on when the caller gives up: the next call will want the host too.
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      starting.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  async #start(): Promise<HostProcess> {
    const host = this.opts.spawn?.() ?? new HostProcess('reader');
    this.hostsStarted++;
    try {
      await host.ready(this.opts.startMs);
    } catch (err) {
      host.kill();
      throw err;
    }
    host.send({ t: 'init', terminal: this.terminal });
    host.onExit((e) => {
      if (this.#host !== host) return;
      this.#host = undefined;
      if (!this.#closed) this.opts.onHostLost(`host exited (${e.code ?? e.signal ?? 'unknown'})`, e.stderr);
    });
    if (this.#closed) {
      host.kill();
      throw new Error('the PC/SC backend is closed');
    }
    this.#host = host;
    return host;
  }

  /** Starts the host ahead of the first call (errors are left for that call to meet). */
  warm(): void {
    if (this.#closed || this.#host !== undefined || this.#starting !== undefined) return;
    this.#starting = this.#start().finally(() => (this.#starting = undefined));
    this.#starting.catch(() => undefined);
  }

  /** The card in the reader changed: the host forgets its connection to the old one. */
  drop(): void {
    this.#host?.send({ t: 'drop' });
  }

  /** Lets the host release its card and context, then kills it after `closeMs`. */
  async close(): Promise<void> {
    this.#closed = true;
    const starting = this.#starting;
    if (starting !== undefined)
      await starting.then(
        (h) => h.kill(),
        () => undefined,
      );
    const host = this.#host;
    this.#host = undefined;
    await host?.close(this.opts.closeMs, { t: 'close' });
  }
}
