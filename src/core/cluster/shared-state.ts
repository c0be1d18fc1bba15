/**
 * State that every process of a cluster shares, for the front ends' limits that must hold across nodes:
 * failure counters (the failed-auth back-off) and "seen once" keys (the sealed API's replay cache).
 * Two implementations of `SharedState`: `RedisSharedState` here (machines joined by `[cluster]
 * redisUrl`), and `IpcSharedState` (ipc-shared.ts: the workers of one machine, through the primary).
 * Keys are hashes (`hash()`): addresses and (client, jti) pairs never reach Redis or the IPC channel in
 * clear. The pairing table is not here (relay/cluster/).
 *
 * What is in Redis (prefix `keyPrefix`):
 *   bo:<scope>:<hmac(address)>  sorted set of failures (member "<node>:<n>", score = Redis time in ms),
 *                               at most maxFailures members, TTL = the window
 *   once:<scope>:<hmac(key)>    "1", SET NX PX: TTL = the key's own lifetime (the request's expiry)
 *   epoch                       a random value set once: when it is gone, Redis lost its data (reset)
 *   channel bo:blocked          "<scope> <hmac(address)> <ms>": an address reached the limit, block it
 *                               for <ms> (published by the counting script itself, atomically)
 * Faults: Redis away → every call rejects at once (no offline queue); the callers decide what that
 * means (back-off: count locally; replay: refuse). `once` answers only once the epoch was read on the
 * current connection (a failed read is retried by the next `once`, which rejects while it fails). One error line per 5 s (core/redis.ts).
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.ts';
import type { Secret } from '../config/secret.ts';
import { closeRedisClient, connectInBackground, createRedisClient } from '../redis.ts';

/** What `once` found: the key was new (and is now held), already held, or the table is full. */
export type OnceVerdict = 'fresh' | 'duplicate' | 'full';

/** Direct access to the Redis of a `redis` shared state (cluster parts with their own keys: registry sync). */
export interface RedisAccess {
  /** The command connection (scripts may be added with defineCommand). */
  readonly client: Redis;
  /** `[cluster] keyPrefix`. */
  readonly prefix: string;
  /** True while commands can be sent. */
  readonly ready: boolean;
  /** Subscribes to the channel `<prefix><name>` (now and after every reconnect). @returns unsubscribe */
  subscribe(name: string, listener: (message: string) => void): () => void;
  /** HMAC-SHA256 under the cluster secret of length-prefixed parts, hex. */
  hash(label: string, ...parts: string[]): string;
}

