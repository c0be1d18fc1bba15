/**
 * Small HTTP plumbing shared by the REST APIs we serve: a bounded, deadline-bound node:http server with
 * token checks in constant time, and graceful close.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Secret } from '../../core/config/secret.ts';
import { RateLimitedWarnings, type Logger } from '../../core/log.ts';
import { Admission, listen, stopListening } from '../../core/net.ts';
import { admitConnections, ConnectionTracker } from '../../core/connections.ts';
import { AllowList, enforceAllowList } from '../../core/allow-list.ts';

export interface HttpApi {
  /** Binds; @returns the bound port. @throws GatewayError CORE_LISTEN_FAILED */
  listen(host: string, port: number): Promise<number>;
  close(graceMs: number): Promise<void>;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** True when `given` equals the secret (compared as digests, in constant time). */
export function tokenMatches(secret: Secret, given: string | undefined): boolean {
  if (given === undefined || given === '') return false;
  return timingSafeEqual(digest(secret.reveal()), digest(given));
}

/** The token a request carries: `X-Auth-Token`, or `Authorization: Bearer …`. */
export function requestToken(req: IncomingMessage): string | undefined {
  const x = req.headers['x-auth-token'];
  if (typeof x === 'string') return x;
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && auth.toLowerCase().startsWith('bearer ')) return auth.slice(7).trim();
  return undefined;
}

export function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' }).end(body);
}

/** Reads a request body up to `maxBytes`; undefined when over the limit. */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      n += c.length;
      if (n > maxBytes) {
        // Answer now rather than after the whole oversized body; the caller closes the connection.
        over = true;
        parts.length = 0;
        resolve(undefined);
      } else parts.push(c);
    });
    req.on('end', () => resolve(over ? undefined : Buffer.concat(parts)));
    req.on('error', reject);
  });
}

export interface HttpApiLimits {
  /** Deadline for a whole request (headers and body); headers alone get min(this, 10 s). */
  readonly requestTimeoutMs: number;
  /** Most open connections; more are closed at once. */
  readonly maxConnections: number;
  /** Most open connections from one address; more are closed at once (default: maxConnections). */
  readonly maxConnectionsPerIp?: number;
  /** Client networks allowed to connect (CIDR; empty or absent: every address). */
  readonly allowFrom?: readonly string[];
  /** Where a failed handler (a bug: CORE_INTERNAL) and refused connections are logged. */
  readonly log: Logger;
}

/** An HttpApi around a request handler, with header/request deadlines, a connection cap and connection tracking. */
export function httpApi(label: string, handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>, limits: HttpApiLimits): HttpApi {
  let server: Server | undefined;
  const tracker = new ConnectionTracker();
  const { requestTimeoutMs, log } = limits;
  const admission = new Admission({ maxConnections: limits.maxConnections, maxConnectionsPerIp: limits.maxConnectionsPerIp ?? limits.maxConnections });
  return {
    async listen(host, port) {
      // node:http enforces headersTimeout / requestTimeout only when it checks its connections (every 30 s by
      // default), so a slowloris client would outlive the deadlines by up to that much: check often.
      const s = createServer({ connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(requestTimeoutMs / 4))) }, (req, res) => {
        handler(req, res).catch((err: unknown) => {
          // Fault isolation: a bug answers this request 500 and closes its connection, nothing else.
          log.error({ err, code: 'CORE_INTERNAL', api: label }, 'request failed with an internal error');
          res.setHeader('Connection', 'close');
          send(res, 500, 'internal error\n');
        });
      });
      s.headersTimeout = Math.min(requestTimeoutMs, 10000);
      s.requestTimeout = requestTimeoutMs;
      s.keepAliveTimeout = 5000;
      // A hard backstop behind the admission limits below (which refuse first, and log why).
      s.maxConnections = limits.maxConnections + 64;
      const refusals = new RateLimitedWarnings(log, 10_000, Date.now, 'card-bridge');
      enforceAllowList(s, new AllowList(limits.allowFrom ?? []), (remote) => refusals.warn('CARD_CLIENT_NOT_ALLOWED', { code: 'CARD_CLIENT_NOT_ALLOWED', remote, api: label }, 'connection refused'));
      admitConnections(s, admission, (code, remote) => refusals.warn(code, { code, remote, api: label }, 'connection refused'));
      tracker.watch(s);
      server = s;
      return listen(s, { host, port }, label);
    },
    async close(graceMs) {
      const s = server;
      if (s === undefined) return;
      const closed = stopListening(s);
      s.closeIdleConnections();
      await tracker.drain({ graceMs, flushMs: 0 });
      await closed;
    },
  };
}
