/**
 * The machine seen as one under `serve --workers N`: the primary serves the ops listener (/metrics summed
 * over every worker, /healthz, /readyz) and the relay's monitor socket (every worker's clients and tunnels
 * in one nymea document); the workers serve neither and answer the primary's questions over the cluster IPC
 * channel instead.
 *
 * Messages (cluster IPC, our own processes only):
 *   primary → worker  `{gh:'view', id, what:'metrics'|'monitor'|'traffic'}`
 *   worker → primary  `{gh:'view', id, metrics}` (prom-client's `getMetricsAsJSON()`), `{gh:'view', id,
 *                     doc, traffic}` (the monitor document and traffic totals), `{gh:'view', id, traffic}`,
 *                     or `{gh:'view', id, error}`
 * A question goes to every connected worker and is answered with what arrived by its deadline (a worker
 * that exits or hangs is left out of that answer, never blocks it); answers to questions already settled
 * are dropped. Metrics are merged by prom-client's `AggregatorRegistry.aggregate` (counters and most gauges
 * summed, each metric's `aggregator` otherwise).
 */
import { AggregatorRegistry, Registry } from 'prom-client';
import { resolve } from 'node:path';
import type { Logger } from '../core/log.ts';
import type { RelayConfig } from '../relay/config.ts';
import { emptyMonitorDocument, mergeMonitorDocuments, serveMonitorSocket, type MonitorDocument, type MonitorSocket, type MonitorTraffic } from '../relay/monitor.ts';
import { createOpsServer, type OpsServer } from './server.ts';
import type { OpsConfig } from './config.ts';

type What = 'metrics' | 'monitor' | 'traffic';

interface ViewQuestion {
  readonly gh: 'view';
  readonly id: number;
  readonly what: What;
}

interface ViewAnswer {
  readonly gh: 'view';
  readonly id: number;
  readonly metrics?: object[][];
  readonly doc?: MonitorDocument;
  readonly traffic?: MonitorTraffic;
  readonly error?: string;
}

function isView(m: unknown): m is ViewAnswer {
  return typeof m === 'object' && m !== null && (m as { gh?: unknown }).gh === 'view' && typeof (m as { id?: unknown }).id === 'number';
}

/**
 * An answer's parts have the shapes the primary merges (each one optional): a worker's answer of another
 * shape is left out as one that did not come, not merged (one bad answer failed the whole /metrics scrape).
 */
function isWellFormedAnswer(m: ViewAnswer): boolean {
  const isObject = (x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x);
  const { metrics, doc, traffic, error } = m as { metrics?: unknown; doc?: unknown; traffic?: unknown; error?: unknown };
  if (metrics !== undefined && !(Array.isArray(metrics) && metrics.every((a) => Array.isArray(a) && a.every(isObject)))) return false;
  if (doc !== undefined && !isObject(doc)) return false;
  if (traffic !== undefined && !(isObject(traffic) && typeof (traffic as MonitorTraffic).relay === 'number' && typeof (traffic as MonitorTraffic).tunnelProxy === 'number')) return false;
  return error === undefined || typeof error === 'string';
}

function isQuestion(m: unknown): m is ViewQuestion {
  return isView(m) && typeof (m as { what?: unknown }).what === 'string';
}

/** The IPC channel of a worker (`process`). */
export interface PrimaryChannel {
  send(message: unknown, callback?: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
}

/** What a worker answers with; each part may be absent (that front end or listener is off). */
export interface WorkerViews {
  metrics?(): Promise<object[]>;
  monitor?(): { doc: MonitorDocument; traffic: MonitorTraffic };
}

/** In a worker: answers the primary's questions from `views`. */
export function answerPrimary(channel: PrimaryChannel, views: WorkerViews, log: Logger): void {
  const reply = (m: ViewAnswer) => {
    try {
      channel.send(m, () => undefined);
    } catch {
      // The primary is gone: the worker drains on 'disconnect'.
    }
  };
  channel.on('message', (m: unknown) => {
    if (!isQuestion(m)) return;
    const q = m;
    const fail = (err: unknown) => {
      log.error({ err, code: 'CORE_INTERNAL' }, 'answering the primary failed');
      reply({ gh: 'view', id: q.id, error: err instanceof Error ? err.message : String(err) });
    };
    try {
      if (q.what === 'metrics') {
        if (views.metrics === undefined) return reply({ gh: 'view', id: q.id, metrics: [] });
        views.metrics().then((metrics) => reply({ gh: 'view', id: q.id, metrics: [metrics] }), fail);
      } else if (q.what === 'monitor' || q.what === 'traffic') {
        const v = views.monitor?.();
        if (v === undefined) return reply({ gh: 'view', id: q.id });
        reply(q.what === 'monitor' ? { gh: 'view', id: q.id, doc: v.doc, traffic: v.traffic } : { gh: 'view', id: q.id, traffic: v.traffic });
      }
    } catch (err) {
      fail(err);
    }
  });
}

/** A worker as the primary sees it. */
export interface WorkerHandle {
  readonly id: number;
  isConnected(): boolean;
  send(message: unknown, callback?: (err: Error | null) => void): boolean;
}

interface Pending {
  readonly waiting: Set<number>;
  readonly answers: ViewAnswer[];
  readonly done: (answers: ViewAnswer[]) => void;
  readonly timer: NodeJS.Timeout;
}

/** In the primary: asks every worker and collects the answers. */
export class WorkerQuestions {
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;

