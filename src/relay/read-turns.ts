/**
 * Fair shares of one event-loop turn for the JavaScript data path (what `pipe()` gets from its 16 KiB
 * buffers, without shrinking a lone tunnel's buffer).
 *
 * Why: libuv reads a readable socket up to 32 times (64 KiB each) per readiness event, and a tunnel only
 * pauses its reader when its writer has `tunnelBufferBytes` queued. With many busy tunnels one poll phase
 * then copies megabytes per socket, and a quiet tunnel's few bytes wait for all of it (0.7 s behind 64
 * busy tunnels). Here every reader that has used its share of a turn pauses and is resumed once the turn
 * is over (a `setImmediate`, after the poll phase), so a turn copies about `turnBytes` in total, split
 * evenly among the readers that were busy in it (at least `minShareBytes` each, one read's worth). A
 * lone tunnel's share is the whole `turnBytes`, so it yields once per `turnBytes` (a setImmediate and a
 * read restart), which costs it nothing measurable.
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
  #yielded: (() => void)[] = [];

  /**
   * @param turnBytes Bytes all readers together may deliver in one turn before the busy ones yield.
   * @param minShareBytes The least any reader may deliver per turn (one socket read is 64 KiB).
   */
  constructor(
    readonly turnBytes: number,
    readonly minShareBytes: number,
  ) {}

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

  /** Calls `resume` once the current turn is over (the caller re-checks its own state there). */
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
    const resumes = this.#yielded;
    this.#yielded = [];
    for (const resume of resumes) resume();
  };
}
