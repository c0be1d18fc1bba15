/**
 * The rendezvous table on Redis: clients that land on different gateway nodes (processes or machines)
 * meet under the same (token, nonce). It is a `Rendezvous<P>`; sessions do not know which table they use.
 *
 * What is in Redis (prefix `keyPrefix`, default `gatehouse:`):
 *   rv:k:<hmac(token, nonce)>  string "w <node> <party> <forward address or ->" (a party waits; TTL =
 *                              the alone timeout)
 *                              or "t <node> <lease>" (a tunnel holds the key; TTL = lease, renewed)
 *   rv:t:<hmac(token)>         sorted set of "<node> <party>" scored by expiry (ms): the per-token waiting
 *                              limit across nodes; expired members are pruned on every offer
 * Tokens and nonces appear only as HMAC-SHA256 under the cluster secret: never in clear. A party is known
 * in Redis only by its node id and a per-process number; the party itself (the Session) stays in this
 * process's own map, so a pairing whose partner waits here is completed locally.
 *
 * Atomicity: offer, withdraw and release are Lua scripts, so exactly one client pairs with a waiting
 * party however many race. A partner waiting on ANOTHER node is paired the same way (`paired-remote`:
 * the key turns into this node's tunnel lease in the same script) and this node then claims it from
 * that node over a forward stream (forward.ts); a node with no forward address is refused
 * (`partner-elsewhere`) without touching its entry.
 *
 * Faults: Redis unreachable → every call rejects at once (no offline queue; the session answers
 * ProxyError, RELAY_RENDEZVOUS_FAILED); the client reconnects by itself. Open tunnels never touch Redis
 * except for lease renewal, so they keep flowing. A node that dies stops renewing: its waiting entries and
 * tunnel leases expire and no key stays blocked. Redis restarted empty: entries are gone, keys are still
 * per (token, nonce), so nothing pairs across keys; the next renewal writes the open tunnels' leases back
 * (a third client of a tunnel's key is refused again, as before the restart). A value in no form a node
 * writes (another key type, an unknown format) is replaced by the next offer and logged
 * (CORE_CLUSTER_RECORD_INVALID): obeyed, one without a TTL would hold its key forever.
 */
import { createHmac } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createRedisClient } from '../../core/redis.ts';
import type { Logger } from '../../core/log.ts';
import type { Secret } from '../../core/config/secret.ts';
import { LocalWaiting, type OfferResult, type Rendezvous, type RendezvousKey } from '../rendezvous.ts';

export interface RedisRendezvousOptions {
  /** redis:// or rediss:// URL, or a unix socket path (`/run/redis.sock`). */
  readonly redisUrl: string;
  /** HMAC key for tokens and nonces; the same on every node. */
  readonly secret: Secret;
  /** This node's id; unique in the cluster (default in the schema: hostname-pid). */
  readonly nodeId: string;
  /** A waiting entry's lifetime: the relay's alone timeout, ms. */
  readonly aloneMs: number;
  /** Parties waiting under one token, across nodes and nonces. */
  readonly maxWaitingPerToken: number;
  /** How long a tunnel's claim on its key lives unless renewed, ms (renewed every third of it). */
  readonly tunnelLeaseMs: number;
  /** Redis key prefix, so several gateways can share one Redis. */
  readonly keyPrefix: string;
  /** Bounds one Redis command, ms. */
  readonly commandTimeoutMs: number;
  readonly log: Logger;
}

const OFFER = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A value no node of ours writes (another key type, another format) is replaced, not obeyed: obeyed, one
-- written without a TTL would refuse or misdirect every client of this (token, nonce) forever.
local replaced = nil
local v = false
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then v = redis.call('GET', KEYS[1])
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  replaced = kind
end
if v then
  if string.match(v, '^t %S+ %S+$') then return {'tunnel-exists'} end
  local node, party, addr = string.match(v, '^w (%S+) (%S+) (%S+)$')
  if node == nil then
    node, party = string.match(v, '^w (%S+) (%S+)$')
    addr = '-'
  end
  if node == nil then
    replaced = 'string'
  else
    if node ~= ARGV[1] and addr == '-' then return {'partner-elsewhere', node} end
    redis.call('ZREM', KEYS[2], node .. ' ' .. party)
    redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6])
    if node ~= ARGV[1] then return {'paired-remote', node, party, addr} end
    return {'paired', party}
  end
end
local setKind = redis.call('TYPE', KEYS[2])['ok']
if setKind ~= 'zset' and setKind ~= 'none' then
  redis.call('DEL', KEYS[2])
  replaced = setKind
