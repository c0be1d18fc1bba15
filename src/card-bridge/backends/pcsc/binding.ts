/**
 * The slice of the optional npm `smartcard` binding (pcsc-lite through N-API) the PC/SC hosts use, typed
 * here so the dependency stays optional, and its loader. Only the host processes (host.ts) make PC/SC
 * calls; the gateway's own process loads the module at most to learn whether it is installed.
 * Which calls block the calling thread: the Context constructor (SCardEstablishContext), listReaders
 * (SCardListReaders + SCardGetStatusChange), cancel, close, disconnect, getStatus. connect, reconnect and
 * transmit run on the libuv thread pool and return promises.
 */

export interface PcscCard {
  transmit(command: Buffer, options?: { maxRecvLength?: number; autoGetResponse?: boolean }): Promise<Buffer>;
  getStatus(): { atr: Buffer };
  disconnect(disposition?: number): void;
  reconnect(shareMode?: number, protocol?: number, initialization?: number): Promise<number>;
}
export interface PcscReader {
  readonly name: string;
  readonly atr: Buffer | null;
  readonly state: number;
  connect(shareMode?: number, protocol?: number): Promise<PcscCard>;
}
export interface PcscContext {
  readonly isValid: boolean;
  listReaders(): PcscReader[];
  cancel(): void;
  close(): void;
}
export interface PcscMonitor {
  start(cb: (ev: { type: string; reader: string; atr: Buffer | null }) => void): void;
  stop(): void;
}
export interface PcscModule {
  Context: new () => PcscContext;
  ReaderMonitor: new () => PcscMonitor;
  SCARD_SHARE_SHARED: number;
  SCARD_PROTOCOL_T0: number;
  SCARD_PROTOCOL_T1: number;
  SCARD_RESET_CARD: number;
  SCARD_LEAVE_CARD: number;
  SCARD_STATE_PRESENT: number;
}

/** Loads the optional binding; the reason when it is not installed or not loadable. */
export async function loadPcsc(): Promise<{ module: PcscModule } | { error: string }> {
  try {
    const name = 'smartcard';
    const m = (await import(name)) as { default?: PcscModule } & PcscModule;
    return { module: m.Context === undefined ? m.default! : m };
  } catch (err) {
    return { error: (err as Error).message.split('\n')[0] ?? 'unknown error' };
  }
}
