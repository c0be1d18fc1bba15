/** Error codes of the card bridge front end (line protocol results C080–C090, REST statuses). */
import type { ErrorSpec } from '../errors.ts';

export const cardBridgeErrors = {} as const satisfies Record<string, ErrorSpec>;
