/**
 * The shared directory of registered tunnel-proxy servers: server uuid → the node that holds its server
 * connection and that node's forward address, so a client landing on any node finds its server
 * (tunnel-proxy/service.ts forwards it there; forward.ts carries the stream). Two implementations of
 * `TpDirectory`: `RedisTpDirectory` here (nodes joined through `[cluster] redisUrl`) and the primary's
 * table for `serve --workers` without Redis (tp-directory-ipc.ts). It holds no sockets.
 *
 * The uuid is hashed, never stored or sent in clear: this mode has no authentication, so a server uuid is
 * the one thing a client must know to reach a server (a bearer secret). In Redis it is an HMAC-SHA256
 * under the cluster secret; between workers a SHA-256 (the IPC channel stays on this machine). The same
 * hash is the `ref` of the forward claim (kind `tp`), so the uuid does not cross the node network either.
 *
 * What is in Redis (prefix `keyPrefix`):
 *   tp:s:<hmac(uuid)>  string "<node> <registration> <forward address>"; TTL = `leaseMs`, renewed every
 *                      third of it by the owning node (re-written if Redis lost it)
 * Registration is one Lua script: the key is taken when absent or already this node's (the local registry
 * is the judge of duplicates within a node), refused when another node holds it: a server uuid is
 * registered at most once in the cluster, as nymea refuses a duplicate server in one process.
 *
 * Faults: Redis away → register and lookup reject at once (the service answers InternalServerError to a
 * server, ServerNotFound to a client, and logs RELAY_TP_DIRECTORY_FAILED); entries of servers already
 * registered stay as long as their lease. A node that dies stops renewing: its entries expire after
 * `leaseMs` (until then a client for such a server is answered ServerNotFound when its node does not
 * answer, and the server reconnecting elsewhere is refused AlreadyRegistered and retries). Redis restarted
 * empty: each node writes its entries back at its next renewal; an entry found held by another node then
 * is reported through `onLost`, and that node closes its server connection (the other registered first).
 */
import { createHmac } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../../core/log.ts';
import type { Secret } from '../../core/config/secret.ts';
import { closeRedisClient, connectInBackground, createRedisClient } from '../../core/redis.ts';

/** Where a registered server sits. */
export interface TpServerLocation {
  /** The node holding the server connection (`[cluster] nodeId`, or `worker-N`). */
  readonly node: string;
  /** That node's forward listener (forward.ts). */
  readonly address: string;
}

export type TpRegisterResult = { readonly ok: true } | { readonly ok: false; readonly node: string };

