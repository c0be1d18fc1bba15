/**
 * A value that must never reach a log, an error message or `console.log`. Printing it in any way gives
 * `[redacted]`; only `reveal()` gives the value, and only code that needs the secret should call it.
 */
import { inspect } from 'node:util';
import { z } from 'zod';

const REDACTED = '[redacted]';

export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  /** The secret itself. */
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [inspect.custom](): string {
    return REDACTED;
  }
}

/** Zod schema: a non-empty string turned into a Secret. */
export const secretString = () => z.string().min(1).transform((s) => new Secret(s));
