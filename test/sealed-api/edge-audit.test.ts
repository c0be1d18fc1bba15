/**
 * Hostile input the other sealed-API files do not send: values nested deeper than any config holds in
 * `files.update` operations (JSON.parse takes them; writing them back overflowed the stack). Each gets a
 * coded, sealed answer and the file is left as it was.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { base64url } from 'jose';
import { openResponse } from '../../src/sealed-api/envelope.ts';
import { etagOf } from '../../src/sealed-api/actions/files.ts';
import { MAX_OPS_DEPTH } from '../../src/sealed-api/formats/index.ts';
import { claimsFor, craft, rawPost, signRaw, tempDir, trackedStart, write } from './helpers.ts';

const start = trackedStart();

for (const [format, name, text] of [
  ['json', 'cfg.json', '{\n  "a": 1\n}\n'],
  ['toml', 'cfg.toml', 'a = 1\n'],
  ['yaml', 'cfg.yaml', 'a: 1\n'],
] as const) {
  test(`files.update (${format}) with a value nested 200,000 deep: sealed 422, file unchanged, nothing logged as our fault`, { timeout: 14000 }, async () => {
    const dir = tempDir();
    const path = write(dir, name, text);
    const s = await start({ files: { cfg: { path, format } } });
    const c = await s.client('deep');
    const deep = `${'['.repeat(200000)}1${']'.repeat(200000)}`;
    const args = { file: 'cfg', if_match: etagOf(text), ops: [{ op: 'set', path: ['b'], value: '@DEEP@' }] };
    const claims = claimsFor(s, { act: 'files.update', args });
    const claimsText = JSON.stringify(claims).replace('"@DEEP@"', deep);
    const jws = signRaw({ alg: 'EdDSA', kid: c.kid }, base64url.encode(claimsText), c.key);
    const res = await rawPost(s.server.url, await craft(s, c, { jws }));
    const body = await openResponse(res.body, claims.rk as string, claims.jti as string);
    assert.equal(res.status, 422, JSON.stringify(body));
    assert.equal(body.ok, false);
    if (!body.ok) assert.equal(body.error.code, 'SEALED_INVALID_CONTENT');
    assert.equal(readFileSync(path, 'utf8'), text);
    assert.equal(s.lines.filter((l) => (l.level as number) >= 50).length, 0, 'no error-level log line');
    // The server goes on.
    assert.deepEqual(await c.call('ping', {}), { pong: true });
  });
}

test('files.update: ops nested exactly MAX_OPS_DEPTH deep are applied; one level more is a sealed 422', { timeout: 14000 }, async () => {
  const dir = tempDir();
  const text = '{\n  "a": 1\n}\n';
  const path = write(dir, 'edge.json', text);
  const s = await start({ files: { cfg: { path, format: 'json' } } });
  const c = await s.client('edge');
  // ops (1) → op (2) → value: levels 3 … depth.
  const nest = (levels: number): unknown => (levels === 0 ? 1 : [nest(levels - 1)]);
  const tooDeep = { file: 'cfg', if_match: etagOf(text), ops: [{ op: 'set', path: ['b'], value: nest(MAX_OPS_DEPTH - 1) }] };
  await assert.rejects(c.call('files.update', tooDeep), (err: unknown) => (err as { code?: string }).code === 'SEALED_INVALID_CONTENT');
  assert.equal(readFileSync(path, 'utf8'), text);
  const within = { file: 'cfg', if_match: etagOf(text), ops: [{ op: 'set', path: ['b'], value: nest(MAX_OPS_DEPTH - 2) }] };
  await c.call('files.update', within);
  assert.deepEqual((JSON.parse(readFileSync(path, 'utf8')) as { b: unknown }).b, nest(MAX_OPS_DEPTH - 2));
});
