/**
 * Error codes of the sealed API front end. Before authentication only the plain HTTP statuses below reach
 * the peer (every authentication failure is the same `401 {"error":"unauthorized"}`); after authentication
 * errors travel sealed as `{ok:false, error:{code, message}}` with the code's HTTP status.
 */
import type { ErrorSpec } from '../errors.ts';

export const sealedApiErrors = {
  // Plain (unsealed) answers, before authentication.
  SEALED_BAD_REQUEST: {
    summary: 'The body is not a compact JWE of 5 segments with a parseable protected header.',
    httpStatus: 400,
  },
  SEALED_UNAUTHORIZED: {
    summary:
      'Authentication failed (unknown key, revoked or expired client, bad crypto, claims, replay); the reason is only logged.',
    httpStatus: 401,
  },
  SEALED_NOT_FOUND: { summary: 'A request went to a path other than the RPC path.', httpStatus: 404 },
  SEALED_METHOD_NOT_ALLOWED: { summary: 'A request used a method other than POST.', httpStatus: 405 },
  SEALED_LIMIT_BODY: { summary: 'The request body exceeded limits.maxBodyBytes.', httpStatus: 413 },
  SEALED_LIMIT_HEADERS: { summary: 'The request headers exceeded limits.maxHeaderBytes.', httpStatus: 431 },
  SEALED_UNSUPPORTED_MEDIA_TYPE: { summary: 'The Content-Type is not application/jose.', httpStatus: 415 },
  SEALED_TOO_MANY_FAILURES: {
    summary: 'This address failed authentication more than limits.maxAuthFailuresPerIp times in the window.',
    httpStatus: 429,
  },
  SEALED_LIMIT_CONCURRENT: {
    summary: 'More than limits.maxConcurrentRequests requests were in progress.',
    httpStatus: 503,
  },
  SEALED_LIMIT_CONNECTIONS: {
    summary:
      'More than limits.maxConnections connections were open; the new connection was closed without an answer (logged at most every 10 s).',
    httpStatus: 503,
  },
  SEALED_LIMIT_CONNECTIONS_PER_IP: {
    summary:
      'More than limits.maxConnectionsPerIp connections from one address were open; the new connection was closed without an answer (logged at most every 10 s).',
    httpStatus: 429,
  },
  SEALED_BODY_TIMEOUT: {
    summary: 'The request body did not arrive within timeouts.bodyMs.',
    httpStatus: 408,
  },
  // Sealed answers, after authentication.
  SEALED_FORBIDDEN: { summary: "The action or file is not in the client's allow-list.", httpStatus: 403 },
  SEALED_UNKNOWN_ACTION: { summary: 'The request named an action that is not registered.', httpStatus: 404 },
  SEALED_UNKNOWN_FILE: {
    summary: 'The request named a logical file that is not configured.',
    httpStatus: 404,
  },
  SEALED_UNKNOWN_BACKUP: { summary: 'files.restore named a backup that does not exist.', httpStatus: 404 },
  SEALED_INVALID_ARGS: { summary: "The action's arguments do not match its schema.", httpStatus: 422 },
  SEALED_INVALID_CONTENT: {
    summary: 'The new file content failed validation for its format; nothing was written.',
    httpStatus: 422,
  },
  SEALED_ETAG_MISMATCH: {
    summary: 'if_match did not equal the current ETag of the file (stale or replayed write).',
    httpStatus: 409,
  },
  SEALED_FILE_LOCKED: {
    summary:
      'Another process held the lock of the managed file for longer than timeouts.fileLockMs; nothing was written.',
    httpStatus: 503,
  },
  SEALED_BACKUP_FAILED: {
    summary:
      'The backup of the current content could not be written durably (disk full, file size limit, a broken backup folder); the managed file was not changed.',
    httpStatus: 500,
  },
  SEALED_FILE_IO_FAILED: {
    summary:
      'A managed file could not be read or written: its path is not a regular file (a directory, FIFO or device), or the disk refused (permissions, read-only, I/O error); a write that fails this way leaves the file unchanged.',
    httpStatus: 500,
  },
  SEALED_LIMIT_FILE: {
    summary: 'A managed file or new content exceeded limits.maxFileBytes.',
    httpStatus: 413,
  },
  SEALED_REPLAY_CACHE_FULL: {
    summary:
      'The replay cache is full (limits.maxReplayEntries); the request was refused rather than evicting entries.',
    httpStatus: 503,
  },
  SEALED_REPLAY_HORIZON_FAILED: {
    summary:
      'A request dated ahead of the server clock could not be recorded in the replay-horizon file of stateDir (a restart could accept it again), so it was refused and its action did not run.',
    httpStatus: 503,
  },
  SEALED_REPLAY_STORE_FAILED: {
    summary: 'The replay store failed (e.g. its shared directory is gone), so replay could not be ruled out; the action did not run.',
    httpStatus: 503,
  },
  SEALED_ACTION_TIMEOUT: { summary: 'An action did not finish within timeouts.actionMs.', httpStatus: 504 },
  SEALED_ACTION_FAILED: { summary: 'An action handler failed; details are in the log.', httpStatus: 500 },
  // Operations (start-up, CLI).
  SEALED_KEYS_INVALID: {
    summary: 'The server key file or a client key file is unreadable, malformed or too open (not 0600).',
    httpStatus: 500,
  },
  SEALED_REGISTRY_INVALID: {
    summary: 'The client registry file is unreadable or malformed; the previous registry stays in force.',
    httpStatus: 500,
  },
  SEALED_REGISTRY_FORGED: {
    summary: 'The client registry document in Redis fails its HMAC under the cluster secret (written without the secret, or malformed), or is an older signed document written back; it is ignored (an old one replaced by the current one) and the registry in force stays (log code only).',
    httpStatus: 500,
  },
  SEALED_MODULE_INVALID: {
    summary: 'A custom module file could not be loaded or does not export { run }.',
    httpStatus: 500,
  },
  SEALED_CONFIG_UNSAFE: {
    summary: 'A sealed API setting is unsafe: the backup folder lies inside the folder of a managed file.',
    httpStatus: 500,
  },
  SEALED_RESPONSE_INVALID: {
    summary:
      'Client side: the server answer was not a valid sealed response for this request (rid, key, signature).',
    httpStatus: 502,
  },
} as const satisfies Record<string, ErrorSpec>;
