/**
 * The composition root: a validated config → the enabled front ends → one Service.
 * Front ends never know about each other; this file is the only place that names them all.
 */
import { fileURLToPath } from 'node:url';
import { sep } from 'node:path';
import type { Logger } from './core/log.ts';
import { composeServices, type Service } from './core/lifecycle.ts';
import { GatewayError } from './core/errors.ts';
import type { GatewayConfig } from './config.ts';
import type { RelayServer } from './relay/server.ts';
import type { CardBridgeServer } from './card-bridge/server.ts';
import type { SealedApiServer } from './sealed-api/server.ts';

export interface GatewayDeps {
  readonly log: Logger;
  /** Directory relative paths in the config refer to (the config file's directory, or the cwd). */
  readonly baseDir: string;
}

export interface Gateway extends Service {
  readonly relay: RelayServer | undefined;
  readonly cardBridge: CardBridgeServer | undefined;
  readonly sealedApi: SealedApiServer | undefined;
  /**
   * Human-readable lines saying how to reach each enabled front end; the CLI lines start with `command`
   * (default: `cliCommand()`).
   */
  describe(command?: string): string[];
}

/**
 * How a person runs the CLI of this copy of Gatehouse: `gatehouse` when it is an installed package (it
 * lives under a node_modules folder, and npm put the command on PATH), `npx gatehouse` in a checkout.
 */
export function cliCommand(): string {
  const root = fileURLToPath(new URL('..', import.meta.url));
  return root.split(sep).includes('node_modules') ? 'gatehouse' : 'npx gatehouse';
}

/** The front ends a config enables, by section name (`relay`, `cardBridge`, `sealedApi`). */
export function enabledFrontEnds(config: GatewayConfig): string[] {
  return (['relay', 'cardBridge', 'sealedApi'] as const).filter((name) => config[name].enabled);
}

/** The config error for a config that enables no front end. */
export const NO_FRONT_END = 'no front end is enabled: add a [relay], [cardBridge] or [sealedApi] section to the config file';

/**
 * Builds the enabled front ends. Each is imported only when enabled, so a gateway that runs only the
 * relay never loads the other front ends' code and libraries (memory: a few MB each).
 * @throws GatewayError CORE_CONFIG_INVALID when no front end is enabled.
 */
export async function createGateway(config: GatewayConfig, deps: GatewayDeps): Promise<Gateway> {
  if (enabledFrontEnds(config).length === 0) throw new GatewayError('CORE_CONFIG_INVALID', NO_FRONT_END);
  const relay = config.relay.enabled ? (await import('./relay/server.ts')).createRelayServer(config.relay, deps) : undefined;
  const cardBridge = config.cardBridge.enabled ? (await import('./card-bridge/server.ts')).createCardBridgeServer(config.cardBridge, deps) : undefined;
  const sealedApi = config.sealedApi.enabled ? (await import('./sealed-api/server.ts')).createSealedApiServer(config.sealedApi, deps) : undefined;
  const parts: Service[] = [relay, cardBridge, sealedApi].filter((s) => s !== undefined);
  const all = composeServices('gateway', parts);
  return {
    name: 'gateway',
    relay,
    cardBridge,
    sealedApi,
    start: () => all.start(),
    close: (options) => all.close(options ?? { graceMs: config.shutdown.graceMs }),
    describe(cli = cliCommand()) {
      const lines: string[] = [];
      if (relay !== undefined) {
        lines.push('Relay (nymea-remoteproxy 1.8.4 compatible):');
        for (const l of relay.listeners) lines.push(`  ${l.kind.padEnd(4)} ${l.url}`);
        if (relay.monitorPath !== undefined) lines.push(`  monitor: ${cli} monitor --socket ${relay.monitorPath}`);
        const ws = relay.listeners.find((l) => l.kind === 'ws') ?? relay.listeners[0];
        if (ws !== undefined) lines.push(`  try:     ${cli} tunnel --url ${ws.url} --token demo   (run it twice to pair)`);
      }
      if (cardBridge !== undefined) {
        lines.push('Card bridge (foxyproxy line protocol):');
        for (const l of cardBridge.listeners) lines.push(`  ${l.kind.padEnd(4)} ${l.url}`);
        lines.push(`  cards:   ${cardBridge.cards.readers().length} readers; try: ${cli} card list`);
      }
      if (sealedApi !== undefined) {
        lines.push('Sealed API (end-to-end encrypted JOSE RPC):');
        lines.push(`  http ${sealedApi.url}   server key ${sealedApi.serverInfo().kid}`);
        lines.push(`  clients: ${cli} clients keygen --out me.json && ${cli} clients add --name me --key me.json --allow 'files.*,time' --files '*'`);
        lines.push(`  try:     ${cli} call ${sealedApi.url} time --key me.json`);
      }
      return lines;
    },
  };
}
