/**
 * The PC/SC backend: local readers through pcsc-lite, via the npm `smartcard` N-API binding, an OPTIONAL
 * dependency. Without the binding (or without pcscd) the backend logs why and has no readers; the gateway
 * runs on.
 *
 * Isolation: no PC/SC call runs in the gateway's process. pcsc-lite serves one call at a time per context,
 * and a card that never answers blocks its call (and anything queued behind it) for good, so:
 * - one monitor host process (pcsc/host.ts) holds a context that only follows readers and cards and sends
 *   the reader list when it changes; `readers()` answers from that cached list, never waiting on a card;
 * - each reader gets its own host process with its own context and card connection (pcsc/reader-channel.ts),
 *   started when the reader appears; a slow card delays only its own reader;
 * - every call ends by the card layer's deadline (`commandMs`): the caller gets CARD_COMMAND_TIMEOUT at
 *   once, the host is told to cancel (SCardCancel), and when the call has still not ended `cancelGraceMs`
 *   later the host is killed (its context and card connection go with it) and the next call starts a new one.
 * pcscd itself may be absent at start, restarted or crashed: the monitor then reports it, every reader is
 * detached (their hosts closed), and the monitor tries a new context every `reconnectMs`. A monitor that
 * exits is started again `reconnectMs` later; one that sends nothing, not even its heartbeat, for
 * `monitorStallMs` is stuck in a PC/SC call and is killed (and so started again).
 * Cards are connected lazily in shared mode (T=0 or T=1) and kept; a card change drops the connection.
 * APDUs go through raw: no automatic GET RESPONSE here (the card layer does it when configured).
 */
