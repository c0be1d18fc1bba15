/** The `[cluster]` section: off when absent, defaults from the schema, every problem reported, secret redacted. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { hostname } from 'node:os';
import { validateConfig } from '../../src/core/config/load.ts';
import { gatewayConfigSchema } from '../../src/config.ts';

test('[cluster] absent: off; present: defaults (workers 1, nodeId hostname-pid)', { timeout: 5000 }, () => {
  const off = validateConfig(gatewayConfigSchema, { relay: {} });
  assert.equal(off.cluster.enabled, false);
  const on = validateConfig(gatewayConfigSchema, { relay: {}, cluster: { redisUrl: 'redis://127.0.0.1:6379', secret: 'a-cluster-secret-16+' } });
  assert.equal(on.cluster.enabled, true);
  assert.equal(on.cluster.workers, 1);
  assert.equal(on.cluster.nodeId, `${hostname()}-${process.pid}`);
  assert.equal(on.cluster.keyPrefix, 'gatehouse:');
  assert.ok(!inspect(on.cluster).includes('a-cluster-secret'));
  assert.equal(validateConfig(gatewayConfigSchema, { relay: {}, cluster: { workers: 'auto' } }).cluster.workers, 'auto');
});

test('[cluster] problems: redisUrl without secret, a short secret, a bad URL, an unknown key', { timeout: 5000 }, () => {
  assert.throws(
    () => validateConfig(gatewayConfigSchema, { relay: {}, cluster: { redisUrl: 'redis://x' } }),
    (err: Error) => err.message.includes('cluster.secret: redisUrl needs a cluster secret'),
  );
  assert.throws(
    () => validateConfig(gatewayConfigSchema, { relay: {}, cluster: { redisUrl: 'http://x', secret: 'short', nodeID: 'x', workers: 0 } }),
    (err: Error) =>
      ['cluster.redisUrl', 'cluster.secret: the cluster secret needs at least 16', 'cluster.nodeID: unknown key', 'cluster.workers'].every((s) => err.message.includes(s)),
  );
});

test('[cluster] forwarding, accept and move keys: defaults, a wildcard listen needs forwardAdvertise, forwardTls needs its CA, bad values refused', { timeout: 5000 }, () => {
  const on = validateConfig(gatewayConfigSchema, { relay: {}, cluster: {} });
  assert.equal(on.cluster.forwardListen, '127.0.0.1:0');
  assert.equal(on.cluster.forwardHandshakeMs, 5000);
  assert.equal(on.cluster.acceptBy, 'primary');
  assert.equal(on.cluster.moveClients, true);
  assert.equal(validateConfig(gatewayConfigSchema, { relay: {}, cluster: { moveClients: false } }).cluster.moveClients, false);
  assert.throws(() => validateConfig(gatewayConfigSchema, { relay: {}, cluster: { moveClients: 'yes' } }), /cluster\.moveClients/);
  assert.equal(validateConfig(gatewayConfigSchema, { relay: {}, cluster: { acceptBy: 'kernel', forwardListen: '/run/gh/fwd.sock' } }).cluster.acceptBy, 'kernel');
  assert.equal(validateConfig(gatewayConfigSchema, { relay: {}, cluster: { forwardListen: '0.0.0.0:7450', forwardAdvertise: '10.0.0.11' } }).cluster.forwardAdvertise, '10.0.0.11');
  assert.throws(
    () => validateConfig(gatewayConfigSchema, { relay: {}, cluster: { acceptBy: 'worker', forwardTls: { certFile: 'c.pem', keyFile: 'k.pem' } } }),
    (err: Error) => ['cluster.acceptBy', 'cluster.forwardTls.clientCaFile: forwardTls needs clientCaFile'].every((s) => err.message.includes(s)),
  );
  assert.throws(
    () => validateConfig(gatewayConfigSchema, { relay: {}, cluster: { forwardListen: '0.0.0.0:7450' } }),
    /cluster\.forwardAdvertise: forwardListen binds every address/,
  );
  for (const bad of ['7450', 'host:port', 'relative/path.sock', 'a b:1', '[::1]:']) {
    assert.throws(() => validateConfig(gatewayConfigSchema, { relay: {}, cluster: { forwardListen: bad } }), /cluster\.forwardListen: expected host:port/, bad);
  }
});
