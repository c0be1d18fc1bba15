/**
 * `gatehouse serve --workers N`, the primary process: forks N workers (node:cluster; they run the normal
 * serve path), holds the rendezvous table they pair through (relay/cluster/ipc-rendezvous.ts), prints one
 * banner once every worker listens, and owns the signals: SIGINT/SIGTERM tell every worker to drain
 * (`{gh:'shutdown'}`) and exit once all have; SIGHUP is passed to every worker (each reloads).
 *
 * Ports are shared through node:cluster (Node 20 has no `reusePort`): the primary owns each listening
 * socket and, by default, hands accepted connections to the workers in turn (round robin); with
 * `[cluster] acceptBy = "kernel"` the workers accept from the shared socket themselves (cheaper per
 * connection, spread by whichever worker wakes first).
 * A worker that dies after start is replaced (at most one replacement per second; a slot whose workers
 * keep dying within 10 s of their fork waits 1 s, 2 s, 4 s, … up to 30 s) in the same slot
 * (`GATEHOUSE_WORKER_SLOT`, 0-based: its forward port is port + slot); one that fails to start stops the
 * whole gateway (exit code of that worker).
 *
 * Forwarding between workers (a client whose partner waits in another worker): each worker listens on a
 * unix socket in a private directory the primary makes (0700, removed at exit) and the workers prove
 * themselves with a random key the primary hands them in the environment (`GATEHOUSE_FORWARD_DIR`,
 * `GATEHOUSE_FORWARD_KEY`), so no configuration is needed on one machine. A plain TCP or WebSocket client
 * is moved instead (relay/cluster/handoff.ts): its worker sends its socket here, the table's tunnel moves
 * with it, and the socket goes on to the partner's worker (back to its sender when that one is gone).
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../core/log.ts';
import { isRvRequest, PrimaryRendezvousTable } from '../relay/cluster/ipc-rendezvous.ts';
import { closeHandle, isHandoffMessage, type HandoffMessage, type SocketHandle } from '../relay/cluster/handoff.ts';
import { isTpRequest, PrimaryTpTable } from '../relay/cluster/tp-directory-ipc.ts';
import { createPrimaryViews, type PrimaryViewsOptions } from '../ops/workers.ts';
import { reportAndExit } from './exit.ts';
import { isCsRequest, PrimarySharedState } from '../core/cluster/ipc-shared.ts';

export interface PrimaryOptions {
  readonly workers: number;
  readonly maxWaitingPerToken: number;
  /** Whether the relay pairs through this table (false when Redis joins the workers). */
  readonly hostTable: boolean;
  /** `[cluster] acceptBy`: the primary hands connections round robin, or the workers accept themselves. */
  readonly acceptBy?: 'primary' | 'kernel';
  /**
   * `[shutdown] graceMs`: how long each worker may drain. A worker still there `graceMs` +
   * STOP_MARGIN_MS after SIGTERM (hung, stopped, stuck in a loop) is killed. Default 10000.
   */
  readonly graceMs?: number;
  readonly log: Logger;
  /** The ops listener and the relay monitor socket, served here for every worker (ops/workers.ts). */
  readonly views?: Pick<PrimaryViewsOptions, 'ops' | 'relay' | 'baseDir'>;
}

/** Message a worker sends once it listens: the banner lines of its gateway. */
export interface ReadyMessage {
  readonly gh: 'ready';
  readonly lines: readonly string[];
}

function isReady(m: unknown): m is ReadyMessage {
  return typeof m === 'object' && m !== null && (m as { gh?: unknown }).gh === 'ready' && Array.isArray((m as { lines?: unknown }).lines);
}

/**
 * Beyond `graceMs`, what a draining worker may still take before it is killed: closing sockets flush for
 * up to `timeouts.closeFlushMs` (5 s by default) and the log is flushed before exit (a 2 s backstop).
 */
const STOP_MARGIN_MS = 5000;
/** A worker that exits sooner than this after its fork counts as crashing again (its slot backs off). */
const STABLE_AFTER_MS = 10_000;
/** The back-off of a slot whose workers keep crashing: 1 s, doubled per crash, at most this. */
const MAX_BACKOFF_MS = 30_000;