import { GatewayError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { CardBackendConfig } from '../config.ts';
import { loadPcsc } from './pcsc/binding.ts';
import { HostProcess } from './pcsc/host-process.ts';
import type { HostMessage, ReaderEntry } from './pcsc/messages.ts';
import { HostCallError, ReaderChannel } from './pcsc/reader-channel.ts';
import { ChangeListeners, type CardBackend, type ReaderState } from './types.ts';

export { loadPcsc } from './pcsc/binding.ts';

type PcscConfig = Extract<CardBackendConfig, { kind: 'pcsc' }>;

/** Timings of the host processes (not configuration: they bound our own processes, not a peer). */
export interface PcscHostTimings {
  /** After a call's deadline, how long its host may take to end the call before it is killed, ms. */
  readonly cancelGraceMs: number;
  /** How long a new host may take to load the binding, ms. */
  readonly hostStartMs: number;
  /** How long a host may take to release its card and context on close, ms. */
  readonly hostCloseMs: number;
  /** How often the monitor re-reads the reader list besides pcsc-lite's change events, ms. */
  readonly monitorPollMs: number;
  /** How long `start()` waits for the monitor's first reader list, ms. */
  readonly firstListMs: number;
  /**
   * A monitor that sends nothing (not even its heartbeat, every `monitorPollMs`) for this long is stuck in
   * a PC/SC call: it is killed and a new one started, ms.
   */
  readonly monitorStallMs: number;
}

export const PCSC_HOST_TIMINGS: PcscHostTimings = Object.freeze({
  cancelGraceMs: 250,
  hostStartMs: 15000,
  hostCloseMs: 1000,
  monitorPollMs: 1000,
  firstListMs: 5000,
  monitorStallMs: 10000,
});

export class PcscBackend implements CardBackend {
  readonly kind = 'pcsc';
  #monitor: HostProcess | undefined;
  /** When the monitor last sent anything (its heartbeat included), performance.now() ms. */
  #monitorSeen = 0;
  #watchdog: NodeJS.Timeout | undefined;
  #readers: ReaderState[] = [];
  readonly #channels = new Map<string, ReaderChannel>();
  readonly #changes = new ChangeListeners();
  readonly #log: Logger;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  #firstList: (() => void) | undefined;
  /** Why the backend has no readers, when it could not start or lost pcscd. */
  unavailable: string | undefined;

  constructor(
    private readonly cfg: PcscConfig,
    log: Logger,
    /** Loads the binding (replaceable to test a machine without it); only to learn whether it is installed. */
    private readonly load: typeof loadPcsc = loadPcsc,
    private readonly timings: PcscHostTimings = PCSC_HOST_TIMINGS,
  ) {
    this.#log = log.child({ backend: 'pcsc' });
  }

  async start(): Promise<void> {
    const loaded = await this.load();
    if ('error' in loaded) {
      this.unavailable = `the optional 'smartcard' binding is not available (${loaded.error})`;
      this.#log.warn({ reason: this.unavailable }, 'PC/SC backend has no readers');
      return;
    }
    // Wait (bounded) for the first reader list, so readers are known when the gateway says it is up.
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, this.timings.firstListMs);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.#firstList = done;
      this.#startMonitor();
    });
    this.#firstList = undefined;
  }

  #startMonitor(): void {
    if (this.#closed) return;
    const mon = new HostProcess('monitor');
    this.#monitor = mon;
    mon.onMessage((m) => {
      this.#monitorSeen = performance.now();
      this.#onMonitor(m);
    });
    mon.ready(this.timings.hostStartMs).then(
      () => {
        this.#monitorSeen = performance.now();
        mon.send({ t: 'init', reconnectMs: this.cfg.reconnectMs, pollMs: this.timings.monitorPollMs });
        this.#watch(mon);
      },
      (err: unknown) => this.#setUnavailable(`the PC/SC monitor did not start: ${(err as Error).message}`),
    );
    mon.onExit((e) => {
      if (this.#monitor !== mon || this.#closed) return;
      this.#monitor = undefined;
      this.#log.warn(
        { code: e.code, signal: e.signal, stderr: e.stderr.slice(-500), retryMs: this.cfg.reconnectMs },
        'PC/SC monitor exited; restarting it',
      );
      this.#setUnavailable('the PC/SC monitor exited');
      this.#retry = setTimeout(() => this.#startMonitor(), this.cfg.reconnectMs);
      this.#retry.unref();
    });
  }

  /** Kills `mon` when it goes silent for monitorStallMs (stuck in a PC/SC call); its exit restarts it. */
  #watch(mon: HostProcess): void {
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(() => {
      if (this.#monitor !== mon || this.#closed) {
        clearInterval(this.#watchdog);
        return;
      }
      const silentMs = performance.now() - this.#monitorSeen;
      if (silentMs < this.timings.monitorStallMs) return;
      clearInterval(this.#watchdog);
      this.#log.warn({ silentMs: Math.round(silentMs) }, 'PC/SC monitor stopped answering; killing it');
      mon.kill();
    }, this.timings.monitorPollMs);
    this.#watchdog.unref();
  }

  #onMonitor(m: HostMessage): void {
    if (this.#closed) return;
    if (m.t === 'unavailable') {
      this.#setUnavailable(m.reason);
      this.#firstList?.();
    } else if (m.t === 'readers') {
      if (this.unavailable !== undefined) this.#log.info('PC/SC readers available');
      this.unavailable = undefined;
      this.#setReaders(m.readers);
      this.#firstList?.();
    }
  }

  #setUnavailable(reason: string): void {
    if (this.unavailable !== reason)
      this.#log.warn({ reason, retryMs: this.cfg.reconnectMs }, 'PC/SC backend has no readers');
    this.unavailable = reason;
    this.#setReaders([]);
  }

  /** Applies a new reader list: hosts for new readers, dropped connections for changed cards, closed hosts for gone readers. */
  #setReaders(entries: readonly ReaderEntry[]): void {
    const f = this.cfg.readerFilter;
    const next: ReaderState[] = entries
      .filter((r) => typeof r.name === 'string' && typeof r.atr === 'string')
      .filter((r) => f.length === 0 || f.some((x) => r.name.includes(x)))
      .map((r) => ({ terminal: r.name, atr: r.atr === '' ? undefined : Buffer.from(r.atr, 'hex') }));
    const before = new Map(this.#readers.map((r) => [r.terminal, r.atr?.toString('hex') ?? '']));
    const after = new Map(next.map((r) => [r.terminal, r.atr?.toString('hex') ?? '']));
    let changed = before.size !== after.size;
    for (const [terminal, atr] of after) {
      if (!before.has(terminal)) {
        changed = true;
        this.#channel(terminal).warm();
      } else if (before.get(terminal) !== atr) {
        changed = true;
        this.#channels.get(terminal)?.drop();
      }
    }
    for (const terminal of before.keys()) {
      if (after.has(terminal)) continue;
      const ch = this.#channels.get(terminal);
      this.#channels.delete(terminal);
      ch?.close().catch((err: unknown) =>
        this.#log.warn({ terminal, err: (err as Error).message }, 'closing a PC/SC reader host failed'),
      );
    }
    this.#readers = next;
    if (changed) this.#changes.emit();
  }

  #channel(terminal: string): ReaderChannel {
    let ch = this.#channels.get(terminal);
    if (ch === undefined) {
      ch = new ReaderChannel(terminal, {
        cancelGraceMs: this.timings.cancelGraceMs,
        startMs: this.timings.hostStartMs,
        closeMs: this.timings.hostCloseMs,
        onHostLost: (why, stderr) =>
          this.#log.warn({ terminal, why, stderr: stderr.slice(-500) }, 'PC/SC reader host replaced'),
      });
      this.#channels.set(terminal, ch);
    }
    return ch;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    clearInterval(this.#watchdog);
    const channels = [...this.#channels.values()];
    this.#channels.clear();
    const mon = this.#monitor;
    this.#monitor = undefined;
    this.#readers = [];
    await Promise.allSettled([...channels.map((c) => c.close()), mon?.close(this.timings.hostCloseMs)]);
  }

  readers(): readonly ReaderState[] {
    return this.#readers;
  }

  onChange(listener: () => void): () => void {
    return this.#changes.add(listener);
  }

  /** Host processes started for `terminal` so far (0 when never used); for tests and the benchmark. */
  hostsStarted(terminal: string): number {
    return this.#channels.get(terminal)?.hostsStarted ?? 0;
  }

  /** Host processes of `terminal` killed because a call did not end after its cancel. */
  hostsKilled(terminal: string): number {
    return this.#channels.get(terminal)?.hostsKilled ?? 0;
  }

  reset(terminal: string, signal: AbortSignal): Promise<Buffer> {
    return this.#call(terminal, { t: 'reset' }, signal);
  }

  transmit(terminal: string, apdu: Buffer, signal: AbortSignal): Promise<Buffer> {
    return this.#call(terminal, { t: 'transmit', apdu }, signal);
  }

  #call(
    terminal: string,
    req: { t: 'transmit'; apdu: Uint8Array } | { t: 'reset' },
    signal: AbortSignal,
  ): Promise<Buffer> {
    if (!this.#readers.some((r) => r.terminal === terminal)) {
      return Promise.reject(
        new GatewayError('CARD_READER_NOT_FOUND', this.unavailable ?? `no PC/SC reader ${terminal}`),
      );
    }
    return this.#channel(terminal)
      .call(req, signal)
      .catch((err: unknown) => {
        throw this.#mapError(err, terminal);
      });
  }

  #mapError(err: unknown, terminal: string): GatewayError {
    if (err instanceof GatewayError) return err;
    const msg = (err as Error).message;
    if (
      err instanceof HostCallError &&
      /removed|no smart ?card|not present|unpowered|unresponsive/i.test(msg)
    ) {
      return new GatewayError('CARD_NO_CARD', `${terminal}: ${msg}`, { cause: err });
    }
    return new GatewayError('CARD_UPSTREAM_FAILED', `${terminal}: ${msg}`, { cause: err });
  }
}
