/** Error codes of the sealed API front end (HTTP statuses, sealed error codes). */
import type { ErrorSpec } from '../errors.ts';

export const sealedApiErrors = {} as const satisfies Record<string, ErrorSpec>;
