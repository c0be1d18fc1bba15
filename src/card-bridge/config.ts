/**
 * The `[cardBridge]` section of the config file: schema and defaults (the only place defaults live).
 * Defaults follow foxyproxy where it had one (port 4001, `Foxy NET`/`Foxy USB` names, 3 retries of C0
 * hardware errors, 10 s /hello polling) and are much stricter where it had none (loopback, timeouts, limits).
 * With no `backends`, the bridge has no cards; the gateway's embedded defaults add a simulator.
 */
import { z } from 'zod';
import { secretString } from '../core/config/secret.ts';
import { tlsFilesSchema } from '../core/tls.ts';
import { allowFromSchema } from '../core/allow-list.ts';

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1);
const positiveMs = z.number().int().min(1);
const hex = z.string().regex(/^([0-9a-fA-F]{2})*$/, 'even-length hex');

/** `allowFrom`: the client networks a listener accepts (CIDR list; empty = every address). */
const listenerSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('tcp'), host: host.default('127.0.0.1'), port: port.default(4001), allowFrom: allowFromSchema }),
  z.strictObject({ kind: z.literal('tls'), host: host.default('127.0.0.1'), port: port.default(4001), allowFrom: allowFromSchema }),
]);

const scriptRuleSchema = z.strictObject({
  /** Command APDU hex; end it with `*` to match a prefix. */
  command: z.string().regex(/^([0-9a-fA-F]{2})*\*?$/),
  /** Response data + SW, hex. */
  response: hex.min(4),
  /** plain: as is; chain: 61xx then GET RESPONSE; le: 6Cxx until the command's Le is right. */
  mode: z.enum(['plain', 'chain', 'le']).default('plain'),
});

const simCardSchema = z.strictObject({
  /** Terminal id: a reader name, or `/<ip>@<slot>` to look like CloudFoxy hardware. */
  name: z.string().min(1),
  atr: hex.min(4).optional(),
  /** Inserted at start. */
  present: z.boolean().default(true),
  /** Added to every reset and APDU (a slow card). */
  delayMs: z.number().int().min(0).default(0),
  script: z.array(scriptRuleSchema).default([]),
  /** Makes this an I.CA-like signing card with a generated RSA key and certificate chain. */
  signing: z
    .strictObject({
      commonName: z.string().min(1),
      countryName: z.string().length(2).default('CZ'),
      organizationName: z.string().min(1).optional(),
      pin: z.string().min(4).max(12).default('1234'),
      pinTries: z.number().int().min(1).max(15).default(3),
      /** The card's key id (the bridge discovers it by trying 15 down to 0). */
      keyId: z.number().int().min(0).max(15).default(1),
    })
    .optional(),
});
export type SimCardConfig = z.output<typeof simCardSchema>;

const backendSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('simulator'),
    cards: z.array(simCardSchema).default([
      { name: 'Gatehouse Sim 00', present: true, delayMs: 0, script: [] },
      { name: 'Gatehouse Sim 01', present: true, delayMs: 0, script: [] },
      {
        name: 'Gatehouse Sim Signing 02',
        present: true,
        delayMs: 0,
        script: [],
        signing: { commonName: 'Jan Novák', countryName: 'CZ', pin: '1234', pinTries: 3, keyId: 1 },
      },
    ]),
    /** Where generated development keys and certificates are cached (relative to the config file). */
    pkiCacheDir: z.string().min(1).default('var/card-sim'),
  }),
  z.strictObject({
    kind: z.literal('cloudfoxy'),
    /** Base URL of a CloudFoxy REST server (or another Gatehouse), e.g. http://127.0.0.1:8081 */
    url: z.url().refine((u) => {
      const parsed = new URL(u);
      return parsed.username === '' && parsed.password === '';
    }, 'must not contain user:password@ (fetch refuses it, and logs name the url); use token'),
    token: secretString(),
    /** Bound on one upstream HTTP request. */
    requestTimeoutMs: positiveMs.default(15000),
    /** Extra attempts when the first result line has SW1 C0 (hardware error). */
    hardwareRetries: z.number().int().min(0).max(10).default(3),
    /** How often /hello (restart detection) and /inventory are polled. */
    pollIntervalMs: positiveMs.default(10000),
    /** Largest upstream answer body read. */
    maxResponseBytes: z.number().int().min(1024).default(262144),
    /** Upstream requests (connections) open at a time; the rest wait for one within their own deadline. */
    maxConcurrentRequests: z.number().int().min(1).default(128),
  }),
  z.strictObject({
    kind: z.literal('pcsc'),
    /** Only readers whose name contains one of these (all when empty). */
    readerFilter: z.array(z.string()).default([]),
    /** While pcscd is unreachable (not started yet, restarted, crashed), how often to try again, ms. */
    reconnectMs: z.number().int().min(100).default(2000),
  }),
]);
export type CardBackendConfig = z.output<typeof backendSchema>;

