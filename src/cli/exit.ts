/** Exit codes of the CLI and the one place errors become messages on stderr. */
import { isGatewayError } from '../core/errors.ts';

export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 64,
  unavailable: 69,
  config: 78,
} as const;

export function exitCodeFor(err: unknown): number {
  if (!isGatewayError(err)) return EXIT.failure;
  if (err.code === 'CORE_CONFIG_INVALID' || err.code === 'CORE_CONFIG_UNREADABLE' || err.code === 'CORE_TLS_MATERIAL') return EXIT.config;
  if (err.code === 'CORE_LISTEN_FAILED') return EXIT.unavailable;
  return EXIT.failure;
}

/** Prints a GatewayError as `gatehouse: CODE: message` (stack only for unexpected errors) and exits. */
export function reportAndExit(err: unknown): never {
  if (isGatewayError(err)) process.stderr.write(`gatehouse: ${err.code}: ${err.message}\n`);
  else process.stderr.write(`gatehouse: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(exitCodeFor(err));
}
