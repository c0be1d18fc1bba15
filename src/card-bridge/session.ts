/**
 * One line-protocol connection: the only place a socket meets the decoder. Requests are answered strictly
 * in order, one at a time per connection (different connections run in parallel; cards lock themselves).
 *
 * Phases and their deadlines: idle between requests (`idleMs`, closed quietly), reading one request
 * (`requestReadMs`, answered C089 under the unfinished line's id when it can be read, and closed; it runs
 * only while we read, so it starts afresh after backpressure paused reading), answers unread by the client
 * (`writeMs`, destroyed). A request ends at its empty line, or at the end of a read after a command line
 * (foxyproxy's rule, see protocol/lines.ts). At most
 * `maxPendingRequests` decoded requests wait, also within one read: the decoder stops there and holds the
 * rest of the read as raw bytes (charged to the budget at their size), reading pauses, and the rest is
 * decoded as the queue drains; reading resumes once it is all decoded and the queue has room
 * (backpressure, nothing dropped). The end of a read (its JSignPdf rule) and EOF count only once the whole
 * read is decoded.
 * A limit (line, commands, request size) is answered C088 after the earlier requests' answers, then closed.
 * EOF from the client ends the request in progress as if the empty line had come, answers, then closes.
 * Bytes already read are answered on a graceful stop too (`drain`), but not after a fault or a limit.
 * Every entry point (socket events, timers, the request pump) runs inside the connection's fault boundary:
 * a bug answers `C090` (CORE_INTERNAL) and closes this connection only.
 */
