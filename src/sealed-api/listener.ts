/**
 * The HTTP(S) listener of the sealed API: Node's server with our header/request/keep-alive timeouts, the
 * total connection cap (`limits.maxConnections`, enforced by Node at accept) and the per-address cap
 * (`limits.maxConnectionsPerIp`, counted on the raw socket before any TLS or HTTP), each refusal closing
 * the socket at once without an answer and logged at most every 10 s per limit. Requests go to
 * `onRequest`; nothing here reads them.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { RateLimitedWarnings, type Logger } from '../core/log.ts';
import { Admission } from '../core/net.ts';
import { admitConnections } from '../core/connections.ts';
import { loadTlsFiles } from '../core/tls.ts';
import type { SealedApiConfig } from './config.ts';

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
  const refusals = new RateLimitedWarnings(deps.log, 10_000, deps.now, 'sealed-api');
  server.on('drop', () => refusals.warn('SEALED_LIMIT_CONNECTIONS', { code: 'SEALED_LIMIT_CONNECTIONS' }, 'connections closed at limits.maxConnections'));
  const admission = new Admission({
    maxConnections: config.limits.maxConnections,
    maxConnectionsPerIp: config.limits.maxConnectionsPerIp,
  });
  admitConnections(server, admission, (code) => {
    if (code === 'CORE_LIMIT_CONNECTIONS_PER_IP')
      refusals.warn('SEALED_LIMIT_CONNECTIONS_PER_IP', { code: 'SEALED_LIMIT_CONNECTIONS_PER_IP' }, 'connections closed at limits.maxConnectionsPerIp');
  });
  return server;
}
