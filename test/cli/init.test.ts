/** `gatehouse init` writes a configuration that serves as written: the token it printed pairs clients. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { tempDir, rawClient, authenticate, NO_ERROR, TUNNEL_ESTABLISHED } from '../helpers/relay.ts';

test('init --tls, then serve it: the printed token pairs a TCP and a WSS client; files are private', async () => {
  const dir = tempDir();
  const init = gatehouse(['init', dir, '--tls']);
  assert.equal((await init.exited()).code, 0);
  const token = /Relay token \(shown once; only its hash is stored\): (\S+)/.exec(init.stdout())![1]!;
  const tokens = readFileSync(join(dir, 'tokens'), 'utf8');
  assert.ok(!tokens.includes(token), 'the token file holds only the hash');
  assert.match(tokens, /^sha256:[0-9a-f]{64} first-client$/m);
  assert.equal(statSync(join(dir, 'tokens')).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
  // A second init refuses to overwrite.
  const again = gatehouse(['init', dir]);
  assert.equal((await again.exited()).code, 73, 'EX_CANTCREAT');
  assert.match(again.stderr(), /refusing to overwrite/);

  // Serve the generated file as is, except ports: tests never use fixed ports.
  const cfgPath = join(dir, 'gatehouse.toml');
  writeFileSync(cfgPath, readFileSync(cfgPath, 'utf8').replace(/port = \d+/g, 'port = 0'));
  const server = gatehouse(['serve', '--config', cfgPath]);
  try {
    const banner = await server.waitForStdout(/Press Ctrl-C/);
    const tcp = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const wss = /(wss:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const wrong = await rawClient(tcp);
    wrong.send(authenticate('not-the-token'));
    await wrong.closed();
    assert.match(wrong.received().toString(), /AuthenticationErrorAuthenticationFailed/);
    const a = await rawClient(tcp);
    a.send(authenticate(token));
    await a.waitFor(NO_ERROR);
    const b = await rawClient(wss);
    b.send(authenticate(token));
    await b.waitFor(TUNNEL_ESTABLISHED);
    await a.waitFor(TUNNEL_ESTABLISHED);
    assert.match(b.received().toString(), /"userName"|"name":"client"/);
    a.destroy();
    b.destroy();
    assert.doesNotMatch(server.stderr(), new RegExp(token));
  } finally {
    server.child.kill('SIGTERM');
    await server.exited();
  }
});

test('the commented-out sections of the init config are valid when uncommented', async () => {
  const { renderInitConfig } = await import('../../src/cli/init.ts');
  const { parseConfigText, validateConfig } = await import('../../src/core/config/load.ts');
  const { gatewayConfigSchema } = await import('../../src/config.ts');
  const text = renderInitConfig({ dir: '/tmp', public: false, tls: true }).replace(/^# (\[|[a-z]+ = )/gm, '$1');
  const cfg = validateConfig(gatewayConfigSchema, parseConfigText(text, 'init.toml'), 'init.toml');
  assert.equal(cfg.cardBridge.enabled, true);
  assert.equal(cfg.sealedApi.enabled, true);
  assert.equal(cfg.sealedApi.files.wg0?.format, 'wireguard');
  assert.deepEqual(cfg.relay.listeners.map((l) => ('port' in l ? l.port : 0)), [1212, 1213, 1215, 1216]);
});
