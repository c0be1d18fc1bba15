/**
 * Fair shares of one event-loop turn for the JavaScript data path (what `pipe()` gets from its 16 KiB
 * buffers, without shrinking a lone tunnel's buffer).
 *
 * Why: libuv reads a readable socket up to 32 times (64 KiB each) per readiness event, and a tunnel only
 * pauses its reader when its writer has `tunnelBufferBytes` queued. With many busy tunnels one poll phase
 * then copies megabytes per socket, and a quiet tunnel's few bytes wait for all of it (0.7 s behind 64
 * busy tunnels). Here every reader that has used its share of a turn pauses and is resumed after the turn
 * (a `setImmediate`, after the poll phase), so a turn copies about `turnBytes` in total, split evenly
 * among the readers that were busy in it (at least the reader's `minShareBytes`, one read's worth). A
 * lone tunnel's share is the whole `turnBytes`, so it yields once per `turnBytes` (a setImmediate and a
 * read restart), which costs it nothing measurable.
 *
 * With many busy readers even one read each would make a turn far longer than `turnBytes` (64 readers of
 * 64 KiB: 4 MiB, and a quiet tunnel's ping waits for two such turns). So:
 * - the end of a turn resumes yielded readers, first come first served, only until what they delivered
 *   in the turn they yielded in (at least one ordinary read, `minShareBytes`, at most the reader's own
 *   share: a reader's estimate of its next turn) adds up to `turnBytes`; the others
 *   wait, in order, for the next turns (each busy reader still gets its turn in every
 *   `readers × delivered / turnBytes`). Counting delivered bytes, not shares, matters when sockets have
 *   less than a share ready (512 busy tunnels: reads of 16-100 KiB against 256 KiB shares; counted as
 *   shares, the turns moved a fraction of `turnBytes` and throughput fell by two thirds);
 * - once a turn has delivered `turnBytes`, a reader that delivers `lightBytes` or more in it yields at once
 *   (a reader whose socket never has a whole share ready would otherwise read in every turn, unpaused).
 *   Readers below `lightBytes` (pings, requests, a quiet tunnel) are never held back.
 *
 * Not a socket in sight: readers are small records with a resume callback.
 */

/** One reading direction of a tunnel (its counters; owned by the caller, charged here). */
export interface TurnReader {
  /** The turn in which `bytes` were counted. */
  turn: number;
  /** Bytes this reader delivered in `turn`. */
  bytes: number;
  /** The least this reader may deliver per turn (its read size). */
  readonly minShareBytes: number;
}

interface Waiting {
  readonly resume: () => void;
  readonly shareBytes: number;
}

export class ReadTurns {
  #turn = 1;
  #readersThisTurn = 0;
  #readersLastTurn = 1;
  /** Bytes all readers delivered in this turn. */
  #turnUsed = 0;
  #scheduled = false;
  /** Yielded readers, oldest first, from `#next` on (a queue without per-turn copying). */
  #yielded: Waiting[] = [];
  #next = 0;

  /**
   * @param turnBytes Bytes all readers together may deliver in one turn before the busy ones yield.
   * @param minShareBytes A reader's least share per turn unless `reader()` says otherwise (one read).
   * @param lightBytes Readers that deliver less than this in a turn never yield for the turn's total.
   */
  constructor(
    readonly turnBytes: number,
    readonly minShareBytes: number,
    readonly lightBytes = 16 * 1024,
  ) {}

  /** A new reader's counters; `minShareBytes`: its read size, when not the default. */
  reader(minShareBytes = this.minShareBytes): TurnReader {
    return { turn: 0, bytes: 0, minShareBytes };
  }

  /**
   * Counts `n` delivered bytes; true when the reader has used its share of this turn (or the turn is full
   * and the reader is not light) and should pause, then hand its resume to `yieldTurn`.
   */
  charge(r: TurnReader, n: number): boolean {
    if (r.turn !== this.#turn) {
      r.turn = this.#turn;
      r.bytes = 0;
      this.#readersThisTurn++;
      this.#schedule();
    }
    r.bytes += n;
    this.#turnUsed += n;
    const readers = Math.max(this.#readersLastTurn, this.#readersThisTurn);
    if (r.bytes >= Math.max(r.minShareBytes, this.turnBytes / readers)) return true;
    return this.#turnUsed >= this.turnBytes && r.bytes >= this.lightBytes;
  }

  /**
   * Calls `resume` once the current turn is over, or a later one when more readers wait than a turn can
   * serve (the caller re-checks its own state there).
   */
  yieldTurn(resume: () => void, r?: TurnReader): void {
    // Counted as at least one ordinary read: a reader cut short by a full turn reads a whole one next time.
    const delivered = r === undefined || r.turn !== this.#turn ? this.minShareBytes : r.bytes;
    const floor = r === undefined ? this.minShareBytes : Math.min(r.minShareBytes, this.minShareBytes);
    // And at most its own share: a reader that got a bigger share from a thin turn would shrink the next
    // turns to a few readers (WS x 64: 4 readers of 256 KiB per turn, half the throughput).
    const cap = r === undefined ? this.minShareBytes : r.minShareBytes;
    this.#yielded.push({ resume, shareBytes: Math.min(this.turnBytes, cap, Math.max(floor, delivered)) });
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
    this.#turnUsed = 0;
    this.#turn++;
    const q = this.#yielded;
    const start = this.#next;
    let end = start;
    for (let budget = 0; end < q.length && (end === start || budget < this.turnBytes); end++) budget += q[end]!.shareBytes;
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
    for (let i = start; i < end; i++) q[i]!.resume();
    if (this.#next < this.#yielded.length) this.#schedule();
  };

  /** Readers waiting for a later turn (for tests and diagnostics). */
  get waiting(): number {
    return this.#yielded.length - this.#next;
  }
}
