/**
 * The replay horizon (with a replay cache in memory: this process's, or the primary's between workers;
 * a shared replay directory or Redis survives restarts by itself). A request is refused when its iat is
 * before the process started, but the previous process accepted iat up to its own clock + skew. A request dated ahead of our clock is therefore recorded,
 * rounded up to HORIZON_STEP_MS, in `<stateDir>/replay-horizon` before its action runs, and the next
 * process refuses every iat before that mark. At most one fsynced write per step, and only for clients
 * whose clock runs ahead. Workers of one machine share the file: a write never lowers the mark on disk
 * (read, then write the larger; two workers writing in the same instant can still race).
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from '../core/log.ts';
import { writeFileAtomic } from './atomic.ts';

/** Granularity of the horizon on disk. */
export const HORIZON_STEP_MS = 10000;

export class ReplayHorizon {
  #durableMs = 0;
  #pendingMs = 0;
  #write: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly log: Logger,
    /** False with a shared replay store: nothing is read or written, every request passes. */
    private readonly enabled: boolean,
  ) {}

  /** Reads the mark the previous process left (0 when none or disabled); requests before it are refused. */
  async load(): Promise<number> {
    const mark = this.enabled ? await this.#read() : 0;
    this.#durableMs = this.#pendingMs = mark;
    return mark;
  }

  /** The mark on disk (0 when none or unreadable). */
  async #read(): Promise<number> {
    try {
      const n = Number((await readFile(this.file, 'utf8')).trim());
      return Number.isFinite(n) && n > 0 ? n : 0;
    } catch {
      return 0;
    }
  }

  /**
   * True once a restart is guaranteed to refuse a request issued at `iatMs` (at once when it is not
   * ahead of `nowMs`). False when the mark could not be written (logged): the action must not run.
   * Never rejects.
   */
  async guard(iatMs: number, nowMs: number): Promise<boolean> {
    if (!this.enabled || iatMs <= nowMs) return true;
    if (iatMs > this.#pendingMs) {
      const target = Math.ceil(iatMs / HORIZON_STEP_MS) * HORIZON_STEP_MS;
      this.#pendingMs = target;
      this.#write = this.#write.then(async () => {
        if (target <= this.#durableMs) return;
        try {
          // Workers of one machine share this file: never lower a mark another process wrote.
          const onDisk = await this.#read();
          if (onDisk < target) await writeFileAtomic(this.file, `${target}\n`, { mode: 0o600 });
          this.#durableMs = Math.max(this.#durableMs, target);
        } catch (err) {
          this.log.error({ err, file: this.file }, 'replay horizon not written');
          if (this.#pendingMs === target) this.#pendingMs = this.#durableMs;
        }
      });
    }
    await this.#write;
    return iatMs <= this.#durableMs;
  }
}
