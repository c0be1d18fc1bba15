/**
 * One bounded JSON POST for the remote authorizers (http, lambda): global fetch, no redirects, the
 * response body capped at `AUTHORIZER_MAX_RESPONSE_BYTES`, aborted by the caller's signal.
 *
 * It never throws and never logs: it returns what happened, and the caller decides the AuthResult and
 * writes the warning. Nothing here includes the request body or headers in a reason (they carry secrets).
 */
import type { ErrorCode } from '../../core/errors.ts';
import { describeFetchError } from '../../core/fault.ts';
import type { Logger } from '../../core/log.ts';

/** Least time between two RELAY_AUTHORIZER_BUSY warnings, ms (a flood of clients gives one line, not one each). */
const BUSY_WARN_EVERY_MS = 10_000;

/**
 * Bounds the requests one authorizer has open: while it hangs, clients would otherwise each hold a request
 * and a socket to it until their authentication deadline (up to `limits.maxConnections` of them). Overflow
 * policy: refuse the newcomer at once (the caller answers ProxyError), a warning at most every 10 s.
 */
export class InFlightLimit {
  #open = 0;
  #refused = 0;
  #lastWarnMs = Number.NEGATIVE_INFINITY;

  constructor(
    readonly max: number,
    private readonly log: Logger,
    private readonly message: string,
  ) {}

  /** Takes a slot; false (and a rate-limited warning) when all `max` are taken. */
  tryEnter(): boolean {
    if (this.#open < this.max) {
      this.#open++;
      return true;
    }
    this.#refused++;
    const now = Date.now();
    if (now - this.#lastWarnMs >= BUSY_WARN_EVERY_MS) {
      this.#lastWarnMs = now;
      this.log.warn(
        { code: 'RELAY_AUTHORIZER_BUSY' satisfies ErrorCode, maxInFlight: this.max, refused: this.#refused },
        this.message,
      );
      this.#refused = 0;
    }
    return false;
  }

  /** Gives a slot back (once per successful tryEnter). */
  leave(): void {
    this.#open--;
  }
}

/** Largest authorizer response body we read, bytes (one byte more is RELAY_AUTHORIZER_RESPONSE_TOO_LARGE). */
export const AUTHORIZER_MAX_RESPONSE_BYTES = 64 * 1024;

export type PostOutcome =
  | { readonly kind: 'ok'; readonly status: number; readonly headers: Headers; readonly json: unknown }
  | { readonly kind: 'aborted' }
  /** Transport error, non-2xx status, oversized or non-JSON body. `reason` is safe to log. */
  | {
      readonly kind: 'failed';
      readonly code: ErrorCode;
      readonly reason: string;
      readonly status?: number;
      readonly headers?: Headers;
    };

/** Posts `body` (already serialized JSON) to `url` and reads a bounded JSON answer. */
export async function postJson(
  url: string,
  headers: Record<string, string>,
  body: string,
  signal: AbortSignal,
): Promise<PostOutcome> {
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers, body, signal, redirect: 'error' });
  } catch (err) {
    if (signal.aborted) return { kind: 'aborted' };
    return {
      kind: 'failed',
      code: 'RELAY_AUTHENTICATOR_ERROR',
      reason: `request failed: ${describeFetchError(err)}`,
    };
  }
  const status = res.status;
  if (status < 200 || status > 299) {
    await res.body?.cancel().catch(() => undefined);
    return {
      kind: 'failed',
      code: 'RELAY_AUTHENTICATOR_ERROR',
      reason: `HTTP status ${status}`,
      status,
      headers: res.headers,
    };
  }
  const declared = Number(res.headers.get('content-length') ?? '');
  if (Number.isFinite(declared) && declared > AUTHORIZER_MAX_RESPONSE_BYTES) {
    await res.body?.cancel().catch(() => undefined);
    return tooLarge(status, res.headers);
  }
  let text: string;
  try {
    const bytes = await readCapped(res, AUTHORIZER_MAX_RESPONSE_BYTES);
    if (bytes === null) return tooLarge(status, res.headers);
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (err) {
    if (signal.aborted) return { kind: 'aborted' };
    return {
      kind: 'failed',
      code: 'RELAY_AUTHENTICATOR_ERROR',
      reason: `reading the response failed: ${describeFetchError(err)}`,
      status,
      headers: res.headers,
    };
  }
  try {
    return { kind: 'ok', status, headers: res.headers, json: JSON.parse(text) as unknown };
  } catch {
    return {
      kind: 'failed',
      code: 'RELAY_AUTHENTICATOR_ERROR',
      reason: 'response is not valid JSON',
      status,
      headers: res.headers,
    };
  }
}

function tooLarge(status: number, headers: Headers): PostOutcome {
  return {
    kind: 'failed',
    code: 'RELAY_AUTHORIZER_RESPONSE_TOO_LARGE',
    reason: `response body larger than ${AUTHORIZER_MAX_RESPONSE_BYTES} bytes`,
    status,
    headers,
  };
}

/** The body, or null once it grows past `max` bytes (the rest is not read). */
async function readCapped(res: Response, max: number): Promise<Uint8Array | null> {
  if (res.body === null) return new Uint8Array(0);
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
