/**
 * The replay guard: remembers every accepted (client, jti) until its `exp` + skew, after which the claim
 * check alone refuses the request. Bounded: when full (after dropping expired entries) a new request is
 * refused; entries are never evicted early, since eviction would reopen the replay window.
 *
 * `ReplayStore` is the seam for a store shared by several gateway processes (e.g. Redis `SET NX PX`);
 * the memory store serves one process, the directory store several processes on one host.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, link, mkdir, open, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../core/log.ts';

export type ReplayVerdict = 'fresh' | 'duplicate' | 'full';

export interface ReplayStore {
  /** Records `key` until `untilMs` unless already present. */
  remember(key: string, untilMs: number, nowMs: number): ReplayVerdict | Promise<ReplayVerdict>;
  readonly size: number;
}

export class MemoryReplayStore implements ReplayStore {
  readonly #entries = new Map<string, number>();
  /** Earliest expiry among entries (lower bound), to skip useless sweeps. */
  #nextExpiryMs = Infinity;

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.#entries.size;
  }

  remember(key: string, untilMs: number, nowMs: number): ReplayVerdict {
    const seen = this.#entries.get(key);
    if (seen !== undefined && seen >= nowMs) return 'duplicate';
    if (this.#entries.size >= this.maxEntries) {
      this.sweep(nowMs);
      if (this.#entries.size >= this.maxEntries) return 'full';
    }
    this.#entries.set(key, untilMs);
    if (untilMs < this.#nextExpiryMs) this.#nextExpiryMs = untilMs;
    return 'fresh';
  }

  /** Drops entries whose time has passed. */
  sweep(nowMs: number): void {
    if (nowMs < this.#nextExpiryMs) return;
    let next = Infinity;
    for (const [k, until] of this.#entries) {
      if (until < nowMs) this.#entries.delete(k);
      else if (until < next) next = until;
    }
    this.#nextExpiryMs = next;
  }
}

/**
 * A replay store shared by several gateway processes on one host: one file per (client, jti) in a
 * directory (0700), created with O_EXCL so exactly one process wins; the file's mtime is its expiry.
 * A timer sweeps expired files; the entry count is re-read from the directory on every sweep, so the
 * bound holds across processes to within one sweep interval. Full → refused, never evicted.
 *
 * If the directory vanishes, `remember` rejects (the server answers a sealed 503 and runs nothing) and the
 * sweep logs one error until the directory is back; the store does not recreate it, since the entries it
 * held are gone and an operator should know (recreate it 0700; requests it held could be replayed until
 * they expire, at most clock.maxLifetimeMs + skewMs).
 */
/** Entries being written (never a SHA-256 base64url name, which has no `.`). */
const TEMP_PREFIX = '.tmp-';

export class DirectoryReplayStore implements ReplayStore {
  #count = 0;
  #timer: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;
  #lastFullSweepMs = 0;
  #sweepFailing = false;

  constructor(
    readonly dir: string,
    private readonly maxEntries: number,
    private readonly sweepEveryMs = 10000,
    private readonly log?: Logger,
  ) {}

  get size(): number {
    return this.#count;
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    await this.sweep(Date.now());
    this.#timer = setInterval(() => {
      this.sweep(Date.now()).then(
        () => {
          if (!this.#sweepFailing) return;
          this.#sweepFailing = false;
          this.log?.info({ dir: this.dir }, 'replay directory sweep works again');
        },
        (err: unknown) => {
          if (this.#sweepFailing) return;
          this.#sweepFailing = true;
          this.log?.error(
            { err, code: 'SEALED_REPLAY_STORE_FAILED', dir: this.dir },
            'replay directory sweep failed',
          );
        },
      );
    }, this.sweepEveryMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }

  async remember(key: string, untilMs: number, nowMs: number): Promise<ReplayVerdict> {
    const file = join(this.dir, createHash('sha256').update(key).digest('base64url'));
    if (this.#count >= this.maxEntries) {
      if (nowMs - this.#lastFullSweepMs >= 1000) {
        this.#lastFullSweepMs = nowMs;
        await this.sweep(nowMs);
      }
      if (this.#count >= this.maxEntries) return 'full';
    }
    // The entry appears whole: written with its expiry under a temp name, then hard-linked into place
    // (which fails when it exists). Created in place, an entry was seen for a moment with its creation
    // time as expiry, so a concurrent identical request took it for expired, removed it and ran again.
    const temp = join(this.dir, `${TEMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    const fh = await open(temp, 'wx', 0o600);
    try {
      await fh.utimes(untilMs / 1000, untilMs / 1000);
    } finally {
      await fh.close();
    }
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          await link(temp, file);
          this.#count++;
          return 'fresh';
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          const st = await stat(file).catch(() => undefined);
          if (st !== undefined && st.mtimeMs >= nowMs) return 'duplicate';
          await unlink(file).catch(() => undefined);
        }
      }
      return 'duplicate';
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }

  /** Deletes expired entries and re-counts the directory (entries of every process). */
  sweep(nowMs: number): Promise<void> {
    this.#sweeping ??= (async () => {
      let count = 0;
      for (const name of await readdir(this.dir)) {
        const path = join(this.dir, name);
        const st = await stat(path).catch(() => undefined);
        if (st === undefined) continue;
        // A temp entry carries its expiry too: left by a crash, it goes once expired; never counted.
        if (st.mtimeMs < nowMs) await unlink(path).catch(() => undefined);
        else if (!name.startsWith(TEMP_PREFIX)) count++;
      }
      this.#count = count;
    })().finally(() => (this.#sweeping = undefined));
    return this.#sweeping;
  }
}
