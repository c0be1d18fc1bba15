/**
 * Active audit of the sealed API over real HTTP on 127.0.0.1: malformed envelopes from strangers (one
 * uniform refusal per class, nothing logged as our fault), hostile registered clients (replays and races,
 * clock edges, names outside the allow-list, concurrent writes), and managed files whose path is not a
 * regular file (a directory, a FIFO, a device): a coded sealed answer at once, never a hang.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  openSync,
  closeSync,
  constants,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { base64url } from 'jose';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { ABSENT_ETAG, etagOf } from '../../src/sealed-api/actions/files.ts';
import {
  claimsFor,
  craft,
  rawPost,
  tempDir,
  trackedStart,
  UNAUTHORIZED,
  wgKey,
  write,
  type StartedSealed,
} from './helpers.ts';

const start = trackedStart();

const errorLines = (s: StartedSealed) => s.lines.filter((l) => (l.level as number) >= 50);

/** Re-encodes a compact JWE with its protected header replaced by `headerText` (the raw JSON text). */
function withHeader(jwe: string, headerText: string): string {
  const parts = jwe.split('.');
  return [base64url.encode(headerText), ...parts.slice(1)].join('.');
}

test(
  'strangers: every malformed envelope gets the uniform 400 or 401 of its class, no error log, server keeps serving',
  { timeout: 15000 },
  async () => {
    const s = await start({ limits: { maxAuthFailuresPerIp: 100000 } });
    const c = await s.client('victim');
    const good = await craft(s, c);
    const [h, k, iv, ct, tag] = good.split('.') as [string, string, string, string, string];
    const info = s.server.serverInfo();
    const hdr = (o: Record<string, unknown>) =>
      JSON.stringify({
        alg: 'ECDH-ES',
        enc: 'A256GCM',
        kid: info.kid,
        skid: c.kid,
        epk: JSON.parse(Buffer.from(h, 'base64url').toString()).epk,
        ...o,
      });
    const shape: [string, string][] = [
      ['4 segments', [h, k, iv, ct].join('.')],
      ['6 segments', `${good}.`],
      ['empty', ''],
      ['padding', `${h}=.${k}.${iv}.${ct}.${tag}`],
      ['whitespace', `${h}. ${k}.${iv}.${ct}.${tag}`],
      ['newline', `${good}\n`],
      ['invalid char', `${h}.${k}.${iv}.${ct}*.${tag}`],
      ['huge header segment', [base64url.encode(`{"a":"${'x'.repeat(5000)}"}`), k, iv, ct, tag].join('.')],
      ['header not JSON', ['bm90IGpzb24', k, iv, ct, tag].join('.')],
      ['header an array', [base64url.encode('[1]'), k, iv, ct, tag].join('.')],
      ['header null', [base64url.encode('null'), k, iv, ct, tag].join('.')],
      ['header not UTF-8', [base64url.encode(Buffer.from([0x7b, 0xff, 0x7d])), k, iv, ct, tag].join('.')],
    ];
    for (const [why, body] of shape) {
      const res = await rawPost(s.server.url, body);
      assert.equal(res.status, 400, why);
      assert.equal(res.body, '{"error":"bad_request"}', why);
    }
    const auth: [string, string][] = [
      ['alg none', withHeader(good, hdr({ alg: 'none' }))],
      ['alg dir', withHeader(good, hdr({ alg: 'dir' }))],
      ['enc A128GCM', withHeader(good, hdr({ enc: 'A128GCM' }))],
      ['unknown kid', withHeader(good, hdr({ kid: 'nope' }))],
      ['kid __proto__', withHeader(good, hdr({ kid: '__proto__' }))],
      ['kid constructor', withHeader(good, hdr({ kid: 'constructor' }))],
      ['skid __proto__', withHeader(good, hdr({ skid: '__proto__' }))],
      ['skid toString', withHeader(good, hdr({ skid: 'toString' }))],
      ['kid a number', withHeader(good, hdr({ kid: 1 }))],
      ['crit', withHeader(good, hdr({ crit: ['exp'], exp: 1 }))],
      ['zip', withHeader(good, hdr({ zip: 'DEF' }))],
      ['typ/cty changed (header is the AAD)', withHeader(good, hdr({ typ: 'JWT', cty: 'JWT' }))],
      [
        'duplicate alg key',
        withHeader(good, hdr({}).replace('{"alg":"ECDH-ES"', '{"alg":"ECDH-ES","alg":"none"')),
      ],
      [
        'duplicate kid key (last wins)',
        withHeader(
          good,
          hdr({})
            .replace('{"alg"', `{"kid":"${info.kid}","alg"`)
            .replace(`"kid":"${info.kid}","skid"`, '"kid":"x","skid"'),
        ),
      ],
      ['truncated tag', `${h}.${k}.${iv}.${ct}.${tag.slice(0, 10)}`],
      ['no tag', `${h}.${k}.${iv}.${ct}.`],
      ['truncated ciphertext', `${h}.${k}.${iv}.${ct.slice(0, ct.length - 8)}.${tag}`],
      ['empty ciphertext', `${h}.${k}.${iv}..${tag}`],
      ['encrypted key present', `${h}.${base64url.encode('key')}.${iv}.${ct}.${tag}`],
      ['short iv', `${h}.${k}.${iv.slice(0, 4)}.${ct}.${tag}`],
      ['huge ciphertext', `${h}.${k}.${iv}.${'A'.repeat(500000)}.${tag}`],
      [
        'bit flip',
        `${h}.${k}.${iv}.${ct.slice(0, -2)}${ct.at(-2) === 'A' ? 'B' : 'A'}${ct.slice(-1)}.${tag}`,
      ],
      [
        'epk missing',
        withHeader(good, JSON.stringify({ alg: 'ECDH-ES', enc: 'A256GCM', kid: info.kid, skid: c.kid })),
      ],
      ['epk garbage', withHeader(good, hdr({ epk: { kty: 'OKP', crv: 'X25519', x: 'AAAA' } }))],
      ['epk other curve', withHeader(good, hdr({ epk: { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' } }))],
    ];
    const headersSeen = new Set<string>();
    for (const [why, body] of auth) {
      const res = await rawPost(s.server.url, body);
      assert.equal(res.status, 401, why);
      assert.equal(res.body, UNAUTHORIZED, why);
      headersSeen.add([...res.headers.keys()].filter((n) => n !== 'date' && n !== 'x-request-id').join(','));
    }
    assert.equal(headersSeen.size, 1, 'every 401 carries the same headers');
    assert.deepEqual(errorLines(s), [], 'nothing logged as our fault');
    assert.deepEqual(await c.call('ping'), { pong: true });
    // The good request itself was never sent: it still works once.
    const res = await rawPost(s.server.url, good);
    assert.equal(res.status, 200);
  },
);

for (const store of ['memory', 'directory'] as const)
  test(
    `replays (${store} store): the same body twice, concurrent identical bodies (one wins), a fresh outer envelope around a used inner JWS`,
    { timeout: 15000 },
    async () => {
      const s = await start({
        limits: { maxAuthFailuresPerIp: 100000 },
        ...(store === 'directory' ? { replayDir: 'replay' } : {}),
      });
      const c = await s.client('replayer');
      const body = await craft(s, c);
      assert.equal((await rawPost(s.server.url, body)).status, 200);
      assert.equal((await rawPost(s.server.url, body)).status, 401);
      // 20 identical requests at once, ten times: exactly one of each is served.
      for (let round = 0; round < 10; round++) {
        const race = await craft(s, c);
        const statuses = (
          await Promise.all(Array.from({ length: 20 }, () => rawPost(s.server.url, race)))
        ).map((r) => r.status);
        assert.equal(statuses.filter((x) => x === 200).length, 1, `round ${round}: ${statuses.join(',')}`);
        assert.equal(statuses.filter((x) => x === 401).length, 19);
      }
      if (store === 'directory')
        assert.deepEqual(
          readdirSync(join(s.dir, 'replay')).filter((n) => n.startsWith('.')),
          [],
          'no temp entry left',
        );
      // Same signed claims (same jti), freshly encrypted: still a replay.
      const claims = claimsFor(s);
      const { signRaw } = await import('./helpers.ts');
      const jws = signRaw({ alg: 'EdDSA', kid: c.kid }, base64url.encode(JSON.stringify(claims)), c.key);
      assert.equal((await rawPost(s.server.url, await craft(s, c, { jws }))).status, 200);
      assert.equal((await rawPost(s.server.url, await craft(s, c, { jws }))).status, 401);
      // A changed jti needs a new signature: the old signature over changed claims is refused.
      const sig = jws.split('.')[2]!;
      const changed = `${jws.split('.')[0]!}.${base64url.encode(JSON.stringify({ ...claims, jti: base64url.encode(Buffer.alloc(16, 7)) }))}.${sig}`;
      assert.equal((await rawPost(s.server.url, await craft(s, c, { jws: changed }))).status, 401);
      assert.deepEqual(errorLines(s), []);
    },
  );

test(
  'clock edges: iat one second past now+skew and exp one second before now−skew refused; inside accepted',
  { timeout: 15000 },
  async () => {
    const s = await start({ clock: { skewMs: 5000, maxLifetimeMs: 20000 } });
    const c = await s.client('clock');
    const now = Date.now() / 1000;
    const send = async (claims: Record<string, unknown>) =>
      (await rawPost(s.server.url, await craft(s, c, { claims }))).status;
    assert.equal(await send({ iat: now + 6, exp: now + 16 }), 401, 'iat past the skew');
    assert.equal(await send({ iat: now + 3, exp: now + 13 }), 200, 'iat inside the skew');
    // The server started a moment ago, so an old iat is refused for that reason too; exp checks use lifetime.
    assert.equal(await send({ iat: now, exp: now + 20.001 }), 401, 'lifetime one ms too long');
    assert.equal(await send({ iat: now, exp: now + 20 }), 200, 'lifetime exactly the maximum');
    assert.equal(await send({ iat: now, exp: now }), 401, 'exp not after iat');
    assert.equal(await send({ iat: now, exp: now - 1 }), 401, 'exp before iat');
    for (const bad of [Number.MAX_VALUE, -1, '1', null, 1e308])
      assert.equal(await send({ iat: bad, exp: now + 10 }), 401, `iat ${String(bad)}`);
    assert.deepEqual(errorLines(s), []);
  },
);

test(
  'file names outside the allow-list or the managed set: traversal, absolute, NUL, long, lookalikes: 403/404/422, nothing read',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const path = write(dir, 'wg0.conf', `[Interface]\nPrivateKey = ${wgKey(1)}\n`);
    write(dir, 'secret.conf', 'secret\n');
    const s = await start({
      files: { wg0: { path, format: 'wireguard' }, other: { path: join(dir, 'other.json'), format: 'json' } },
    });
    const c = await s.client('narrow', { files: ['wg0'] });
    const names = [
      '../secret.conf',
      '/etc/passwd',
      join(dir, 'secret.conf'),
      'wg0\u0000',
      'wg0/../other',
      'x'.repeat(64),
      'x'.repeat(65),
      'ｗｇ０',
      'wg0\u200b',
      'WG0',
      'wg0 ',
      'other',
      '__proto__',
      '',
      '.',
      '*',
    ];
    for (const file of names) {
      await assert.rejects(c.call('files.read', { file }), (e: unknown) => {
        assert.ok(e instanceof SealedCallError && e.sealed, `${JSON.stringify(file)}: sealed`);
        assert.ok([403, 404, 422].includes(e.status), `${JSON.stringify(file)}: ${e.status}`);
        return true;
      });
    }
    assert.equal(
      (await c.call<{ content: string }>('files.read', { file: 'wg0' })).content.startsWith('[Interface]'),
      true,
    );
    assert.deepEqual(errorLines(s), []);
  },
);

test(
  'many concurrent writes to one file: one wins whole, the rest get 409; backups consistent and bounded',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const path = write(dir, 'data.json', '{"v":0}\n');
    const s = await start({ files: { data: { path, format: 'json', backupsKept: 3 } } });
    const c = await s.client('writer');
    const etag = etagOf('{"v":0}\n');
    const contents = Array.from(
      { length: 16 },
      (_, i) => `{"v":${i + 1},"pad":"${String(i).repeat(20000)}"}\n`,
    );
    const results = await Promise.allSettled(
      contents.map((content) => c.call('files.write', { file: 'data', content, if_match: etag })),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results)
      if (r.status === 'rejected') assert.equal((r.reason as SealedCallError).code, 'SEALED_ETAG_MISMATCH');
    const now = readFileSync(path, 'utf8');
    assert.ok(contents.includes(now), 'the file is one of the writes, whole');
    // Now chained writes, each with the etag it saw: all succeed in some order; backups bounded.
    let current = now;
    for (let round = 0; round < 6; round++) {
      const r = await c.call<{ etag: string }>('files.write', {
        file: 'data',
        content: `{"round":${round}}\n`,
        if_match: etagOf(current),
      });
      current = `{"round":${round}}\n`;
      assert.equal(r.etag, etagOf(current));
    }
    const backups = await c.call<{ id: string; etag: string }[]>('files.backups', { file: 'data' });
    assert.equal(backups.length, 3);
    assert.equal(
      backups[0]!.etag,
      etagOf('{"round":4}\n'),
      'newest backup = the content before the last write',
    );
    assert.deepEqual(
      readdirSync(dir).filter((n) => n !== 'data.json' && n !== 'secret.conf'),
      [],
      'no temp or lock file left next to the file',
    );
  },
);

test(
  'WireGuard updates with hostile peer entries: injected lines, sections, comments, bad or duplicate keys: 422, file unchanged',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const text = `[Interface]\nPrivateKey = ${wgKey(1)}\nAddress = 10.0.0.1/24\n\n[Peer]\nPublicKey = ${wgKey(2)}\nAllowedIPs = 10.0.0.2/32\n`;
    const path = write(dir, 'wg0.conf', text);
    const s = await start({ files: { wg0: { path, format: 'wireguard' } } });
    const c = await s.client('wg');
    const peer = wgKey(3);
    const hostile: unknown[] = [
      [{ op: 'peer.upsert', publicKey: peer, set: { AllowedIPs: '10.0.0.3/32\n[Interface]\nPostUp = id' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { AllowedIPs: '10.0.0.3/32\r\nPostUp = id' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { Endpoint: 'h:1 # comment' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { PostUp: 'id' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { 'AllowedIPs = 1.2.3.4/32\nX': '1' } }],
      [{ op: 'peer.upsert', publicKey: `${peer}\n[Interface]`, set: { AllowedIPs: '10.0.0.3/32' } }],
      [{ op: 'peer.upsert', publicKey: 'not base64!', set: { AllowedIPs: '10.0.0.3/32' } }],
      [{ op: 'peer.upsert', publicKey: peer.replace('=', ''), set: { AllowedIPs: '10.0.0.3/32' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { AllowedIPs: '10.0.0.2/32' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { PublicKey: wgKey(2) } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { AllowedIPs: ['10.0.0.3/32', '10.0.0.3/32'] } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { AllowedIPs: '10.0.0.3/32', allowedips: '10.0.0.4/32' } }],
    [{ op: 'interface.set', set: { ListenPort: '51820', LISTENPORT: '51821' } }],
    [{ op: 'interface.set', set: { PrivateKey: 'x\n[Peer]' } }],
      [{ op: 'interface.set', set: { SaveConfig: 'true' } }],
      [{ op: 'interface.set', set: { ListenPort: '99999' } }],
      [{ op: 'peer.upsert', publicKey: peer, set: { AllowedIPs: '10.0.0.3/32\u00a0' } }],
      [{ op: 'peer.remove', publicKey: { toString: 1 } }],
      [{ op: '__proto__' }],
      'not a list',
      [],
    ];
    for (const ops of hostile) {
      await assert.rejects(
        c.call('files.update', { file: 'wg0', ops, if_match: etagOf(text) }),
        (e: unknown) => {
          assert.ok(e instanceof SealedCallError && e.sealed, JSON.stringify(ops));
          assert.ok([403, 422].includes(e.status), `${JSON.stringify(ops)}: ${e.status} ${e.code}`);
          return true;
        },
      );
      assert.equal(readFileSync(path, 'utf8'), text, JSON.stringify(ops));
    }
    assert.deepEqual(errorLines(s), []);
  },
);

// ---- managed paths that are not regular files ---------------------------------------------------------

const fifos: string[] = [];
after(() => {
  // Unblocks any reader still waiting on a FIFO (before the fix, readFile blocked a pool thread for ever).
  for (const p of fifos) {
    try {
      closeSync(openSync(p, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {
      // no reader left
    }
  }
});

test(
  'a managed path that is a directory, a FIFO or a device: read and write get a coded sealed 500 at once, nothing logged at error for reads, the server keeps serving',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'adir'));
    execFileSync('mkfifo', [join(dir, 'fifo.conf')]);
    fifos.push(join(dir, 'fifo.conf'));
    symlinkSync('/dev/zero', join(dir, 'zero.json'));
    const s = await start({
      files: {
        adir: { path: join(dir, 'adir'), format: 'ini' },
        fifo: { path: join(dir, 'fifo.conf'), format: 'ini' },
        zero: { path: join(dir, 'zero.json'), format: 'json' },
      },
      timeouts: { actionMs: 4000 },
    });
    const c = await s.client('probe');
    for (const file of process.env.AUDIT_PREFIX === '1'
      ? ['adir', 'fifo']
      : process.env.AUDIT_PREFIX === '2'
        ? ['fifo']
        : ['adir', 'fifo', 'zero']) {
      for (const [act, args] of [
        ['files.read', { file }],
        ['files.write', { file, content: 'a = 1\n', if_match: ABSENT_ETAG }],
      ] as const) {
        await assert.rejects(c.call(act, args), (e: unknown) => {
          assert.ok(e instanceof SealedCallError && e.sealed, `${file} ${act}`);
          assert.equal(`${e.status} ${e.code}`, '500 SEALED_FILE_IO_FAILED', `${file} ${act}: ${e.message}`);
          assert.match(e.message, /not a regular file/, `${file} ${act}`);
          return true;
        });
      }
    }
    assert.ok(readdirSync(join(dir, 'adir')).length === 0, 'nothing written into the directory');
    assert.deepEqual(await c.call('ping'), { pong: true });
    assert.deepEqual(errorLines(s), []);
  },
);

test(
  'a lock path holding something we never write (a FIFO, a dangling symlink, a symlink to a device): taken over after the 1 s grace, the write goes through, the next write too',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const text = '{"a":1}\n';
    const files: Record<string, unknown> = {};
    for (const kind of ['fifo', 'dangling', 'device']) {
      write(dir, `${kind}.json`, text);
      files[kind] = { path: join(dir, `${kind}.json`), format: 'json' };
    }
    execFileSync('mkfifo', [join(dir, '.fifo.json.gh-lock')]);
    fifos.push(join(dir, '.fifo.json.gh-lock'));
    symlinkSync(join(dir, 'nowhere'), join(dir, '.dangling.json.gh-lock'));
    symlinkSync('/dev/zero', join(dir, '.device.json.gh-lock'));
    const s = await start({ files, timeouts: { actionMs: 5000, fileLockMs: 3000 } });
    const c = await s.client('locker');
    await Promise.all(
      ['fifo', 'dangling', 'device'].map(async (file) => {
        const r = await c.call<{ etag: string }>('files.write', {
          file,
          content: '{"a":2}\n',
          if_match: etagOf(text),
        });
        assert.equal(readFileSync(join(dir, `${file}.json`), 'utf8'), '{"a":2}\n', file);
        await c.call('files.write', { file, content: '{"a":3}\n', if_match: r.etag });
      }),
    );
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes('gh-')),
      [],
      'nothing left next to the files',
    );
    assert.deepEqual(errorLines(s), []);
  },
);

test(
  'a custom module whose result cannot be serialised (BigInt, a cycle, a throwing toJSON): a sealed 500, not an unsealed one',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const mod = write(
      dir,
      'bad-result.mjs',
      `export default { run(args) {
      if (args.mode === 'bigint') return { n: 10n ** 30n };
      if (args.mode === 'cycle') { const o = {}; o.self = o; return o; }
      if (args.mode === 'tojson') return { toJSON() { throw new Error('boom ' + String(args.secret)); } };
      return { echoed: args };
    } };\n`,
    );
    const s = await start({ modules: { bad: { file: mod } } });
    const c = await s.client('modder');
    for (const mode of ['bigint', 'cycle', 'tojson']) {
      await assert.rejects(c.call('bad', { mode, secret: 's3cr3t' }), (e: unknown) => {
        assert.ok(e instanceof SealedCallError, String(e));
        assert.equal(
          `${e.sealed} ${e.status} ${e.code}`,
          'true 500 SEALED_ACTION_FAILED',
          `${mode}: ${e.message}`,
        );
        assert.doesNotMatch(e.message, /s3cr3t|boom/);
        return true;
      });
    }
    // Hostile params to a module without a schema: an own `__proto__` key is dropped (never made the args'
    // prototype), `constructor` stays data.
    const params = JSON.parse(
      '{"mode":"echo","__proto__":{"polluted":1},"constructor":{"prototype":{"x":1}}}',
    ) as Record<string, unknown>;
    const r = await c.call<{ echoed: Record<string, unknown> }>('bad', params);
    assert.deepEqual(r.echoed, { mode: 'echo', constructor: { prototype: { x: 1 } } });
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.deepEqual(await c.call('ping'), { pong: true });
  },
);

test(
  'a managed file that is not valid UTF-8 (Latin-1 bytes): its backup keeps the exact bytes, restore brings them back, an update is refused (422) instead of rewriting bytes it does not edit',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const original = Buffer.from('# caf\xe9\n[s]\nname = Andr\xe9\n', 'latin1');
    const path = join(dir, 'app.ini');
    writeFileSync(path, original);
    const s = await start({ files: { app: { path, format: 'ini' } } });
    const c = await s.client('bytes');
    const read = await c.call<{ etag: string }>('files.read', { file: 'app' });
    await assert.rejects(
      c.call('files.update', {
        file: 'app',
        ops: [{ op: 'set', section: 's', key: 'k', value: 'v' }],
        if_match: read.etag,
      }),
      (e: unknown) => {
        assert.ok(e instanceof SealedCallError && e.sealed);
        assert.equal(`${e.status} ${e.code}`, '422 SEALED_INVALID_CONTENT', e.message);
        return true;
      },
    );
    assert.deepEqual(readFileSync(path), original, 'the refused update left the bytes alone');
    const w = await c.call<{ etag: string; backup: string }>('files.write', {
      file: 'app',
      content: '[s]\nname = new\n',
      if_match: read.etag,
    });
    const backupFile = readdirSync(join(s.dir, 'state', 'backups', 'app')).find((n) =>
      n.startsWith(w.backup),
    );
    assert.ok(backupFile !== undefined);
    assert.deepEqual(
      readFileSync(join(s.dir, 'state', 'backups', 'app', backupFile)),
      original,
      'the backup holds the exact bytes',
    );
    const listed = await c.call<{ id: string }[]>('files.backups', { file: 'app' });
    assert.equal(listed[0]?.id, w.backup);
    await c.call('files.restore', { file: 'app', backup: w.backup, if_match: w.etag });
    assert.deepEqual(readFileSync(path), original, 'restore brings back the exact bytes');
  },
);

test(
  'INI set with a key that reads back as a comment (; or # first): 422, file unchanged (it was written as a comment line, once more per call)',
  { timeout: 15000 },
  async () => {
    const dir = tempDir();
    const text = '[s]\nk = v\n';
    const path = write(dir, 'app.ini', text);
    const s = await start({ files: { app: { path, format: 'ini' } } });
    const c = await s.client('ini');
    for (const key of [';c', '#c', ' ;c']) {
      await assert.rejects(
        c.call('files.update', {
          file: 'app',
          ops: [{ op: 'set', section: 's', key, value: 'v' }],
          if_match: etagOf(text),
        }),
        (e: unknown) => {
          assert.ok(e instanceof SealedCallError && e.sealed, key);
          assert.equal(`${e.status} ${e.code}`, '422 SEALED_INVALID_CONTENT', `${key}: ${e.message}`);
          return true;
        },
      );
      assert.equal(readFileSync(path, 'utf8'), text, key);
    }
    // Such characters later in a key are data.
    await c.call('files.update', {
      file: 'app',
      ops: [{ op: 'set', section: 's', key: 'a;b#c', value: 'v' }],
      if_match: etagOf(text),
    });
    assert.equal(readFileSync(path, 'utf8'), '[s]\nk = v\na;b#c = v\n');
  },
);
