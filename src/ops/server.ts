/**
 * The ops HTTP listener (`[ops]`, loopback by default): `GET /metrics` (Prometheus text format),
 * `GET /healthz` (200 while the process serves requests at all) and `GET /readyz` (200 when every enabled
 * front end is listening and the gateway is not draining, else 503 with the front ends that are not).
 * Nothing else: any other path is 404, any other method 405. It reads no request body, holds at most
 * `MAX_CONNECTIONS` connections, and bounds every phase (headers, request, keep-alive, scrape).
 * It is not a front end: clients of the gateway never reach it, and it knows no front end by name.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../core/log.ts';
import { Lifecycle, type Service } from '../core/lifecycle.ts';
import { describeAddress, listen, stopListening } from '../core/net.ts';
import type { OpsConfig } from './config.ts';
import type { GatewayMetrics } from './metrics.ts';

/** Scrapers and probes are few; anything past this is refused by Node at accept. */
const MAX_CONNECTIONS = 64;
const HEADERS_MS = 5000;
const KEEP_ALIVE_MS = 5000;
/** How often Node checks the headers and request timeouts. */
const CHECK_MS = 500;

export interface OpsDeps {
  readonly log: Logger;
  /** This process's metrics, or (the primary of `serve --workers`) every worker's summed (ops/workers.ts). */
  readonly metrics: { readonly registry: Pick<GatewayMetrics['registry'], 'metrics' | 'contentType'>; close(): void };
  /** Each enabled front end and whether it is ready (listening, not draining). */
  readiness(): ReadonlyMap<string, boolean>;
  /** True once the gateway is draining (SIGTERM): /readyz answers 503 from then on. */
  draining(): boolean;
}

export interface OpsServer extends Service {
  /** `http://127.0.0.1:9180` once started. */
  readonly url: string;
  readonly port: number;
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

export function createOpsServer(config: OpsConfig, deps: OpsDeps): OpsServer {
  const log = deps.log.child({ component: 'ops' });
  const lifecycle = new Lifecycle('ops');
  let server: Server | undefined;
  let port = 0;

  async function scrape(res: ServerResponse): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), config.scrapeTimeoutMs);
    });
    try {
      const text = await Promise.race([deps.metrics.registry.metrics(), timeout]);
      if (text === undefined) return send(res, 503, 'metrics collection timed out\n');
      send(res, 200, text, deps.metrics.registry.contentType);
    } finally {
      clearTimeout(timer);
    }
  }

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') return send(res, 404, 'not found: try /metrics, /healthz or /readyz\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'method not allowed\n');
    }
    if (path === '/healthz') return send(res, 200, 'ok\n');
    if (path === '/readyz') {
      if (deps.draining()) return send(res, 503, 'draining\n');
      const waiting = [...deps.readiness()].filter(([, ready]) => !ready).map(([name]) => name);
      return waiting.length === 0 ? send(res, 200, 'ready\n') : send(res, 503, `not ready: ${waiting.join(', ')}\n`);
    }
    scrape(res).catch((err: unknown) => {
      log.error({ err, code: 'CORE_INTERNAL' }, 'metrics collection failed');
      if (!res.headersSent) send(res, 500, 'metrics collection failed\n');
      else res.destroy();
    });
  }

  return {
    name: 'ops',
    get port() {
      return port;
    },
    get url() {
      return `http://${describeAddress({ host: config.host, port })}`;
    },
    async start() {
      lifecycle.beginStart();
      // Node checks headersTimeout/requestTimeout only every connectionsCheckingInterval (default 30 s): a
      // client dribbling header bytes held one of the MAX_CONNECTIONS slots for 30 s whatever HEADERS_MS said.
      const timeouts = { headersTimeout: HEADERS_MS, requestTimeout: HEADERS_MS + config.scrapeTimeoutMs, keepAliveTimeout: KEEP_ALIVE_MS, connectionsCheckingInterval: CHECK_MS };
      const s = createServer(timeouts, (req, res) => {
        try {
          onRequest(req, res);
        } catch (err) {
          log.error({ err, code: 'CORE_INTERNAL' }, 'ops request failed');
          res.destroy();
        }
      });
      s.maxConnections = MAX_CONNECTIONS;
      try {
        port = await listen(s, { host: config.host, port: config.port }, 'ops listener');
      } catch (err) {
        lifecycle.failed();
        throw err;
      }
      server = s;
      lifecycle.started();
      log.info({ url: `http://${describeAddress({ host: config.host, port })}`, paths: ['/metrics', '/healthz', '/readyz'] }, 'ops listening');
    },
    close() {
      return lifecycle.close(async () => {
        if (server === undefined) return;
        const stopped = stopListening(server);
        server.closeAllConnections();
        await stopped;
        deps.metrics.close();
      });
    },
  };
}
