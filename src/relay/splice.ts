/**
 * Kernel-side relaying for plain stream tunnels (TCP and unix on both sides): the optional native addon
 * in native/ moves bytes with splice(2) on a background thread, so bulk transfers cost no copies into
 * JavaScript and no work on the event loop. When the addon is not built (or not Linux) `loadSplice()`
 * gives undefined (`spliceUnavailableReason()` says why) and tunnels keep the JavaScript data path.
 *
 * Contract with the addon: after `start`, exactly one final event (`done`, `error` or `stopped`) arrives
 * per tunnel; until it has arrived the addon's thread may use both fds, so the sockets must stay open.
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

export type SpliceEvent = { kind: 'half'; direction: 0 | 1 } | { kind: 'done' } | { kind: 'error'; errno: number } | { kind: 'stopped' };

/** The addon's API (native/splice-relay.c); it checks every argument and throws on a bad one. */
export interface SpliceAddon {
  /** `copy` (default true): read/write through one buffer; false: zero-copy splice(2) (native/splice-relay.c, pump()). */
  init(onEvent: (id: number, kind: number, dir: number, errno: number) => void, budgetPages?: number, copy?: boolean): void;
  stats(): SpliceStats;
  start(id: number, fdA: number, fdB: number, counters: BigUint64Array): void;
  stop(id: number): void;
  ref(on: boolean): void;
  /** The light thread's longest spin before it sleeps, in microseconds (0..1000; 0: never). */
  spin(micros: number): void;
  /** Test hook: fault-injection bits (1 allocations fail, 2 init cannot start its thread, 4 stops are ignored). */
  _faults(mask: number): void;
}

/** The addon's pipe accounting (native/splice-relay.c, PIPE_BYTES). */
export interface SpliceStats {
  /** Pages (4 KiB) the kernel relay's pipes hold now. */
  pagesUsed: number;
  /** The per-user pipe budget it sizes pipes against (0: none, the process has CAP_SYS_RESOURCE or no limit is set). */
  budgetPages: number;
  /** Tunnels whose pipes grew to 256 KiB after they started (pages freed by others). */
  grown: number;
  /**
   * Running tunnels without a pipe in at least one direction (the budget was spent when they started):
   * still on the kernel path, copying by peek/write/consume (native/splice-relay.c, pump_peek()).
   */
  pipeless: number;
  /**
   * Running tunnels on the addon's second thread, the one for tunnels that move little (pings, requests),
   * so they do not wait behind busy ones (native/splice-relay.c, relay_thread).
   */
  light: number;
  /**
   * Nanoseconds the light thread has spent spinning (polling before it sleeps, so a ping's answer does not
   * wait for a wake-up) since the addon started (native/splice-relay.c, wait_events()).
   */
  spinNs: number;
}

/** Either capability lifts the per-user pipe budget (the kernel's pipe_is_unprivileged_user()). */
const CAP_SYS_ADMIN = 21n;
const CAP_SYS_RESOURCE = 24n;

/**
 * The budget that applies given the sysctl's value (`fs.pipe-user-pages-soft`, pages) and the process's
 * effective capabilities (CapEff from /proc/self/status, hex): 0 (none) when the sysctl is 0 or the
 * process holds CAP_SYS_RESOURCE or CAP_SYS_ADMIN (root normally holds both; a container may drop one).
 */
export function pipeBudgetFrom(softPages: number, capEffHex: string | undefined): number {
  if (!Number.isInteger(softPages) || softPages <= 0) return 0;
  if (capEffHex !== undefined && /^[0-9a-f]+$/i.test(capEffHex)) {
    const caps = BigInt(`0x${capEffHex}`);
    if (((caps >> CAP_SYS_RESOURCE) & 1n) === 1n || ((caps >> CAP_SYS_ADMIN) & 1n) === 1n) return 0;
  }
  return softPages;
}

/**
 * The pipe page budget that applies to this process (pipeBudgetFrom): `fs.pipe-user-pages-soft` (16,384
 * pages = 64 MiB by default) unless a capability lifts it. Shared with every other process of the same user.
 */
export function pipeBudgetPages(): number {
  try {
    const soft = Number(readFileSync('/proc/sys/fs/pipe-user-pages-soft', 'utf8').trim());
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    return pipeBudgetFrom(soft, capEff);
  } catch {
    return 0;
  }
}

/** One line for the start log: how many tunnels the budget carries at which pipe size. */
export function describePipeBudget(budgetPages: number): string {
  if (budgetPages === 0) return 'no per-user pipe limit applies (CAP_SYS_RESOURCE, CAP_SYS_ADMIN or fs.pipe-user-pages-soft = 0): 256 KiB pipes for every tunnel';
  const mib = (budgetPages * 4) / 1024;
  // Half the budget for 256 KiB pipes (128 pages a tunnel), the rest for 64 KiB ones (32 pages).
  const big = Math.floor(budgetPages / 2 / 128);
  const small = Math.floor((budgetPages - big * 128) / 32);
  return `fs.pipe-user-pages-soft = ${budgetPages} pages (${mib} MiB, shared by this user's processes): up to ${big} tunnels with 256 KiB pipes and ${small} more with 64 KiB ones, the rest without pipes (copying; zero-copy splicing needs a pipe), all on the kernel path; raise the sysctl or give the service CAP_SYS_RESOURCE for more pipes`;
}

