/**
 * Writing answers: plain JSON errors before authentication (every authentication failure the same bytes)
 * and sealed JWE answers after it. Only formats and writes; decides nothing.
 */
import type { ServerResponse } from 'node:http';
import { errorSpec, type ErrorCode } from '../core/errors.ts';
import { MEDIA_TYPE, type ResponseBody } from './envelope.ts';
import { sealedRefusalChannel, type SealedRefusalEvent } from '../core/events.ts';

/** A sealed answer's body with the HTTP status it travels with. */
export type Answer = ResponseBody & { readonly status: number };

/** The plain body of a code: `{"error":"unauthorized"}` for every authentication failure. */
export function plainBody(code: ErrorCode): string {
  if (code === 'SEALED_UNAUTHORIZED') return '{"error":"unauthorized"}';
  return JSON.stringify({ error: code.replace(/^(SEALED|CORE)_/, '').toLowerCase() });
}

/** Tells observers (metrics) that a request was refused and why. */
export function publishRefusal(code: string): void {
  if (!sealedRefusalChannel.hasSubscribers) return;
  const event: SealedRefusalEvent = { code };
  sealedRefusalChannel.publish(event);
}

/** A plain JSON error answer with the code's HTTP status (published as a refusal). */
export function sendPlain(
  res: ServerResponse,
  code: ErrorCode,
  requestId: string,
  extra: Readonly<Record<string, string>> = {},
): void {
  publishRefusal(code);
  const body = plainBody(code);
  res.writeHead(errorSpec(code).httpStatus, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
    ...extra,
  });
  res.end(body);
}

/** A plain error that also closes the connection once written (the rest of the request is not read). */
export function sendPlainAndClose(res: ServerResponse, code: ErrorCode, requestId: string): void {
  sendPlain(res, code, requestId, { connection: 'close' });
  res.once('finish', () => res.req.socket.destroySoon());
}

/** A sealed answer (compact JWE). */
export function sendSealed(res: ServerResponse, status: number, jwe: string, requestId: string): void {
  res.writeHead(status, {
    'content-type': MEDIA_TYPE,
    'content-length': Buffer.byteLength(jwe),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  });
  res.end(jwe);
}

/** A refusal after authentication (sealed by the caller) with the code's HTTP status. */
export function fail(code: ErrorCode, message: string): Answer {
  return { ok: false, error: { code, message }, status: errorSpec(code).httpStatus };
}
