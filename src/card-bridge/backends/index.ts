/** Builds the configured card backends. The PC/SC backend loads its optional native binding lazily. */
import type { Logger } from '../../core/log.ts';
import type { CardBackendConfig } from '../config.ts';
import { CloudFoxyBackend } from './cloudfoxy.ts';
import { PcscBackend } from './pcsc.ts';
import { SimulatorBackend } from './simulator.ts';
import type { CardBackend } from './types.ts';

export function createBackends(configs: readonly CardBackendConfig[], deps: { baseDir: string; log: Logger }): CardBackend[] {
  return configs.map((c) => {
    switch (c.kind) {
      case 'simulator':
        return new SimulatorBackend(c.cards, { pkiCacheDir: c.pkiCacheDir, baseDir: deps.baseDir });
      case 'cloudfoxy':
        return new CloudFoxyBackend(c, deps.log);
      case 'pcsc':
        return new PcscBackend(c, deps.log);
    }
  });
}
