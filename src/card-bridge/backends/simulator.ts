/**
 * The simulator backend: virtual readers holding deterministic virtual cards (virtual-card.ts). Scriptable
 * from the config (rules, slow cards, signing cards) and from code (insert, remove, delay) for tests and demos.
 */
import { resolve as resolvePath } from 'node:path';
import { GatewayError } from '../../core/errors.ts';
import type { SimCardConfig } from '../config.ts';
import { loadSigningMaterial } from './sim-pki.ts';
import { ChangeListeners, delay, type CardBackend, type ReaderState } from './types.ts';
import { VirtualCard } from './virtual-card.ts';

export const DEFAULT_ATR = '3B021450';
export const DEFAULT_SIGNING_ATR = '3B03494341';

interface Slot {
  readonly config: SimCardConfig;
  card: VirtualCard | undefined;
  present: boolean;
  delayMs: number;
}

/** Builds the virtual card for one configured card (generating or loading PKI material for signing cards). */
export function buildVirtualCard(c: SimCardConfig, pkiCacheDir: string | undefined): VirtualCard {
  const signing =
    c.signing === undefined
      ? undefined
      : {
          ...loadSigningMaterial(
            {
              commonName: c.signing.commonName,
              countryName: c.signing.countryName,
              ...(c.signing.organizationName === undefined ? {} : { organizationName: c.signing.organizationName }),
            },
            pkiCacheDir,
          ),
          pin: c.signing.pin,
          keyId: c.signing.keyId,
          pinTries: c.signing.pinTries,
        };
  const atr = Buffer.from(c.atr ?? (signing === undefined ? DEFAULT_ATR : DEFAULT_SIGNING_ATR), 'hex');
  return new VirtualCard({ atr, script: c.script, signing });
}

export class SimulatorBackend implements CardBackend {
  readonly kind = 'simulator';
  readonly #slots = new Map<string, Slot>();
  readonly #changes = new ChangeListeners();
  readonly #pkiDir: string | undefined;

  constructor(cards: readonly SimCardConfig[], opts: { pkiCacheDir?: string | undefined; baseDir?: string } = {}) {
    this.#pkiDir = opts.pkiCacheDir === undefined ? undefined : resolvePath(opts.baseDir ?? '.', opts.pkiCacheDir);
    for (const c of cards) this.#slots.set(c.name, { config: c, card: undefined, present: c.present, delayMs: c.delayMs });
  }

  start(): Promise<void> {
    for (const slot of this.#slots.values()) slot.card ??= buildVirtualCard(slot.config, this.#pkiDir);
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  readers(): readonly ReaderState[] {
    return [...this.#slots.entries()].map(([terminal, s]) => ({ terminal, atr: s.present && s.card !== undefined ? s.card.atr : undefined }));
  }

  /** The virtual card behind a reader (tests inspect its APDU log and PIN counter). */
  card(terminal: string): VirtualCard | undefined {
    return this.#slots.get(terminal)?.card;
  }

  /** Takes the card out of its reader. */
  remove(terminal: string): void {
    const s = this.#slot(terminal);
    s.present = false;
    this.#changes.emit();
  }

  /** Puts the card back (reset state). */
  insert(terminal: string): void {
    const s = this.#slot(terminal);
    s.present = true;
    s.card?.reset();
    this.#changes.emit();
  }

  setDelay(terminal: string, ms: number): void {
    this.#slot(terminal).delayMs = ms;
  }

  async reset(terminal: string, signal: AbortSignal): Promise<Buffer> {
    const s = this.#slot(terminal);
    if (s.delayMs > 0) await delay(s.delayMs, signal);
    return this.#present(s, terminal).reset();
  }

  async transmit(terminal: string, apdu: Buffer, signal: AbortSignal): Promise<Buffer> {
    const s = this.#slot(terminal);
    if (s.delayMs > 0) await delay(s.delayMs, signal);
    return this.#present(s, terminal).process(apdu);
  }

  onChange(listener: () => void): () => void {
    return this.#changes.add(listener);
  }

  #slot(terminal: string): Slot {
    const s = this.#slots.get(terminal);
    if (s === undefined) throw new GatewayError('CARD_READER_NOT_FOUND', `no simulated reader ${terminal}`);
    return s;
  }

  #present(s: Slot, terminal: string): VirtualCard {
    if (!s.present || s.card === undefined) throw new GatewayError('CARD_NO_CARD', `no card in ${terminal}`);
    return s.card;
  }
}