end
local ms = now()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'too-many-waiting'} end
redis.call('SET', KEYS[1], 'w ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[7], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[3]), ARGV[1] .. ' ' .. ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return {'waiting', replaced}
`;

/** Deletes KEYS[1] if it still holds ARGV[1]; removes ARGV[2] from the token set KEYS[2] (if given). */
const DELETE_IF = `
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
`;

/**
 * Renews the leases KEYS[i] that still hold ARGV[i+1] to ARGV[1] ms, and writes back a lease whose key is
 * gone (Redis restarted empty, or away longer than a lease): the tunnel is still open, so its key stays
 * taken. A key someone else holds by now (a party waiting there) is left alone; a value no node writes
 * (another key type, another format) is replaced by the lease (GET on another type would fail the script,
 * and with it the renewal of the whole batch).
 */
const RENEW = `
for i, k in ipairs(KEYS) do
  local kind = redis.call('TYPE', k)['ok']
  local v = kind == 'string' and redis.call('GET', k) or nil
  if v == ARGV[i + 1] then redis.call('PEXPIRE', k, ARGV[1])
  elseif kind == 'none' or (v ~= nil and not string.match(v, '^[tw] %S+ %S+')) then
    redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1])
  elseif kind ~= 'string' then
    redis.call('DEL', k)
    redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1])
  end
