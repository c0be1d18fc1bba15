/**
 * Prompt reclamation of the JavaScript data path's spent buffers: a young-generation collection after
 * every `everyBytes` relayed in JavaScript (what keeps a TLS, WS or WSS transfer's RSS bounded).
 *
 * Why: every socket read (64 KiB plain, 16 KiB per TLS record) and every `ws` message reassembly allocates
 * a fresh ArrayBuffer whose small JS object dies young. V8 frees those backing stores only when it
 * collects, and with almost no JS garbage beside them it collects on external-memory pressure alone: once
 * the young generation's backing stores reach twice V8's default semi-space (32 MiB; `--max-semi-space-size`
 * does not move it), plus mark-compacts for the buffers that got promoted meanwhile. So a 1 GiB WS transfer
 * kept ~40 MB of dead buffers (and glibc's arena grew to hold them: RSS 140 MB). A scavenge of a young
 * generation that is nearly all garbage costs ~0.3 ms; one per 2 MiB relayed keeps the dead buffers to a
 * few MiB, and malloc then reuses the same warm memory instead of faulting in new pages, which made the
 * path faster as well (docs/benchmarks.md, "TLS/WS/WSS memory").
 *
 * The collector is V8's `gc` extension, obtained once, lazily (`--expose-gc` set for one new vm context and
 * unset again; `globalThis.gc` is used when the process was started with it). Where it cannot be had,
 * `charge` does nothing and the process only keeps V8's own pace. Not a socket in sight.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { keepFreedMemory } from './splice.ts';

/**
 * V8's `gc`: `{type: 'minor'}` collects the young generation; with no argument it runs a full collection
 * (on Node 20's V8 an options object asking for `type: 'major'` still collects only the young generation).
 */
type Collect = (options?: { type: 'minor' }) => void;

/** V8's `gc` function, or undefined where flags cannot be changed at run time. */
function obtainCollector(): Collect | undefined {
  const own: unknown = (globalThis as { gc?: unknown }).gc;
  if (typeof own === 'function') return own as Collect;
  try {
    setFlagsFromString('--expose-gc');
    try {
      const fn: unknown = runInNewContext('gc');
      return typeof fn === 'function' ? (fn as Collect) : undefined;
    } finally {
      // Only the context made above gets `gc`; nothing created later does.
      setFlagsFromString('--no-expose-gc');
    }
  } catch {
    return undefined;
  }
}

export class YoungGc {
  #sinceBytes = 0;
  /** undefined: not looked up yet; null: unavailable. */
  #collect: Collect | null | undefined;
  /** Collections run so far (for tests and diagnostics). */
  collections = 0;

  /**
   * @param everyBytes Relayed bytes between two young-generation collections.
   * @param prepare Called once, before the first collection (the allocator policy that goes with it).
   */
  constructor(
    readonly everyBytes: number,
    private readonly prepare: () => void = () => undefined,
  ) {}

  /**
   * Counts `n` bytes the JavaScript path relayed; once `everyBytes` have gone by, the young generation is
   * collected at the end of the current event-loop turn.
   */
  charge(n: number): void {
    this.#sinceBytes += n;
    if (this.#sinceBytes < this.everyBytes || this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#run);
  }

  /** A collection is due at the end of this event-loop turn. */
  #scheduled = false;
  /**
   * After the turn's reads and writes (a setImmediate), when the turn's short-lived objects are dead too:
   * a sync collection in the middle of a data handler cost more, and at most one runs per turn.
   */
  readonly #run = (): void => {
    this.#scheduled = false;
    this.#sinceBytes = 0;
    const collect = this.#collector();
    if (collect === null) return;
    collect({ type: 'minor' });
    this.collections++;
  };

  /**
   * A full collection at the end of this event-loop turn (at most one pending): for long-lived buffers
   * dropped in bulk (many tunnels ending), which only a full collection frees.
   */
  collectAll(): void {
    if (this.#major) return;
    this.#major = true;
    setImmediate(() => {
      this.#major = false;
      this.#collector()?.();
    });
  }
  #major = false;

  /** The collector, looked up (and `prepare` run) on first use; null where it cannot be had. */
  #collector(): Collect | null {
    if (this.#collect === undefined) {
      this.#collect = obtainCollector() ?? null;
      if (this.#collect !== null) this.prepare();
    }
    return this.#collect;
  }

  /** False where the collector could not be obtained (only known after the first `everyBytes`). */
  get available(): boolean {
    return this.#collect !== null;
  }
}

/**
 * The process's one collector for every JavaScript data path (legacy tunnels and the tunnel-proxy mode):
 * a young-generation collection per 2 MiB relayed. A 1 GiB TLS/WS/WSS transfer peaked at 123–140 MB RSS
 * without it and 88–94 MB with it (tsc build), and spent less CPU per GiB (docs/benchmarks.md); 4 MiB gave
 * 92–100 MB, 8 MiB 95–107 MB. Its first collection also asks glibc to keep freed memory (splice.ts).
 */
export const DATA_PATH_GC = new YoungGc(2 * 1024 * 1024, () => keepFreedMemory(64 * 1024 * 1024, 1024 * 1024));
