/**
 * Argument parsers for commander options (a bad value is a usage error, exit 64, with the option named),
 * and the check that a file named on the command line can be read (exit 66 otherwise).
 */
import { InvalidArgumentError } from 'commander';
import { access, constants, stat } from 'node:fs/promises';
import { EXIT, fail } from './exit.ts';

/** A TCP port, 1-65535. */
export function parsePort(value: string): number {
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new InvalidArgumentError('a port is a whole number from 1 to 65535.');
  return n;
}

/** A whole number of milliseconds, 1 ms to 24 h. */
export function parseMs(value: string): number {
  const n = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 86_400_000)) throw new InvalidArgumentError('give a whole number of milliseconds from 1 to 86400000.');
  return n;
}

/** A finite number ≥ 0 (hours, days). */
export function parseNonNegative(value: string): number {
  const n = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isFinite(n)) throw new InvalidArgumentError('give a number ≥ 0.');
  return n;
}

/** An ISO 8601 date or date-time (2027-01-31 or 2027-01-31T12:00:00Z), returned as an ISO string. */
export function parseIsoDate(value: string): string {
  const s = value.trim();
  const ms = /^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?)?$/.test(s) ? Date.parse(s) : NaN;
  if (Number.isNaN(ms)) throw new InvalidArgumentError('give an ISO 8601 date such as 2027-01-31 or 2027-01-31T12:00:00Z.');
  return new Date(ms).toISOString();
}

/** Exits 66 (no input) unless `path` is a readable regular file; `what` names it (`--key`, `FILE`). */
export async function requireInputFile(path: string, what: string): Promise<void> {
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
    await access(path, constants.R_OK);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : typeof code === 'string' ? code : 'cannot read it';
    fail(`${what} ${path}: ${why}`, EXIT.noInput);
  }
  if (!isFile) fail(`${what} ${path}: not a regular file`, EXIT.noInput);
}
