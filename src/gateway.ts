/**
 * The composition root: a validated config → the enabled front ends → one Service.
 * Front ends never know about each other; this file is the only place that names them all.
 */
import type { Logger } from './core/log.ts';
import { composeServices, type Service } from './core/lifecycle.ts';
import type { GatewayConfig } from './config.ts';
import { createRelayServer, type RelayServer } from './relay/server.ts';

export interface GatewayDeps {
  readonly log: Logger;
  /** Directory relative paths in the config refer to (the config file's directory, or the cwd). */
  readonly baseDir: string;
}

export interface Gateway extends Service {
  readonly relay: RelayServer | undefined;
  /** Human-readable lines saying how to reach each enabled front end. */
  describe(): string[];
}

export function createGateway(config: GatewayConfig, deps: GatewayDeps): Gateway {
  const relay = config.relay.enabled ? createRelayServer(config.relay, deps) : undefined;
  const parts: Service[] = [];
  if (relay !== undefined) parts.push(relay);
  const all = composeServices('gateway', parts);
  return {
    name: 'gateway',
    relay,
    start: () => all.start(),
    close: (options) => all.close(options ?? { graceMs: config.shutdown.graceMs }),
    describe() {
      const lines: string[] = [];
      if (relay !== undefined) {
        lines.push('Relay (nymea-remoteproxy 1.8.4 compatible):');
        for (const l of relay.listeners) lines.push(`  ${l.kind.padEnd(4)} ${l.url}`);
        if (relay.monitorPath !== undefined) lines.push(`  monitor: gatehouse monitor --socket ${relay.monitorPath}`);
        const ws = relay.listeners.find((l) => l.kind === 'ws') ?? relay.listeners[0];
        if (ws !== undefined) lines.push(`  try:     gatehouse tunnel --url ${ws.url} --token demo   (run it twice to pair)`);
      }
      return lines;
    },
  };
}
