/**
 * The CLI's last-resort handler: an uncaught exception or unhandled rejection anywhere in the process (a
 * bug; user mistakes are reported by exit.ts long before) becomes ONE fatal JSON log line on stderr, in the
 * pino format of core/log.ts (level, time, pid, name, err {type, message, stack, code}, msg), written
 * synchronously, then exit 70 (EX_SOFTWARE) so a supervisor restarts the gateway and the log says why.
 * Never a bare stack on stderr. Installed first thing by main.ts; libraries never install it.
 */
import { writeSync } from 'node:fs';
import { pino } from 'pino';
import { createLogger } from '../core/log.ts';

/** EX_SOFTWARE (also EXIT.software in exit.ts, which imports this file). */
const EX_SOFTWARE = 70;

let dying = false;

/** Writes the fatal line for `err` synchronously. Never throws. */
export function logFatal(err: unknown, msg: string): void {
  const error = err instanceof Error ? err : new Error(`non-error thrown: ${safeString(err)}`);
  try {
    createLogger({ level: 'fatal' }, pino.destination({ fd: 2, sync: true })).fatal({ err: error }, msg);
  } catch {
    // The logger itself failed (it should not): still one JSON line, by hand.
    const line = {
      level: 'fatal',
      time: new Date().toISOString(),
      pid: process.pid,
      name: 'gatehouse',
      err: { type: error.name, message: error.message, stack: error.stack, code: (error as { code?: unknown }).code },
      msg,
    };
    try {
      writeSync(2, `${JSON.stringify(line)}\n`);
    } catch {
      // stderr is gone: nothing left to tell.
    }
  }
}

/** Logs `err` as fatal and exits 70. A second fault while dying exits at once (no second line). */
export function exitFatal(err: unknown, msg: string): never {
  if (!dying) {
    dying = true;
    logFatal(err, msg);
  }
  process.exit(EX_SOFTWARE);
}

function safeString(v: unknown): string {
  try {
    return String(v);
  } catch {
    return typeof v;
  }
}

/** Installs the process-wide handlers (idempotent). */
export function installLastResort(): void {
  if (process.listeners('uncaughtException').includes(onException)) return;
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
}

function onException(err: unknown): void {
  exitFatal(err, 'uncaught exception');
}

function onRejection(reason: unknown): void {
  exitFatal(reason, 'unhandled promise rejection');
}
