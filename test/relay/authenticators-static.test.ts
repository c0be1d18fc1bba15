// The static (token file) authenticator, called directly against real files; and `gatehouse tokens hash`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync, renameSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, deadline, captureLog as capture } from '../helpers/relay.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import {
  createStaticAuthenticator,
  hashToken,
  lookupToken,
  indexTokens,
  parseTokenFile,
  TOKEN_FILE_MAX_BYTES,
  type StaticAuthenticator,
} from '../../src/relay/authenticators/static.ts';
import type { AuthRequest } from '../../src/relay/authenticators/types.ts';


const req = (token: string): AuthRequest => ({
  token,
  uuid: 'u',
  name: 'n',
  nonce: '',
  remoteAddress: '127.0.0.1',
});
const signal = () => new AbortController().signal;

async function waitUntil(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 8000,
): Promise<void> {
  await deadline(
    (async () => {
      while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
    })(),
    timeoutMs,
    what,
  );
}

test('hashToken gives sha256:<hex of SHA-256> and an optional user; the line parses back', () => {
  const hex = createHash('sha256').update('s3cret').digest('hex');
  assert.equal(hashToken('s3cret'), `sha256:${hex}`);
  assert.equal(hashToken('s3cret', 'alice'), `sha256:${hex} alice`);
  const entries = parseTokenFile(`${hashToken('s3cret', 'alice')}\n`, 'f');
  assert.equal(entries.length, 1);
  assert.equal(lookupToken(indexTokens(entries), 's3cret')?.user, 'alice');
  assert.equal(lookupToken(indexTokens(entries), 's3cret '), undefined);
  assert.throws(() => hashToken(''), /empty/);
  assert.throws(() => hashToken('x', 'two words'), /whitespace/);
  assert.throws(() => hashToken('x', '#hash'), /#/);
  assert.throws(() => hashToken('x', 'u'.repeat(257)), /longer than 256/);
  assert.doesNotThrow(() => hashToken('x', 'u'.repeat(256)));
});

test('token file: comments, blank lines, CRLF, trailing comments, upper-case hex; user optional', () => {
  const a = hashToken('tok-a');
  const b = hashToken('tok-b').toUpperCase().replace('SHA256:', 'sha256:');
  const text = [
    '# tokens',
    '',
    `   ${a} alice   # laptop`,
    '\t',
    `${b}\r`,
    '#sha256:zz',
    `${hashToken('tok-c')} carol#1`,
  ].join('\n');
  const entries = parseTokenFile(text, 'tokens.txt');
  assert.deepEqual(
    entries.map((e) => [e.line, e.user]),
    [
      [3, 'alice'],
      [5, undefined],
      [7, 'carol#1'],
    ],
  );
  assert.equal(lookupToken(indexTokens(entries), 'tok-a')?.user, 'alice');
  assert.equal(lookupToken(indexTokens(entries), 'tok-b')?.line, 5);
  assert.equal(lookupToken(indexTokens(entries), 'tok-c')?.user, 'carol#1');
  assert.equal(lookupToken(indexTokens(entries), 'tok-d'), undefined);
  assert.deepEqual(parseTokenFile('', 'empty'), []);
});

test('malformed lines are all reported with their line numbers', () => {
  const good = hashToken('ok');
  const text = [
    good, // 1
    'sha256:abc', // 2: short hash
    `${hashToken('x')} alice extra`, // 3: two words after the hash
    'plaintext-token', // 4
    `${good} again`, // 5: duplicate of line 1
    `sha1:${'a'.repeat(64)}`, // 6
    `${hashToken('y')} ${'u'.repeat(257)}`, // 7: user too long
  ].join('\n');
  try {
    parseTokenFile(text, '/etc/tokens');
    assert.fail('expected an error');
  } catch (err) {
    assert.ok(isGatewayError(err, 'RELAY_TOKEN_FILE_INVALID'));
    assert.match(err.message, /^\/etc\/tokens: invalid token file:/);
    for (const n of [2, 3, 4, 6, 7]) assert.match(err.message, new RegExp(`line ${n}: `));
    assert.match(err.message, /line 5: same token hash as line 1/);
    assert.doesNotMatch(err.message, /line 1:/);
  }
});

test('authenticate(): NoError with the user, AuthenticationFailed otherwise; relative path against baseDir', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'tokens'), `${hashToken('tok-1', 'alice')}\n${hashToken('tok-2')}\n`);
  const c = capture();
  const auth = await createStaticAuthenticator(
    { kind: 'static', file: 'tokens', reloadCheckMs: 1000 },
    { log: c.log, baseDir: dir },
  );
  try {
    assert.equal(auth.kind, 'static');
    assert.equal(auth.size, 2);
    assert.deepEqual(await auth.authenticate(req('tok-1'), signal()), {
      error: 'AuthenticationErrorNoError',
      user: 'alice',
    });
    assert.deepEqual(await auth.authenticate(req('tok-2'), signal()), {
      error: 'AuthenticationErrorNoError',
    });
    assert.deepEqual(await auth.authenticate(req('tok-3'), signal()), {
      error: 'AuthenticationErrorAuthenticationFailed',
    });
    assert.deepEqual(await auth.authenticate(req(''), signal()), {
      error: 'AuthenticationErrorAuthenticationFailed',
    });
  } finally {
    await auth.close();
  }
  assert.ok(!c.text().includes('tok-1'));
});

