/**
 * Kernel-side relaying for plain stream tunnels (TCP and unix on both sides): the optional native addon
 * in native/ moves bytes with splice(2) on a background thread, so bulk transfers cost no copies into
 * JavaScript and no work on the event loop. When the addon is not built (or not Linux) `loadSplice()`
 * gives undefined and tunnels keep the JavaScript data path.
 */
import { createRequire } from 'node:module';

export type SpliceEvent = { kind: 'half'; direction: 0 | 1 } | { kind: 'done' } | { kind: 'error'; errno: number } | { kind: 'stopped' };

interface Addon {
  init(onEvent: (id: number, kind: number, dir: number, errno: number) => void): void;
  start(id: number, fdA: number, fdB: number, counters: BigUint64Array): void;
  stop(id: number): void;
  ref(on: boolean): void;
}

export interface SpliceEngine {
  /**
   * Hands two sockets' file descriptors to the kernel relay. `counters[0]` counts bytes A→B, `[1]` B→A.
   * Events arrive on the event loop; after `done`, `error` or `stopped` the fds are no longer used.
   */
  start(fdA: number, fdB: number, onEvent: (e: SpliceEvent) => void): { id: number; counters: BigUint64Array };
  stop(id: number): void;
}

let engine: SpliceEngine | null | undefined;

/** The engine, or undefined when the addon is unavailable. Loaded once. */
export function loadSplice(): SpliceEngine | undefined {
  if (engine !== undefined) return engine ?? undefined;
  engine = null;
  if (process.platform !== 'linux' || process.env.GATEHOUSE_NO_SPLICE === '1') return undefined;
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)('../../native/build/Release/splice_relay.node') as Addon;
  } catch {
    return undefined;
  }
  const handlers = new Map<number, (e: SpliceEvent) => void>();
  addon.init((id, kind, dir, errno) => {
    const h = handlers.get(id);
    if (h === undefined) return;
    const e: SpliceEvent = kind === 0 ? { kind: 'half', direction: dir === 1 ? 1 : 0 } : kind === 1 ? { kind: 'done' } : kind === 2 ? { kind: 'error', errno } : { kind: 'stopped' };
    if (e.kind !== 'half') {
      handlers.delete(id);
      if (handlers.size === 0) addon.ref(false);
    }
    h(e);
  });
  let nextId = 1;
  engine = {
    start(fdA, fdB, onEvent) {
      const id = nextId++ >>> 0;
      const counters = new BigUint64Array(2);
      if (handlers.size === 0) addon.ref(true);
      handlers.set(id, onEvent);
      try {
        addon.start(id, fdA, fdB, counters);
      } catch (err) {
        handlers.delete(id);
        if (handlers.size === 0) addon.ref(false);
        throw err;
      }
      return { id, counters };
    },
    stop(id) {
      addon.stop(id);
    },
  };
  return engine;
}