export interface SharedState {
  /** `redis` (machines) or `workers` (the primary of this machine). */
  readonly kind: 'redis' | 'workers';
  /** The Redis behind it (kind `redis` only). */
  readonly redis?: RedisAccess;
  /** The key under which `parts` are shared (HMAC-SHA256 under the cluster secret; SHA-256 between workers). */
  hash(label: string, ...parts: string[]): string;
  /**
   * Holds `key` for `ttlMs` unless it is held already (atomic across the cluster). `maxEntries` bounds
   * the keys of `scope` where the store can count them (the primary); Redis is bounded by the caller.
   * Rejects when the shared store cannot be reached (the caller must not assume either answer).
   */
  once(scope: string, key: string, ttlMs: number, maxEntries: number): Promise<OnceVerdict>;
  /**
   * Counts one failure of `key` in `scope` (a sliding window of `windowMs`, across the cluster) and
   * resolves with how long `key` is blocked now, ms (0: not blocked). Reaching the limit also tells every
   * process (`onBlocked`). Rejects when the shared store cannot be reached.
   */
  countFailure(scope: string, key: string, maxFailures: number, windowMs: number): Promise<number>;
  /** Verdicts "block `key` for `forMs`" of `scope`, from any process. @returns unsubscribe */
  onBlocked(scope: string, listener: (key: string, forMs: number) => void): () => void;
  /** Called when the store lost what it held (a Redis restarted empty). @returns unsubscribe */
  onReset(listener: () => void): () => void;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Keyed hash of length-prefixed parts (no two part lists give the same input). */
export function keyedHash(secret: string | undefined, label: string, parts: readonly string[]): string {
  const h = createHmac('sha256', secret ?? 'gatehouse-workers');
  h.update(label);
  for (const p of parts) h.update(`\0${Buffer.byteLength(p)}:${p}`);
  return h.digest('hex');
}

/** Small fan-out of listeners by name (scope or channel). */
export class Listeners<A extends unknown[]> {
  readonly #byName = new Map<string, Set<(...args: A) => void>>();
  add(name: string, fn: (...args: A) => void): () => void {
    let set = this.#byName.get(name);
    if (set === undefined) this.#byName.set(name, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }
  emit(name: string, ...args: A): void {
    for (const fn of this.#byName.get(name) ?? []) fn(...args);
  }
  names(): string[] {
    return [...this.#byName.keys()];
  }
}

const COUNT_FAILURE = `
-- A key of another type (not written by a node) would fail every count for this address: replaced.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[2])
local w = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n > max then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
  n = max
end
redis.call('PEXPIRE', KEYS[1], w)
if n < max then return 0 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local forMs = math.floor(tonumber(oldest[2]) + w - now)
if forMs < 1 then forMs = 1 end
redis.call('PUBLISH', KEYS[2], ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. forMs)
return forMs
`;

/**
 * Returns {epoch, ''}, setting ARGV[1] first when there is none; a key of another type (not written by a
 * node: it failed every read, and with it every \`once\`) is replaced: {ARGV[1], its type}.
 */
const EPOCH = `
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then return {redis.call('GET', KEYS[1]), ''} end
if kind ~= 'none' then redis.call('DEL', KEYS[1]) else kind = '' end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], kind}
`;

type Scripts = Redis & {
  csCountFailure(zset: string, channel: string, member: string, max: number, windowMs: number, scope: string, key: string): Promise<number>;
  csEpoch(key: string, fresh: string): Promise<[string, string]>;
};

export interface RedisSharedStateOptions {
  readonly redisUrl: string;
  readonly secret: Secret;
  readonly nodeId: string;
  readonly keyPrefix: string;
  readonly commandTimeoutMs: number;
  readonly log: Logger;
}

/** Shared state on Redis: one command connection and one subscriber connection per process. */
export class RedisSharedState implements SharedState, RedisAccess {
  readonly kind = 'redis';
  /** Commands (other cluster parts may use it: registry sync). */
  readonly client: Scripts;
  readonly #sub: Redis;
  readonly #opts: RedisSharedStateOptions;
  readonly #blocked = new Listeners<[string, number]>();
  readonly #channels = new Listeners<[string]>();
  readonly #reset = new Set<() => void>();
  #epoch: string | undefined;
  /** While the epoch is read after a (re)connect: `once` waits for it (a reset must be known first). */
  #checking: Promise<void> | undefined;
  /** The epoch was read on the current connection (until then a reset may be unknown). */
  #epochRead = false;
  #seq = 0;
  #closed = false;

  constructor(opts: RedisSharedStateOptions) {
    this.#opts = opts;
    const common = {
      redisUrl: opts.redisUrl,
      commandTimeoutMs: opts.commandTimeoutMs,
      log: opts.log,
      errorCode: 'CORE_CLUSTER_STATE_UNAVAILABLE',
      fields: { node: opts.nodeId },
    } as const;
    this.client = createRedisClient({
      ...common,
      errorMessage: 'redis unreachable: the failed-auth back-off counts per process and sealed API requests get 503 until it is back',
      readyMessage: 'redis shared state connected',
    }) as Scripts;
    this.client.defineCommand('csCountFailure', { numberOfKeys: 2, lua: COUNT_FAILURE });
    this.client.defineCommand('csEpoch', { numberOfKeys: 1, lua: EPOCH });
    this.client.on('ready', () => {
      // Synchronously, before any command of ours can run on the new connection.
      this.#epochRead = false;
      this.#checking = this.#checkEpoch().finally(() => (this.#checking = undefined));
    });
    this.#sub = createRedisClient({ ...common, errorMessage: 'redis subscriber unreachable: cluster notices are delayed until it is back' });
    this.#sub.on('ready', () => {
      const channels = [this.#channel('bo:blocked'), ...this.#channels.names()];
      this.#sub.subscribe(...channels).catch((err: unknown) => {
        opts.log.warn({ err: (err as Error).message, code: 'CORE_CLUSTER_STATE_UNAVAILABLE' }, 'redis subscribe failed; retried on the next reconnect');
      });
    });
    this.#sub.on('message', (channel: string, message: string) => this.#onMessage(channel, message));
  }

  get redis(): RedisAccess {
    return this;
  }

  get prefix(): string {
    return this.#opts.keyPrefix;
  }

  get nodeId(): string {
    return this.#opts.nodeId;
  }

  /** True while commands can be sent. */
  get ready(): boolean {
    return this.client.status === 'ready';
  }

  #channel(name: string): string {
    return `${this.#opts.keyPrefix}${name}`;
  }