/** Where the built addon lives, relative to this file. */
export const SPLICE_ADDON_PATH = '../../native/build/Release/splice_relay.node';

/**
 * Asks glibc (through the addon's `mallocTune`) to keep up to `trimBytes` of freed memory and to serve
 * allocations below `mmapBytes` from its heap, both fixed. For the JavaScript data path, whose read buffers
 * young-gc.ts frees every couple of MiB: with glibc's defaults those pages went back to the kernel and were
 * faulted in again (64 busy tunnels: 13 → 7 Gbit/s, 0.66 → 1.2 CPU s/GiB). Independent of the kernel relay
 * being enabled; false where the addon is not built or glibc refused (the data path works either way).
 */
export function keepFreedMemory(trimBytes: number, mmapBytes: number): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const addon = createRequire(import.meta.url)(SPLICE_ADDON_PATH) as { mallocTune?: (t: number, m: number) => boolean };
    return addon.mallocTune?.(trimBytes, mmapBytes) === true;
  } catch {
    return false;
  }
}

export interface SpliceEngine {
  /**
   * Hands two sockets' file descriptors to the kernel relay. `counters[0]` counts bytes A→B, `[1]` B→A.
   * Events arrive on the event loop; after `done`, `error` or `stopped` (exactly one of them, always) the
   * fds are no longer used. Throws (and changes nothing) on bad fds or when the addon cannot allocate the
   * tunnel; a spent pipe budget is no obstacle (the tunnel then runs without pipes).
   */
  start(fdA: number, fdB: number, onEvent: (e: SpliceEvent) => void): { id: number; counters: BigUint64Array };
  /** Asks for the `stopped` event; a no-op once the final event has arrived. */
  stop(id: number): void;
  /** The addon's pipe accounting. */
  stats(): SpliceStats;
  /** The budget it sizes pipes against, for the start log (describePipeBudget). */
  readonly budgetPages: number;
  /**
   * The light thread's longest spin before it sleeps, in microseconds (`relay.splice.spinMicros`; 0: never).
   * One setting per process: the last relay server started sets it.
   */
  setSpinMicros(micros: number): void;
}

let engine: SpliceEngine | null | undefined;
let unavailable: string | undefined;

/** Why `loadSplice()` gave undefined (undefined when it has not been called or the engine loaded). */
export function spliceUnavailableReason(): string | undefined {
  return unavailable;
}

/** The engine, or undefined when the addon is unavailable. Loaded once. */
export function loadSplice(): SpliceEngine | undefined {
  if (engine !== undefined) return engine ?? undefined;
  engine = null;
  if (process.platform !== 'linux') {
    unavailable = `kernel relay is Linux only (this is ${process.platform})`;
    return undefined;
  }
  if (process.env.GATEHOUSE_NO_SPLICE === '1') {
    unavailable = 'kernel relay disabled by GATEHOUSE_NO_SPLICE=1';
    return undefined;
  }
  const handlers = new Map<number, (e: SpliceEvent) => void>();
  let addon: SpliceAddon;
  const budgetPages = pipeBudgetPages();
  try {
    addon = createRequire(import.meta.url)(SPLICE_ADDON_PATH) as SpliceAddon;
    // GATEHOUSE_SPLICE_COPY=0: zero-copy splicing (less relay CPU, more for the receiving peer; see the addon's pump()).
    addon.init(dispatch, budgetPages, process.env.GATEHOUSE_SPLICE_COPY !== '0');
  } catch (err) {
    unavailable = `native splice addon cannot load: ${(err as Error).message.split('\n')[0] ?? ''}`;
    return undefined;
  }
  function dispatch(id: number, kind: number, dir: number, errno: number): void {
    const h = handlers.get(id);
    if (h === undefined) return;
    const e: SpliceEvent = kind === 0 ? { kind: 'half', direction: dir === 1 ? 1 : 0 } : kind === 1 ? { kind: 'done' } : kind === 2 ? { kind: 'error', errno } : { kind: 'stopped' };
    if (e.kind !== 'half') {
      handlers.delete(id);
      if (handlers.size === 0) addon.ref(false);
    }
    h(e);
  }
  let nextId = 1;
  engine = {
    start(fdA, fdB, onEvent) {
      // Ids wrap after 2^32 tunnels: skip one still in use.
      let id = nextId++ >>> 0;
      while (handlers.has(id)) id = nextId++ >>> 0;
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
    stats: () => addon.stats(),
    budgetPages,
    setSpinMicros(micros) {
      addon.spin(micros);
    },
  };
  return engine;
}
