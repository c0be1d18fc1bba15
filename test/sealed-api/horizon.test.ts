/**
 * The replay horizon (horizon.ts): a request dated ahead of the server clock is recorded before its
 * action runs, so a restarted server refuses it; requests at or behind the clock write nothing; a mark that
 * cannot be written refuses the request (sealed 503) and runs nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { craft, expect401, rawPost, reasonOf, tempDir, trackedStart } from './helpers.ts';

const start = trackedStart();

test('replay after a restart of a request whose iat was ahead of the server clock (within the skew)', async () => {
  const dir = tempDir();
  const s1 = await start({}, { dir });
  const a = await s1.client('alice');
  // The client's clock runs 10 s ahead (allowed: skew 30 s); the server accepts the request.
  const iat = Date.now() / 1000 + 10;
  const body = await craft(s1, a, { claims: { iat, exp: iat + 60 } });
  assert.equal((await rawPost(s1.server.url, body)).status, 200);
  await s1.close();
  const horizonFile = join(dir, 'state', 'replay-horizon');
  const mark = Number(readFileSync(horizonFile, 'utf8'));
  assert.ok(mark >= iat * 1000 && mark <= iat * 1000 + 10000, String(mark));
  assert.equal(statSync(horizonFile).mode & 0o777, 0o600);
  const s2 = await start({}, { dir });
  const id = await expect401(s2, body, 'captured request replayed after the restart');
  assert.match(reasonOf(s2, id), /before the server started/);
  // Requests dated after the mark are served again (at the latest skew + 10 s after the restart).
  const after = mark / 1000 + 0.5;
  assert.equal(
    (await rawPost(s2.server.url, await craft(s2, a, { claims: { iat: after, exp: after + 60 } }))).status,
    200,
  );
});

test('requests dated at or behind the server clock write no replay horizon', async () => {
  const s = await start();
  const a = await s.client('alice');
  const iat = Date.now() / 1000;
  assert.equal(
    (await rawPost(s.server.url, await craft(s, a, { claims: { iat, exp: iat + 60 } }))).status,
    200,
  );
  assert.equal(existsSync(join(s.dir, 'state', 'replay-horizon')), false);
});

test('when the replay horizon cannot be written, a request dated ahead is refused (sealed 503) and does not run', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'app.json'), '{"a":1}\n');
  // A directory where the mark file should be: the atomic rename over it fails.
  mkdirSync(join(dir, 'state', 'replay-horizon'), { recursive: true });
  const s = await start({ files: { app: { path: 'etc/app.json', format: 'json' } } }, { dir });
  const a = await s.client('alice');
  const { etag } = await a.call<{ etag: string }>('files.read', { file: 'app' });
  const iat = Date.now() / 1000 + 10;
  const res = await rawPost(
    s.server.url,
    await craft(s, a, {
      claims: {
        iat,
        exp: iat + 60,
        act: 'files.write',
        args: { file: 'app', content: '{}\n', if_match: etag },
      },
    }),
  );
  assert.equal(res.status, 503);
  assert.equal(res.headers.get('content-type'), 'application/jose');
  assert.equal(readFileSync(join(dir, 'etc', 'app.json'), 'utf8'), '{"a":1}\n');
  assert.deepEqual(await a.call('ping'), { pong: true }, 'requests dated at the server clock still work');
});
