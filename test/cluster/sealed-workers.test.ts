/**
 * `gatehouse serve --workers 2` with the sealed API and no Redis: the replay cache and the failed-auth
 * back-off are the primary's (core/cluster/ipc-shared.ts), so a request replayed to the other worker is
 * refused as a local replay is, and failures spread over both workers trip the limit on both. The
 * workers start without a server key: one creates it, the other uses the same.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { tempDir } from '../helpers/relay.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { sealedApiConfigSchema } from '../../src/sealed-api/config.ts';
import { addClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { generateClientKey, writeClientKeyFile } from '../../src/sealed-api/keys.ts';
import { SealedClient } from '../../src/sealed-api/client.ts';

const UNAUTHORIZED = '{"error":"unauthorized"}';

async function post(url: string, body: string): Promise<{ status: number; body: string }> {
  // A new connection each time (no keep-alive): node:cluster hands connections to the workers in turn.
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/jose', connection: 'close' } });
  return { status: res.status, body: await res.text() };
}

test('serve --workers 2, no Redis: a replay sent to the other worker is refused; failures over both workers trip the limit on both', { timeout: 30000 }, async () => {
  const dir = tempDir();
  const paths = sealedPaths(validateConfig(sealedApiConfigSchema, { stateDir: 'state' }), dir);
  // No server key yet: both workers start at once and exactly one creates it (the other uses it).
  const key = await generateClientKey('alice');
  const keyFile = join(dir, 'alice.json');
  await writeClientKeyFile(keyFile, key);
  await addClient(paths, { name: 'alice', jwk: key.publicJwk, allow: ['*'], files: ['*'] });
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(cfg, `[shutdown]\ngraceMs = 300\n[sealedApi]\nport = 0\nstateDir = "state"\n[sealedApi.limits]\nmaxAuthFailuresPerIp = 4\nauthFailureWindowMs = 20000\n`);
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json']);
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    const url = /(http:\/\/127\.0\.0\.1:\d+\/v1\/rpc)/.exec(banner)![1]!;
    assert.equal(server.stderr().split('\n').filter((l) => l.includes('server key pair created')).length, 1, 'one worker created the server key');
    const client = await SealedClient.fromFiles(url, keyFile, paths.publicFile);
    try {
      const prepared = await client.prepare('ping');
      assert.equal((await post(url, prepared.jwe)).status, 200);
      // Replays on fresh connections: round robin takes them to both workers; every one is refused.
      for (let i = 0; i < 4; i++) assert.deepEqual(await post(url, prepared.jwe), { status: 401, body: UNAUTHORIZED }, `replay ${i}`);
      const replayLines = server.stderr().split('\n').filter((l) => l.includes('replayed jti'));
      const workers = new Set(replayLines.map((l) => (JSON.parse(l) as { worker?: number }).worker));
      assert.equal(workers.size, 2, `both workers refused the replay: ${replayLines.join('\n')}`);
      // The 4 replays above were 4 failed authentications from 127.0.0.1, 2 per worker: the limit (4) is
      // reached across the workers, so even a good request is refused now, on either worker.
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 2; i++) {
        const fresh = await client.prepare('ping');
        const res = await post(url, fresh.jwe);
        assert.equal(res.status, 429, `after the limit (${i}): ${res.body}`);
      }
    } finally {
      client.close();
    }
    server.child.kill('SIGTERM');
    const how = await server.exited(10000);
    assert.equal(how.code, 0, server.stderr().slice(-2000));
  } finally {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
});
