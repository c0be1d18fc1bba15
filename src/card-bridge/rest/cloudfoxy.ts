/**
 * The CloudFoxy REST API, served over our cards, so foxyproxy (or any CloudFoxy client, or another
 * Gatehouse's upstream backend) can use Gatehouse as its upstream:
 *   GET /api/v1/basic?reset=<0|1>&terminal=<id>[&apdu=<HEX>]  → first line: R-APDU hex (or ATR for a bare reset)
 *   GET /api/v1/hello       → `CloudFoxy REST API (Gatehouse)` / `uptime <whole seconds> s` / `started <ISO time>`
 *                             (foxyproxy 1.x and 2.x need at least three non-empty lines and read line 2's
 *                             second word with Python's `int()`; a smaller value than before = a restart)
 *   GET /api/v1/inventory   → one `<terminal> <ATR hex>` line per card
 * Every request needs `X-Auth-Token` (401 without). Failures answer the catalogue's HTTP status with the
 * line-protocol result (`C080`, `C083`, …) as the body's first line.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Secret } from '../../core/config/secret.ts';
import { errorSpec, GatewayError, isGatewayError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { CardService } from '../cards.ts';
import { parseApdu, toHex } from '../protocol/apdu.ts';
import { httpApi, requestToken, send, tokenMatches, type HttpApi } from './http.ts';

export type { HttpApi } from './http.ts';

export interface CloudFoxyApiOptions {
  readonly token: Secret;
  readonly log: Logger;
  /** Epoch ms the uptime in /hello counts from. */
  readonly startedAt: number;
  readonly requestTimeoutMs?: number;
  /** Most open connections (default 1000). */
  readonly maxConnections?: number;
  /** Most open connections from one address (default: maxConnections). */
  readonly maxConnectionsPerIp?: number;
  /** Client networks allowed to connect (CIDR; empty or absent: every address). */
  readonly allowFrom?: readonly string[];
}

/**
 * The `/hello` body: three lines, the uptime in whole seconds (foxyproxy parses it with `int()`, so no
 * fraction), then the start time, from which our own CloudFoxy backend also notices a restart that came
 * sooner after the previous start than its poll interval (the uptime alone cannot show that).
 */
export function helloText(startedAt: number, now: number): string {
  const uptime = Math.max(0, Math.floor((now - startedAt) / 1000));
  return `CloudFoxy REST API (Gatehouse)\nuptime ${uptime} s\nstarted ${new Date(startedAt).toISOString()}\n`;
}

export function createCloudFoxyApi(cards: CardService, opts: CloudFoxyApiOptions): HttpApi {
  const log = opts.log.child({ api: 'cloudfoxy' });
  const fail = (res: ServerResponse, err: unknown) => {
    if (!isGatewayError(err)) log.error({ err }, 'cloudfoxy api request failed unexpectedly');
    const code = isGatewayError(err) ? err.code : 'CARD_INTERNAL';
    const spec = errorSpec(code);
    send(res, spec.httpStatus, `${spec.lineResult ?? 'C090'}\n${code}\n`);
  };

  async function handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (req.method !== 'GET') return send(res, 405, 'method not allowed\n');
    if (!url.pathname.startsWith('/api/v1/')) return send(res, 404, 'not found\n');
    if (!tokenMatches(opts.token, requestToken(req))) {
      log.warn({ code: 'CARD_UNAUTHORIZED', remote: req.socket.remoteAddress }, 'request without a valid token');
      return send(res, 401, 'unauthorized\n');
    }
    switch (url.pathname) {
      case '/api/v1/hello':
        return send(res, 200, helloText(opts.startedAt, Date.now()));
      case '/api/v1/inventory':
        return send(
          res,
          200,
          cards
            .readers()
            .filter((r) => r.atr !== undefined)
            .map((r) => `${r.terminal} ${toHex(r.atr!)}\n`)
            .join(''),
        );
      case '/api/v1/basic': {
        // A client that goes away while waiting for the card gives its place back and sends nothing.
        const gone = new AbortController();
        res.on('close', () => {
          if (!res.writableFinished) gone.abort();
        });
        try {
          const terminal = url.searchParams.get('terminal') ?? '';
          const reset = url.searchParams.get('reset') === '1';
          const apduHex = url.searchParams.get('apdu');
          const apdu = apduHex === null || apduHex === '' ? undefined : parseApdu(apduHex.replace(/\s+/g, ''));
          const reader = cards.resolve(terminal);
          if (reader.atr === undefined) return fail(res, new GatewayError('CARD_NO_CARD'));
          const out = await cards.withCard(reader, async (h) => {
            if (gone.signal.aborted) throw new GatewayError('CARD_INTERNAL', 'the client went away');
            let atr: Buffer | undefined;
            if (reset || apdu === undefined) atr = await h.reset();
            return apdu === undefined ? atr! : await h.transmit(apdu);
          }, gone.signal);
          return send(res, 200, `${toHex(out)}\n`);
        } catch (err) {
          // Its client is gone: nothing to answer, nothing to log as a failure.
          if (gone.signal.aborted) return;
          return fail(res, err);
        }
      }
      default:
        return send(res, 404, 'not found\n');
    }
  }

  return httpApi('card bridge CloudFoxy API', handle, {
    requestTimeoutMs: opts.requestTimeoutMs ?? 120000,
    maxConnections: opts.maxConnections ?? 1000,
    ...(opts.maxConnectionsPerIp === undefined ? {} : { maxConnectionsPerIp: opts.maxConnectionsPerIp }),
    ...(opts.allowFrom === undefined ? {} : { allowFrom: opts.allowFrom }),
    log,
  });
}
