/**
 * Review (issue 11): the client registry on Redis against a writer without the cluster secret. A forged
 * document is refused by its HMAC (sealed-registry.test.ts); an OLD document, once genuinely signed, still
 * verifies: written back into Redis it must not undo a revocation on a node that starts later. Real
 * redis-server, sealed API instances in this process.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisSharedState } from '../../src/core/cluster/shared-state.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { silentLogger } from '../../src/core/log.ts';
import { readRegistryFile } from '../../src/sealed-api/registry.ts';
import { revokeClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { startSealed, type StartedSealed } from '../sealed-api/helpers.ts';
import { startRedis, skipUnlessRedis, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const states: RedisSharedState[] = [];
const nodes: StartedSealed[] = [];
const DOC = 'rreg:reg:doc';

async function node(id: string): Promise<StartedSealed> {
  const s = new RedisSharedState({ redisUrl: redis.socket, secret: new Secret('review-registry-cluster-secret'), nodeId: id, keyPrefix: 'rreg:', commandTimeoutMs: 500, log: silentLogger() });
  states.push(s);
  await s.start();
  const n = await startSealed({ reloadCheckMs: 100 }, { deps: { shared: s } });
  nodes.push(n);
  return n;
}

async function until(ms: number, what: string, probe: () => Promise<boolean>): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

const versionOf = (doc: string | null) => Number(/^gh1 (\d+) /.exec(doc ?? '')?.[1] ?? 0);

before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
});
after(async () => {
  for (const n of nodes) await n.close();
  await Promise.all(states.map((s) => s.close()));
  await redis?.stop();
});

test('an old signed registry document written back into Redis does not undo a revocation (running nodes restore the current one)', { skip, timeout: 8000 }, async () => {
  const a = await node('reg-a');
  await a.client('carol');
  const redisClient = states[0]!.client;
  await until(3000, 'carol published', async () => (await redisClient.get(DOC))?.includes('"carol"') === true);
  const withCarol = (await redisClient.get(DOC))!;
  await revokeClient(sealedPaths(a.config, a.dir), 'carol');
  await until(3000, 'revocation published', async () => versionOf(await redisClient.get(DOC)) > versionOf(withCarol));
  const revokedVersion = versionOf(await redisClient.get(DOC));
  // Someone with write access to Redis but not the secret puts the old, validly signed document back.
  await redisClient.set(DOC, withCarol);
  // The running node knows a newer version: it puts the current registry back.
  await until(2000, 'Redis holds the current registry again', async () => versionOf(await redisClient.get(DOC)) >= revokedVersion);
  // A node that starts now takes the current registry: carol stays revoked.
  const c = await node('reg-c');
  const clients = (await readRegistryFile(c.server.registryFile)).clients;
  assert.deepEqual(clients.map((x) => [x.name, x.revoked !== undefined]), [['carol', true]]);
});

test('an oversized registry document in Redis is not downloaded at every poll (its length is asked first), and the next change replaces it', { skip, timeout: 8000 }, async () => {
  await node('reg-big');
  const redisClient = states[0]!.client;
  const big = `gh1 ${Date.now() + 10_000_000} ${'0'.repeat(64)}\n${'x'.repeat(9 * 1024 * 1024)}`;
  await redisClient.set(DOC, big);
  const sent = async () => Number(/total_net_output_bytes:(\d+)/.exec(await redisClient.info('stats'))?.[1] ?? 0);
  await new Promise((r) => setTimeout(r, 300));
  const before = await sent();
  // Three nodes poll every 100 ms: a download per poll would be ~270 MB a second.
  await new Promise((r) => setTimeout(r, 1000));
  const perSecond = (await sent()) - before;
  assert.ok(perSecond < 1024 * 1024, `redis sent ${perSecond} bytes in a second`);
  assert.ok(nodes.some((n) => n.lines.some((l) => l.code === 'SEALED_REGISTRY_FORGED')));
  // The next real change replaces it, as it replaces a forged document.
  await nodes.at(-1)!.client('dave');
  await until(3000, 'dave published over the oversized document', async () => (await redisClient.getrange(DOC, 0, 4096)).includes('"dave"'));
});
