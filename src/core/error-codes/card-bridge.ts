/**
 * Error codes of the card bridge front end. `lineResult` is the 4-hex-digit result that takes the place of
 * the data in a `>ID:RESULT` answer line: SW1 `C0` is used by no card. C080–C086 and C090 are foxyproxy's;
 * C087–C089 are Gatehouse's own (bad APDU, a limit, busy/timeout), which clients treat as any other SW.
 */
import type { ErrorSpec } from '../errors.ts';

export const cardBridgeErrors = {
  CARD_NO_CARD: { summary: 'The reader exists but holds no card (or the card was removed).', httpStatus: 404, lineResult: 'C080' },
  CARD_UNKNOWN_COMMAND: { summary: 'A command line named no known command, or had no command field.', httpStatus: 400, lineResult: 'C081' },
  CARD_ALIAS_AMBIGUOUS: { summary: 'A reader filter or certificate alias matched more than one card.', httpStatus: 409, lineResult: 'C082' },
  CARD_READER_NOT_FOUND: { summary: 'No reader or certificate alias matched the reader line.', httpStatus: 404, lineResult: 'C083' },
  CARD_UPSTREAM_FAILED: {
    summary: 'The card backend failed (upstream unreachable, non-200, hardware error after retries).',
    httpStatus: 502,
    lineResult: 'C083',
  },
  CARD_BAD_SIGN_DATA: { summary: 'SIGN data is not a 40 (SHA-1) or 64 (SHA-256) hex digit hash, or the PIN is not 1-255 printable ASCII characters.', httpStatus: 400, lineResult: 'C084' },
  CARD_WRONG_PIN: { summary: 'The card refused the PIN (63Cx); the PIN is remembered as failed for that card.', httpStatus: 403, lineResult: 'C085' },
  CARD_PIN_ALREADY_FAILED: {
    summary: 'SIGN was asked again with a PIN that already failed on that card; it was not sent (lock-out protection).',
    httpStatus: 403,
    lineResult: 'C085',
  },
  CARD_SIGN_NO_ANSWER: { summary: 'The card gave no usable answer for SIGN (no key, no signature).', httpStatus: 502, lineResult: 'C086' },
  CARD_BAD_RESPONSE: {
    summary: "The card's answer (or ATR) was shorter than 2 bytes: no status word. C086 is foxyproxy 2.x's code for such an answer.",
    httpStatus: 502,
    lineResult: 'C086',
  },
  CARD_BAD_APDU: {
    summary: 'APDU data is not even-length hex, is under 4 bytes, over the ISO 7816-4 limits, or malformed.',
    httpStatus: 400,
    lineResult: 'C087',
  },
  CARD_LIMIT_LINE: { summary: 'A protocol line exceeded maxLineBytes; the connection is answered and closed.', httpStatus: 413, lineResult: 'C088' },
  CARD_LIMIT_COMMANDS: {
    summary: 'A request held more than maxCommandsPerRequest command lines; the connection is answered and closed.',
    httpStatus: 413,
    lineResult: 'C088',
  },
  CARD_LIMIT_REQUEST: {
    summary: 'A request exceeded maxRequestBytes in total; the connection is answered and closed.',
    httpStatus: 413,
    lineResult: 'C088',
  },
  CARD_QUEUE_FULL: { summary: "The card's wait queue is full (maxQueuedPerCard); try again later.", httpStatus: 503, lineResult: 'C089' },
  CARD_LOCK_TIMEOUT: { summary: 'A request waited longer than lockWaitMs for its card.', httpStatus: 503, lineResult: 'C089' },
  CARD_COMMAND_TIMEOUT: { summary: 'The card or its backend did not answer one command within commandTimeoutMs.', httpStatus: 504, lineResult: 'C089' },
  CARD_REQUEST_READ_TIMEOUT: {
    summary: 'A client started a request and did not finish it (empty line) within requestReadMs; answered and closed.',
    httpStatus: 408,
    lineResult: 'C089',
  },
  CARD_LIMIT_BUFFERED: {
    summary: 'The bytes held for unfinished and queued requests across all connections reached limits.maxBufferedBytes; the connection whose bytes did not fit is answered and closed.',
    httpStatus: 503,
    lineResult: 'C089',
  },
  CARD_CLIENT_NOT_ALLOWED: { summary: "A connection came from outside the listener's allowFrom networks; it was closed without an answer.", httpStatus: 403 },
  CARD_IDLE_TIMEOUT: { summary: 'A connection sent nothing between requests for idleTimeoutMs and was closed.', httpStatus: 408 },
  CARD_WRITE_TIMEOUT: { summary: 'A client did not read its answers within writeTimeoutMs; the connection was destroyed.', httpStatus: 408 },
  CARD_UNAUTHORIZED: { summary: 'A REST request had a missing or wrong token.', httpStatus: 401 },
  CARD_INTERNAL: { summary: 'An unexpected failure in the card bridge (a bug); details are in the log.', httpStatus: 500, lineResult: 'C090' },
} as const satisfies Record<string, ErrorSpec>;
