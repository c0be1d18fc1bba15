/**
 * The `[relay]` section of the config file: its schema and defaults (the only place defaults live).
 * Defaults follow nymea-remoteproxy 1.8.4 (ports 1212/1213 on loopback, 8 s / 8 s / 8 s / 10 s timeouts,
 * Hello strings of 1.8.4). Unknown keys are rejected.
 */
import { z } from 'zod';
import { authBackoffLimits } from '../core/backoff.ts';
import { secretString } from '../core/config/secret.ts';
import { isLoopbackHost } from '../core/net.ts';
import { tlsFilesSchema } from '../core/tls.ts';

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1);
const ms = z.number().int().min(0);
const positiveMs = z.number().int().min(1);

/** A listener; stream kinds default to `streamPort`, WebSocket kinds to `wsPort`. */
const listenerSchemaFor = (streamPort: number, wsPort: number) =>
  z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('tcp'), host: host.default('127.0.0.1'), port: port.default(streamPort) }),
    z.strictObject({ kind: z.literal('tls'), host: host.default('127.0.0.1'), port: port.default(streamPort) }),
    z.strictObject({ kind: z.literal('ws'), host: host.default('127.0.0.1'), port: port.default(wsPort) }),
    z.strictObject({ kind: z.literal('wss'), host: host.default('127.0.0.1'), port: port.default(wsPort) }),
    z.strictObject({
      kind: z.literal('unix'),
      path: z.string().min(1),
      /** File mode of the socket, octal string such as "660". */
      mode: z.string().regex(/^[0-7]{3,4}$/).default('660'),
    }),
  ]);
const listenerSchema = listenerSchemaFor(1213, 1212);
export type RelayListenerConfig = z.output<typeof listenerSchema>;

/**
 * `[relay.tunnelProxy]`: nymea 1.9+'s tunnel-proxy mode on its own listeners (nymea: WS 2212, TCP 2213).
 * It shares the relay's TLS certificate, connection admission (maxConnections, maxConnectionsPerIp),
 * maxMessageBytes and closeFlushMs. Off by default.
 */
const tunnelProxySchema = z
  .strictObject({
    enabled: z.boolean().default(false),
    hello: z
      .strictObject({
        server: z.string().default('nymea-remoteproxy'),
        name: z.string().default('gatehouse'),
        version: z.string().default('1.13.0'),
        apiVersion: z.string().default('6'),
      })
      .prefault({}),
    listeners: z
      .array(listenerSchemaFor(2213, 2212))
      .default([
        { kind: 'ws', host: '127.0.0.1', port: 2212 },
        { kind: 'tcp', host: '127.0.0.1', port: 2213 },
      ]),
    /** Server uuids allowed to register (this mode has no authentication); empty = any uuid. */
    allowServerUuids: z
      .array(
        z
          .string()
          .regex(/^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$/, 'expected a uuid')
          .transform((u) => u.replace(/[{}]/g, '').toLowerCase()),
      )
      .default([]),
    timeouts: z
      .strictObject({
        /** From connect until RegisterServer/RegisterClient; not re-armed by traffic (nymea 1.13). */
        inactiveMs: positiveMs.default(8000),
        /** A registered server connection that sends nothing for this long is dropped; 0 = never. */
        serverIdleMs: ms.default(60000),
        /** How long one client may keep its buffer full (pausing its server connection) before it is closed. */
        slowClientMs: positiveMs.default(5000),
      })
      .prefault({}),
    limits: z
      .strictObject({
        /** Registered server connections in total. */
        maxServers: z.number().int().min(1).default(10000),
        /** Registered server connections from one address. */
        maxServersPerIp: z.number().int().min(1).default(100),
        /** Clients of one server connection (64,514 addresses exist: not 0, not 0xFFFF, no byte SLIP escapes). */
        maxClientsPerServer: z.number().int().min(1).max(64514).default(1024),
        /** Bytes buffered toward one client before its server connection is paused. */
        clientBufferBytes: z.number().int().min(16384).default(262144),
        /** Bytes buffered toward a server connection before its clients are paused. */
        serverBufferBytes: z.number().int().min(16384).default(1048576),
      })
      .prefault({}),
  })
  .prefault({});
export type TunnelProxyConfig = z.output<typeof tunnelProxySchema>;

const authenticatorSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('dev'),
    /** Let the accept-all authenticator run on non-loopback listeners. Never in production. */
    allowNonLoopback: z.boolean().default(false),
  }),
  z.strictObject({ kind: z.literal('mock') }),
  z.strictObject({
    kind: z.literal('static'),
    /** Token file: one `sha256:<64 hex>[ user]` entry per line; see docs/relay-authenticators.md. */
    file: z.string().min(1),
    /** How often to check the file for changes besides fs.watch, ms. */
    reloadCheckMs: positiveMs.default(2000),
  }),
  z.strictObject({
    kind: z.literal('http'),
    url: z.url({ protocol: /^https?$/ }),
    /** Sent as `Authorization: Bearer <secret>` to the authorizer. */
    bearer: secretString().optional(),
    /** Requests to the authorizer at a time; past it a client is refused at once (ProxyError). */
    maxInFlight: z.number().int().min(1).default(256),
  }),
  z.strictObject({
    kind: z.literal('lambda'),
    /** Lambda endpoint base; default https://lambda.<region>.amazonaws.com (a local endpoint in tests). */
    endpoint: z.url({ protocol: /^https?$/ }).optional(),
    functionName: z.string().min(1),
    region: z.string().min(1),
    accessKeyId: secretString(),
    secretAccessKey: secretString(),
    sessionToken: secretString().optional(),
    /** Invocations at a time; past it a client is refused at once (ProxyError). */
    maxInFlight: z.number().int().min(1).default(256),
  }),
]);
export type AuthenticatorConfig = z.output<typeof authenticatorSchema>;