const restSchema = z.strictObject({
  enabled: z.boolean().default(false),
  host: host.default('127.0.0.1'),
  port: port.default(0),
  allowFrom: allowFromSchema,
  /** Required `X-Auth-Token` (CloudFoxy) or `Authorization: Bearer` / `X-Auth-Token` (foxyproxy API). */
  token: secretString().optional(),
});

export const cardBridgeConfigSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    listeners: z.array(listenerSchema).default([{ kind: 'tcp', host: '127.0.0.1', port: 4001, allowFrom: [] }]),
    tls: tlsFilesSchema.optional(),
    /** How listings name readers: foxy = `Foxy NET ip-n` / `Foxy USB name`; cloudfoxy = `CloudFoxy …`; raw = terminal id. */
    readerNameStyle: z.enum(['foxy', 'cloudfoxy', 'raw']).default('foxy'),
    /** foxyproxy 1.x framing: `@@` after every answer line instead of once per request. */
    atAfterEveryAnswer: z.boolean().default(false),
    /** foxyproxy 2.x: close the connection after answering one request (for clients that read to EOF). */
    closeAfterAnswer: z.boolean().default(false),
    /** Terminal ids (or `*`) for which 61xx is followed by GET RESPONSE and 6Cxx re-sent (as smartcardio). */
    autoGetResponse: z.array(z.string().min(1)).default([]),
    timeouts: z
      .strictObject({
        /** Closes a connection that sends nothing between requests. */
        idleMs: positiveMs.default(300000),
        /** From a request's first byte to its empty line. */
        requestReadMs: positiveMs.default(10000),
        /** One card or backend operation (reset, APDU). */
        commandMs: positiveMs.default(30000),
        /** How long a request waits for its card's lock. */
        lockWaitMs: positiveMs.default(60000),
        /** How long answers may sit unread by the client before it is destroyed. */
        writeMs: positiveMs.default(30000),
        closeFlushMs: positiveMs.default(2000),
      })
      .prefault({}),
    limits: z
      .strictObject({
        maxConnections: z.number().int().min(1).default(1000),
        maxConnectionsPerIp: z.number().int().min(1).default(200),
        /** A protocol line; fits an extended APDU (65544 bytes = 131088 hex digits). */
        maxLineBytes: z.number().int().min(64).default(132096),
        maxCommandsPerRequest: z.number().int().min(1).default(64),
        maxRequestBytes: z.number().int().min(64).default(1048576),
        /** Requests waiting for one card beyond the one using it. */
        maxQueuedPerCard: z.number().int().min(0).default(64),
        /** Requests a connection may have decoded but not yet answered before reading pauses. */
        maxPendingRequests: z.number().int().min(1).default(16),
        /**
         * Bytes held for unfinished and queued requests across ALL connections (the line protocol has no
         * authentication). Past it, the connection whose bytes would not fit is answered C089 and closed.
         */
        maxBufferedBytes: z.number().int().min(65536).default(33554432),
      })
      .prefault({}),
    backends: z.array(backendSchema).default([]),
    /** The CloudFoxy REST API served over our backends (`/api/v1/basic`, `/hello`, `/inventory`). */
    cloudfoxyApi: restSchema.prefault({}),
    /** foxyproxy's HTTP API (`/api/v1.0/command`, `/select`, `/hello`), with a token it never had. */
    foxyproxyApi: restSchema.prefault({}),
  })
  .superRefine((cfg, ctx) => {
    if (cfg.listeners.some((l) => l.kind === 'tls') && cfg.tls === undefined) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls listeners need [cardBridge.tls] certFile and keyFile' });
    }
    for (const k of ['cloudfoxyApi', 'foxyproxyApi'] as const) {
      if (cfg[k].enabled && cfg[k].token === undefined) {
        ctx.addIssue({ code: 'custom', path: [k, 'token'], message: `${k} needs a token (requests without it get 401)` });
      }
    }
  });

export type CardBridgeConfig = z.output<typeof cardBridgeConfigSchema>;
