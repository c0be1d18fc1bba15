/**
 * The `[sealedApi]` section of the config file: schema and defaults (the only place defaults live).
 * Relative paths are resolved against the config file's directory (the cwd without a file).
 */
import { z } from 'zod';
import { authBackoffLimits } from '../core/backoff.ts';
import { tlsFilesSchema } from '../core/tls.ts';

const positiveMs = z.number().int().min(1);
const logicalName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'letters, digits, _ . - (max 64)');

export const FILE_FORMATS = ['wireguard', 'ini', 'toml', 'yaml', 'json'] as const;
export type FileFormat = (typeof FILE_FORMATS)[number];

const fileSchema = z.strictObject({
  /** Path of the managed file (symlinks are followed and kept). */
  path: z.string().min(1),
  format: z.enum(FILE_FORMATS),
  /** Back up the current content before every modification. */
  backup: z.boolean().default(true),
  /** Newest backups kept per file; older ones are deleted. */
  backupsKept: z.number().int().min(1).max(1000).default(10),
  /** Run after every successful write, as an argv (no shell), e.g. ["wg", "syncconf", "wg0", "/etc/wireguard/wg0.conf"]. */
  postWrite: z.array(z.string().min(1)).min(1).optional(),
  postWriteTimeoutMs: positiveMs.default(10000),
  /**
   * WireGuard only: let clients add, change or remove PreUp/PostUp/PreDown/PostDown lines (shell commands
   * that wg-quick runs as root). Off: such a change is refused with a sealed 403.
   */
  allowHooks: z.boolean().default(false),
});
export type ManagedFileConfig = z.output<typeof fileSchema>;

const moduleSchema = z.strictObject({
  /** A .js/.mjs/.ts file whose default export is `{ args?: zod schema, description?, run(args, ctx) }`. */
  file: z.string().min(1),
});

export const sealedApiConfigSchema = z.strictObject({
  enabled: z.boolean().default(true),
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(1214),
  /** The one RPC endpoint (POST only). */
  path: z
    .string()
    .regex(/^\/[\x21-\x7e]*$/)
    .default('/v1/rpc'),
  /** TLS on the listener; optional (the payload is sealed end to end either way). */
  tls: tlsFilesSchema.optional(),
  /** Server keys (created on first start, 0600), default registry and backups live here (0700). */
  stateDir: z.string().min(1).default('var/sealed'),
  /** Client registry file; default `<stateDir>/clients.json`. */
  registryFile: z.string().min(1).optional(),
  /** Backups folder; default `<stateDir>/backups` (must be outside every managed file's folder). */
  backupDir: z.string().min(1).optional(),
  /**
   * Share the replay cache with other gateway processes on this host through this directory (0700);
   * unset = in memory (one process).
   */
  replayDir: z.string().min(1).optional(),
  /** Also poll the registry and key files this often (fs.watch misses some editors and network mounts). */
  reloadCheckMs: positiveMs.default(2000),
  /** Sign every response with the server's Ed25519 key (inside the sealed response). */
  signResponses: z.boolean().default(false),
  /** Create and manage a demo WireGuard file `<stateDir>/demo/wg0.conf` as `demo` (embedded defaults only). */
  demo: z.boolean().default(false),
  clock: z
    .strictObject({
      /** Allowed clock difference between client and server. */
      skewMs: z.number().int().min(0).max(300000).default(30000),
      /** Longest allowed exp − iat. */
      maxLifetimeMs: positiveMs.max(600000).default(120000),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxBodyBytes: z.number().int().min(256).default(1048576),
      maxHeaderBytes: z.number().int().min(1024).default(16384),
      /** Managed file size limit for reads and writes. */
      maxFileBytes: z.number().int().min(1).default(1048576),
      /** Remembered (client, jti) pairs; when full, new requests are refused (never evicted). */
      maxReplayEntries: z.number().int().min(1).default(200000),
      maxConcurrentRequests: z.number().int().min(1).default(256),
      /** Open connections (idle keep-alive and half-sent requests included); more are closed at once. */
      maxConnections: z.number().int().min(1).default(1024),
      /**
       * Open connections from one address (the socket's peer: behind a reverse proxy, the proxy); more are
       * closed at once, so one address cannot take every slot of maxConnections.
       */
      maxConnectionsPerIp: z.number().int().min(1).default(64),
      /** Authentication failures from one address within the window before it gets 429. */
      /** The failed-authentication back-off, shared with the relay (core/backoff.ts). */
      ...authBackoffLimits,
      /** Remembered client addresses (for the "new client address" log line). */
      maxKnownAddresses: z.number().int().min(1).default(10000),
    })
    .prefault({}),
  timeouts: z
    .strictObject({
      headersMs: positiveMs.default(10000),
      bodyMs: positiveMs.default(10000),
      actionMs: positiveMs.default(30000),
      /** How long a write waits for another process's lock on the same managed file. */
      fileLockMs: positiveMs.default(5000),
      keepAliveMs: positiveMs.default(5000),
      /** A known address that is seen again after this long is logged again. */
      addressTtlMs: positiveMs.default(86400000),
      /** How often the shared replay directory (replayDir) is swept of expired entries and re-counted. */
      replaySweepMs: positiveMs.default(10000),
    })
    .prefault({}),
  proxy: z
    .strictObject({
      /** Reverse proxies in front of us that append to the header; 0 = use the socket address. */
      trustedHops: z.number().int().min(0).max(10).default(0),
      header: z.string().min(1).default('x-forwarded-for'),
    })
    .prefault({}),
  files: z.record(logicalName, fileSchema).default({}),
  modules: z.record(logicalName, moduleSchema).default({}),
});

export type SealedApiConfig = z.output<typeof sealedApiConfigSchema>;
