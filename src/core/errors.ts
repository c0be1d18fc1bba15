/**
 * The one error class of Gatehouse and its catalogue.
 *
 * Every failure we report carries a stable code from a closed union. The catalogue maps each code to its
 * wire forms (HTTP status, WebSocket close, JSON-RPC text, line-protocol result) so that front ends never
 * invent their own strings. Codes are grouped per front end in `error-codes/`; docs/errors.md is generated
 * from this catalogue (`npm run docs:errors`) and a test keeps the two in sync.
 *
 * Expected ends of a connection (EOF, peer closed, shutdown) are not errors and are not thrown.
 */
import { coreErrors } from './error-codes/core.ts';
import { relayErrors } from './error-codes/relay.ts';
import { cardBridgeErrors } from './error-codes/card-bridge.ts';
import { sealedApiErrors } from './error-codes/sealed-api.ts';

/** How one error code looks on each wire that can carry it. */
export interface ErrorSpec {
  /** One sentence for operators: what happened. */
  readonly summary: string;
  /** HTTP status when the error ends an HTTP request (also used by the CLI to group exit codes). */
  readonly httpStatus: number;
  /** Exact text of a JSON-RPC `error` field (relay) when the error is answered before closing. */
  readonly jsonRpcText?: string;
  /** WebSocket close code and reason (the reason doubles as the relay's close reason on every transport). */
  readonly close?: { readonly code: number; readonly reason: string };
  /** Line-protocol result (card bridge), e.g. `C083`. */
  readonly lineResult?: string;
}

export const ERROR_CATALOGUE = {
  ...coreErrors,
  ...relayErrors,
  ...cardBridgeErrors,
  ...sealedApiErrors,
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface GatewayErrorOptions {
  readonly cause?: unknown;
  /** Structured, non-secret context for logs. */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** A failure with a stable code. `message` is for operators; the wire form comes from the catalogue. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message?: string, options: GatewayErrorOptions = {}) {
    super(message ?? ERROR_CATALOGUE[code].summary, options.cause === undefined ? {} : { cause: options.cause });
    this.name = 'GatewayError';
    this.code = code;
    this.details = options.details;
  }

  /** The catalogue entry for this error's code. */
  get spec(): ErrorSpec {
    return ERROR_CATALOGUE[this.code];
  }
}

/** True when `err` is a GatewayError (optionally with the given code). */
export function isGatewayError(err: unknown, code?: ErrorCode): err is GatewayError {
  return err instanceof GatewayError && (code === undefined || err.code === code);
}

/** The catalogue entry of a code. */
export function errorSpec(code: ErrorCode): ErrorSpec {
  return ERROR_CATALOGUE[code];
}
