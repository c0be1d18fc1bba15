import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { gatewayConfigSchema, defaultConfig, loadGatewayConfig } from '../../src/config.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { isGatewayError, type GatewayError } from '../../src/core/errors.ts';
import { tempDir } from '../helpers/relay.ts';

test('embedded defaults: relay on loopback with nymea ports and the dev authenticator; frozen', () => {
  const cfg = defaultConfig();
  assert.deepEqual(cfg.relay.listeners.map((l) => ('port' in l ? `${l.kind}:${l.host}:${l.port}` : l.kind)), ['ws:127.0.0.1:1212', 'tcp:127.0.0.1:1213']);
  assert.equal(cfg.relay.authenticator.kind, 'dev');
  assert.ok(Object.isFrozen(cfg.relay.timeouts));
  assert.throws(() => {
    (cfg.relay.timeouts as { inactiveMs: number }).inactiveMs = 1;
  });
});

test('every problem is reported at once, each with its key', () => {
  const raw = {
    logg: {},
    relay: {
      listeners: [{ kind: 'tcp', host: '0.0.0.0', port: 99999 }, { kind: 'wss', port: 1 }, { kind: 'carrier-pigeon' }],
      timeouts: { inactiveMs: -1, bogus: 1 },
    },
  };
  let err: GatewayError | undefined;
  try {
    validateConfig(gatewayConfigSchema, raw, 'test.toml');
  } catch (e) {
    if (isGatewayError(e)) err = e;
  }
  assert.ok(err !== undefined && err.code === 'CORE_CONFIG_INVALID');
  const keys = (err.details?.issues as { key: string }[]).map((i) => i.key);
  for (const k of ['logg', 'relay.listeners[0].port', 'relay.listeners[2].kind', 'relay.timeouts.inactiveMs', 'relay.timeouts.bogus']) {
    assert.ok(keys.includes(k), `missing ${k} in ${keys.join(', ')}`);
  }
  assert.match(err.message, /test\.toml: relay\.timeouts\.bogus: unknown key/);
});

test('relay.limits.maxUnreadAnswerBytes: 4096 at least (default 65536); one below is refused with its key', () => {
  const limit = (v: unknown) => validateConfig(gatewayConfigSchema, { relay: { limits: { maxUnreadAnswerBytes: v } } }).relay.limits.maxUnreadAnswerBytes;
  assert.equal(defaultConfig().relay.limits.maxUnreadAnswerBytes, 65536);
  assert.equal(limit(4096), 4096);
  for (const bad of [4095, 1.5, '65536']) {
    assert.throws(() => limit(bad), (e: unknown) => isGatewayError(e) && /relay\.limits\.maxUnreadAnswerBytes/.test(e.message), String(bad));
  }
});

test('relay.splice.spinMicros: 0 to 1000 microseconds (default 100); one past either end is refused with its key', () => {
  const spin = (v: unknown) => validateConfig(gatewayConfigSchema, { relay: { splice: { spinMicros: v } } }).relay.splice.spinMicros;
  assert.equal(defaultConfig().relay.splice.spinMicros, 100);
  assert.equal(spin(0), 0);
  assert.equal(spin(1000), 1000);
  for (const bad of [1001, -1, 1.5, '100', null]) {
    assert.throws(() => spin(bad), (e: unknown) => isGatewayError(e) && e.code === 'CORE_CONFIG_INVALID' && /relay\.splice\.spinMicros/.test(e.message), String(bad));
  }
});

test('the dev authenticator refuses non-loopback listeners unless forced; tls listeners need certificates', () => {
  const issues = (raw: unknown) => {
    try {
      validateConfig(gatewayConfigSchema, raw);
      return [];
    } catch (e) {
      return ((e as GatewayError).details?.issues as { key: string; message: string }[]).map((i) => `${i.key}: ${i.message}`);
    }
  };
  assert.match(issues({ relay: { listeners: [{ kind: 'tcp', host: '0.0.0.0', port: 1 }] } }).join('\n'), /relay\.listeners\[0\]\.host: the dev authenticator/);
  assert.deepEqual(issues({ relay: { listeners: [{ kind: 'tcp', host: '0.0.0.0', port: 1 }], authenticator: { kind: 'dev', allowNonLoopback: true } } }), []);
  assert.match(issues({ relay: { listeners: [{ kind: 'tls', port: 1 }] } }).join('\n'), /relay\.tls: tls and wss listeners need/);
});

test('TOML syntax errors name the file and line; a missing file is CORE_CONFIG_UNREADABLE', async () => {
  const dir = tempDir();
  const bad = join(dir, 'bad.toml');
  writeFileSync(bad, '[relay]\nenabled = true\nhello = {\n');
  await assert.rejects(loadGatewayConfig(bad), (e) => isGatewayError(e, 'CORE_CONFIG_UNREADABLE') && e.message.includes(bad) && /line \d+/.test(e.message));
  await assert.rejects(loadGatewayConfig(join(dir, 'nope.toml')), (e) => isGatewayError(e, 'CORE_CONFIG_UNREADABLE') && e.message.includes('ENOENT'));
});

test('a valid file loads with its values and defaults for the rest', async () => {
  const dir = tempDir();
  const path = join(dir, 'ok.toml');
  writeFileSync(path, '[relay.hello]\nname = "home"\n\n[[relay.listeners]]\nkind = "tcp"\nport = 2000\n\n[relay.limits]\nmaxConnections = 5\n');
  const cfg = await loadGatewayConfig(path);
  assert.equal(cfg.relay.hello.name, 'home');
  assert.equal(cfg.relay.hello.apiVersion, '5');
  assert.deepEqual(cfg.relay.listeners, [{ kind: 'tcp', host: '127.0.0.1', port: 2000 }]);
  assert.equal(cfg.relay.limits.maxConnections, 5);
  assert.equal(cfg.relay.limits.maxMessageBytes, 10240);
});

test('a Secret never prints its value', () => {
  const s = new Secret('hunter2');
  assert.equal(String(s), '[redacted]');
  assert.equal(JSON.stringify({ s }), '{"s":"[redacted]"}');
  assert.equal(inspect(s), '[redacted]');
  assert.equal(s.reveal(), 'hunter2');
});

test('a front end runs only when its section is present; none at all is a config error', async () => {
  const cfg = validateConfig(gatewayConfigSchema, { relay: {} });
  assert.equal(cfg.relay.enabled, true);
  assert.equal(cfg.cardBridge.enabled, false);
  assert.equal(cfg.sealedApi.enabled, false);
  assert.equal(validateConfig(gatewayConfigSchema, { relay: { enabled: false } }).relay.enabled, false);
  const { createGateway } = await import('../../src/gateway.ts');
  const { silentLogger } = await import('../../src/core/log.ts');
  await assert.rejects(
    () => createGateway(validateConfig(gatewayConfigSchema, { log: { level: 'info' } }), { log: silentLogger(), baseDir: tempDir() }),
    (e) => isGatewayError(e, 'CORE_CONFIG_INVALID') && /no front end is enabled/.test(e.message),
  );
});