test('start-up fails on a malformed file (line named), a missing file, and a file one byte over 8 MiB', async () => {
  const dir = tempDir();
  const log = capture().log;
  writeFileSync(join(dir, 'bad'), `# ok\n${hashToken('a')}\nnot-a-hash\n`);
  await assert.rejects(
    createStaticAuthenticator(
      { kind: 'static', file: join(dir, 'bad'), reloadCheckMs: 1000 },
      { log, baseDir: '/' },
    ),
    (err: unknown) => {
      assert.ok(isGatewayError(err, 'RELAY_TOKEN_FILE_INVALID'));
      assert.match(err.message, /line 3: expected sha256:<64 hex digits>/);
      return true;
    },
  );
  await assert.rejects(
    createStaticAuthenticator(
      { kind: 'static', file: join(dir, 'missing'), reloadCheckMs: 1000 },
      { log, baseDir: '/' },
    ),
    (err: unknown) => {
      assert.ok(isGatewayError(err, 'RELAY_TOKEN_FILE_INVALID'));
      assert.match(err.message, /ENOENT/);
      return true;
    },
  );
  // Exactly at the limit: one entry padded with a comment line.
  const line = `${hashToken('big', 'bob')}\n`;
  const atLimit = line + `#${'x'.repeat(TOKEN_FILE_MAX_BYTES - line.length - 1)}`;
  assert.equal(Buffer.byteLength(atLimit), TOKEN_FILE_MAX_BYTES);
  writeFileSync(join(dir, 'big'), atLimit);
  const ok = await createStaticAuthenticator(
    { kind: 'static', file: join(dir, 'big'), reloadCheckMs: 1000 },
    { log, baseDir: '/' },
  );
  assert.deepEqual(await ok.authenticate(req('big'), signal()), {
    error: 'AuthenticationErrorNoError',
    user: 'bob',
  });
  await ok.close();
  writeFileSync(join(dir, 'big'), `${atLimit}x`);
  await assert.rejects(
    createStaticAuthenticator(
      { kind: 'static', file: join(dir, 'big'), reloadCheckMs: 1000 },
      { log, baseDir: '/' },
    ),
    (err: unknown) => {
      assert.ok(isGatewayError(err, 'RELAY_TOKEN_FILE_TOO_LARGE'));
      return true;
    },
  );
});

