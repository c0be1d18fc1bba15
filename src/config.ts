/**
 * The whole config file: one section per front end plus logging and shutdown. Built from the front ends'
 * own schemas; validated once at start (every problem at once, with its key), then frozen.
 * With no file at all, `EMBEDDED_DEFAULTS` run everything on loopback with development credentials.
 */
import { z } from 'zod';
import { relayConfigSchema } from './relay/config.ts';
import { cardBridgeConfigSchema } from './card-bridge/config.ts';
import { sealedApiConfigSchema } from './sealed-api/config.ts';
import { opsConfigSchema } from './ops/config.ts';
import { clusterConfigSchema } from './core/config/cluster.ts';
import { loadConfigFile, validateConfig } from './core/config/load.ts';

/**
 * A front end's section: absent from the file means not enabled (its keys still get their defaults, so
 * tools can read paths); present means enabled unless it says `enabled = false`.
 */
function frontEnd<S extends z.ZodType>(schema: S) {
  return z.preprocess((raw) => (raw === undefined ? { enabled: false } : raw), schema);
}

export const gatewayConfigSchema = z.strictObject({
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      /** `auto`: readable lines when stderr is a terminal, JSON lines otherwise. */
      format: z.enum(['auto', 'json', 'pretty']).default('auto'),
    })
    .prefault({}),
  shutdown: z
    .strictObject({
      /** How long open tunnels and requests may drain after SIGINT/SIGTERM before they are closed. */
      graceMs: z.number().int().min(0).default(10000),
    })
    .prefault({}),
  relay: frontEnd(relayConfigSchema),
  cardBridge: frontEnd(cardBridgeConfigSchema),
  sealedApi: frontEnd(sealedApiConfigSchema),
  /** The ops HTTP listener (/metrics, /healthz, /readyz): like a front end, on when its section is present. */
  ops: frontEnd(opsConfigSchema),
  /** Several processes or machines as one gateway (core/config/cluster.ts): on when its section is present. */
  cluster: frontEnd(clusterConfigSchema),
});

export type GatewayConfig = z.output<typeof gatewayConfigSchema>;

/** The configuration `gatehouse serve` uses without `--config`: every front end on loopback. */
export const EMBEDDED_DEFAULTS = {
  relay: {},
  // A few simulated cards (one I.CA-like signing card) so the card bridge is usable out of the box.
  cardBridge: { backends: [{ kind: 'simulator' }] },
  // A demo WireGuard file under var/sealed/ managed as `demo` by the sealed API.
  sealedApi: { demo: true },
  // Metrics and health on loopback.
  ops: {},
} as const;

/** Validates the embedded defaults (no file). */
export function defaultConfig(): GatewayConfig {
  return validateConfig(gatewayConfigSchema, EMBEDDED_DEFAULTS);
}

/** Loads and validates a config file. @throws GatewayError CORE_CONFIG_UNREADABLE / CORE_CONFIG_INVALID */
export function loadGatewayConfig(path: string): Promise<GatewayConfig> {
  return loadConfigFile(gatewayConfigSchema, path);
}
