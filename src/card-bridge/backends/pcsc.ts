/**
 * The PC/SC backend: local readers through pcsc-lite, via the npm `smartcard` N-API binding, an OPTIONAL
 * dependency loaded on start. Without the binding (or without pcscd) the backend logs why and has no
 * readers; the gateway runs on.
 *
 * Readers and cards are tracked with the binding's ReaderMonitor (attach, detach, insert, remove each fire
 * a change). Cards are connected lazily in shared mode (T=0 or T=1) and kept; removal drops the connection.
 * pcscd itself may be absent at start, restarted or crashed: a PC/SC context does not survive its daemon,
 * so when the monitor reports an error every reader is detached, the context is dropped, and a new one is
 * tried every `reconnectMs` until pcscd answers again.
 * APDUs go through raw: no automatic GET RESPONSE here (the card layer does it when configured).
 */
import { GatewayError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { CardBackendConfig } from '../config.ts';
import { ChangeListeners, type CardBackend, type ReaderState } from './types.ts';

type PcscConfig = Extract<CardBackendConfig, { kind: 'pcsc' }>;

/** The slice of the `smartcard` module we use (typed here so the dependency stays optional). */
interface PcscCard {
  readonly atr: Buffer | null;
  transmit(command: Buffer, options?: { maxRecvLength?: number; autoGetResponse?: boolean }): Promise<Buffer>;
  getStatus(): { atr: Buffer };
  disconnect(disposition?: number): void;
  reconnect(shareMode?: number, protocol?: number, initialization?: number): Promise<number>;
}
interface PcscReader {
  readonly name: string;
  readonly atr: Buffer | null;
  readonly state: number;
  connect(shareMode?: number, protocol?: number): Promise<PcscCard>;
}
interface PcscContext {
  readonly isValid: boolean;
  listReaders(): PcscReader[];
  close(): void;
}
interface PcscMonitor {
  start(cb: (ev: { type: string; reader: string; atr: Buffer | null }) => void): void;
  stop(): void;
}
interface PcscModule {
  Context: new () => PcscContext;
  ReaderMonitor: new () => PcscMonitor;
  SCARD_SHARE_SHARED: number;
  SCARD_PROTOCOL_T0: number;
  SCARD_PROTOCOL_T1: number;
  SCARD_RESET_CARD: number;
  SCARD_LEAVE_CARD: number;
  SCARD_STATE_PRESENT: number;
}

/** Loads the optional binding; undefined (with the reason) when it is not installed or not loadable. */
export async function loadPcsc(): Promise<{ module: PcscModule } | { error: string }> {
  try {
    const name = 'smartcard';
    const m = (await import(name)) as { default?: PcscModule } & PcscModule;
    return { module: m.Context === undefined ? m.default! : m };
  } catch (err) {
    return { error: (err as Error).message.split('\n')[0] ?? 'unknown error' };
  }
}

export class PcscBackend implements CardBackend {
  readonly kind = 'pcsc';
  #pcsc: PcscModule | undefined;
  #ctx: PcscContext | undefined;
  #monitor: PcscMonitor | undefined;
  #readers: ReaderState[] = [];
  readonly #cards = new Map<string, Promise<PcscCard>>();
  readonly #changes = new ChangeListeners();
  readonly #log: Logger;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  /** Why the backend has no readers, when it could not start. */
  unavailable: string | undefined;

  constructor(
    private readonly cfg: PcscConfig,
    log: Logger,
    /** Loads the binding (replaceable to test a machine without it). */
    private readonly load: typeof loadPcsc = loadPcsc,
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
    this.#pcsc = loaded.module;
    this.#connect();
  }

  /** Opens a context and a reader monitor; while pcscd does not answer, tries again later. */
  #connect(): void {
    const pcsc = this.#pcsc;
    if (this.#closed || pcsc === undefined) return;
    try {
      this.#ctx = new pcsc.Context();
    } catch (err) {
      const reason = `cannot establish a PC/SC context (is pcscd running?): ${(err as Error).message}`;
      if (this.unavailable !== reason) this.#log.warn({ reason, retryMs: this.cfg.reconnectMs }, 'PC/SC backend has no readers');
      this.unavailable = reason;
      this.#scheduleReconnect();
      return;
    }
    if (this.unavailable !== undefined) this.#log.info('PC/SC context established');
    this.unavailable = undefined;
    this.#refresh();
    try {
      const mon = new pcsc.ReaderMonitor();
      mon.start((ev) => {
        if (ev.type === 'error') return this.#lost(ev.reader);
        if (ev.type === 'card-removed' || ev.type === 'reader-detached' || ev.type === 'card-inserted') this.#drop(ev.reader);
        this.#refresh();
        this.#changes.emit();
      });
      this.#monitor = mon;
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'PC/SC reader monitor failed; reader list will not follow changes');
    }
    this.#changes.emit();
  }

  /** pcscd went away (or the context broke): detach every reader, drop the context, reconnect later. */
  #lost(reason: string): void {
    if (this.#ctx === undefined) return;
    this.#log.warn({ reason, retryMs: this.cfg.reconnectMs }, 'PC/SC service lost; readers detached');
    this.unavailable = `PC/SC service lost: ${reason}`;
    void this.#teardown();
    this.#readers = [];
    this.#changes.emit();
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed) return;
    this.#retry = setTimeout(() => this.#connect(), this.cfg.reconnectMs);
    this.#retry.unref();
  }

  /** Stops the monitor, disconnects every card and releases the context. */
  #teardown(): Promise<void> {
    const monitor = this.#monitor;
    this.#monitor = undefined;
    try {
      monitor?.stop();
    } catch {
      // already stopped
    }
    const cards = [...this.#cards.values()];
    this.#cards.clear();
    const ctx = this.#ctx;
    this.#ctx = undefined;
    // Disconnect every card before releasing the context that owns them.
    return Promise.allSettled(cards).then((settled) => {
      for (const c of settled) {
        if (c.status !== 'fulfilled') continue;
        try {
          c.value.disconnect(this.#pcsc?.SCARD_LEAVE_CARD);
        } catch {
          // the card is gone already
        }
      }
      try {
        ctx?.close();
      } catch {
        // already closed
      }
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    await this.#teardown();
  }

  readers(): readonly ReaderState[] {
    return this.#readers;
  }

  onChange(listener: () => void): () => void {
    return this.#changes.add(listener);
  }

  async reset(terminal: string, _signal: AbortSignal): Promise<Buffer> {
    const p = this.#pcsc!;
    const card = await this.#card(terminal);
    try {
      await card.reconnect(p.SCARD_SHARE_SHARED, p.SCARD_PROTOCOL_T0 | p.SCARD_PROTOCOL_T1, p.SCARD_RESET_CARD);
      return Buffer.from(card.getStatus().atr);
    } catch (err) {
      this.#drop(terminal);
      throw this.#mapError(err, terminal);
    }
  }

  async transmit(terminal: string, apdu: Buffer, _signal: AbortSignal): Promise<Buffer> {
    const card = await this.#card(terminal);
    try {
      return await card.transmit(apdu, { maxRecvLength: 65538, autoGetResponse: false });
    } catch (err) {
      this.#drop(terminal);
      throw this.#mapError(err, terminal);
    }
  }

  #refresh(): void {
    const ctx = this.#ctx;
    if (ctx === undefined || this.#pcsc === undefined) return;
    let list: PcscReader[];
    try {
      list = ctx.listReaders();
    } catch {
      list = [];
    }
    const f = this.cfg.readerFilter;
    this.#readers = list
      .filter((r) => f.length === 0 || f.some((x) => r.name.includes(x)))
      .map((r) => ({
        terminal: r.name,
        atr: (r.state & this.#pcsc!.SCARD_STATE_PRESENT) !== 0 && r.atr !== null && r.atr.length > 0 ? Buffer.from(r.atr) : undefined,
      }));
  }

  #card(terminal: string): Promise<PcscCard> {
    const existing = this.#cards.get(terminal);
    if (existing !== undefined) return existing;
    const p = this.#pcsc;
    const ctx = this.#ctx;
    if (p === undefined || ctx === undefined) return Promise.reject(new GatewayError('CARD_READER_NOT_FOUND', this.unavailable));
    let reader: PcscReader | undefined;
    try {
      reader = ctx.listReaders().find((r) => r.name === terminal);
    } catch {
      reader = undefined;
    }
    if (reader === undefined) return Promise.reject(new GatewayError('CARD_READER_NOT_FOUND', `no PC/SC reader ${terminal}`));
    const connecting = reader.connect(p.SCARD_SHARE_SHARED, p.SCARD_PROTOCOL_T0 | p.SCARD_PROTOCOL_T1).catch((err: unknown) => {
      this.#cards.delete(terminal);
      throw this.#mapError(err, terminal);
    });
    this.#cards.set(terminal, connecting);
    return connecting;
  }

  #drop(terminal: string): void {
    const c = this.#cards.get(terminal);
    this.#cards.delete(terminal);
    void c?.then(
      (card) => {
        try {
          card.disconnect(this.#pcsc?.SCARD_LEAVE_CARD);
        } catch {
          // the card is gone already
        }
      },
      () => undefined,
    );
  }

  #mapError(err: unknown, terminal: string): GatewayError {
    if (err instanceof GatewayError) return err;
    const msg = (err as Error).message;
    if (/removed|no smart ?card|not present|SCARD_E_NO_SMARTCARD|SCARD_W_REMOVED_CARD|unpowered|unresponsive/i.test(msg)) {
      return new GatewayError('CARD_NO_CARD', `${terminal}: ${msg}`, { cause: err });
    }
    return new GatewayError('CARD_UPSTREAM_FAILED', `${terminal}: ${msg}`, { cause: err });
  }
}
