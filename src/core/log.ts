/**
 * Structured logging: pino JSON lines on stderr, one child logger per connection, secrets redacted.
 *
 * Redaction is belt and braces: config secrets are `Secret` objects that print `[redacted]` anyway, and
 * these paths catch raw tokens, PINs and keys that a careless log call might pass.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
  'token',
  '*.token',
  'pin',
  '*.pin',
  'password',
  '*.password',
  'secret',
  '*.secret',
  'privateKey',
  '*.privateKey',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["x-auth-token"]',
  '*.headers["x-auth-token"]',
];

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Creates the root logger. `destination` defaults to stderr (fd 2). */
export function createLogger(options: { level: LogLevel; name?: string }, destination?: DestinationStream): Logger {
  return pino(
    {
      name: options.name ?? 'gatehouse',
      level: options.level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that writes nothing (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
