/**
 * Review (issue 11): the shared state's reset detection (the `epoch` key) when Redis restarts empty and
 * the epoch cannot be read right after the reconnect. Until it is read, a "seen once" key cannot be
 * trusted (the replay cache may have been lost): the reset must be known before `once` answers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RedisSharedState } from '../../src/core/cluster/shared-state.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { silentLogger } from '../../src/core/log.ts';
import { startRedis, skipUnlessRedis, redisCommand, type TestRedis } from './redis-server.ts';

const skip = skipUnlessRedis();
let redis: TestRedis;
const states: RedisSharedState[] = [];


before(async () => {
  if (skip !== false) return;
  redis = await startRedis();
});
after(async () => {
  await Promise.all(states.map((s) => s.close()));
  await redis?.stop();
});

test('Redis restarted empty and the epoch read fails after the reconnect: the reset is known before a once-key is answered', { skip, timeout: 8000 }, async () => {
  const s = new RedisSharedState({ redisUrl: redis.socket, secret: new Secret('review-shared-cluster-secret'), nodeId: 'ss-a', keyPrefix: 'rss:', commandTimeoutMs: 300, log: silentLogger() });
  states.push(s);
  await s.start();
  let resets = 0;
  s.onReset(() => resets++);
  assert.equal(await s.once('replay', 'k1', 60_000), 'fresh');
  await redis.restart();
  // Writes (the epoch script is one) wait 1.2 s: the reconnect's epoch read runs past its deadline.
  assert.match(await redisCommand(redis, 'CLIENT', 'PAUSE', '1200', 'WRITE'), /^\+OK/);
  const t0 = Date.now();
  while (!s.ready && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
  assert.ok(s.ready);
  await new Promise((r) => setTimeout(r, 1400));
  // k1 is unknown to the new Redis: whatever `once` says, the reset must be reported first.
  const verdict = await s.once('replay', 'k1', 60_000).catch(() => 'rejected');
  assert.equal(resets, 1, `reset reported before once answered ${verdict}`);
});
