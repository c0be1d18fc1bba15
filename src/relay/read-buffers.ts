/**
 * Read buffers for the JavaScript data path's sockets inside a tunnel (TCP, unix, TLS, and the socket under
 * a WebSocket link): what the links' readIntoBuffers read into instead of the fresh ArrayBuffer Node
 * allocates per read (64 KiB for a plain socket, one per TLS record; links.ts).
 *
 * Why: every 64 KiB read costs a read system call, an allocation, a JS callback through the stream
 * machinery, a write, and (under load) a pause and a resume for the read turns (read-turns.ts: two
 * epoll_ctl). Reading a busy socket 256 KiB at a time divides all of those by four.
 *
 * Policy: a quiet socket reads into one small buffer shared by every such socket, and what it read is copied
 * out before anyone sees it (so nothing ever keeps the shared buffer). A socket whose read filled the
 * small buffer is busy: it gets a large buffer of its own and its reads are handed on as views of it.
 * When the view is still referenced after the handler returned (the partner could not write it all at
 * once: its write queue holds it), that large buffer is left to the writer and the socket gets a fresh
 * one; otherwise it reads into the same one again. A socket that reads less than the small buffer's size
 * has gone quiet: the buffer goes back to a small free list and the socket to the shared one (a busy
 * socket whose reads find less than a large buffer's worth ready keeps its large buffer). So idle
 * tunnels cost no buffer at all, and busy ones one large buffer each. Not a socket in sight.
 */

export class ReadBuffers {
  readonly #small: Buffer;
  readonly #free: Buffer[] = [];

  /**
   * @param largeBytes A busy socket's read size.
   * @param smallBytes The shared buffer's size (a quiet socket's read size; a read that fills it marks a
   *   busy socket).
   * @param keepFree Large buffers kept for reuse when sockets go quiet.
   */
  constructor(
    readonly largeBytes: number,
    readonly smallBytes: number,
    readonly keepFree: number,
  ) {
    this.#small = Buffer.allocUnsafeSlow(smallBytes);
  }

  /** The buffer every quiet socket reads into (its reads must be copied out at once). */
  get small(): Buffer {
    return this.#small;
  }

  /** Large buffers dropped since `onDropped` last ran, in bytes. */
  #dropped = 0;
  /**
   * Called once every `dropLimit` bytes of large buffers dropped (not kept for reuse): they lived long,
   * so only a full collection frees them (relay/tunnel.ts asks for one).
   */
  onDropped: (() => void) | undefined;
  dropLimit = 64 * 1024 * 1024;

  /** A large buffer nobody will use again (its reader ended while its partner's writer may hold it). */
  drop(buf: Buffer): void {
    this.#dropped += buf.length;
    if (this.#dropped < this.dropLimit) return;
    this.#dropped = 0;
    this.onDropped?.();
  }

  /** A large buffer for a busy socket (from the free list, or new). */
  large(): Buffer {
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.largeBytes);
  }

  /** A large buffer nobody references any more. */
  release(buf: Buffer): void {
    if (this.#free.length < this.keepFree) this.#free.push(buf);
    else this.drop(buf);
  }
}

/**
 * The process's read buffers for every tunnel's plain sockets: 256 KiB reads when busy (four of Node's),
 * a shared 16 KiB buffer when quiet, up to 16 large buffers kept free.
 */
export const TUNNEL_READ_BUFFERS = new ReadBuffers(256 * 1024, 16 * 1024, 16);

/**
 * The same for TLS and WSS sides, whose reads hand over one record (at most 16 KiB) at a time, four to a
 * buffer: smaller buffers, so that one a writer holds keeps less of the process's memory with it (512 busy
 * WSS tunnels: RSS peak 361-407 MB with 64 KiB, 449-453 MB with 128 KiB, at the same CPU per GiB).
 */
export const TUNNEL_TLS_READ_BUFFERS = new ReadBuffers(64 * 1024, 16 * 1024, 64);
