/**
 * The PC/SC backend: local readers through pcsc-lite, via the npm `smartcard` N-API binding, an OPTIONAL
 * dependency loaded on start. Without the binding (or without pcscd) the backend logs why and has no
 * readers; the gateway runs on.
 *
 * Readers and cards are tracked with the binding's ReaderMonitor (attach, detach, insert, remove each fire
 * a change). Cards are connected lazily in shared mode (T=0 or T=1) and kept; removal drops the connection.
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
    try {
      this.#ctx = new loaded.module.Context();
    } catch (err) {
      this.unavailable = `cannot establish a PC/SC context (is pcscd running?): ${(err as Error).message}`;
      this.#log.warn({ reason: this.unavailable }, 'PC/SC backend has no readers');
      return;
    }
    this.#refresh();
    try {
      const mon = new loaded.module.ReaderMonitor();
      mon.start((ev) => {
        if (ev.type === 'card-removed' || ev.type === 'reader-detached' || ev.type === 'card-inserted') this.#drop(ev.reader);
        if (ev.type !== 'error') this.#refresh();
        this.#changes.emit();
      });
      this.#monitor = mon;
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'PC/SC reader monitor failed; reader list will not follow changes');
    }
  }

  async close(): Promise<void> {
    try {
      this.#monitor?.stop();
    } catch {
      // already stopped
    }
    // Disconnect every card before releasing the context that owns them.
    const cards = [...this.#cards.values()];
    this.#cards.clear();
    for (const c of await Promise.allSettled(cards)) {
      if (c.status !== 'fulfilled') continue;
      try {
        c.value.disconnect(this.#pcsc?.SCARD_LEAVE_CARD);
      } catch {
        // the card is gone already
      }
    }
    try {
      this.#ctx?.close();
    } catch {
      // already closed
    }
    this.#ctx = undefined;
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