export function runPrimary(opts: PrimaryOptions): void {
  const { log } = opts;
  const table = new PrimaryRendezvousTable(opts.maxWaitingPerToken);
  // Without Redis the failed-auth back-off and the sealed replay cache are held here too (core/cluster/ipc-shared.ts).
  const shared = new PrimarySharedState((m) => {
    for (const w of Object.values(cluster.workers ?? {})) if (w?.isConnected() === true) w.send(m);
  });
  /** The tunnel-proxy mode's servers by worker (relay/cluster/tp-directory-ipc.ts). */
  const tpTable = new PrimaryTpTable();
  const ready = new Set<number>();
  let started = false;
  let stopping = false;
  let lastReplacement = 0;

  // Only the primary's table pairs across workers without Redis: only then the workers need the key and dir.
  const forwardDir = opts.hostTable ? mkdtempSync(join(tmpdir(), 'gatehouse-fwd-')) : undefined;
  const forwardKey = randomBytes(32).toString('hex');
  const removeDir = () => {
    if (forwardDir !== undefined) rmSync(forwardDir, { recursive: true, force: true });
  };
  process.once('exit', removeDir);
  const slots = new Map<number, number>();
  /** Per slot: when its current worker was forked, and how many of its workers in a row crashed early. */
  const forkedAt = new Map<number, number>();
  const crashes = new Map<number, number>();
  // Before the first fork: node:cluster reads it once.
  cluster.schedulingPolicy = opts.acceptBy === 'kernel' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  const fork = (slot: number): Worker => {
    const w = cluster.fork({ GATEHOUSE_WORKER: '1', GATEHOUSE_WORKER_SLOT: String(slot), ...(forwardDir === undefined ? {} : { GATEHOUSE_FORWARD_DIR: forwardDir, GATEHOUSE_FORWARD_KEY: forwardKey }) });
    slots.set(w.id, slot);
    forkedAt.set(slot, Date.now());
    return w;
  };

  // The machine seen as one: /metrics, /healthz, /readyz and the monitor socket, answered from every worker.
  const views =
    opts.views === undefined
      ? undefined
      : createPrimaryViews({
          ...opts.views,
          log,
          workers: () => Object.values(cluster.workers ?? {}).filter((w) => w !== undefined),
          readiness: () => new Map([['workers', ready.size >= opts.workers]]),
          draining: () => stopping,
        });

  /**
   * A client moving between workers (relay/cluster/handoff.ts): its tunnel moves in the table and the
   * socket goes on to the receiving worker; when that one is gone, back to its sender (which offers it
   * again). Our copy of the descriptor is closed once sent.
   */
  const relayHandoff = (from: Worker, m: HandoffMessage, handle: SocketHandle): void => {
    const pass = (w: Worker, msg: HandoffMessage): boolean => {
      if (!w.isConnected()) return false;
      try {
        w.send(msg, handle as never, (err: Error | null) => {
          closeHandle(handle);
          if (err !== null) log.warn({ err: err.message, code: 'RELAY_FORWARD_FAILED', worker: w.id }, 'could not pass a moving client on; it was closed');
        });
        return true;
      } catch {
        return false;
      }
    };
    const to = cluster.workers?.[m.to];
    if (to !== undefined && to.id !== from.id && to.isConnected() && table.moveTunnel(m.slot, from.id, to.id)) {
      if (pass(to, m)) return;
      table.moveTunnel(m.slot, to.id, from.id);
    }
    if (pass(from, { ...m, to: from.id, bounced: true })) return;
    closeHandle(handle);
  };

  cluster.on('message', (worker: Worker, m: unknown, handle?: unknown) => {
    if (views?.onMessage(worker.id, m) === true) return;
    if (isHandoffMessage(m)) {
      if (handle === undefined || handle === null) return;
      if (opts.hostTable) relayHandoff(worker, m, handle);
      else closeHandle(handle);
      return;
    }
    if (isCsRequest(m)) {
      if (opts.hostTable && worker.isConnected()) worker.send(shared.handle(m));
      return;
    }
    if (isTpRequest(m)) {
      if (opts.hostTable && worker.isConnected()) worker.send(tpTable.handle(worker.id, m));
      return;
    }
    if (isRvRequest(m)) {
      if (!opts.hostTable) return;
      if (worker.isConnected()) worker.send(table.handle(worker.id, m));
      return;
    }
    if (isReady(m)) {
      ready.add(worker.id);
      if (!started && ready.size >= opts.workers) {
        started = true;
        const opsLine = views?.ops === undefined ? '' : `\nOps: ${views.ops.url}/metrics  ${views.ops.url}/healthz  ${views.ops.url}/readyz`;
        process.stdout.write(`Gatehouse is running (${opts.workers} worker processes, primary pid ${process.pid}).\n${m.lines.join('\n')}${opsLine}\nPress Ctrl-C to stop; SIGHUP reloads certificates, tokens, clients and the log level.\n`);
        log.info({ workers: opts.workers }, 'all workers listening');
      }
    }
  });

  cluster.on('exit', (worker: Worker, code: number | null, signal: string | null) => {
    table.dropWorker(worker.id);
    tpTable.dropWorker(worker.id);
    views?.dropWorker(worker.id);
    const slot = slots.get(worker.id) ?? 0;
    slots.delete(worker.id);
    ready.delete(worker.id);
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info('stopped');
        // A worker that failed to start set the exit code: the gateway did not run.
        const rc = typeof process.exitCode === 'number' ? process.exitCode : 0;
        log.flush(() => process.exit(rc));
        setTimeout(() => process.exit(rc), 2000).unref();
      }
      return;
    }
    if (!started) {
      // A worker that cannot start (a port in use, a bad file) would fail again: stop them all.
      log.error({ worker: worker.id, code, signal }, 'a worker failed to start; stopping');
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGKILL');
      process.exitCode = code ?? 1;
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(code ?? 1);
      return;
    }
    // A worker that keeps dying soon after its start (a file it reads is now bad, a crash at start) is
    // replaced ever more slowly, not in a loop; one that ran a while is replaced at once.
    const early = Date.now() - (forkedAt.get(slot) ?? 0) < STABLE_AFTER_MS;
    const n = early ? (crashes.get(slot) ?? 0) + 1 : 0;
    crashes.set(slot, n);
    const backoffMs = n === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (n - 1));
    // One replacement per second across slots; a slot's own back-off does not hold up the others.
    const turn = Math.max(0, lastReplacement + 1000 - Date.now());
    lastReplacement = Date.now() + turn;
    const wait = Math.max(backoffMs, turn);
    log.error({ worker: worker.id, code, signal, slot, delayMs: wait, crashesInARow: n }, 'a worker exited; starting a replacement');
    setTimeout(() => {
      if (!stopping) fork(slot);
    }, wait);
  });

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: killing the workers now');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down: every worker drains');
    views?.closeMonitor().catch((err: unknown) => log.error({ err, code: 'CORE_INTERNAL' }, 'closing the monitor socket failed'));
    const workers = Object.values(cluster.workers ?? {});
    if (workers.length === 0) process.exit(0);
    for (const w of workers) if (w?.isConnected() === true) w.send({ gh: 'shutdown' });
    // A worker that does not stop (hung, stopped, its channel gone) must not keep the machine up forever.
    setTimeout(() => {
      for (const w of Object.values(cluster.workers ?? {})) {
        if (w === undefined) continue;
        log.warn({ worker: w.id, pid: w.process.pid, graceMs: opts.graceMs ?? 10000 }, 'a worker did not stop within the grace period; killing it');
        w.process.kill('SIGKILL');
      }
    }, (opts.graceMs ?? 10000) + STOP_MARGIN_MS).unref();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', () => {
    if (stopping) return;
    // Only to workers that listen: one still starting reads the file anyway, and may not handle SIGHUP yet
    // (node's default for it ends the process, and a worker that fails its start stops the gateway).
    for (const w of Object.values(cluster.workers ?? {})) if (w !== undefined && ready.has(w.id) && w.process.pid !== undefined) w.process.kill('SIGHUP');
  });

  const forkAll = () => {
    for (let i = 0; i < opts.workers; i++) fork(i);
  };
  // The ops listener first (/readyz says 503 until every worker listens); one that cannot bind stops the start.
  if (views === undefined) forkAll();
  else views.start().then(forkAll, (err: unknown) => reportAndExit(err, 'serve'));
}
