/**
 * The sealed API inside the gateway: embedded-default behaviour (demo file, server key created 0600 on
 * first start, describe() lines) and refusal of a server key file that is group/world readable.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { validateConfig } from '../../src/core/config/load.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { silentLogger } from '../../src/core/log.ts';
import { gatewayConfigSchema } from '../../src/config.ts';
import { createGateway } from '../../src/gateway.ts';
import { validateWireGuard } from '../../src/sealed-api/formats/wireguard.ts';
import { tempDir } from './helpers.ts';

const raw = {
  relay: { enabled: false },
  cardBridge: { enabled: false },
  sealedApi: { port: 0, demo: true },
};

test('first start: server keys 0600 in a 0700 folder, a valid demo wg0.conf, describe() says how to connect', async () => {
  const dir = tempDir();
  const gw = await createGateway(validateConfig(gatewayConfigSchema, raw), { log: silentLogger(), baseDir: dir });
  await gw.start();
  try {
    const state = join(dir, 'var', 'sealed');
    assert.equal(statSync(state).mode & 0o777, 0o700);
    assert.equal(statSync(join(state, 'server-keys.json')).mode & 0o777, 0o600);
    assert.equal(statSync(join(state, 'clients.json')).mode & 0o777, 0o600);
    assert.equal(statSync(join(state, 'demo', 'wg0.conf')).mode & 0o777, 0o600);
    validateWireGuard(readFileSync(join(state, 'demo', 'wg0.conf'), 'utf8'));
    const lines = gw.describe().join('\n');
    assert.match(lines, /Sealed API/);
    assert.ok(lines.includes(gw.sealedApi!.url));
    assert.ok(lines.includes(gw.sealedApi!.serverInfo().kid));
    assert.deepEqual(gw.sealedApi!.actions.names(), [
      'files.backups',
      'files.read',
      'files.restore',
      'files.update',
      'files.write',
      'ping',
      'time',
    ]);
  } finally {
    await gw.close({ graceMs: 0 });
  }
});

test('a server key file readable by others is refused at start', async () => {
  const dir = tempDir();
  const config = validateConfig(gatewayConfigSchema, raw);
  const gw = await createGateway(config, { log: silentLogger(), baseDir: dir });
  await gw.start();
  await gw.close({ graceMs: 0 });
  chmodSync(join(dir, 'var', 'sealed', 'server-keys.json'), 0o644);
  const again = await createGateway(config, { log: silentLogger(), baseDir: dir });
  await assert.rejects(
    again.start(),
    (e: unknown) => isGatewayError(e, 'SEALED_KEYS_INVALID') && /too open/.test(e.message),
  );
});
