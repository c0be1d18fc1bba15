/**
 * The `[cluster]` section: how several gateway processes act as one. Absent = a single process (the
 * default). `workers` runs several processes of this machine; `redisUrl` (with `secret`) joins nodes,
 * on this machine or others, through one Redis. Defaults live here only.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { secretString } from './secret.ts';
import { tlsFilesSchema } from '../tls.ts';

export const clusterConfigSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    /** `redis://host:port/db`, `rediss://…`, or a unix socket path. Absent: no shared table across machines. */
    redisUrl: z
      .string()
      .min(1)
      .refine((u) => u.startsWith('/') || /^rediss?:\/\//.test(u), 'expected redis://, rediss:// or an absolute unix socket path')
      .optional(),
    /** HMAC key under which tokens are stored in Redis (never in clear); the same on every node, 16+ chars. */
    secret: secretString()
      .refine((s) => s.reveal().length >= 16, 'the cluster secret needs at least 16 characters')
      .optional(),
    /** This node's id in Redis; unique per process in the cluster. */
    nodeId: z
      .string()
      .regex(/^[A-Za-z0-9._:-]{1,128}$/, 'letters, digits and . _ : - only (1 to 128)')
      .default(() => `${hostname()}-${process.pid}`),
    /** Processes on this machine accepting on the same ports: a number, or `auto` (one per core). */
    workers: z.union([z.number().int().min(1).max(256), z.literal('auto')]).default(1),
    /**
     * How workers share the ports: `primary` (the primary accepts and hands connections round robin:
     * even spread, ~180 µs of primary CPU per connection pair on Node 20) or `kernel` (every worker accepts
     * from the shared socket itself: cheaper per connection, a less even spread, fewer tunnels forwarded).
     */
    acceptBy: z.enum(['primary', 'kernel']).default('primary'),
    /**
     * Workers without Redis: a plain TCP or WebSocket client whose partner waits in another worker moves
     * to that worker (its socket is handed over), so the tunnel runs in one process. `false`: such
     * tunnels are forwarded between the workers (every byte relayed twice). TLS is always forwarded.
     */
    moveClients: z.boolean().default(true),
    /** Prefix of every key this gateway writes in Redis (several gateways may share one Redis). */
    keyPrefix: z.string().min(1).max(64).default('gatehouse:'),
    /** A tunnel's claim on its (token, nonce) in Redis lives this long unless its node renews it. */
    tunnelLeaseMs: z.number().int().min(300).default(30000),
    /** How often each node publishes its view (presence) to Redis; it expires after three periods. */
    presenceIntervalMs: z.number().int().min(100).max(60000).default(2000),
    /** Bounds one Redis command (and the connect); a slower Redis counts as down. */
    redisCommandTimeoutMs: z.number().int().min(50).default(2000),
    /**
     * Where this node accepts tunnels forwarded from other nodes (`host:port`, `[v6]:port`, or an absolute
     * unix socket path). Port 0 takes any free port; with several workers, worker k listens on port + k
     * (a path gets `.k` appended). Only nodes with the cluster secret get past its handshake; the stream
     * itself is not encrypted, so bind it to a private network.
     */
    forwardListen: z
      .string()
      .regex(/^(\/\S{1,200}|(\[[0-9A-Fa-f:.]+\]|[^:\s[\]]+):\d{1,5})$/, 'expected host:port, [v6]:port or an absolute unix socket path')
      .default('127.0.0.1:0'),
    /** The host other nodes reach the forward listener at (default: the listen host; set it when binding 0.0.0.0). */
    forwardAdvertise: z
      .string()
      .regex(/^[A-Za-z0-9.:_-]{1,253}$/, 'a host name or address')
      .optional(),
    /**
     * Mutual TLS on forward streams: this node's certificate and key, and `clientCaFile`, the cluster's CA
     * that every node's certificate is checked against (both ways). Such tunnels stay on the JS data path.
     */
    forwardTls: tlsFilesSchema
      .refine((t) => t.clientCaFile !== undefined, { message: 'forwardTls needs clientCaFile: the CA every node certificate is checked against', path: ['clientCaFile'] })
      .optional(),
    /** Bounds the node-to-node handshake (connect, key check, claim), ms. */
    forwardHandshakeMs: z.number().int().min(100).default(5000),
  })
  .superRefine((cfg, ctx) => {
    const wildcard = /^(0\.0\.0\.0|\[::\]|::):/.test(cfg.forwardListen);
    if (wildcard && cfg.forwardAdvertise === undefined) {
      ctx.addIssue({ code: 'custom', path: ['forwardAdvertise'], message: 'forwardListen binds every address: say which one other nodes reach this node at' });
    }
    if (cfg.redisUrl !== undefined && cfg.secret === undefined) {
      ctx.addIssue({ code: 'custom', path: ['secret'], message: 'redisUrl needs a cluster secret (the key tokens are hashed with in Redis)' });
    }
  });

export type ClusterConfig = z.output<typeof clusterConfigSchema>;
