/** Error codes shared by every front end: configuration, listeners, lifecycle. */
import type { ErrorSpec } from '../errors.ts';

export const coreErrors = {
  CORE_CONFIG_INVALID: { summary: 'The configuration file failed validation; every problem is listed.', httpStatus: 500 },
  CORE_CONFIG_UNREADABLE: { summary: 'The configuration file could not be read or is not valid TOML.', httpStatus: 500 },
  CORE_LISTEN_FAILED: { summary: 'A listener could not bind its address (in use, no permission, bad path).', httpStatus: 500 },
  CORE_TLS_MATERIAL: { summary: 'A TLS certificate or key file could not be read or parsed.', httpStatus: 500 },
  CORE_CLUSTER_STATE_UNAVAILABLE: {
    summary: 'The state the cluster shares (Redis, or the primary of serve --workers) could not be reached: the failed-auth back-off counts in this process only, sealed API requests are refused with SEALED_REPLAY_STORE_FAILED, registry changes wait; all recover by themselves (log code only).',
    httpStatus: 503,
  },
  CORE_CLUSTER_RECORD_INVALID: {
    summary: "A record in Redis under this gateway's `keyPrefix` was not in a form any node writes (another key type, an unknown format): a rendezvous entry, a tunnel-proxy directory entry or the shared state's epoch is replaced (logged, with the key), never obeyed (keys of another type where a node keeps its sets and leases are replaced without a line). Something else writes into the gateway's keys, or Redis lost data: check `keyPrefix` and who can write to Redis (log code only).",
    httpStatus: 500,
  },
  CORE_SHUTTING_DOWN: {
    summary: 'The gateway is draining for shutdown and takes no new work.',
    httpStatus: 503,
    close: { code: 1001, reason: 'Server shutting down.' },
  },
  CORE_LIMIT_CONNECTIONS: {
    summary: 'The listener refused a connection: the total connection limit is reached.',
    httpStatus: 503,
    jsonRpcText: 'Too many connections.',
    close: { code: 1013, reason: 'Too many connections.' },
  },
  CORE_LIMIT_CONNECTIONS_PER_IP: {
    summary: 'The listener refused a connection: this address has too many open connections.',
    httpStatus: 429,
    jsonRpcText: 'Too many connections from this address.',
    close: { code: 1013, reason: 'Too many connections from this address.' },
  },
  CORE_INTERNAL: {
    summary: 'An unexpected internal failure (a bug) while handling one connection; that connection is closed, the log has the stack.',
    httpStatus: 500,
    close: { code: 1011, reason: 'Internal server error.' },
    lineResult: 'C090',
  },
} as const satisfies Record<string, ErrorSpec>;