end
return 1
`;

type Scripts = Redis & {
  rvOffer(k: string, t: string, node: string, party: string, ttl: number, max: number, lease: string, leaseMs: number, address: string): Promise<string[]>;
  rvDeleteIf(k: string, t: string, value: string, member: string): Promise<number>;
  rvRenew(n: number, ...keysThenArgs: (string | number)[]): Promise<number>;
};

export class RedisRendezvous<P> implements Rendezvous<P> {
  readonly #redis: Scripts;
  readonly #opts: RedisRendezvousOptions;
  /** Parties waiting on this node, by their number in Redis. */
  readonly #waiting = new LocalWaiting<P, { slot: string; value: string; member: string; tokenKey: string; id: string }>();
  /** Where other nodes reach our forward listener ('-': nowhere; partners on other nodes are refused). */
  #address = '-';
  /** Tunnel leases this node holds: slot key → the value we wrote. */
  readonly #leases = new Map<string, string>();
  #nextParty = 1;
  /** The Redis keys of a rendezvous key, computed once per key object (its offer, then its release). */
  readonly #keyCache = new WeakMap<RendezvousKey, { token: string; nonce: string; slot: string; tokenKey: string }>();
  #renewTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: RedisRendezvousOptions) {
    this.#opts = opts;
    // Fail fast while Redis is away (the session answers ProxyError instead of waiting for its deadline),
    // reconnect in the background, one error line per 5 s: core/redis.ts.
    this.#redis = createRedisClient({
      redisUrl: opts.redisUrl,
      commandTimeoutMs: opts.commandTimeoutMs,
      log: opts.log,
      errorCode: 'RELAY_RENDEZVOUS_FAILED',
      errorMessage: 'redis unreachable; new pairings fail until it is back',
      readyMessage: 'redis rendezvous connected',
      fields: { node: opts.nodeId },
    }) as Scripts;
    this.#redis.defineCommand('rvOffer', { numberOfKeys: 2, lua: OFFER });
    this.#redis.defineCommand('rvDeleteIf', { numberOfKeys: 2, lua: DELETE_IF });
    this.#redis.defineCommand('rvRenew', { lua: RENEW });
  }

  /**
   * Connects (the first attempt only; later ones are automatic) and starts lease renewal. A Redis that is
   * down at start is not fatal: offers fail until it comes up.
   */
  async start(): Promise<void> {
    this.#renewTimer = setInterval(() => this.#renew(), Math.max(50, Math.floor(this.#opts.tunnelLeaseMs / 3)));
    this.#renewTimer.unref();
    try {
      await this.#redis.connect();
    } catch (err) {
      this.#opts.log.error({ err: (err as Error).message, code: 'RELAY_RENDEZVOUS_FAILED' }, 'redis not reachable at start; retrying in the background');
    }
  }

  /** Stops renewal and disconnects. Our entries expire by themselves (or are released by the closing tunnels first). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#renewTimer !== undefined) clearInterval(this.#renewTimer);
    try {
      if (this.#redis.status === 'ready') await this.#redis.quit();
      else this.#redis.disconnect();
    } catch {
      this.#redis.disconnect();
    }
  }

  get size() {
    return { waiting: this.#waiting.size, tunnels: this.#leases.size };
  }

  #hmac(label: string, ...parts: string[]): string {
    const h = createHmac('sha256', this.#opts.secret.reveal());
    h.update(label);
    for (const p of parts) h.update(`${Buffer.byteLength(p)}:${p}`);
    return h.digest('hex');
  }

  #keys(key: RendezvousKey): { slot: string; tokenKey: string } {
    const known = this.#keyCache.get(key);
    if (known !== undefined && known.token === key.token && known.nonce === key.nonce) return known;
    const p = this.#opts.keyPrefix;
    const keys = { token: key.token, nonce: key.nonce, slot: `${p}rv:k:${this.#hmac('slot', key.token, key.nonce)}`, tokenKey: `${p}rv:t:${this.#hmac('token', key.token)}` };
    this.#keyCache.set(key, keys);
    return keys;
  }

  async offer(key: RendezvousKey, party: P): Promise<OfferResult<P>> {
    const { slot, tokenKey } = this.#keys(key);
    const node = this.#opts.nodeId;
    // A party whose entry names this node but who already left locally: its entry is stale, retry once.
    for (let attempt = 0; attempt < 3; attempt++) {
      const id = String(this.#nextParty++);
      const lease = `t ${node} ${id}`;
      const address = this.#address;
      const r = await this.#redis.rvOffer(slot, tokenKey, node, id, this.#opts.aloneMs, this.#opts.maxWaitingPerToken, lease, this.#opts.tunnelLeaseMs, address);
      switch (r[0]) {
        case 'waiting': {
          if (r[1] !== undefined) {
            // Redis holds what no node of ours writes: someone else writes our keys, or Redis is corrupt.
            this.#opts.log.warn({ code: 'CORE_CLUSTER_RECORD_INVALID', key: slot, type: r[1] }, 'a rendezvous entry not written by a gateway node was replaced');
          }
          this.#waiting.add(party, { slot, value: `w ${node} ${id} ${address}`, member: `${node} ${id}`, tokenKey, id });
          return { kind: 'waiting' };
        }
        case 'paired-remote':
          this.#leases.set(slot, lease);
          // The ref names the entry (its hash) and the party number there: the claim must match both.
          return { kind: 'paired-remote', node: r[1] ?? '', address: r[3] ?? '', ref: `${slot.slice(slot.lastIndexOf(':') + 1)}.${r[2] ?? ''}` };
        case 'paired': {
          this.#leases.set(slot, lease);
          const partnerId = r[1] ?? '';
          const partner = this.#waiting.takeById(partnerId);
          if (partner === undefined) {
            // Withdrawn here while the script ran: give the key back and offer again.
            await this.release(key);
            continue;
          }
          return { kind: 'paired', partner };
        }
        case 'tunnel-exists':
          return { kind: 'tunnel-exists' };
        case 'too-many-waiting':
          return { kind: 'too-many-waiting' };
        case 'partner-elsewhere':
          return { kind: 'partner-elsewhere', node: r[1] ?? '' };
        default:
          throw new Error(`unexpected rendezvous script answer ${String(r[0])}`);
      }
    }
    return { kind: 'tunnel-exists' };
  }

  advertise(address: string): void {
    if (!/^\S{1,300}$/.test(address)) throw new Error('a forward address has no spaces');
    this.#address = address;
  }

  claimRemote(ref: string): P | undefined {
    // The ref carries the hash part of the Redis key (`…rv:k:<hash>`).
    return this.#waiting.claim(ref, (entrySlot, refSlot) => entrySlot.endsWith(`:${refSlot}`));
  }


  async withdraw(_key: RendezvousKey, party: P): Promise<void> {
    // Locally first, synchronously: an offer racing with this one must not pair with a party that left.
    const entry = this.#waiting.takeParty(party);
    if (entry === undefined) return;
    await this.#redis.rvDeleteIf(entry.slot, entry.tokenKey, entry.value, entry.member);
  }

  async release(key: RendezvousKey): Promise<void> {
    const { slot, tokenKey } = this.#keys(key);
    const lease = this.#leases.get(slot);
    if (lease === undefined) return;
    this.#leases.delete(slot);
    await this.#redis.rvDeleteIf(slot, tokenKey, lease, '');
  }

  #renew(): void {
    if (this.#leases.size === 0 || this.#redis.status !== 'ready') return;
    const slots = [...this.#leases.keys()];
    // Bounded batches: one script call per 500 tunnels.
    for (let i = 0; i < slots.length; i += 500) {
      const batch = slots.slice(i, i + 500);
      const values = batch.map((s) => this.#leases.get(s) ?? '');
      this.#redis.rvRenew(batch.length, ...batch, this.#opts.tunnelLeaseMs, ...values).catch((err: unknown) => {
        this.#opts.log.warn({ err: (err as Error).message, code: 'RELAY_RENDEZVOUS_FAILED' }, 'tunnel lease renewal failed');
      });
    }
  }
}