test('reload: an edited file takes effect without restart; a broken or missing file keeps the old table with a warning', async () => {
  const dir = tempDir();
  const file = join(dir, 'tokens');
  writeFileSync(file, `${hashToken('old', 'olga')}\n`);
  const c = capture();
  const auth: StaticAuthenticator = await createStaticAuthenticator(
    { kind: 'static', file, reloadCheckMs: 100 },
    { log: c.log, baseDir: dir },
  );
  try {
    const reloaded = () => c.records().filter((r) => r.msg === 'token file reloaded').length;
    const warned = () =>
      c.records().filter((r) => r.msg === 'token file not reloaded; keeping the previous table').length;

    // In-place edit.
    writeFileSync(file, `${hashToken('old', 'olga')}\n${hashToken('new', 'nina')}\n`);
    await waitUntil(
      'reload after in-place edit',
      async () => (await auth.authenticate(req('new'), signal())).error === 'AuthenticationErrorNoError',
    );
    assert.deepEqual(await auth.authenticate(req('new'), signal()), {
      error: 'AuthenticationErrorNoError',
      user: 'nina',
    });
    assert.ok(reloaded() >= 1);

    // Atomic replace (editors, mv): a new inode.
    writeFileSync(join(dir, 'tokens.tmp'), `${hashToken('newer')}\n`);
    renameSync(join(dir, 'tokens.tmp'), file);
    await waitUntil(
      'reload after rename',
      async () => (await auth.authenticate(req('newer'), signal())).error === 'AuthenticationErrorNoError',
    );
    assert.deepEqual(await auth.authenticate(req('newer'), signal()), {
      error: 'AuthenticationErrorNoError',
    });
    assert.deepEqual(await auth.authenticate(req('old'), signal()), {
      error: 'AuthenticationErrorAuthenticationFailed',
    });

    // Broken file: old table stays, one warning naming the line.
    writeFileSync(file, `${hashToken('evil')}\n\nsha256:nothex\n`);
    await waitUntil('warning for a broken file', () => warned() >= 1);
    const warning = c.records().find((r) => r.msg === 'token file not reloaded; keeping the previous table')!;
    assert.equal(warning.level, 'warn');
    assert.equal(warning.code, 'RELAY_TOKEN_FILE_INVALID');
    assert.match(String(warning.reason), /line 3/);
    assert.deepEqual(await auth.authenticate(req('newer'), signal()), {
      error: 'AuthenticationErrorNoError',
    });
    assert.deepEqual(await auth.authenticate(req('evil'), signal()), {
      error: 'AuthenticationErrorAuthenticationFailed',
    });
    // The poll sees nothing new: no repeated warnings for the same broken content.
    const warnings = warned();
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(warned(), warnings);

    // Truncated to empty is a valid (empty) table: every token is refused.
    truncateSync(file, 0);
    await waitUntil('reload of an empty file', () => auth.size === 0);
    assert.equal(auth.size, 0);

    // Fixed again.
    writeFileSync(file, `${hashToken('fixed', 'fred')}\n`);
    await waitUntil('reload after fix', () => auth.size === 1);
    assert.deepEqual(await auth.authenticate(req('fixed'), signal()), {
      error: 'AuthenticationErrorNoError',
      user: 'fred',
    });
  } finally {
    await auth.close();
  }
  // After close nothing watches the file any more.
  const before = c.records().length;
  writeFileSync(file, `${hashToken('after-close')}\n`);
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(c.records().length, before);
  assert.deepEqual(await auth.authenticate(req('after-close'), signal()), {
    error: 'AuthenticationErrorAuthenticationFailed',
  });
});

test('reload without fs.watch: the stat poll alone picks up a change', async () => {
  const dir = tempDir();
  const file = join(dir, 'tokens');
  writeFileSync(file, `${hashToken('one')}\n`);
  const auth = await createStaticAuthenticator(
    { kind: 'static', file, reloadCheckMs: 50 },
    { log: capture().log, baseDir: dir },
    { watch: false },
  );
  try {
    writeFileSync(file, `${hashToken('two', 'tom')}\n`);
    await waitUntil(
      'poll reload',
      async () => (await auth.authenticate(req('two'), signal())).error === 'AuthenticationErrorNoError',
    );
    assert.deepEqual(await auth.authenticate(req('one'), signal()), {
      error: 'AuthenticationErrorAuthenticationFailed',
    });
  } finally {
    await auth.close();
  }
});

test('lookup compares against every entry (no early exit) and finds any position', () => {
  const tokens = Array.from({ length: 50 }, (_, i) => `t${i}`);
  const entries = parseTokenFile(tokens.map((t, i) => hashToken(t, `u${i}`)).join('\n'), 'f');
  for (const i of [0, 25, 49]) assert.equal(lookupToken(indexTokens(entries), `t${i}`)?.user, `u${i}`);
  assert.equal(lookupToken(indexTokens(entries), 't50'), undefined);
});

test('gatehouse tokens hash: prints the line; "-" reads the token from stdin; a bad user exits 64', () => {
  const bin = new URL('../../bin/gatehouse.js', import.meta.url).pathname;
  const hex = createHash('sha256').update('pa ss').digest('hex');
  const r1 = spawnSync(process.execPath, [bin, 'tokens', 'hash', 'pa ss', '--user', 'alice'], {
    encoding: 'utf8',
    timeout: 30000,
  });
  assert.equal(r1.status, 0, r1.stderr);
  assert.equal(r1.stdout, `sha256:${hex} alice\n`);
  const r2 = spawnSync(process.execPath, [bin, 'tokens', 'hash', '-'], {
    input: 'pa ss\n',
    encoding: 'utf8',
    timeout: 30000,
  });
  assert.equal(r2.status, 0, r2.stderr);
  assert.equal(r2.stdout, `sha256:${hex}\n`);
  const r3 = spawnSync(process.execPath, [bin, 'tokens', 'hash', 'x', '--user', 'two words'], {
    encoding: 'utf8',
    timeout: 30000,
  });
  assert.equal(r3.status, 64);
  assert.equal(r3.stdout, '');
  assert.match(r3.stderr, /invalid user name: contains whitespace/);
});
