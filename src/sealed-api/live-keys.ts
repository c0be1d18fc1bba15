/**
 * The server's keys while it runs: loaded at start (created on first start), reloaded when the key file
 * changes on disk (a poll; `gatehouse clients rotate-server-key` writes it), and the public half written to
 * `server-public.json` before new keys are announced. A failed reload is logged and the previous keys stay.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from '../core/log.ts';
import { writeFileAtomic } from './atomic.ts';
import {
  loadKeyRing,
  loadOrCreateServerKeyFile,
  publicInfo,
  type ServerKeyRing,
  type ServerPublicInfo,
} from './keys.ts';

export class LiveServerKeys {
  #ring: ServerKeyRing | undefined;
  #info: ServerPublicInfo | undefined;
  #sig = '';
  #poll: NodeJS.Timeout | undefined;

  constructor(
    readonly keyFile: string,
    private readonly publicFile: string,
    private readonly log: Logger,
  ) {}

  /** The key ring. @throws Error before the first load */
  get ring(): ServerKeyRing {
    if (this.#ring === undefined) throw new Error('sealed API keys not loaded');
    return this.#ring;
  }

  /** The public keys clients pin. @throws Error before the first load */
  get info(): ServerPublicInfo {
    if (this.#info === undefined) throw new Error('sealed API not started');
    return this.#info;
  }

  /** Loads (first) or reloads the keys if the file changed. @throws GatewayError SEALED_KEYS_INVALID */
  async load(first: boolean): Promise<void> {
    const st = await stat(this.keyFile).catch(() => undefined);
    if (!first && st !== undefined && `${st.ino}:${st.size}:${st.mtimeMs}` === this.#sig) return;
    const { file, created } = await loadOrCreateServerKeyFile(this.keyFile);
    const nextRing = await loadKeyRing(file, this.keyFile);
    const nextInfo = publicInfo(file);
    // The public half, for local clients and `gatehouse call` (pinning it is the client's job); written
    // before the new keys are announced, so serverInfo() never runs ahead of the file.
    await writeFileAtomic(this.publicFile, `${JSON.stringify(nextInfo, null, 2)}\n`, { mode: 0o644 });
    this.#ring = nextRing;
    this.#info = nextInfo;
    const now = await stat(this.keyFile);
    this.#sig = `${now.ino}:${now.size}:${now.mtimeMs}`;
    if (created) this.log.info({ kid: nextRing.current.kid, file: this.keyFile }, 'server key pair created');
    else
      this.log.info(
        { kid: nextRing.current.kid, keys: nextRing.encryption.size },
        first ? 'server keys loaded' : 'server keys reloaded',
      );
  }

  /** Polls the key file every `everyMs`. */
  watch(everyMs: number): void {
    this.#poll = setInterval(() => {
      this.load(false).catch((err: unknown) =>
        this.log.error({ err }, 'server keys not reloaded; the previous ones stay in force'),
      );
    }, everyMs);
    this.#poll.unref();
  }

  stop(): void {
    if (this.#poll !== undefined) clearInterval(this.#poll);
  }
}
