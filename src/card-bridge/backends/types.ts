/**
 * The one interface every card backend implements (simulator, CloudFoxy REST upstream, PC/SC). A backend
 * knows terminals and moves bytes; locking, timeouts, GET RESPONSE handling and certificates live above it
 * (cards.ts). Backends keep their reader list cached so `readers()` is cheap.
 */

export interface ReaderState {
  /** Terminal id: `/<ip>@<slot>` for CloudFoxy hardware, else the reader name. */
  readonly terminal: string;
  /** ATR of the card in the reader; undefined = no card. */
  readonly atr: Buffer | undefined;
}

export interface CardBackend {
  readonly kind: string;
  start(): Promise<void>;
  close(): Promise<void>;
  /** The current readers (cached by the backend). */
  readers(): readonly ReaderState[];
  /**
   * Resets (powers up) the card. @returns the ATR.
   * @throws GatewayError CARD_NO_CARD, CARD_READER_NOT_FOUND, CARD_UPSTREAM_FAILED
   */
  reset(terminal: string, signal: AbortSignal): Promise<Buffer>;
  /**
   * Sends one command APDU and returns the raw response APDU (data + SW); 61xx/6Cxx are not followed.
   * @throws GatewayError CARD_NO_CARD, CARD_READER_NOT_FOUND, CARD_UPSTREAM_FAILED
   */
  transmit(terminal: string, apdu: Buffer, signal: AbortSignal): Promise<Buffer>;
  /** Called whenever readers or cards come or go (or the upstream restarted). Returns an unsubscribe. */
  onChange(listener: () => void): () => void;
}

/** A small listener set for backends' change events. */
export class ChangeListeners {
  readonly #set = new Set<() => void>();
  add(listener: () => void): () => void {
    this.#set.add(listener);
    return () => this.#set.delete(listener);
  }
  emit(): void {
    for (const l of this.#set) l();
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when aborted first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason as Error);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
