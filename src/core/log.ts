/**
 * Structured logging: pino JSON lines on stderr, one child logger per connection, secrets redacted.
 * On a terminal (or with format `pretty`) the same records print as readable lines through pino-pretty;
 * redaction happens before either format sees a record. Child loggers follow their root's level, so
 * `root.level = 'debug'` (a reload) changes every logger at once.
 *
 * Redaction is belt and braces: config secrets are `Secret` objects that print `[redacted]` anyway, and
 * these paths catch raw tokens, PINs and keys that a careless log call might pass.
 *
 * pino-pretty (and its dozen dependencies) is loaded only when a readable format is asked for: a service
 * writing JSON never carries it (memory: docs/benchmarks.md, "TLS/WS/WSS memory").
 */
import { createRequire } from 'node:module';
import { connectionRefusedChannel, type ConnectionRefusedEvent } from './events.ts';
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
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** `auto`: pretty when stderr is a terminal, JSON otherwise. */
export type LogFormat = 'auto' | 'json' | 'pretty';

/** Whether `format` means readable lines here (`auto` asks whether stderr is a terminal). */
export function prettyLogs(format: LogFormat, isTty: boolean = process.stderr.isTTY): boolean {
  return format === 'pretty' || (format === 'auto' && isTty);
}

/**
 * A stream that prints records as readable lines (`12:00:01.234 INFO (relay): tunnel established …`),
 * written to `destination` (default stderr) synchronously, so lines keep their order with other output.
 */
export function prettyStream(options: { colorize?: boolean; destination?: NodeJS.WritableStream | number } = {}): DestinationStream {
  // Synchronous on purpose (createLogger is): pino-pretty is a CommonJS package.
  const { PinoPretty } = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
  return PinoPretty({
    destination: options.destination ?? 2,
    sync: true,
    colorize: options.colorize ?? process.stderr.isTTY,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    messageKey: 'msg',
    singleLine: true,
  });
}

/**
 * Creates the root logger. `destination` defaults to stderr (fd 2): JSON lines, or readable lines when
 * `format` says so (`pretty`, or `auto` on a terminal).
 */
export function createLogger(options: { level: LogLevel; name?: string; format?: LogFormat }, destination?: DestinationStream): Logger {
  const pretty = destination === undefined && prettyLogs(options.format ?? 'json');
  return pino(
    {
      name: options.name ?? 'gatehouse',
      level: options.level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? (pretty ? prettyStream() : pino.destination({ fd: 2, sync: false })),
  );
}

/** A logger that writes nothing (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Warnings a peer can cause at will (refused connections, addresses outside an allow-list): at most one
 * line per `key` every `intervalMs`, carrying how many were left out since (`suppressed`), so a flood of
 * connections cannot become a flood of log lines. Keys are our own codes, never client strings. With a
 * `frontEnd`, every call is also published as a ConnectionRefusedEvent (`fields.code`), so metrics count
 * what the log leaves out.
 */
export class RateLimitedWarnings {
  readonly #last = new Map<string, { atMs: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
    private readonly frontEnd?: string,
  ) {}

  warn(key: string, fields: Record<string, unknown>, msg: string): void {
    if (this.frontEnd !== undefined && connectionRefusedChannel.hasSubscribers) {
      connectionRefusedChannel.publish({ frontEnd: this.frontEnd, code: typeof fields.code === 'string' ? fields.code : key } satisfies ConnectionRefusedEvent);
    }
    const t = this.now();
    const seen = this.#last.get(key);
    if (seen !== undefined && t - seen.atMs < this.intervalMs) {
      seen.suppressed++;
      return;
    }
    this.#last.set(key, { atMs: t, suppressed: 0 });
    this.log.warn(seen === undefined || seen.suppressed === 0 ? fields : { ...fields, suppressed: seen.suppressed }, msg);
  }
}
