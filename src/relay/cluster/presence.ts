/**
 * Presence: every gateway node (a process with its own `[cluster] nodeId`; a `serve --workers` worker is
 * `nodeId-w<n>`) publishes its view to Redis every `presenceIntervalMs`, with a TTL of three periods, so
 * `gatehouse monitor --cluster` and the metrics see every live node, and a node that dies (SIGKILL, power
 * loss, a network split) disappears once its key expires. A node that stops cleanly deletes its key.
 *
 * What is in Redis (prefix `keyPrefix`, default `gatehouse:`):
 *   node:<nodeId>   JSON `NodePresence` (node id, version, start time, its relay summary and tunnel list,
 *                   its forward address when it has one); PX = 3 × the period, rewritten every period
 *   nodes           sorted set of node ids scored by their key's expiry (server time, ms): the index the
 *                   readers list; members past their expiry are pruned by every publisher
 * Nothing in it is a secret: no token, no cluster key. Client names, users and addresses are in it (as on
 * the monitor socket): keep Redis private, as for the rendezvous table. A value is bounded: the tunnel list
 * holds at most `MAX_LISTED_TUNNELS` tunnels (the rest are counted).
 *
 * Readers treat what they read as data from another process: every value is validated (zod) and one that
 * does not parse (or is no string, or names another node than its key) is counted, never thrown; at most
 * `MAX_NODES` nodes are read.
 */
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Logger } from '../../core/log.ts';
import { closeRedisClient } from '../../core/redis.ts';
import type { NodeSummary } from '../monitor.ts';

/** Tunnels listed per node in its presence value (about 250 bytes each). */
export const MAX_LISTED_TUNNELS = 1000;
/** Nodes a reader lists at most. */
export const MAX_NODES = 1024;

