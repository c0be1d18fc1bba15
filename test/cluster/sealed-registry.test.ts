/**
 * Registry changes reaching every node without restart: two sealed API instances with their own state
 * dirs (own server keys, own registry files) on one real redis-server. A client added on node A is
 * accepted by node B within a bounded time, a revocation on A is refused by B likewise, B's file holds
 * the change (it survives a restart), a node started later takes the current registry, and a document
 * written to Redis without the cluster secret (bad HMAC) is ignored with a log line.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RedisSharedState } from '../../src/core/cluster/shared-state.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { silentLogger } from '../../src/core/log.ts';
import { SealedClient, SealedCallError } from '../../src/sealed-api/client.ts';
import { importPublic, generateClientKey } from '../../src/sealed-api/keys.ts';
import { newEntry, readRegistryFile } from '../../src/sealed-api/registry.ts';
import { revokeClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { startSealed, type StartedSealed, type TestClient } from '../sealed-api/helpers.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const states: RedisSharedState[] = [];
const nodes: StartedSealed[] = [];
const clients: SealedClient[] = [];

async function node(id: string): Promise<StartedSealed> {
  const s = new RedisSharedState({ redisUrl: redis.socket, secret: new Secret('registry-test-cluster-secret'), nodeId: id, keyPrefix: 'gatehouse:', commandTimeoutMs: 500, log: silentLogger() });
  states.push(s);
  await s.start();
  const n = await startSealed({ reloadCheckMs: 100 }, { deps: { shared: s } });
  nodes.push(n);
  return n;
}

/** The same client (its key) calling node `n` (pinning n's server key). */
async function via(n: StartedSealed, c: TestClient): Promise<SealedClient> {
  const info = n.server.serverInfo();
  const client = new SealedClient({ url: n.server.url, clientKid: c.kid, clientKey: c.key, serverKid: info.kid, serverKey: await importPublic(info.jwk, 'ECDH-ES') });
  clients.push(client);
  return client;
}

/** Polls `probe` every 50 ms until it returns true, at most `ms`. @returns the time it took */
async function within(ms: number, what: string, probe: () => Promise<boolean>): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await probe()) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

const accepted = (c: SealedClient) => async () => {
  try {
    await c.call('ping');
    return true;
  } catch (err) {
    if (err instanceof SealedCallError && err.status === 401) return false;
    throw err;
  }
};

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
});
after(async () => {
  for (const c of clients) c.close();
  for (const n of nodes) await n.close();
  await Promise.all(states.map((s) => s.close()));
  await redis?.stop();
});

test('a client added on node A is accepted by node B, a revocation on A is refused by B (bounded time); B keeps it on disk; a later node takes it', { skip, timeout: 10000 }, async () => {
  const a = await node('node-a');
  const b = await node('node-b');
  const carol = await a.client('carol');
  const onB = await via(b, carol);
  const addMs = await within(3000, 'B accepts carol', accepted(onB));
  const onDisk = await readRegistryFile(b.server.registryFile);
  assert.deepEqual(onDisk.clients.map((c) => c.name), ['carol'], "B's own registry file holds the change");
  assert.ok(b.lines.some((l) => l.msg === 'client registry applied from the cluster'));
  await revokeClient(sealedPaths(a.config, a.dir), 'carol');
  const revokeMs = await within(3000, 'B refuses carol', async () => !(await accepted(onB)()));
  assert.ok((await readRegistryFile(b.server.registryFile)).clients[0]!.revoked !== undefined);
  // Nothing of the registry is in Redis without its HMAC.
  const stored = (await states[0]!.client.get('gatehouse:reg:doc'))!;
  assert.match(stored, /^gh1 \d+ [0-9a-f]{64}\n\{/);
  const c = await node('node-c');
  assert.deepEqual((await readRegistryFile(c.server.registryFile)).clients.map((x) => [x.name, x.revoked !== undefined]), [['carol', true]], 'a node started later takes the current registry');
  assert.ok(addMs < 3000 && revokeMs < 3000);
  console.log(`registry propagation: add ${addMs} ms, revoke ${revokeMs} ms`);
});

test('a registry document written to Redis without the secret (bad HMAC) is ignored with a log line; the next real change replaces it', { skip, timeout: 10000 }, async () => {
  const [a, b] = nodes as [StartedSealed, StartedSealed];
  const mallory = await generateClientKey('mallory');
  const forgedFile = { version: 1, clients: [await newEntry({ name: 'mallory', jwk: mallory.publicJwk, allow: ['*'], files: ['*'] })] };
  const version = Date.now() + 10_000_000;
  await states[0]!.client.set('gatehouse:reg:doc', `gh1 ${version} ${'0'.repeat(64)}\n${JSON.stringify(forgedFile)}`);
  await states[0]!.client.publish('gatehouse:reg:notice', String(version));
  await within(3000, 'B logs the forged document', () => Promise.resolve(b.lines.some((l) => l.code === 'SEALED_REGISTRY_FORGED')));
  assert.ok(!readFileSync(b.server.registryFile, 'utf8').includes('mallory'), 'not applied');
  assert.equal(b.server.registry.lookup(forgedFile.clients[0]!.kid, Date.now()).ok, false);
  // A real change on A still reaches B (A replaces the forged document it could not verify).
  const dave = await a.client('dave');
  await within(3000, 'B accepts dave', accepted(await via(b, dave)));
  assert.ok(!readFileSync(b.server.registryFile, 'utf8').includes('mallory'));
});