  hash(label: string, ...parts: string[]): string {
    return keyedHash(this.#opts.secret.reveal(), label, parts);
  }

  /** Connects both connections (a Redis that is down is logged, not fatal). */
  async start(): Promise<void> {
    const fields = { node: this.#opts.nodeId };
    await Promise.all([
      connectInBackground(this.client, this.#opts.log, 'CORE_CLUSTER_STATE_UNAVAILABLE', 'shared state', fields),
      connectInBackground(this.#sub, this.#opts.log, 'CORE_CLUSTER_STATE_UNAVAILABLE', 'shared state notices', fields),
    ]);
    await this.#checking;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([closeRedisClient(this.client), closeRedisClient(this.#sub)]);
  }

  /**
   * Subscribes to the pub/sub channel `<prefix><name>` (now if connected, and after every reconnect).
   * @returns unsubscribe (the channel stays subscribed; messages are dropped)
   */
  subscribe(name: string, listener: (message: string) => void): () => void {
    const channel = this.#channel(name);
    const off = this.#channels.add(channel, listener);
    if (this.#sub.status === 'ready') {
      this.#sub.subscribe(channel).catch((err: unknown) => {
        this.#opts.log.warn({ err: (err as Error).message, code: 'CORE_CLUSTER_STATE_UNAVAILABLE' }, 'redis subscribe failed; retried on the next reconnect');
      });
    }
    return off;
  }

  async #checkEpoch(): Promise<void> {
    try {
      const [epoch, replaced] = await this.client.csEpoch(this.#channel('epoch'), randomBytes(12).toString('hex'));
      if (replaced !== '') this.#opts.log.warn({ node: this.#opts.nodeId, code: 'CORE_CLUSTER_RECORD_INVALID', key: this.#channel('epoch'), type: replaced }, 'the epoch key was not written by a gateway node; replaced');
      const before = this.#epoch;
      this.#epoch = epoch;
      this.#epochRead = true;
      if (before !== undefined && before !== epoch) {
        this.#opts.log.warn({ node: this.#opts.nodeId, code: 'CORE_CLUSTER_STATE_UNAVAILABLE' }, 'redis lost its data (restarted empty): shared state starts over');
        for (const fn of this.#reset) fn();
      }
    } catch (err) {
      this.#opts.log.warn({ err: (err as Error).message, code: 'CORE_CLUSTER_STATE_UNAVAILABLE' }, 'redis epoch not read');
    }
  }

  #onMessage(channel: string, message: string): void {
    if (channel === this.#channel('bo:blocked')) {
      // "<scope> <key> <ms>": bounded parsing; a malformed notice is dropped.
      if (message.length > 300) return;
      const [scope, key, ms] = message.split(' ');
      const forMs = Number(ms);
      if (scope === undefined || key === undefined || !/^[0-9a-f]{64}$/.test(key) || !Number.isSafeInteger(forMs) || forMs <= 0) return;
      this.#blocked.emit(scope, key, forMs);
      return;
    }
    this.#channels.emit(channel, message);
  }

  async once(scope: string, key: string, ttlMs: number): Promise<OnceVerdict> {
    if (this.#checking !== undefined) await this.#checking;
    if (!this.#epochRead) {
      // The read after the last connect failed: Redis may have lost every key. Ask again before trusting it.
      this.#checking ??= this.#checkEpoch().finally(() => (this.#checking = undefined));
      await this.#checking;
      if (!this.#epochRead) throw new Error('redis epoch not read: whether it lost its data is unknown');
    }
    const r = await this.client.set(`${this.#opts.keyPrefix}once:${scope}:${key}`, '1', 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX');
    return r === 'OK' ? 'fresh' : 'duplicate';
  }

  async countFailure(scope: string, key: string, maxFailures: number, windowMs: number): Promise<number> {
    const member = `${this.#opts.nodeId}:${++this.#seq}`;
    const forMs = await this.client.csCountFailure(`${this.#opts.keyPrefix}bo:${scope}:${key}`, this.#channel('bo:blocked'), member, maxFailures, windowMs, scope, key);
    // ioredis gives integers as numbers; anything else means a broken script answer.
    if (typeof forMs !== 'number' || !Number.isFinite(forMs)) throw new Error('unexpected back-off script answer');
    return forMs;
  }

  onBlocked(scope: string, listener: (key: string, forMs: number) => void): () => void {
    return this.#blocked.add(scope, listener);
  }

  onReset(listener: () => void): () => void {
    this.#reset.add(listener);
    return () => this.#reset.delete(listener);
  }
}
