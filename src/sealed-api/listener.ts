/**
 * The HTTP(S) listener of the sealed API: Node's server with our header/request/keep-alive timeouts, the
 * total connection cap (`limits.maxConnections`, enforced by Node at accept) and the per-address cap
 * (`limits.maxConnectionsPerIp`, counted on the raw socket before any TLS or HTTP), each refusal closing
 * the socket at once without an answer and logged at most every 10 s per limit. Requests go to
 * `onRequest`; nothing here reads them.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Logger } from '../core/log.ts';
import { Admission } from '../core/net.ts';
import { admitConnections } from '../core/connections.ts';
import { loadTlsFiles } from '../core/tls.ts';
import type { SealedApiConfig } from './config.ts';

const LOG_EVERY_MS = 10000;

/** Counts events and logs a warning at most every LOG_EVERY_MS with how many happened since. */
function rateLimitedWarning(log: Logger, now: () => number, code: string, msg: string): () => void {
  let loggedAtMs = -Infinity;
  let count = 0;
  return () => {
    count++;
    const t = now();
    if (t - loggedAtMs < LOG_EVERY_MS) return;
    loggedAtMs = t;
    log.warn({ code, dropped: count }, msg);
    count = 0;
  };
}

/** Creates (does not bind) the listener. */
export async function createListener(
  config: SealedApiConfig,
  deps: { readonly log: Logger; readonly baseDir: string; readonly now: () => number },
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Server> {
  const options = {
    maxHeaderSize: config.limits.maxHeaderBytes,
    headersTimeout: config.timeouts.headersMs,
    requestTimeout: config.timeouts.headersMs + config.timeouts.bodyMs + config.timeouts.actionMs,
    keepAliveTimeout: config.timeouts.keepAliveMs,
    // Node checks headersTimeout/requestTimeout only this often (default 30 s, which let a client
    // dribbling header bytes hold a connection for 30 s whatever headersMs said).
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.timeouts.headersMs / 2))),
  };
  const server =
    config.tls === undefined
      ? createHttpServer(options, onRequest)
      : createHttpsServer({ ...options, ...(await loadTlsFiles(config.tls, deps.baseDir)) }, onRequest);
  server.maxConnections = config.limits.maxConnections;
  server.on(
    'drop',
    rateLimitedWarning(deps.log, deps.now, 'SEALED_LIMIT_CONNECTIONS', 'connections closed at limits.maxConnections'),
  );
  const admission = new Admission({
    maxConnections: config.limits.maxConnections,
    maxConnectionsPerIp: config.limits.maxConnectionsPerIp,
  });
  const refusedPerIp = rateLimitedWarning(
    deps.log,
    deps.now,
    'SEALED_LIMIT_CONNECTIONS_PER_IP',
    'connections closed at limits.maxConnectionsPerIp',
  );
  admitConnections(server, admission, (code) => {
    if (code === 'CORE_LIMIT_CONNECTIONS_PER_IP') refusedPerIp();
  });
  return server;
}
