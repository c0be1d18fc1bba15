/**
 * The one way this gateway connects to Redis (ioredis 6): a client built from the `[cluster]` keys with
 * the behaviour every cluster part relies on. It is a connection factory, not a store: what is kept in
 * Redis belongs to the parts that use it (relay/cluster/rendezvous-redis.ts, core/cluster/shared-state.ts).
 *
 * - Fail fast while Redis is away: no offline queue and no per-command retries, so a command rejects at
 *   once instead of waiting for a deadline; `commandTimeoutMs` bounds every command and the connect.
 * - Reconnect in the background by itself (100 ms, 200 ms, … capped at 2 s), forever.
 * - `lazyConnect`: nothing happens until the owner calls `connect()` (its `start()`).
 * - One error line per 5 s with a code (ioredis repeats the error on every reconnect attempt), and one
 *   info line each time it is ready again.
 * - The URL's password never reaches a log: `describeRedisUrl` masks it, and error messages are scrubbed
 *   of it before they are logged.
 */
import { Redis } from 'ioredis';
import type { Logger } from './log.ts';
import type { ErrorCode } from './errors.ts';

export interface RedisClientOptions {
  /** `redis://…`, `rediss://…` or an absolute unix socket path (`[cluster] redisUrl`). */
  readonly redisUrl: string;
  /** Bounds one command and the connect, ms (`[cluster] redisCommandTimeoutMs`). */
  readonly commandTimeoutMs: number;
  readonly log: Logger;
  /** The code on the error line ("what fails while Redis is away"). */
  readonly errorCode: ErrorCode;
  /** The error line's message. */
  readonly errorMessage: string;
  /** The line logged at info each time the connection is ready (omit: none). */
  readonly readyMessage?: string;
  /** Extra fields on both lines (e.g. `{ node }`). */
  readonly fields?: Readonly<Record<string, unknown>>;
  /** Interval of the error line, ms. */
  readonly errorLogEveryMs?: number;
}

/** The URL as it may be logged: the password (and a user name) replaced by `***`. */
export function describeRedisUrl(url: string): string {
  if (url.startsWith('/')) return url;
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    if (u.username !== '' && u.password === '') u.username = '***';
    return u.toString();
  } catch {
    return '(unparsable redis URL)';
  }
}

/** The password a URL carries (URL-decoded), or undefined. */
function passwordOf(url: string): string | undefined {
  if (url.startsWith('/')) return undefined;
  try {
    const u = new URL(url);
    const p = decodeURIComponent(u.password !== '' ? u.password : u.username);
    return p === '' ? undefined : p;
  } catch {
    return undefined;
  }
}

/**
 * A new ioredis client (not connected yet: call `connect()`; a failure there is not fatal, the client
 * keeps retrying in the background). The owner calls `quit()`/`disconnect()` on close.
 */
export function createRedisClient(opts: RedisClientOptions): Redis {
  const common = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs,
    connectTimeout: opts.commandTimeoutMs,
    lazyConnect: true,
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
  };
  const redis = opts.redisUrl.startsWith('/') ? new Redis({ ...common, path: opts.redisUrl }) : new Redis(opts.redisUrl, common);
  const password = passwordOf(opts.redisUrl);
  const every = opts.errorLogEveryMs ?? 5000;
  let lastErrorLog = -Infinity;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastErrorLog < every) return;
    lastErrorLog = now;
    opts.log.error({ ...opts.fields, err: scrub(err.message, password), code: opts.errorCode }, opts.errorMessage);
  });
  if (opts.readyMessage !== undefined) {
    const msg = opts.readyMessage;
    redis.on('ready', () => opts.log.info({ ...opts.fields }, msg));
  }
  return redis;
}

/** `message` without `secret` in it. */
export function scrub(message: string, secret: string | undefined): string {
  return secret === undefined || secret.length < 1 ? message : message.split(secret).join('***');
}

/**
 * Connects a client made by `createRedisClient`; a Redis that is down is logged (with `code`) and not
 * fatal: the client keeps retrying in the background. Never rejects.
 */
export async function connectInBackground(redis: Redis, log: Logger, code: ErrorCode, what: string, fields: Readonly<Record<string, unknown>> = {}): Promise<void> {
  try {
    await redis.connect();
  } catch (err) {
    log.error({ ...fields, err: (err as Error).message.replace(/\/\/[^@/]*@/g, '//***@'), code }, `redis not reachable at start (${what}); retrying in the background`);
  }
}

/** Quits a client (or drops it when not connected). Never rejects. */
export async function closeRedisClient(redis: Redis): Promise<void> {
  try {
    if (redis.status === 'ready') await redis.quit();
    else redis.disconnect();
  } catch {
    redis.disconnect();
  }
}