const PUBLISH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
-- An index of another type (not written by a node) would fail every publisher forever: replaced.
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[2]) end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return now
`;

const peerSchema = z.object({ id: z.string(), name: z.string(), userName: z.string(), address: z.string() });

const summarySchema = z.object({
  connections: z.record(z.string(), z.number()),
  clients: z.number(),
  waiting: z.number(),
  tunnels: z.number(),
  forwarded: z.number().default(0),
  totalClients: z.number(),
  totalTunnels: z.number(),
  totalTraffic: z.number(),
  tunnelList: z.array(z.object({ one: peerSchema, two: peerSchema, bytes: z.number(), timestamp: z.number() })),
  tunnelsNotListed: z.number(),
});

const presenceSchema = z.object({
  node: z.string().regex(/^[A-Za-z0-9._:-]{1,140}$/),
  version: z.string().max(64),
  host: z.string().max(255),
  pid: z.number().int(),
  /** When the node started, ms since 1970 (its clock). */
  startedAt: z.number(),
  /** When this value was written, ms since 1970 (its clock). */
  updatedAt: z.number(),
  /** Where other nodes reach it for forwarded tunnels (`host:port`), when it has a forward listener. */
  forward: z.string().max(300).optional(),
  /** Its relay, or null when the relay front end is off on that node. */
  relay: summarySchema.nullable(),
});

/** One node as it published itself. */
export type NodePresence = z.output<typeof presenceSchema>;

/** What a reader found: the live nodes (sorted by id) and how many values did not parse. */
export interface ClusterView {
  readonly nodes: readonly NodePresence[];
  readonly unreadable: number;
}

export interface PresenceOptions {
  /** A client from core/redis.ts, not connected yet; the publisher owns it from now on (closes it). */
  readonly redis: Redis;
  readonly nodeId: string;
  readonly keyPrefix: string;
  /** How often the value is rewritten, ms; it lives three times as long. */
  readonly intervalMs: number;
  readonly version: string;
  /** This node's forward address now (it is known once the relay listens), when it has one. */
  forward?(): string | undefined;
  /** This node's relay summary now (undefined: no relay). */
  summary(): NodeSummary | undefined;
  readonly log: Logger;
}

type PresenceRedis = Redis & {
  ghPresencePublish(key: string, index: string, value: string, ttlMs: number, node: string): Promise<number>;
};

/** The longest client-chosen text a presence value carries (names, addresses), characters. */
const MAX_FIELD = 128;
/** A presence value larger than this is not read (counted unreadable): no node of ours writes one. */
const MAX_VALUE_BYTES = 1024 * 1024;

function shortPeer<T extends { name: string; userName: string; address: string }>(p: T): T {
  const cut = (x: string) => (x.length > MAX_FIELD ? `${x.slice(0, MAX_FIELD - 1)}…` : x);
  return { ...p, name: cut(p.name), userName: cut(p.userName), address: cut(p.address) };
}

/** Reads every live node's presence (at most `MAX_NODES`), validated. Rejects when Redis cannot be asked. */
export async function readClusterView(redis: Redis, keyPrefix: string): Promise<ClusterView> {
  const ids = await redis.zrange(`${keyPrefix}nodes`, '0', String(MAX_NODES - 1));
  if (ids.length === 0) return { nodes: [], unreadable: 0 };
  const keys = ids.map((id) => `${keyPrefix}node:${id}`);
  // Sizes first: an oversized value (not written by a node of ours) is skipped, never downloaded. One
  // reply per key: a key of another type (WRONGTYPE) is one unreadable node, not a view that fails whole.
  const sizes = (await redis.pipeline(keys.map((k) => ['strlen', k])).exec()) ?? [];
  const readable: { key: string; id: string }[] = [];
  let unreadable = 0;
  keys.forEach((key, i) => {
    const [err, size] = sizes[i] ?? [new Error('no reply'), 0];
    if (err === null && typeof size === 'number' && size <= MAX_VALUE_BYTES) readable.push({ key, id: ids[i] ?? '' });
    else unreadable++;
  });
  const values = readable.length === 0 ? [] : await redis.mget(readable.map((r) => r.key));
  const nodes: NodePresence[] = [];
  values.forEach((value, i) => {
    // No value: the node's key expired (it died) and a publisher has not pruned the index yet.
    if (value === null) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      unreadable++;
      return;
    }
    const r = presenceSchema.safeParse(parsed);
    // A value must be the node its key names: one under another node's id would list a node twice (or
    // stand in for one that is gone).
    if (r.success && r.data.node === readable[i]?.id) nodes.push(r.data);
    else unreadable++;
  });
  nodes.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  return { nodes, unreadable };
}

/** Publishes this node's presence every period until `close()`. */
export class PresencePublisher {
  readonly #opts: PresenceOptions;
  readonly #redis: PresenceRedis;
  readonly #startedAt = Date.now();
  #timer: NodeJS.Timeout | undefined;
  #publishing = false;
  #lastErrorLog = -Infinity;
  #closed = false;

  constructor(opts: PresenceOptions) {
    this.#opts = opts;
    this.#redis = opts.redis as PresenceRedis;
    this.#redis.defineCommand('ghPresencePublish', { numberOfKeys: 2, lua: PUBLISH });
    // Back after Redis was away (or restarted empty): show up again at once, not a period later.
    this.#redis.on('ready', () => this.#tick());
  }

  get key(): string {
    return `${this.#opts.keyPrefix}node:${this.#opts.nodeId}`;
  }

  /** The time to live of the value, ms: three periods. */
  get ttlMs(): number {
    return this.#opts.intervalMs * 3;
  }

  /** This node's value now. */
  presence(): NodePresence {
    const relay = this.#opts.summary();
    const forward = this.#opts.forward?.();
    return {
      node: this.#opts.nodeId,
      version: this.#opts.version,
      host: hostname(),
      pid: process.pid,
      startedAt: this.#startedAt,
      updatedAt: Date.now(),
      ...(forward === undefined ? {} : { forward }),
      // Client-chosen names are cut to MAX_FIELD characters: a node's value stays small (1,000 tunnels ×
      // two 10 KiB names would be 20 MB written to Redis every period).
      relay:
        relay === undefined
          ? null
          : {
              ...relay,
              connections: { ...relay.connections },
              tunnelList: relay.tunnelList.map((t) => ({ ...t, one: shortPeer(t.one), two: shortPeer(t.two) })),
            },
    };
  }

  /**
   * Connects (a Redis that is down is logged, not fatal: the client keeps retrying in the background) and
   * publishes at once, then every period. Never rejects.
   */
  async start(): Promise<void> {
    this.#timer = setInterval(() => this.#tick(), this.#opts.intervalMs);
    this.#timer.unref();
    if (this.#redis.status === 'wait') {
      try {
        await this.#redis.connect();
      } catch (err) {
        this.#logFailure(err);
      }
    }
    this.#tick();
  }

  /** Every live node's presence, through this node's connection. */
  view(): Promise<ClusterView> {
    return readClusterView(this.#redis, this.#opts.keyPrefix);
  }

  /**
   * Stops publishing, deletes this node's value (it leaves the cluster view at once) and closes the
   * client. Never rejects.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#redis.status === 'ready') {
      try {
        await this.#redis.multi().del(this.key).zrem(`${this.#opts.keyPrefix}nodes`, this.#opts.nodeId).exec();
      } catch {
        // Not deleted: it expires after its TTL.
      }
    }
    await closeRedisClient(this.#redis);
  }

  #tick(): void {
    if (this.#publishing || this.#closed) return;
    if (this.#redis.status !== 'ready') return;
    this.#publishing = true;
    let value: string;
    try {
      value = JSON.stringify(this.presence());
    } catch (err) {
      this.#publishing = false;
      this.#opts.log.error({ err, code: 'CORE_INTERNAL' }, 'presence could not be built');
      return;
    }
    this.#redis
      .ghPresencePublish(this.key, `${this.#opts.keyPrefix}nodes`, value, this.ttlMs, this.#opts.nodeId)
      .catch((err: unknown) => this.#logFailure(err))
      .finally(() => (this.#publishing = false));
  }

  /** At most one line per 5 s (ioredis fails every command while Redis is away). */
  #logFailure(err: unknown): void {
    const now = Date.now();
    if (now - this.#lastErrorLog < 5000) return;
    this.#lastErrorLog = now;
    this.#opts.log.warn({ err: err instanceof Error ? err.message : String(err), code: 'RELAY_PRESENCE_FAILED', node: this.#opts.nodeId }, 'presence not published to redis; other nodes stop seeing this one after its TTL');
  }
}