  constructor(
    private readonly workers: () => readonly WorkerHandle[],
    /** Questions in flight at most; past it a question is answered at once with nothing. */
    private readonly maxPending = 64,
  ) {}

  /** Asks every connected worker; resolves with the answers that came within `timeoutMs`. Never rejects. */
  ask(what: What, timeoutMs: number): Promise<ViewAnswer[]> {
    const targets = this.workers().filter((w) => w.isConnected());
    if (targets.length === 0 || this.#pending.size >= this.maxPending) return Promise.resolve([]);
    const id = this.#nextId++;
    return new Promise((done) => {
      const finish = () => {
        const p = this.#pending.get(id);
        if (p === undefined) return;
        clearTimeout(p.timer);
        this.#pending.delete(id);
        done(p.answers);
      };
      const p: Pending = { waiting: new Set(targets.map((w) => w.id)), answers: [], done, timer: setTimeout(finish, timeoutMs) };
      this.#pending.set(id, p);
      for (const w of targets) {
        try {
          w.send({ gh: 'view', id, what } satisfies ViewQuestion, (err) => {
            if (err !== null) this.#settle(id, w.id, undefined);
          });
        } catch {
          this.#settle(id, w.id, undefined);
        }
      }
    });
  }

  /** Routes a worker's message; true when it was an answer (consumed). */
  onMessage(worker: number, m: unknown): boolean {
    if (!isView(m)) return false;
    this.#settle(m.id, worker, isWellFormedAnswer(m) ? m : undefined);
    return true;
  }

  /** A worker exited: no question waits for it any more. */
  dropWorker(worker: number): void {
    for (const id of [...this.#pending.keys()]) this.#settle(id, worker, undefined);
  }

  #settle(id: number, worker: number, answer: ViewAnswer | undefined): void {
    const p = this.#pending.get(id);
    if (p === undefined || !p.waiting.delete(worker)) return;
    if (answer !== undefined && answer.error === undefined) p.answers.push(answer);
    if (p.waiting.size === 0) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.done(p.answers);
    }
  }
}

export interface PrimaryViewsOptions {
  readonly workers: () => readonly WorkerHandle[];
  readonly ops: OpsConfig;
  readonly relay: RelayConfig;
  /** Directory the monitor socket path is relative to. */
  readonly baseDir: string;
  /** Each worker that listens (for /readyz) and whether the gateway drains. */
  readiness(): ReadonlyMap<string, boolean>;
  draining(): boolean;
  readonly log: Logger;
}

export interface PrimaryViews {
  /** Routes a worker's message; true when it was ours. */
  onMessage(worker: number, m: unknown): boolean;
  dropWorker(worker: number): void;
  start(): Promise<void>;
  /** Closes the monitor socket (at the start of the drain: its readers are told by the socket closing). */
  closeMonitor(): Promise<void>;
  close(): Promise<void>;
  readonly ops: OpsServer | undefined;
  readonly monitor: MonitorSocket | undefined;
}

/** The primary's ops listener and monitor socket, both answered from every worker. */
export function createPrimaryViews(opts: PrimaryViewsOptions): PrimaryViews {
  const questions = new WorkerQuestions(opts.workers);
  // Within the scrape deadline, so a hung worker costs its share of the answer, not the scrape.
  const metricsMs = Math.max(50, Math.floor(opts.ops.scrapeTimeoutMs / 2));
  const monitorMs = Math.max(50, opts.relay.monitor.intervalMs);
  let ops: OpsServer | undefined;
  if (opts.ops.enabled) {
    ops = createOpsServer(opts.ops, {
      log: opts.log,
      readiness: () => opts.readiness(),
      draining: () => opts.draining(),
      metrics: {
        registry: {
          contentType: Registry.PROMETHEUS_CONTENT_TYPE,
          async metrics() {
            const answers = await questions.ask('metrics', metricsMs);
            return AggregatorRegistry.aggregate(answers.flatMap((a) => a.metrics ?? [])).metrics();
          },
        },
        close: () => undefined,
      },
    });
  }
  const sumTraffic = (answers: readonly ViewAnswer[]): MonitorTraffic => ({
    relay: answers.reduce((n, a) => n + (a.traffic?.relay ?? 0), 0),
    tunnelProxy: answers.reduce((n, a) => n + (a.traffic?.tunnelProxy ?? 0), 0),
  });
  const monitor =
    opts.relay.enabled && opts.relay.monitor.enabled
      ? serveMonitorSocket(
          {
            async read() {
              const answers = await questions.ask('monitor', monitorMs);
              const docs = answers.flatMap((a) => (a.doc === undefined ? [] : [a.doc]));
              return docs.length === 0 ? emptyMonitorDocument(opts.relay) : mergeMonitorDocuments(opts.relay, docs);
            },
            async traffic() {
              return sumTraffic(await questions.ask('traffic', monitorMs));
            },
          },
          { log: opts.log, path: resolve(opts.baseDir, opts.relay.monitor.path), intervalMs: opts.relay.monitor.intervalMs },
        )
      : undefined;
  let monitorClosed: Promise<void> | undefined;
  return {
    ops,
    monitor,
    onMessage: (worker, m) => questions.onMessage(worker, m),
    dropWorker: (worker) => questions.dropWorker(worker),
    async start() {
      await ops?.start();
      await monitor?.start();
    },
    closeMonitor() {
      monitorClosed ??= monitor?.close() ?? Promise.resolve();
      return monitorClosed;
    },
    async close() {
      await this.closeMonitor();
      await ops?.close();
    },
  };
}