export interface TpDirectory {
  /** The key a server uuid is known by in the directory and in forward claims (hex, 64 characters). */
  keyOf(uuid: string): string;
  /**
   * Claims `key` for this node, reachable at `address`. Resolves `{ok:false, node}` when another node
   * holds it. Rejects when the directory cannot be asked.
   */
  register(key: string, address: string): Promise<TpRegisterResult>;
  /** Frees `key` if this node holds it. Never rejects (an entry left behind expires). */
  unregister(key: string): Promise<void>;
  /** Where `key` is registered, or undefined. Rejects when the directory cannot be asked. */
  lookup(key: string): Promise<TpServerLocation | undefined>;
  /** Called with a key this node held and found taken by another node (after Redis lost its data). */
  onLost(listener: (key: string) => void): void;
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface RedisTpDirectoryOptions {
  readonly redisUrl: string;
  readonly secret: Secret;
  readonly nodeId: string;
  /** An entry's lifetime unless renewed, ms (`[cluster] tunnelLeaseMs`). */
  readonly leaseMs: number;
  readonly keyPrefix: string;
  readonly commandTimeoutMs: number;
  readonly log: Logger;
}

/** ARGV: node, value, leaseMs. Takes the key when absent or this node's; else answers the holder's node. */
const REGISTER = `
local replaced = nil
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  local owner = string.match(redis.call('GET', KEYS[1]), '^(%S+) %S+ %S+$')
  if owner == nil then replaced = 'string'
  elseif owner ~= ARGV[1] then return {'taken', owner} end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  replaced = kind
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {'ok', replaced}
`;

/** Deletes KEYS[1] if it still holds ARGV[1]. */
const DELETE_IF = `
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`;

/**
 * ARGV[1] = leaseMs, ARGV[i+1] = the value of KEYS[i]. Renews ours, writes back missing ones; returns the
 * 1-based indexes of keys another node holds now.
 */
const RENEW = `
local lost = {}
for i, k in ipairs(KEYS) do
  local kind = redis.call('TYPE', k)['ok']
  local v = kind == 'string' and redis.call('GET', k) or nil
  if v == ARGV[i + 1] then redis.call('PEXPIRE', k, ARGV[1])
  elseif kind == 'none' or (v ~= nil and not string.match(v, '^%S+ %S+ %S+$')) then
    redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1])
  elseif kind ~= 'string' then
    redis.call('DEL', k)
    redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1])
  else table.insert(lost, i) end
end
return lost
`;

type Scripts = Redis & {
  tpRegister(k: string, node: string, value: string, leaseMs: number): Promise<string[]>;
  tpDeleteIf(k: string, value: string): Promise<number>;
  tpRenew(n: number, ...keysThenArgs: (string | number)[]): Promise<number[]>;
};

export class RedisTpDirectory implements TpDirectory {
  readonly #redis: Scripts;
  readonly #opts: RedisTpDirectoryOptions;
  /** Entries this node holds: Redis key → the value written. */
  readonly #held = new Map<string, string>();
  readonly #lost: ((key: string) => void)[] = [];
  #nextRegistration = 1;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: RedisTpDirectoryOptions) {
    this.#opts = opts;
    this.#redis = createRedisClient({
      redisUrl: opts.redisUrl,
      commandTimeoutMs: opts.commandTimeoutMs,
      log: opts.log,
      errorCode: 'RELAY_TP_DIRECTORY_FAILED',
      errorMessage: 'redis unreachable; tunnel-proxy servers cannot register and clients reach only servers on their own node until it is back',
      fields: { node: opts.nodeId, part: 'tunnel-proxy directory' },
    }) as Scripts;
    this.#redis.defineCommand('tpRegister', { numberOfKeys: 1, lua: REGISTER });
    this.#redis.defineCommand('tpDeleteIf', { numberOfKeys: 1, lua: DELETE_IF });
    this.#redis.defineCommand('tpRenew', { lua: RENEW });
  }

  keyOf(uuid: string): string {
    return createHmac('sha256', this.#opts.secret.reveal()).update('gatehouse/tp-server/v1').update(uuid).digest('hex');
  }

  #redisKey(key: string): string {
    return `${this.#opts.keyPrefix}tp:s:${key}`;
  }

  async start(): Promise<void> {
    this.#timer = setInterval(() => this.#renew(), Math.max(50, Math.floor(this.#opts.leaseMs / 3)));
    this.#timer.unref();
    await connectInBackground(this.#redis, this.#opts.log, 'RELAY_TP_DIRECTORY_FAILED', 'tunnel-proxy directory', { node: this.#opts.nodeId });
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await closeRedisClient(this.#redis);
  }

  onLost(listener: (key: string) => void): void {
    this.#lost.push(listener);
  }

  async register(key: string, address: string): Promise<TpRegisterResult> {
    if (!/^\S{1,300}$/.test(address)) throw new Error('a forward address has no spaces');
    const k = this.#redisKey(key);
    const value = `${this.#opts.nodeId} ${this.#nextRegistration++} ${address}`;
    const r = await this.#redis.tpRegister(k, this.#opts.nodeId, value, this.#opts.leaseMs);
    if (r[0] === 'ok') {
      // An entry no node of ours writes (another key type or format) is replaced, not obeyed: obeyed, one
      // written without a TTL refused this server uuid on every node forever.
      if (r[1] !== undefined) this.#opts.log.warn({ code: 'CORE_CLUSTER_RECORD_INVALID', key: k, type: r[1] }, 'a tunnel-proxy directory entry not written by a gateway node was replaced');
      this.#held.set(k, value);
      return { ok: true };
    }
    if (r[0] === 'taken') return { ok: false, node: r[1] ?? '' };
    throw new Error(`unexpected directory script answer ${String(r[0])}`);
  }

  async unregister(key: string): Promise<void> {
    const k = this.#redisKey(key);
    const value = this.#held.get(k);
    if (value === undefined) return;
    this.#held.delete(k);
    try {
      await this.#redis.tpDeleteIf(k, value);
    } catch (err) {
      this.#opts.log.debug({ err: (err as Error).message, code: 'RELAY_TP_DIRECTORY_FAILED' }, 'tunnel-proxy directory entry not removed (it expires)');
    }
  }

  async lookup(key: string): Promise<TpServerLocation | undefined> {
    const k = this.#redisKey(key);
    const v = await this.#redis.get(k);
    if (v === null) return undefined;
    const m = /^(\S+) \S+ (\S+)$/.exec(v);
    if (m === null) this.#opts.log.warn({ code: 'CORE_CLUSTER_RECORD_INVALID', key: k }, 'a tunnel-proxy directory entry not written by a gateway node was ignored');
    return m === null ? undefined : { node: m[1] ?? '', address: m[2] ?? '' };
  }

  #renew(): void {
    if (this.#held.size === 0 || this.#redis.status !== 'ready') return;
    const keys = [...this.#held.keys()];
    for (let i = 0; i < keys.length; i += 500) {
      const batch = keys.slice(i, i + 500);
      const values = batch.map((k) => this.#held.get(k) ?? '');
      this.#redis.tpRenew(batch.length, ...batch, this.#opts.leaseMs, ...values).then(
        (lost) => {
          for (const n of lost) {
            const k = batch[n - 1];
            if (k === undefined || this.#held.get(k) !== values[n - 1]) continue;
            this.#held.delete(k);
            const key = k.slice(k.lastIndexOf(':') + 1);
            for (const l of this.#lost) {
              try {
                l(key);
              } catch (err) {
                this.#opts.log.error({ err, code: 'CORE_INTERNAL' }, 'tunnel-proxy directory: a lost-entry handler failed');
              }
            }
          }
        },
        (err: unknown) => {
          this.#opts.log.warn({ err: (err as Error).message, code: 'RELAY_TP_DIRECTORY_FAILED' }, 'tunnel-proxy directory renewal failed');
        },
      );
    }
  }
}
