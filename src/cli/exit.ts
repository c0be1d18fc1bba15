/**
 * Exit codes of the CLI and the one place errors become messages on stderr.
 *
 * A user's mistake (bad argument, missing file, nothing listening, a server that says no) is one line on
 * stderr, `gatehouse <command>: <what to do>`, and an exit code from the table below: never a stack trace.
 * Only a fault of our own (a bug) ends as the last-resort fatal log line of fatal.ts with exit 70.
 * The table is printed by `gatehouse --help` and documented in docs/operations.md; keep the three in step.
 */
import { isGatewayError, type ErrorCode } from '../core/errors.ts';
import { exitFatal } from './fatal.ts';

/** sysexits.h codes, used the same way by every subcommand. */
export const EXIT = {
  ok: 0,
  /** The server, bridge or card answered with an error (a refusal, not a fault). */
  failure: 1,
  /** EX_USAGE: a bad argument or option, a missing required one. */
  usage: 64,
  /** EX_NOINPUT: a file named on the command line does not exist or cannot be read. */
  noInput: 66,
  /** EX_UNAVAILABLE: nothing answers at the address (gateway not running, wrong port, http vs https). */
  unavailable: 69,
  /** EX_SOFTWARE: a bug in Gatehouse; the fatal log line says what. */
  software: 70,
  /** EX_CANTCREAT: an output file exists (and is not overwritten) or cannot be created. */
  cantCreate: 73,
  /** EX_CONFIG: the config file, a file it names (tokens, TLS material, server keys) or a key file is missing or invalid. */
  config: 78,
} as const;

/** The exit-code table as `gatehouse --help` prints it. */
export const EXIT_HELP = [
  'Exit codes:',
  '  0   success',
  '  1   the gateway, bridge or card answered with an error',
  '  64  usage: a bad or missing argument or option',
  '  66  no input: a file named on the command line is missing or unreadable',
  '  69  unavailable: nothing answers at the address (is the gateway running? http vs https?)',
  '  70  software: a bug in Gatehouse (one fatal JSON log line on stderr says what)',
  '  73  cannot create: an output file exists (never overwritten) or cannot be written',
  '  78  configuration: the config file, a file it names or a key file is missing or invalid',
].join('\n');

/** A user-facing failure with its message and exit code (no stack is ever printed for it). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Throws a CliError; `reportAndExit` prints it as `gatehouse <command>: message`. */
export function fail(message: string, exitCode: number): never {
  throw new CliError(message, exitCode);
}

const CONFIG_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'CORE_CONFIG_INVALID',
  'CORE_CONFIG_UNREADABLE',
  'CORE_TLS_MATERIAL',
  'RELAY_TOKEN_FILE_INVALID',
  'RELAY_TOKEN_FILE_TOO_LARGE',
  'SEALED_KEYS_INVALID',
  // Not SEALED_REGISTRY_INVALID: admin.ts also uses it for "a client named X already exists" (a refusal, 1).
  'SEALED_MODULE_INVALID',
  'SEALED_CONFIG_UNSAFE',
]);
const INTERNAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['CORE_INTERNAL', 'CARD_INTERNAL']);

export function exitCodeFor(err: unknown): number {
  if (err instanceof CliError) return err.exitCode;
  if (!isGatewayError(err)) return EXIT.software;
  if (CONFIG_CODES.has(err.code)) return EXIT.config;
  if (err.code === 'CORE_LISTEN_FAILED') return EXIT.unavailable;
  if (INTERNAL_CODES.has(err.code)) return EXIT.software;
  return EXIT.failure;
}

/**
 * Prints a CliError as `gatehouse[ command]: message`, a GatewayError as `gatehouse: CODE: message`, and exits
 * with its code. Anything else is a bug: one fatal log line, exit 70 (fatal.ts).
 */
export function reportAndExit(err: unknown, command?: string): never {
  const prefix = command === undefined ? 'gatehouse' : `gatehouse ${command}`;
  if (err instanceof CliError) process.stderr.write(`${prefix}: ${err.message}\n`);
  else if (isGatewayError(err)) process.stderr.write(`${prefix}: ${err.code}: ${err.message}\n`);
  else exitFatal(err, 'unexpected error in the CLI');
  process.exit(exitCodeFor(err));
}