export const relayConfigSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    hello: z
      .strictObject({
        server: z.string().default('nymea-remoteproxy'),
        name: z.string().default('gatehouse'),
        version: z.string().default('1.8.4'),
        apiVersion: z.string().default('5'),
      })
      .prefault({}),
    listeners: z
      .array(listenerSchema)
      .default([
        { kind: 'ws', host: '127.0.0.1', port: 1212 },
        { kind: 'tcp', host: '127.0.0.1', port: 1213 },
      ]),
    /** Certificate for `tls` and `wss` listeners (nymea has one TLS switch for all). */
    tls: tlsFilesSchema.optional(),
    timeouts: z
      .strictObject({
        /** From connect until authenticated; re-armed by every received chunk. */
        inactiveMs: positiveMs.default(8000),
        /** After a successful Authenticate until the partner arrives. */
        aloneMs: positiveMs.default(8000),
        /** Bounds the authenticator; past it the answer is AuthenticationErrorTimeout. */
        authenticationMs: positiveMs.default(8000),
        /** Bounds any asynchronous JSON-RPC reply; past it `Command timed out`. */
        jsonRpcMs: positiveMs.default(10000),
        /** Closes an established tunnel that carried nothing for this long; 0 = never (nymea). */
        tunnelIdleMs: ms.default(0),
        /** After one side of a tunnel ended, how long the other may keep sending before both are closed. */
        halfCloseMs: positiveMs.default(60000),
        /** How long a closing socket may take to flush before it is destroyed. */
        closeFlushMs: positiveMs.default(5000),
      })
      .prefault({}),
    limits: z
      .strictObject({
        maxConnections: z.number().int().min(1).default(20000),
        maxConnectionsPerIp: z.number().int().min(1).default(1000),
        /** Clients authenticated under one token and still waiting for partners (across nonces). */
        maxWaitingPerToken: z.number().int().min(1).default(64),
        /** Failed authentications from one address within a sliding window (core/backoff.ts). */
        ...authBackoffLimits,
        /** Incomplete JSON held before a tunnel exists (nymea: 10240). */
        maxMessageBytes: z.number().int().min(64).default(10240),
        /** Bytes buffered toward one side of a tunnel before the other side is paused. */
        tunnelBufferBytes: z.number().int().min(16384).default(1048576),
        /**
         * Answers a client may leave unread before its tunnel (legacy mode) or its registration (tunnel-proxy
         * mode); past it the client is not read until it catches up (RELAY_UNREAD_ANSWERS at its deadline).
         */
        maxUnreadAnswerBytes: z.number().int().min(4096).default(65536),
      })
      .prefault({}),
    /** Kernel-side relaying (Linux splice) for tunnels whose two sides are plain TCP or unix sockets. */
    splice: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Hand a tunnel to the kernel relay once it has carried this many bytes (0: at once). */
        afterBytes: z.number().int().min(0).default(262144),
        /**
         * How long the kernel relay's light thread (pings, requests) may poll for the next event before it
         * sleeps, in microseconds; it adapts to the gaps between events and polls only while the busy
         * thread sleeps (0: never poll). Cuts a round trip's wake-up latency at some CPU.
         */
        spinMicros: z.number().int().min(0).max(1000).default(100),
      })
      .prefault({}),
    authenticator: authenticatorSchema.default({ kind: 'dev', allowNonLoopback: false }),
    tunnelProxy: tunnelProxySchema,
    monitor: z
      .strictObject({
        enabled: z.boolean().default(true),
        path: z.string().min(1).default('var/gatehouse-monitor.sock'),
        intervalMs: positiveMs.default(1000),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
    const tpListeners = cfg.tunnelProxy.enabled ? cfg.tunnelProxy.listeners : [];
    const needsTls = [...cfg.listeners, ...tpListeners].some((l) => l.kind === 'tls' || l.kind === 'wss');
    if (needsTls && cfg.tls === undefined) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls and wss listeners need [relay.tls] certFile and keyFile' });
    }
    if (cfg.authenticator.kind === 'dev' && !cfg.authenticator.allowNonLoopback) {
      cfg.listeners.forEach((l, i) => {
        if (l.kind !== 'unix' && !isLoopbackHost(l.host)) {
          ctx.addIssue({
            code: 'custom',
            path: ['listeners', i, 'host'],
            message: `the dev authenticator accepts every token; it only binds to loopback (set authenticator.allowNonLoopback to force ${l.host})`,
          });
        }
      });
    }
  });

export type RelayConfig = z.output<typeof relayConfigSchema>;
