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

/** What reading a request body gave: its bytes, or why there are none (neither is our fault). */
export type BodyResult = { readonly ok: true; readonly body: Buffer } | { readonly ok: false; readonly reason: 'too-large' | 'gone' };

/**
 * Reads a request body up to `maxBytes`. A declared Content-Length over the limit is refused before any
 * body byte is read; a body that grows past it is refused at the byte that crosses it (the caller answers
 * 413 and closes). A client that goes away before the end (reset, close, node's request deadline) gives
 * `gone`: an expected end, never a rejection. Settles exactly once, whatever the client does.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<BodyResult> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) return Promise.resolve({ ok: false, reason: 'too-large' });
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let n = 0;
    let settled = false;
    const settle = (r: BodyResult): void => {
      if (settled) return;
      settled = true;
      parts.length = 0;
      resolve(r);
    };
    req.on('data', (c: Buffer) => {
      if (settled) return;
      n += c.length;
      // Answer now rather than after the whole oversized body; what still arrives is read and dropped.
      if (n > maxBytes) settle({ ok: false, reason: 'too-large' });
      else parts.push(c);
    });
    req.on('end', () => settle({ ok: true, body: Buffer.concat(parts) }));
    req.on('error', () => settle({ ok: false, reason: 'gone' }));
    req.on('close', () => settle({ ok: false, reason: 'gone' }));
  });
}

/**
 * The request target as a URL, or undefined when it is not one (`http://[`, a bad port): a client's
 * mistake, answered 400, never our fault.
 */
export function requestUrl(req: IncomingMessage): URL | undefined {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return undefined;
  }
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

/**
 * An HttpApi around a request handler, with header/request deadlines, a connection cap and connection
 * tracking. The handler gets the parsed request target; a target that is not a URL is answered 400 here.
 */
export function httpApi(label: string, handler: (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>, limits: HttpApiLimits): HttpApi {
  let server: Server | undefined;
  const tracker = new ConnectionTracker();
  const { requestTimeoutMs, log } = limits;
  const admission = new Admission({ maxConnections: limits.maxConnections, maxConnectionsPerIp: limits.maxConnectionsPerIp ?? limits.maxConnections });
  return {
    async listen(host, port) {
      // node:http enforces headersTimeout / requestTimeout only when it checks its connections (every 30 s by
      // default), so a slowloris client would outlive the deadlines by up to that much: check often.
      const s = createServer({ connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(requestTimeoutMs / 4))) }, (req, res) => {
        const url = requestUrl(req);
        if (url === undefined) {
          res.setHeader('Connection', 'close');
          send(res, 400, 'bad request target\n');
          return;
        }
        handler(req, res, url).catch((err: unknown) => {
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