import type { Socket } from 'node:net';
import { errorSpec, type ErrorCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { FaultBoundary } from '../core/fault.ts';
import type { BudgetAccount, ByteBudget } from '../core/budget.ts';
import type { CardBridgeConfig } from './config.ts';
import { executeRequest, type ExecuteContext } from './commands.ts';
import { formatAnswers } from './protocol/answers.ts';
import { RequestDecoder, type Request } from './protocol/lines.ts';

export interface SessionContext {
  readonly config: CardBridgeConfig;
  readonly exec: ExecuteContext;
  readonly log: Logger;
  readonly closed: (s: LineSession) => void;
  /** The memory budget shared by every connection of the bridge (limits.maxBufferedBytes). */
  readonly budget: ByteBudget;
}

/** About how many bytes a decoded request holds (its strings), for the shared budget. */
export function requestBytes(req: Request): number {
  let n = 16 + (req.reader?.text.length ?? 0);
  for (const item of req.items) {
    n += 16;
    for (const v of Object.values(item)) if (typeof v === 'string') n += v.length;
  }
  return n;
}

/** What one connection holds now, and the most requests that ever waited on it at once (read-only). */
export interface LineSessionStats {
  /** Decoded requests waiting to run (the running one not counted); at most limits.maxPendingRequests. */
  readonly queuedRequests: number;
  /** The most requests that waited at once on this connection. */
  readonly peakQueuedRequests: number;
  /** Bytes of the latest read not decoded yet (held while the queue is full). */
  readonly undecodedBytes: number;
  /** What this connection is charged in the shared budget (limits.maxBufferedBytes), in bytes. */
  readonly budgetBytes: number;
}

export class LineSession {
  readonly #decoder: RequestDecoder;
  readonly #queue: Request[] = [];
  /** What this connection holds in the shared budget: the request being read, queued and running ones. */
  readonly #account: BudgetAccount;
  #queuedBytes = 0;
  #runningBytes = 0;
  #busy = false;
  #ending = false;
  /** The client half-closed; applied (as the empty line) once the bytes read before it are decoded. */
  #eof = false;
  #eofApplied = false;
  #finalAnswer: Buffer | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #readTimer: NodeJS.Timeout | undefined;
  #writeTimer: NodeJS.Timeout | undefined;
  #done = false;
  /** Aborted when the connection closes: the request in progress runs no further commands. */
  readonly #gone = new AbortController();
  readonly #log: Logger;
  readonly #boundary: FaultBoundary;
  #peakQueued = 0;
  /** Requests answered on this connection. */
  answered = 0;

  constructor(
    readonly socket: Socket,
    private readonly ctx: SessionContext,
  ) {
    const l = ctx.config.limits;
    this.#decoder = new RequestDecoder({ maxLineBytes: l.maxLineBytes, maxCommands: l.maxCommandsPerRequest, maxRequestBytes: l.maxRequestBytes });
    this.#log = ctx.log.child({ remote: socket.remoteAddress, port: socket.remotePort });
    this.#account = ctx.budget.account();
    this.#boundary = new FaultBoundary(this.#log, () => this.#onFault(), () => socket.destroy());
    const b = this.#boundary;
    socket.setNoDelay(true);
    socket.on('data', b.wrap((chunk: Buffer) => this.#onData(chunk)));
    socket.on('end', b.wrap(() => this.#onEnd()));
    socket.on('error', (err) => this.#log.debug({ err: err.message }, 'socket error'));
    // Cleanup runs even after a fault: the server must learn the connection is gone.
    socket.on('close', () => this.#cleanup());
    socket.on('drain', b.wrap(() => this.#onDrain()));
    this.#armIdle();
  }

  /** True while the connection has work in hand (a request being read, queued or executed). */
  get working(): boolean {
    return this.#busy || this.#queue.length > 0 || this.#decoder.inRequest || this.#decoder.undecodedBytes > 0;
  }

  /** Read-only counters (tests, monitoring). */
  get stats(): LineSessionStats {
    return { queuedRequests: this.#queue.length, peakQueuedRequests: this.#peakQueued, undecodedBytes: this.#decoder.undecodedBytes, budgetBytes: this.#account.heldBytes };
  }

  /** Graceful stop: stop reading; answer what is queued; then end. */
  drain(): void {
    if (this.#ending) return;
    this.#ending = true;
    this.socket.pause();
    this.#clearTimer('read');
    this.#maybeFinish();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** After a bug: one `C090` line (what the client reads as an internal error), then close. */
  #onFault(): void {
    this.#ending = true;
    this.#queue.length = 0;
    this.#decoder.dropHeld();
    this.#clearTimer('idle');
    this.#clearTimer('read');
    this.socket.pause();
    if (!this.socket.destroyed) this.socket.end(formatAnswers([{ id: '', result: errorSpec('CORE_INTERNAL').lineResult! }], false));
    setTimeout(() => this.socket.destroy(), this.ctx.config.timeouts.closeFlushMs).unref();
  }

  /** Runs the request pump; its failures are this connection's faults. */
  #runPump(): void {
    this.#pump().catch(this.#boundary.catch);
  }

  #onData(chunk: Buffer): void {
    if (this.#ending) return;
    this.#feed(chunk);
  }

  /**
   * Decodes as many requests as the queue has room for: from a new read (`chunk`), or from the held rest of
   * the latest one. What does not fit stays raw in the decoder and reading stays paused.
   */
  #feed(chunk: Buffer | undefined): void {
    const room = this.ctx.config.limits.maxPendingRequests - this.#queue.length;
    const pushed = chunk === undefined ? this.#decoder.resume(room) : this.#decoder.push(chunk, room);
    const holding = this.#decoder.undecodedBytes > 0;
    // A read that ends at a line end may complete a request with no empty line (JSignPdf; see lines.ts),
    // once all of it is decoded.
    const events = holding || pushed.some((e) => e.kind === 'limit') ? pushed : [...pushed, ...this.#decoder.endOfRead()];
    // Only protocol progress counts as activity: lines that are not protocol lines do not keep a
    // connection alive past idleMs.
    if (events.length === 0 && !this.#decoder.inRequest && !holding) {
      // A partial non-protocol line armed the request deadline; its line end disarms it (no request is open).
      if (this.#readTimer !== undefined) {
        this.#clearTimer('read');
        this.#armIdle();
      }
      this.#applyEof();
      return;
    }
    this.#clearTimer('idle');
    for (const ev of events) {
      if (ev.kind === 'request') {
        this.#queue.push(ev.request);
        this.#peakQueued = Math.max(this.#peakQueued, this.#queue.length);
        this.#queuedBytes += requestBytes(ev.request);
        this.#clearTimer('read');
      } else {
        this.#log.warn({ code: ev.code }, 'limit exceeded; answering and closing');
        this.#fail(ev.code, ev.id);
        this.#runPump();
        return;
      }
    }
    if (!this.#charge()) {
      // Declared policy when the shared budget is full: the connection whose bytes do not fit is answered
      // busy (after the answers it is owed) and closed; every other connection keeps what it has.
      this.#log.warn({ code: 'CARD_LIMIT_BUFFERED', heldBytes: this.#account.heldBytes }, 'memory budget for requests is full; answering and closing');
      this.#fail('CARD_LIMIT_BUFFERED', this.#decoder.pendingId);
      this.#runPump();
      return;
    }
    if (!this.#decoder.inRequest) this.#clearTimer('read');
    else this.#armRead();
    if (holding || this.#queue.length >= this.ctx.config.limits.maxPendingRequests) this.#pause();
    this.#applyEof();
    this.#runPump();
    this.#armIdle();
  }

  /**
   * The queue has room again: decode on into the held rest of the read; once it is all decoded, apply a
   * pending EOF, or resume reading.
   */
  #refill(): void {
    if (this.#done || this.#finalAnswer !== undefined) return;
    const max = this.ctx.config.limits.maxPendingRequests;
    if (this.#decoder.undecodedBytes > 0) {
      if (this.#queue.length < max) this.#feed(undefined);
      // The read is not all decoded yet, or decoding it ended the connection.
      if (this.#decoder.undecodedBytes > 0 || this.#done || this.#finalAnswer !== undefined) return;
    }
    this.#applyEof();
    if (!this.#ending && !this.#eof && this.socket.isPaused() && this.#queue.length < max && !this.socket.writableNeedDrain) this.#resume();
  }

  /** EOF ends the request in progress as if the empty line had come, once every byte before it is decoded. */
  #applyEof(): void {
    if (!this.#eof || this.#eofApplied || this.#done || this.#decoder.undecodedBytes > 0) return;
    // That last request needs a place in the queue too; the pump calls again when there is one.
    if (!this.#ending && this.#decoder.inRequest && this.#queue.length >= this.ctx.config.limits.maxPendingRequests) return;
    this.#eofApplied = true;
    if (!this.#ending && this.#decoder.inRequest) this.#feed(Buffer.from('\n\n'));
    this.#ending = true;
    this.#clearTimer('read');
    this.#maybeFinish();
  }

  /** Charges what this connection holds now to the shared budget; false when it does not fit. */
  #charge(): boolean {
    return this.#account.set(this.#decoder.heldBytes + this.#queuedBytes + this.#runningBytes);
  }

  /** The request-read deadline runs only while we read: a client is not blamed for our own backpressure. */
  #armRead(): void {
    if (this.#readTimer !== undefined || this.#ending || this.socket.isPaused() || !this.#decoder.inRequest) return;
    this.#readTimer = setTimeout(
      this.#boundary.wrap(() => {
        this.#readTimer = undefined;
        this.#log.warn({ code: 'CARD_REQUEST_READ_TIMEOUT' }, 'request not finished in time; answering and closing');
        this.#fail('CARD_REQUEST_READ_TIMEOUT', this.#decoder.pendingId);
      }),
      this.ctx.config.timeouts.requestReadMs,
    );
  }

  /** Backpressure: stop reading (and the request-read deadline with it). */
  #pause(): void {
    this.socket.pause();
    this.#clearTimer('read');
  }

  #resume(): void {
    this.socket.resume();
    this.#armRead();
  }

  #onEnd(): void {
    this.#eof = true;
    this.#applyEof();
  }

  #fail(code: ErrorCode, id: string): void {
    this.#ending = true;
    // The bytes of the read not decoded yet are not answered: the connection closes after this answer.
    this.#decoder.dropHeld();
    this.socket.pause();
    this.#clearTimer('read');
    this.#finalAnswer = formatAnswers([{ id, result: errorSpec(code).lineResult ?? 'C090' }], false);
    this.#maybeFinish();
  }

  async #pump(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (;;) {
        if (this.#done || this.socket.writableNeedDrain) break;
        const req = this.#queue.shift();
        if (req === undefined) break;
        this.#runningBytes = requestBytes(req);
        this.#queuedBytes -= this.#runningBytes;
        const answers = await executeRequest(req, { ...this.ctx.exec, signal: this.#gone.signal });
        this.#runningBytes = 0;
        // Giving bytes back always fits.
        this.#charge();
        if (this.#done) break;
        this.answered++;
        this.#write(formatAnswers(answers, this.ctx.config.atAfterEveryAnswer));
        if (this.ctx.config.closeAfterAnswer) {
          this.#queue.length = 0;
          this.#decoder.dropHeld();
          this.drain();
          break;
        }
        this.#refill();
      }
    } finally {
      this.#busy = false;
    }
    this.#maybeFinish();
    this.#armIdle();
  }

  #write(bytes: Buffer): void {
    if (this.#done || this.socket.destroyed) return;
    if (!this.socket.write(bytes)) {
      this.#pause();
      this.#writeTimer ??= setTimeout(() => {
        this.#log.warn({ code: 'CARD_WRITE_TIMEOUT' }, 'client does not read its answers; destroying');
        this.socket.destroy();
      }, this.ctx.config.timeouts.writeMs);
    }
  }

  #onDrain(): void {
    this.#clearTimer('write');
    this.#refill();
    this.#runPump();
  }

  #maybeFinish(): void {
    if (!this.#ending || this.#busy || this.#queue.length > 0 || this.#done) return;
    // Bytes already read are still answered (a graceful drain, or EOF right after a big read).
    if (this.#decoder.undecodedBytes > 0) return;
    if (this.#finalAnswer !== undefined) {
      this.#write(this.#finalAnswer);
      this.#finalAnswer = undefined;
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), this.ctx.config.timeouts.closeFlushMs).unref();
  }

  #armIdle(): void {
    if (this.#ending || this.#done || this.working) return;
    this.#clearTimer('idle');
    this.#idleTimer = setTimeout(
      this.#boundary.wrap(() => {
        this.#log.info({ code: 'CARD_IDLE_TIMEOUT' }, 'idle connection closed');
        this.drain();
      }),
      this.ctx.config.timeouts.idleMs,
    );
  }

  #clearTimer(which: 'idle' | 'read' | 'write'): void {
    const t = which === 'idle' ? this.#idleTimer : which === 'read' ? this.#readTimer : this.#writeTimer;
    if (t !== undefined) clearTimeout(t);
    if (which === 'idle') this.#idleTimer = undefined;
    else if (which === 'read') this.#readTimer = undefined;
    else this.#writeTimer = undefined;
  }

  #cleanup(): void {
    if (this.#done) return;
    this.#done = true;
    this.#gone.abort();
    this.#clearTimer('idle');
    this.#clearTimer('read');
    this.#clearTimer('write');
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#decoder.dropHeld();
    this.#account.release();
    this.ctx.closed(this);
  }
}
