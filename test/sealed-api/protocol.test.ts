/**
 * The sealed protocol end to end over real sockets: one test per weakness of the two services the spec
 * merges (replay, cut-and-paste, reflection, encryption-as-authentication, revocation, tampering,
 * audience, sizes, malformed input), plus the plain HTTP statuses, sealed error statuses, key rotation,
 * signed responses, TLS and the reverse-proxy address.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { base64url } from 'jose';
import { isGatewayError } from '../../src/core/errors.ts';
import { SealedCallError, SealedClient } from '../../src/sealed-api/client.ts';
import { revokeClient, rotateServerKey, sealedPaths } from '../../src/sealed-api/admin.ts';
import { generateClientKey, importPublic } from '../../src/sealed-api/keys.ts';
import { importJWK, type CryptoKey } from 'jose';
import {
  claimsFor,
  craft,
  expect401,
  rawPost,
  reasonOf,
  selfSigned,
  signRaw,
  tempDir,
  trackedStart,
} from './helpers.ts';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CompactSign } from 'jose';

const enc = new TextEncoder();

const start = trackedStart();


async function sealedError(p: Promise<unknown>, status: number, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof SealedCallError, String(err));
    assert.equal(err.sealed, true);
    assert.equal(err.status, status);
    assert.equal(err.code, code);
    return true;
  });
}

test('a registered client calls ping and time; the answer is sealed and bound to the request', async () => {
  const s = await start();
  const c = await s.client('alice');
  assert.deepEqual(await c.call('ping'), { pong: true });
  const t = await c.call<{ iso: string; timeZone: string }>('time', { timeZone: 'Europe/Prague' });
  assert.equal(t.timeZone, 'Europe/Prague');
  const p = await c.prepare('ping');
  const answer = await c.send(p.jwe);
  assert.equal(answer.status, 200);
  assert.equal(answer.contentType, 'application/jose');
  const segments = answer.body.split('.');
  assert.equal(segments.length, 5);
  assert.equal(segments[1], '', 'dir has no encrypted key');
  const header = JSON.parse(Buffer.from(segments[0]!, 'base64url').toString()) as Record<string, unknown>;
  assert.deepEqual(header, { alg: 'dir', enc: 'A256GCM', rid: p.jti });
});

test('replay: the same request sent twice is refused the second time (401) and the action runs once', async () => {
  const s = await start();
  const c = await s.client('alice');
  const p = await c.prepare('ping');
  assert.deepEqual(await c.open(p, await c.send(p.jwe)), { pong: true });
  const id = await expect401(s, p.jwe, 'replay');
  const line = s.lines.find((l) => l.requestId === id);
  assert.match(String(line?.reason), /replayed jti/);
});

test('replay after restart: requests issued before the process started are refused', async () => {
  const dir = tempDir();
  const s1 = await start({}, { dir });
  const c = await s1.client('alice');
  const p = await c.prepare('ping');
  await s1.close();
  const s2 = await start({}, { dir });
  const id = await expect401(s2, p.jwe, 'issued before start');
  assert.match(String(s2.lines.find((l) => l.requestId === id)?.reason), /before the server started/);
  const fresh = new SealedClient({
    url: s2.server.url,
    clientKid: c.kid,
    clientKey: c.key,
    serverKid: s2.server.serverInfo().kid,
    serverKey: await importPublic(s2.server.serverInfo().jwk, 'ECDH-ES'),
  });
  assert.deepEqual(await fresh.call('ping'), { pong: true }, 'same keys survive a restart');
  fresh.close();
});

test('cut-and-paste: segments of two valid requests combined are refused', async () => {
  const s = await start();
  const c = await s.client('alice');
  const a = (await c.prepare('ping')).jwe.split('.');
  const b = (await c.prepare('files.read', { file: 'x' })).jwe.split('.');
  const mixes = [
    [a[0], b[1], b[2], b[3], b[4]],
    [a[0], a[1], a[2], b[3], a[4]],
    [a[0], a[1], b[2], b[3], b[4]],
    [b[0], a[1], a[2], a[3], a[4]],
    [a[0], a[1], a[2], a[3], b[4]],
  ];
  for (const m of mixes) await expect401(s, m.join('.'), `mix ${m.map((x) => x!.slice(0, 4)).join('.')}`);
});

test('reflection: a request is not accepted as a response, a response not as a request, nor an answer to another request', async () => {
  const s = await start();
  const c = await s.client('alice');
  const p = await c.prepare('ping');
  await assert.rejects(
    c.open(p, { status: 200, contentType: 'application/jose', body: p.jwe }),
    (e: unknown) => isGatewayError(e, 'SEALED_RESPONSE_INVALID'),
  );
  const answer = await c.send(p.jwe);
  await expect401(s, answer.body, 'response sent as a request');
  const q = await c.prepare('ping');
  await assert.rejects(c.open(q, answer), (e: unknown) => isGatewayError(e, 'SEALED_RESPONSE_INVALID'));
  // Same rid but sealed under a different rk (another request's key) also fails.
  const forged = answer.body.split('.');
  forged[0] = base64url.encode(JSON.stringify({ alg: 'dir', enc: 'A256GCM', rid: q.jti }));
  await assert.rejects(c.open(q, { ...answer, body: forged.join('.') }), (e: unknown) =>
    isGatewayError(e, 'SEALED_RESPONSE_INVALID'),
  );
});

test('encryption is not authentication: an unknown client with the server public key gets 401', async () => {
  const s = await start();
  const stranger = await generateClientKey('mallory');
  const info = s.server.serverInfo();
  const c = new SealedClient({
    url: s.server.url,
    clientKid: stranger.kid,
    clientKey: (await importJWK(stranger.privateJwk, 'EdDSA')) as CryptoKey,
    serverKid: info.kid,
    serverKey: await importPublic(info.jwk, 'ECDH-ES'),
  });
  const id = await expect401(s, (await c.prepare('ping')).jwe, 'unknown client');
  assert.equal(s.lines.find((l) => l.requestId === id)?.reason, 'unknown client');
  // A registered kid in skid but signed by another key: decrypts, fails the signature.
  const alice = await s.client('alice');
  const impostor = new SealedClient({
    url: s.server.url,
    clientKid: alice.kid,
    clientKey: (await importJWK(stranger.privateJwk, 'EdDSA')) as CryptoKey,
    serverKid: info.kid,
    serverKey: await importPublic(info.jwk, 'ECDH-ES'),
  });
  const id2 = await expect401(s, (await impostor.prepare('ping')).jwe, 'wrong signer');
  assert.match(String(s.lines.find((l) => l.requestId === id2)?.reason), /signature invalid/);
  c.close();
  impostor.close();
});

test('revoked client: refused without a restart once the registry file changes', async () => {
  const s = await start();
  const c = await s.client('alice');
  const other = await s.client('bob');
  assert.deepEqual(await c.call('ping'), { pong: true });
  await revokeClient(sealedPaths(s.config, s.dir), 'alice');
  const deadline = Date.now() + 5000;
  let refused = false;
  while (Date.now() < deadline && !refused) {
    try {
      await c.call('ping');
      await new Promise((r) => setTimeout(r, 50));
    } catch (err) {
      assert.ok(err instanceof SealedCallError && err.status === 401 && !err.sealed, String(err));
      refused = true;
    }
  }
  assert.ok(refused, 'revocation took effect');
  assert.deepEqual(await other.call('ping'), { pong: true }, 'other clients are unaffected');
});

test('expired client: refused (already expired, and once its expiry passes)', async () => {
  const s = await start();
  const old = await s.client('old', { expires: new Date(Date.now() - 1000).toISOString() });
  await expect401(s, (await old.prepare('ping')).jwe, 'expired');
  const soon = await s.client('soon', { expires: new Date(Date.now() + 800).toISOString() });
  assert.deepEqual(await soon.call('ping'), { pong: true });
  await new Promise((r) => setTimeout(r, 900));
  await expect401(s, (await soon.prepare('ping')).jwe, 'expiry passed');
});

test('tampered protected header: refused (the header is the AAD)', async () => {
  const s = await start();
  const c = await s.client('alice');
  const parts = (await c.prepare('ping')).jwe.split('.');
  const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString()) as Record<string, unknown>;
  for (const change of [
    { x: 1 },
    { enc: 'A128GCM' },
    { alg: 'dir' },
    { zip: 'DEF' },
    { skid: 'nobody' },
    { kid: 'other' },
  ]) {
    const p = [...parts];
    p[0] = base64url.encode(JSON.stringify({ ...header, ...change }));
    await expect401(s, p.join('.'), JSON.stringify(change));
  }
  const flipped = [...parts];
  flipped[4] = `${flipped[4]!.slice(0, -2)}${flipped[4]!.endsWith('AA') ? 'BA' : 'AA'}`;
  await expect401(s, flipped.join('.'), 'tag');
});

test('wrong audience, method, path, version or lifetime in the signed claims: refused', async () => {
  const s = await start();
  const c = await s.client('alice');
  const now = Date.now() / 1000;
  const cases: Record<string, unknown>[] = [
    { aud: 'another-server' },
    { htu: '/v1/other' },
    { htm: 'GET' },
    { v: 2 },
    { iat: now, exp: now + 600 },
    { iat: now - 400, exp: now - 300 },
    { iat: now + 300, exp: now + 330 },
    { rk: 'short' },
    { jti: 'x' },
    { args: [] },
  ];
  for (const o of cases) {
    const id = await expect401(s, (await c.prepare('ping', {}, o)).jwe, JSON.stringify(o));
    assert.ok(
      s.lines.some((l) => l.requestId === id && l.msg === 'unauthorized'),
      'reason logged with the request id',
    );
  }
});

test('every authentication failure answers the same bytes; reasons only in the log', async () => {
  const s = await start();
  const c = await s.client('alice');
  const p = await c.prepare('ping');
  await c.call('ping');
  await c.send(p.jwe);
  const bodies = [
    (await c.prepare('ping', {}, { aud: 'x' })).jwe,
    p.jwe,
    (await c.prepare('ping', {}, { htu: '/' })).jwe,
  ];
  const seen = new Set<string>();
  for (const b of bodies) {
    const res = await rawPost(s.server.url, b);
    seen.add(
      `${res.status} ${res.headers.get('content-type')} ${res.headers.get('content-length')} ${res.body}`,
    );
  }
  assert.equal(seen.size, 1);
  const reasons = s.lines.filter((l) => l.msg === 'unauthorized').map((l) => l.reason);
  assert.ok(new Set(reasons).size >= 2, 'the log tells the reasons apart');
  assert.ok(!s.lines.some((l) => JSON.stringify(l).includes(p.jwe)), 'bodies are not logged');
});

test('plain statuses: 400 malformed, 405 method, 404 path, 415 type, 413 one byte past maxBodyBytes', async () => {
  const s = await start({ limits: { maxBodyBytes: 1024 } });
  const url = s.server.url;
  assert.equal((await rawPost(url, 'not-a-jwe')).status, 400);
  assert.equal((await rawPost(url, 'a.b.c.d')).status, 400);
  assert.equal((await rawPost(url, `${base64url.encode('not json')}.a.b.c.d`)).status, 400);
  assert.equal((await rawPost(url, `${base64url.encode('[1]')}.a.b.c.d`)).status, 400);
  assert.equal((await rawPost(url, 'a+b.c.d.e.f')).status, 400);
  const get = await rawPost(url, '', {}, 'GET');
  assert.equal(get.status, 405);
  assert.equal(get.headers.get('allow'), 'POST');
  assert.equal((await rawPost(url.replace('/v1/rpc', '/v1/other'), 'x')).status, 404);
  assert.equal((await rawPost(url, 'a.b.c.d.e', { 'content-type': 'application/json' })).status, 415);
  const exact = await rawPost(url, 'a'.repeat(1024));
  assert.equal(exact.status, 400, 'exactly the limit is read (and is malformed)');
  const over = await rawPost(url, 'a'.repeat(1025));
  assert.equal(over.status, 413);
  // Chunked, without Content-Length: counted while reading.
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: 'POST', headers: { 'content-type': 'application/jose', 'transfer-encoding': 'chunked' } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.write('a'.repeat(600));
    req.end('a'.repeat(425));
  });
  assert.equal(status, 413);
});

test('429 after too many authentication failures from one address, even for a valid request', async () => {
  const s = await start({ limits: { maxAuthFailuresPerIp: 3, authFailureWindowMs: 60000 } });
  const c = await s.client('alice');
  for (let i = 0; i < 3; i++)
    await expect401(s, (await c.prepare('ping', {}, { aud: 'x' })).jwe, `failure ${i}`);
  const res = await rawPost(s.server.url, (await c.prepare('ping')).jwe);
  assert.equal(res.status, 429);
  assert.ok(res.headers.get('retry-after') !== null);
});

test('after authentication: sealed 403 (action, file), 404 (action, file, path outside the files), 422 args', async () => {
  const dir = tempDir();
  const s = await start({ files: { wg0: { path: 'managed/wg0.conf', format: 'wireguard' } } }, { dir });
  const limited = await s.client('limited', { allow: ['time', 'files.read'], files: ['other'] });
  await sealedError(limited.call('ping'), 403, 'SEALED_FORBIDDEN');
  await sealedError(limited.call('files.read', { file: 'wg0' }), 403, 'SEALED_FORBIDDEN');
  const admin = await s.client('admin');
  await sealedError(admin.call('no.such.action'), 404, 'SEALED_UNKNOWN_ACTION');
  await sealedError(admin.call('files.read', { file: 'nope' }), 404, 'SEALED_UNKNOWN_FILE');
  await sealedError(admin.call('files.read', { file: '../../../etc/passwd' }), 404, 'SEALED_UNKNOWN_FILE');
  await sealedError(admin.call('files.read', { file: '/etc/passwd' }), 404, 'SEALED_UNKNOWN_FILE');
  await sealedError(admin.call('files.read', { path: '/etc/passwd' }), 422, 'SEALED_INVALID_ARGS');
  await sealedError(admin.call('time', { timeZone: 42 }), 422, 'SEALED_INVALID_ARGS');
});

test('replay cache full: refused (sealed 503), never evicted', async () => {
  const s = await start({ limits: { maxReplayEntries: 2 } });
  const c = await s.client('alice');
  const first = await c.prepare('ping');
  assert.deepEqual(await c.open(first, await c.send(first.jwe)), { pong: true });
  await c.call('ping');
  await sealedError(c.call('ping'), 503, 'SEALED_REPLAY_CACHE_FULL');
  await expect401(s, first.jwe, 'the first entry is still remembered');
});

test('server key rotation: the old key works during the overlap and not after; new clients use the new key', async () => {
  const s = await start();
  const c = await s.client('alice');
  const oldKid = s.server.serverInfo().kid;
  const paths = sealedPaths(s.config, s.dir);
  const rotated = await rotateServerKey(paths.keyFile, 60000);
  await s.server.reload();
  assert.notEqual(rotated.kid, oldKid);
  assert.equal(s.server.serverInfo().kid, rotated.kid);
  assert.deepEqual(await c.call('ping'), { pong: true }, 'old key inside the overlap');
  const fresh = new SealedClient({
    url: s.server.url,
    clientKid: c.kid,
    clientKey: c.key,
    serverKid: rotated.kid,
    serverKey: await importPublic(rotated.jwk, 'ECDH-ES'),
  });
  assert.deepEqual(await fresh.call('ping'), { pong: true });
  fresh.close();
  await rotateServerKey(paths.keyFile, 0);
  await s.server.reload();
  await expect401(s, (await c.prepare('ping')).jwe, 'old key retired');
});

test('server-signed responses: verified with the pinned signing key', async () => {
  const s = await start({ signResponses: true });
  const c = await s.client('alice', { requireSigned: true });
  assert.deepEqual(await c.call('ping'), { pong: true });
  await sealedError(c.call('nope'), 404, 'SEALED_UNKNOWN_ACTION');
  const unsigned = await start({ signResponses: false });
  const u = await unsigned.client('bob', { requireSigned: false });
  assert.deepEqual(await u.call('ping'), { pong: true });
  // A client that requires signatures refuses an unsigned answer.
  const strict = new SealedClient({
    url: unsigned.server.url,
    clientKid: u.kid,
    clientKey: u.key,
    serverKid: unsigned.server.serverInfo().kid,
    serverKey: await importPublic(unsigned.server.serverInfo().jwk, 'ECDH-ES'),
    serverSigningKey: await importPublic(unsigned.server.serverInfo().signing.jwk, 'EdDSA'),
  });
  await assert.rejects(strict.call('ping'), (e: unknown) => isGatewayError(e, 'SEALED_RESPONSE_INVALID'));
  strict.close();
});

test('TLS listener when configured', async () => {
  const dir = tempDir();
  const { certFile, keyFile } = selfSigned(dir);
  const s = await start({ tls: { certFile, keyFile } }, { dir });
  assert.ok(s.server.url.startsWith('https://'));
  const c = await s.client('alice', { extra: { ca: readFileSync(certFile) } });
  assert.deepEqual(await c.call('ping'), { pong: true });
});

test('reverse proxy: the address trustedHops from the right is the client; one log line per new address', async () => {
  const s = await start({ proxy: { trustedHops: 1 } });
  const a = await s.client('alice', { extra: { headers: { 'x-forwarded-for': '6.6.6.6, 203.0.113.7' } } });
  await a.call('ping');
  await a.call('ping');
  const b = await s.client('alice2', { extra: { headers: { 'x-forwarded-for': '198.51.100.9' } } });
  await b.call('ping');
  const lines = s.lines.filter((l) => l.msg === 'new client address');
  assert.deepEqual(
    lines.map((l) => [l.client, l.ip]),
    [
      ['alice', '203.0.113.7'],
      ['alice2', '198.51.100.9'],
    ],
  );
});

test('secrets are not logged: no keys, no request or response content', async () => {
  const s = await start();
  const c = await s.client('alice');
  await c.call('time');
  const text = JSON.stringify(s.lines);
  const keys = JSON.parse(readFileSync(sealedPaths(s.config, s.dir).keyFile, 'utf8')) as {
    encryption: { jwk: { d: string } }[];
  };
  assert.ok(!text.includes(keys.encryption[0]!.jwk.d));
  assert.ok(!text.includes('epochMs'));
});

test('check order: unknown and revoked clients are refused before any decryption (garbage ciphertext, same 401)', async () => {
  const s = await start();
  const c = await s.client('alice');
  const other = await s.client('bob');
  const parts = (await c.prepare('ping')).jwe.split('.');
  const garbage = (skid: string) => {
    const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString()) as Record<string, unknown>;
    return [
      base64url.encode(JSON.stringify({ ...header, skid })),
      parts[1],
      'AAAAAAAAAAAAAAAA',
      'AAAA',
      'AAAAAAAAAAAAAAAAAAAAAA',
    ].join('.');
  };
  const id1 = await expect401(s, garbage('no-such-client'), 'unknown');
  assert.equal(s.lines.find((l) => l.requestId === id1)?.reason, 'unknown client');
  await revokeClient(sealedPaths(s.config, s.dir), 'bob');
  await s.server.reload();
  const id2 = await expect401(s, garbage(other.kid), 'revoked');
  assert.equal(s.lines.find((l) => l.requestId === id2)?.reason, 'client bob revoked');
  const id3 = await expect401(s, garbage(c.kid), 'valid client, garbage ciphertext');
  assert.match(String(s.lines.find((l) => l.requestId === id3)?.reason), /decrypt failed/);
});

test('a broken registry file is logged and the previous registry stays in force', async () => {
  const s = await start();
  const c = await s.client('alice');
  writeFileSync(sealedPaths(s.config, s.dir).registryFile, '{"version":1,"clients":[{"broken":');
  await s.server.reload();
  assert.ok(s.lines.some((l) => l.msg === 'client registry not reloaded; the previous one stays in force'));
  assert.deepEqual(await c.call('ping'), { pong: true });
});

test('server keys rotated on disk (as the CLI does) are picked up without a restart', async () => {
  const s = await start();
  const before = s.server.serverInfo().kid;
  const rotated = await rotateServerKey(sealedPaths(s.config, s.dir).keyFile, 60000);
  const deadline = Date.now() + 5000;
  while (s.server.serverInfo().kid === before && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  assert.equal(s.server.serverInfo().kid, rotated.kid);
  assert.deepEqual(
    JSON.parse(readFileSync(sealedPaths(s.config, s.dir).publicFile, 'utf8')),
    rotated,
    'server-public.json follows',
  );
});

test('a hand-built request is accepted (baseline for the probes below)', async () => {
  const s = await start();
  const c = await s.client('alice');
  const res = await rawPost(s.server.url, await craft(s, c));
  assert.equal(res.status, 200);
});

test('algorithm confusion and key-id games are refused with the same 401', async () => {
  const s = await start();
  const a = await s.client('alice');
  const b = await s.client('bob');
  const info = s.server.serverInfo();
  const hdr = (h: Record<string, unknown>) => base64url.encode(JSON.stringify(h));
  const bodies: [string, string][] = [
    ['alg none', `${hdr({ alg: 'none', enc: 'A256GCM', kid: info.kid, skid: a.kid })}.a.b.c.d`],
    ['alg dir', `${hdr({ alg: 'dir', enc: 'A256GCM', kid: info.kid, skid: a.kid })}..b.c.d`],
    ['HS256', `${hdr({ alg: 'HS256', kid: info.kid, skid: a.kid })}.a.b.c.d`],
    ['A128GCM', `${hdr({ alg: 'ECDH-ES', enc: 'A128GCM', kid: info.kid, skid: a.kid })}..b.c.d`],
    [
      'zip',
      await craft(s, a, { outer: { zip: 'DEF' } }).catch(
        () => `${hdr({ alg: 'ECDH-ES', enc: 'A256GCM', zip: 'DEF', kid: info.kid, skid: a.kid })}..b.c.d`,
      ),
    ],
    [
      'crit',
      `${hdr({ alg: 'ECDH-ES', enc: 'A256GCM', crit: ['x'], x: 1, kid: info.kid, skid: a.kid })}..b.c.d`,
    ],
    ['A signs, skid B', await craft(s, a, { outer: { skid: b.kid } })],
    ['signed by B, kid A', await craft(s, a, { signKey: b.key })],
    ['inner kid B, outer skid A, signed by A', await craft(s, a, { inner: { kid: b.kid } })],
    [
      'inner alg none',
      await craft(s, a, { jws: `${hdr({ alg: 'none', kid: a.kid })}.${base64url.encode('{}')}.` }),
    ],
    ['wrong aud (other key id)', await craft(s, a, { claims: { aud: a.kid } })],
    ['exp far in the future', await craft(s, a, { claims: { exp: Date.now() / 1000 + 86400 * 365 } })],
    ['huge iat/exp', await craft(s, a, { claims: { iat: 1e300, exp: 1e300 + 1 } })],
    ['string iat', await craft(s, a, { claims: { iat: String(Date.now() / 1000) } })],
    ['short jti', await craft(s, a, { claims: { jti: 'abc' } })],
    ['rk 31 bytes', await craft(s, a, { claims: { rk: base64url.encode(randomBytes(31)) } })],
    ['rk 33 bytes', await craft(s, a, { claims: { rk: base64url.encode(randomBytes(33)) } })],
    ['htu other path', await craft(s, a, { claims: { htu: '/other' } })],
    ['htm GET', await craft(s, a, { claims: { htm: 'GET' } })],
  ];
  for (const [why, body] of bodies) await expect401(s, body, why);
});

test('the hand signer builds requests the server accepts (baseline)', async () => {
  const s = await start();
  const a = await s.client('alice');
  const jws = signRaw({ alg: 'EdDSA', kid: a.kid }, base64url.encode(JSON.stringify(claimsFor(s))), a.key);
  assert.equal((await rawPost(s.server.url, await craft(s, a, { jws }))).status, 200);
});

test('an inner JWS with an unencoded payload (b64:false, crit) is refused', async () => {
  const s = await start();
  const a = await s.client('alice');
  // RFC 7797: the payload segment is the raw claims text (no dots in it here: whole-second iat).
  const raw = JSON.stringify(claimsFor(s));
  assert.ok(!raw.includes('.'));
  const jws = signRaw({ alg: 'EdDSA', kid: a.kid, b64: false, crit: ['b64'] }, raw, a.key);
  const id = await expect401(s, await craft(s, a, { jws }), 'b64 false');
  assert.match(reasonOf(s, id), /crit\/b64/);
  const jws2 = signRaw(
    { alg: 'EdDSA', kid: a.kid, b64: true, crit: ['b64'] },
    base64url.encode(JSON.stringify(claimsFor(s))),
    a.key,
  );
  await expect401(s, await craft(s, a, { jws: jws2 }), 'b64 true in crit');
});

test('duplicate keys in the claims: the last one counts, as in every JSON.parse', async () => {
  const s = await start();
  const a = await s.client('alice');
  const info = s.server.serverInfo();
  const iat = Date.now() / 1000;
  const text = `{"v":1,"aud":"${info.kid}","iat":${iat},"exp":${iat + 60},"jti":"${base64url.encode(randomBytes(16))}","htm":"POST","htu":"/v1/rpc","act":"files.read","act":"ping","args":{},"rk":"${base64url.encode(randomBytes(32))}"}`;
  const jws = await new CompactSign(enc.encode(text))
    .setProtectedHeader({ alg: 'EdDSA', kid: a.kid })
    .sign(a.key);
  const res = await rawPost(s.server.url, await craft(s, a, { jws }));
  assert.equal(res.status, 200);
});

test('the same jti from two clients is two requests; from one client twice is a replay', async () => {
  const s = await start();
  const a = await s.client('alice');
  const b = await s.client('bob');
  const jti = base64url.encode(randomBytes(16));
  assert.equal((await rawPost(s.server.url, await craft(s, a, { claims: { jti } }))).status, 200);
  assert.equal((await rawPost(s.server.url, await craft(s, b, { claims: { jti } }))).status, 200);
  await expect401(s, await craft(s, a, { claims: { jti } }), 'same jti, same client, new envelope');
});

test('every 401 has identical bytes and headers apart from the request id and date', async () => {
  const s = await start();
  const a = await s.client('alice');
  const info = s.server.serverInfo();
  const hdr = (h: Record<string, unknown>) => base64url.encode(JSON.stringify(h));
  const ok = await craft(s, a);
  assert.equal((await rawPost(s.server.url, ok)).status, 200);
  const bodies = [
    `${hdr({ alg: 'ECDH-ES', enc: 'A256GCM', kid: info.kid, skid: 'nobody' })}..b.c.d`,
    await craft(s, a, { claims: { aud: 'x' } }),
    ok,
  ];
  const seen = new Set<string>();
  for (const b of bodies) {
    const res = await rawPost(s.server.url, b);
    const h = [...res.headers].filter(([k]) => k !== 'date' && k !== 'x-request-id');
    seen.add(JSON.stringify([res.status, res.body, h]));
  }
  assert.equal(seen.size, 1, [...seen].join('\n'));
});

test('deeply nested args do not crash the server (sealed error, then the next call works)', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'app.json'), '{"a":1}\n');
  writeFileSync(join(dir, 'etc', 'app.toml'), 'a = 1\n');
  const s = await start(
    {
      limits: { maxBodyBytes: 4 * 1048576 },
      files: {
        app: { path: 'etc/app.json', format: 'json' },
        tapp: { path: 'etc/app.toml', format: 'toml' },
      },
    },
    { dir },
  );
  const a = await s.client('alice');
  const info = s.server.serverInfo();
  // Built as text: JSON.stringify of the nested value itself would overflow the stack here.
  const nested = `${'['.repeat(300000)}1${']'.repeat(300000)}`;
  for (const file of ['app', 'tapp']) {
    const { etag } = await a.call<{ etag: string }>('files.read', { file });
    const iat = Date.now() / 1000;
    const ops = `[{"op":"set","path":["b"],"value":${nested}}]`;
    const text = `{"v":1,"aud":"${info.kid}","iat":${iat},"exp":${iat + 60},"jti":"${base64url.encode(randomBytes(16))}","htm":"POST","htu":"/v1/rpc","act":"files.update","args":{"file":"${file}","ops":${ops},"if_match":${JSON.stringify(etag)}},"rk":"${base64url.encode(randomBytes(32))}"}`;
    const jws = await new CompactSign(enc.encode(text))
      .setProtectedHeader({ alg: 'EdDSA', kid: a.kid })
      .sign(a.key);
    const res = await rawPost(s.server.url, await craft(s, a, { jws }));
    assert.ok(res.status >= 400 && res.status < 600, `${file}: ${res.status}`);
  }
  assert.equal(readFileSync(join(dir, 'etc', 'app.json'), 'utf8'), '{"a":1}\n');
  assert.deepEqual(await a.call('ping'), { pong: true });
});

test('X-Forwarded-For is ignored without trusted hops (spoofing it does not escape the 429)', async () => {
  const s = await start({ limits: { maxAuthFailuresPerIp: 2 } });
  for (let i = 0; i < 3; i++) await rawPost(s.server.url, 'a.b.c.d.e', { 'x-forwarded-for': `10.0.0.${i}` });
  const junk = `${base64url.encode('{"alg":"ECDH-ES","enc":"A256GCM","kid":"k","skid":"s"}')}..b.c.d`;
  for (let i = 0; i < 2; i++) await rawPost(s.server.url, junk, { 'x-forwarded-for': `10.0.1.${i}` });
  const res = await rawPost(s.server.url, junk, { 'x-forwarded-for': '10.0.2.1' });
  assert.equal(res.status, 429);
});

test('a registry file writable by group or others is not loaded (the previous registry stays)', async () => {
  const s = await start();
  const a = await s.client('alice');
  assert.deepEqual(await a.call('ping'), { pong: true });
  const file = s.server.registryFile;
  const text = readFileSync(file, 'utf8');
  // Anyone could now have emptied it (or added a key); it is refused until fixed.
  chmodSync(file, 0o666);
  writeFileSync(file, text.replace(/"clients": \[[\s\S]*\]/, '"clients": []'));
  await s.server.reload();
  assert.deepEqual(await a.call('ping'), { pong: true }, 'previous registry still in force');
  assert.ok(
    s.lines.some((l) => /let others write it/.test(String(l.err && (l.err as { message?: string }).message))),
  );
  chmodSync(file, 0o600);
  await s.server.reload();
  await assert.rejects(a.call('ping'), (e: unknown) => (e as { status?: number }).status === 401);
});
