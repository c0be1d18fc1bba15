/**
 * Fair shares of one event-loop turn for the JavaScript data path (what `pipe()` gets from its 16 KiB
 * buffers, without shrinking a lone tunnel's buffer).
 *
 * Why: libuv reads a readable socket up to 32 times (64 KiB each) per readiness event, and a tunnel only
 * pauses its reader when its writer has `tunnelBufferBytes` queued. With many busy tunnels one poll phase
 * then copies megabytes per socket, and a quiet tunnel's few bytes wait for all of it (0.7 s behind 64
 * busy tunnels). Here every reader that has used its share of a turn pauses and is resumed after the turn
 * (a `setImmediate`, after the poll phase), so a turn copies about `turnBytes` in total, split evenly
 * among the readers that were busy in it (at least `minShareBytes` each, one read's worth). A lone
 * tunnel's share is the whole `turnBytes`, so it yields once per `turnBytes` (a setImmediate and a read
 * restart), which costs it nothing measurable.
 *
 * With more busy readers than `turnBytes / minShareBytes` (16 at 1 MiB and 64 KiB), even one read each
 * would make a turn longer than `turnBytes` (64 readers: 4 MiB, and a quiet tunnel's ping waits for two
 * such turns). So the end of a turn resumes at most that many yielded readers, first come first served;
 * the others wait, in order, for the next turns. Every turn stays near `turnBytes`, and each busy reader
 * still gets one read in every `readers / 16` turns.
 *
 * Not a socket in sight: readers are small records with a resume callback.
 */

/** One reading direction of a tunnel (its counters; owned by the caller, charged here). */
export interface TurnReader {
  /** The turn in which `bytes` were counted. */
  turn: number;
  /** Bytes this reader delivered in `turn`. */
  bytes: number;
}

export class ReadTurns {
  #turn = 1;
  #readersThisTurn = 0;
  #readersLastTurn = 1;
  #scheduled = false;
  /** Yielded readers' resumes, oldest first, from `#next` on (a queue without per-turn copying). */
  #yielded: (() => void)[] = [];
  #next = 0;
  /** Yielded readers resumed per turn end: one minimum share each fills a turn. */
  readonly #resumesPerTurn: number;

  /**
   * @param turnBytes Bytes all readers together may deliver in one turn before the busy ones yield.
   * @param minShareBytes The least any reader may deliver per turn (one socket read is 64 KiB).
   */
  constructor(
    readonly turnBytes: number,
    readonly minShareBytes: number,
  ) {
    this.#resumesPerTurn = Math.max(1, Math.floor(turnBytes / minShareBytes));
  }

  /** A new reader's counters. */
  reader(): TurnReader {
    return { turn: 0, bytes: 0 };
  }

  /**
   * Counts `n` delivered bytes; true when the reader has used its share of this turn and should pause,
   * then hand its resume to `yieldTurn`.
   */
  charge(r: TurnReader, n: number): boolean {
    if (r.turn !== this.#turn) {
      r.turn = this.#turn;
      r.bytes = 0;
      this.#readersThisTurn++;
      this.#schedule();
    }
    r.bytes += n;
    const readers = Math.max(this.#readersLastTurn, this.#readersThisTurn);
    return r.bytes >= Math.max(this.minShareBytes, this.turnBytes / readers);
  }

  /**
   * Calls `resume` once the current turn is over, or a later one when more readers wait than a turn can
   * serve (the caller re-checks its own state there).
   */
  yieldTurn(resume: () => void): void {
    this.#yielded.push(resume);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#endTurn);
  }

  readonly #endTurn = (): void => {
    this.#scheduled = false;
    this.#readersLastTurn = Math.max(1, this.#readersThisTurn);
    this.#readersThisTurn = 0;
    this.#turn++;
    const q = this.#yielded;
    const start = this.#next;
    const end = Math.min(q.length, start + this.#resumesPerTurn);
    // Readers that yield during the resumes below join whichever array is the queue by then.
    if (end === q.length) {
      this.#yielded = [];
      this.#next = 0;
    } else if (end >= 1024) {
      this.#yielded = q.slice(end); // drop the served part now and then (the queue never empties under load)
      this.#next = 0;
    } else {
      this.#next = end;
    }
    for (let i = start; i < end; i++) q[i]!();
    if (this.#next < this.#yielded.length) this.#schedule();
  };

  /** Readers waiting for a later turn (for tests and diagnostics). */
  get waiting(): number {
    return this.#yielded.length - this.#next;
  }
}
