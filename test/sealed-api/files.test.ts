/**
 * Managed files through the API: ETags, backups (rotation, 0700/0600, outside the managed folder),
 * restore, symlinks and modes kept, the post-write command as an argv without a shell, one writer per
 * file, and the INI / TOML / YAML / JSON formats (comments and indentation kept where promised).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  chownSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  chmodSync,
  readlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { applyIniOps } from '../../src/sealed-api/formats/ini.ts';
import { applyJsonOps, applyTomlOps, applyYamlOps, validateYaml } from '../../src/sealed-api/formats/structured.ts';
import { formatOf, FormatError } from '../../src/sealed-api/formats/index.ts';
import { spawnSealed, startSealed, tempDir, wgKey, write, type StartedSealed, trackedStart } from './helpers.ts';

const start = trackedStart();
import { createHash } from 'node:crypto';

const started: StartedSealed[] = [];
after(async () => {
  for (const s of started) await s.close();
});

const WG = `[Interface]\nPrivateKey = ${wgKey(1)}\nAddress = 10.0.0.1/24\n`;

async function setup(files: Record<string, Record<string, unknown>>, prepare?: (etc: string) => void) {
  const dir = tempDir();
  const etc = join(dir, 'etc');
  mkdirSync(etc);
  prepare?.(etc);
  const s = await startSealed({ files, backupDir: 'backups' }, { dir });
  started.push(s);
  return { s, dir, etc, c: await s.client('admin') };
}

type Read = { content: string; etag: string; format: string; exists: boolean };
type Written = {
  etag: string;
  backup: string | null;
  postWrite: { ok: boolean; exitCode: number | null } | null;
};

test('ETags: absent file, create with if_match "absent", stale writes (replayed or concurrent) get 409', async () => {
  const { c, etc } = await setup({ wg0: { path: 'etc/wg0.conf', format: 'wireguard' } });
  const r0 = await c.call<Read>('files.read', { file: 'wg0' });
  assert.deepEqual(r0, { content: '', etag: '"absent"', format: 'wireguard', exists: false });
  const w1 = await c.call<Written>('files.write', { file: 'wg0', content: WG, if_match: '"absent"' });
  assert.equal(w1.backup, null, 'nothing to back up');
  assert.equal(readFileSync(join(etc, 'wg0.conf'), 'utf8'), WG);
  assert.equal(statSync(join(etc, 'wg0.conf')).mode & 0o777, 0o600, 'new files are 0600');
  await assert.rejects(
    c.call('files.write', { file: 'wg0', content: WG, if_match: '"absent"' }),
    (e: unknown) => e instanceof SealedCallError && e.status === 409,
  );
  // Two concurrent writers with the same ETag: exactly one wins.
  const next = (n: number) => `${WG}ListenPort = ${51820 + n}\n`;
  const results = await Promise.allSettled(
    [1, 2, 3, 4].map((n) =>
      c.call<Written>('files.write', { file: 'wg0', content: next(n), if_match: w1.etag }),
    ),
  );
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results)
    if (r.status === 'rejected') assert.equal((r.reason as SealedCallError).status, 409);
});

test('backups: one per modification, rotated to backupsKept, 0700 folder / 0600 files outside the managed folder; restore', async () => {
  const { c, etc, dir } = await setup(
    { wg0: { path: 'etc/wg0.conf', format: 'wireguard', backupsKept: 3 } },
    (e) => write(e, 'wg0.conf', WG),
  );
  let etag = (await c.call<Read>('files.read', { file: 'wg0' })).etag;
  const versions = [WG];
  for (let n = 1; n <= 5; n++) {
    const content = `${WG}ListenPort = ${51820 + n}\n`;
    const w = await c.call<Written>('files.write', { file: 'wg0', content, if_match: etag });
    assert.ok(w.backup !== null);
    etag = w.etag;
    versions.push(content);
  }
  const list = await c.call<{ id: string; etag: string }[]>('files.backups', { file: 'wg0' });
  assert.equal(list.length, 3);
  const folder = join(dir, 'backups', 'wg0');
  assert.equal(statSync(join(dir, 'backups')).mode & 0o777, 0o700);
  assert.equal(statSync(folder).mode & 0o777, 0o700);
  for (const f of readdirSync(folder)) assert.equal(statSync(join(folder, f)).mode & 0o777, 0o600);
  assert.equal(readdirSync(etc).length, 1, 'nothing but the managed file in its folder');
  // Newest backup = the version before the current one.
  const newest = readdirSync(folder).find((n) => n.startsWith(`${list[0]!.id}.`))!;
  assert.equal(readFileSync(join(folder, newest), 'utf8'), versions[4]);
  const restored = await c.call<Written>('files.restore', {
    file: 'wg0',
    backup: list[2]!.id,
    if_match: etag,
  });
  assert.equal(readFileSync(join(etc, 'wg0.conf'), 'utf8'), versions[2]);
  assert.ok(restored.backup !== null, 'the current content is backed up before a restore');
  await assert.rejects(
    c.call('files.restore', { file: 'wg0', backup: '../../etc/wg0.conf', if_match: restored.etag }),
    (e: unknown) => e instanceof SealedCallError && e.status === 404,
  );
});

test('symlinks and modes are kept; the post-write command runs as an argv without a shell', async () => {
  const dir = tempDir();
  const marker = join(dir, 'marker.txt');
  const { c, etc } = await setup(
    {
      wg0: {
        path: 'etc/wg0.conf',
        format: 'wireguard',
        postWrite: [
          process.execPath,
          '-e',
          "require('fs').writeFileSync(process.argv[1], process.argv[2])",
          marker,
          '$(touch pwned); echo `id`',
        ],
      },
      bad: { path: 'etc/bad.json', format: 'json', postWrite: [process.execPath, '-e', 'process.exit(3)'] },
    },
    (e) => {
      mkdirSync(join(e, 'real'));
      write(join(e, 'real'), 'wg0.conf', WG);
      chmodSync(join(e, 'real', 'wg0.conf'), 0o640);
      if (process.getuid?.() === 0) chownSync(join(e, 'real', 'wg0.conf'), 4321, 4322);
      symlinkSync('real/wg0.conf', join(e, 'wg0.conf'));
      write(e, 'bad.json', '{}\n');
    },
  );
  const r = await c.call<Read>('files.read', { file: 'wg0' });
  const w = await c.call<Written>('files.write', {
    file: 'wg0',
    content: `${WG}MTU = 1420\n`,
    if_match: r.etag,
  });
  assert.deepEqual(w.postWrite, { ok: true, exitCode: 0 });
  assert.ok(lstatSync(join(etc, 'wg0.conf')).isSymbolicLink(), 'the link is still a link');
  assert.equal(readlinkSync(join(etc, 'wg0.conf')), 'real/wg0.conf');
  assert.equal(readFileSync(join(etc, 'real', 'wg0.conf'), 'utf8'), `${WG}MTU = 1420\n`);
  assert.equal(statSync(join(etc, 'real', 'wg0.conf')).mode & 0o777, 0o640, 'mode kept');
  if (process.getuid?.() === 0) {
    assert.equal(statSync(join(etc, 'real', 'wg0.conf')).uid, 4321, 'owner kept (running as root)');
    assert.equal(statSync(join(etc, 'real', 'wg0.conf')).gid, 4322);
  }
  assert.equal(
    readFileSync(marker, 'utf8'),
    '$(touch pwned); echo `id`',
    'arguments reach the command literally',
  );
  const b = await c.call<Read>('files.read', { file: 'bad' });
  const wb = await c.call<Written>('files.write', { file: 'bad', content: '{"a":1}\n', if_match: b.etag });
  assert.deepEqual(wb.postWrite, { ok: false, exitCode: 3 }, 'a failed hook is reported, the write stands');
  assert.equal(readFileSync(join(etc, 'bad.json'), 'utf8'), '{"a":1}\n');
});

test('file size limit: content one byte past maxFileBytes is refused (413 sealed)', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  const s = await startSealed(
    { files: { j: { path: 'etc/j.json', format: 'json' } }, limits: { maxFileBytes: 64 } },
    { dir },
  );
  started.push(s);
  const c = await s.client('admin');
  const fits = `"${'a'.repeat(62)}"`;
  const w = await c.call<Written>('files.write', { file: 'j', content: fits, if_match: '"absent"' });
  await assert.rejects(
    c.call('files.write', { file: 'j', content: `"${'a'.repeat(63)}"`, if_match: w.etag }),
    (e: unknown) => e instanceof SealedCallError && e.status === 413 && e.code === 'SEALED_LIMIT_FILE',
  );
});

const INI = `; global comment
name = demo ; not a comment in values
[server]
# port
port = 8080
host=0.0.0.0

[client]
retries: 3
`;

test('INI: round trip, set existing/new key and section, delete key and section; comments kept', () => {
  formatOf('ini').validate(INI);
  assert.equal(
    applyIniOps(INI, [
      { op: 'set', section: 'server', key: 'port', value: '9090' },
      { op: 'set', section: 'server', key: 'tls', value: 'on' },
      { op: 'set', section: '', key: 'name', value: 'prod ; still value' },
      { op: 'set', section: 'extra', key: 'k', value: 'v' },
      { op: 'delete', section: 'client' },
      { op: 'delete', section: 'server', key: 'host' },
    ]),
    `; global comment\nname = prod ; still value\n[server]\n# port\nport = 9090\ntls = on\n\n[extra]\nk = v\n`,
  );
  assert.throws(() => formatOf('ini').validate('[a]\njust words\n'), /neither/);
});

test('JSON: indentation (spaces, tabs) and the final newline are kept', () => {
  assert.equal(
    applyJsonOps('{\n    "a": 1,\n    "b": {"c": 2}\n}\n', [{ op: 'set', path: ['b', 'd'], value: [1] }]),
    '{\n    "a": 1,\n    "b": {\n        "c": 2,\n        "d": [\n            1\n        ]\n    }\n}\n',
  );
  assert.equal(applyJsonOps('{\n\t"a": 1\n}', [{ op: 'delete', path: ['a'] }]), '{}');
  assert.equal(applyJsonOps('{"a":1}', [{ op: 'set', path: ['a'], value: 2 }]), '{"a":2}');
  assert.throws(
    () => applyJsonOps('{"a":1}', [{ op: 'set', path: ['__proto__', 'x'], value: 1 }]),
    /not allowed/,
  );
});

test('YAML: comments and layout of untouched nodes kept', () => {
  const y =
    '# top comment\nserver:\n  port: 8080 # the port\n  # hosts follow\n  hosts:\n    - a # first\n    - b\nother: 1 # tail\n';
  assert.equal(
    applyYamlOps(y, [{ op: 'set', path: ['server', 'port'], value: 9090 }]),
    y.replace('8080', '9090'),
  );
  assert.equal(applyYamlOps(y, [{ op: 'delete', path: ['server', 'hosts', 1] }]), y.replace('    - b\n', ''));
  assert.throws(() => applyYamlOps(y, [{ op: 'delete', path: ['nope'] }]), /does not exist/);
  assert.throws(() => formatOf('yaml').validate('a: [1\n'), /not valid YAML/);
});

test('TOML: set and delete by path; the result is valid TOML', () => {
  const t = '[server]\nport = 8080\nhost = "0.0.0.0"\n';
  assert.equal(
    applyTomlOps(t, [
      { op: 'set', path: ['server', 'port'], value: 9090 },
      { op: 'delete', path: ['server', 'host'] },
    ]),
    '[server]\nport = 9090\n',
  );
  assert.throws(() => formatOf('toml').validate('a = = 1'), /not valid TOML/);
});

test('formats through the API: files.update on YAML keeps comments on disk', async () => {
  const y = '# keep me\nkey: value # and me\n';
  const { c, etc } = await setup({ conf: { path: 'etc/app.yaml', format: 'yaml' } }, (e) =>
    write(e, 'app.yaml', y),
  );
  const r = await c.call<Read>('files.read', { file: 'conf' });
  await c.call('files.update', {
    file: 'conf',
    if_match: r.etag,
    ops: [{ op: 'set', path: ['key'], value: 'other' }],
  });
  assert.equal(readFileSync(join(etc, 'app.yaml'), 'utf8'), '# keep me\nkey: other # and me\n');
});

/** Starts the lock-holder fixture on `path`; resolves once it holds the lock. */
function holdLock(path: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', new URL('./fixtures/locker.ts', import.meta.url).pathname, path],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('locker never took the lock'));
    }, 20000);
    child.stdout.once('data', () => {
      clearTimeout(deadline);
      resolve(child);
    });
    child.once('exit', () => {
      clearTimeout(deadline);
      reject(new Error('locker exited'));
    });
  });
}

test('cross-process writer lock: a live holder makes the write wait then fail (503); killed with SIGKILL, its lock is taken over', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  write(join(dir, 'etc'), 'j.json', '{}\n');
  const s = await startSealed(
    { files: { j: { path: 'etc/j.json', format: 'json' } }, timeouts: { fileLockMs: 1500 } },
    { dir },
  );
  started.push(s);
  const c = await s.client('admin');
  const r = await c.call<Read>('files.read', { file: 'j' });
  const holder = await holdLock(join(dir, 'etc', 'j.json'));
  try {
    const t0 = Date.now();
    await assert.rejects(
      c.call('files.write', { file: 'j', content: '{"a":1}\n', if_match: r.etag }),
      (e: unknown) => e instanceof SealedCallError && e.status === 503 && e.code === 'SEALED_FILE_LOCKED',
    );
    assert.ok(Date.now() - t0 >= 1400, 'waited for the holder');
  } finally {
    const gone = new Promise((done) => holder.once('exit', done));
    assert.equal(holder.exitCode, null, 'the holder was alive throughout');
    holder.kill('SIGKILL');
    await gone;
  }
  const t1 = Date.now();
  await c.call('files.write', { file: 'j', content: '{"a":1}\n', if_match: r.etag });
  assert.ok(Date.now() - t1 < 1000, `the dead holder's lock was taken over at once (${Date.now() - t1} ms)`);
  assert.deepEqual(readdirSync(join(dir, 'etc')), ['j.json'], 'the lock is gone after the write');
});

test('writer lock: an empty lock file, or one naming a live unrelated process, does not block writes', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  write(join(dir, 'etc'), 'j.json', '{}\n');
  // fileLockMs well above the grace for foreign lock files, well below the old 10-minute stale age.
  const s = await startSealed(
    { files: { j: { path: 'etc/j.json', format: 'json' } }, timeouts: { fileLockMs: 5000 } },
    { dir },
  );
  started.push(s);
  const c = await s.client('admin');
  const lock = join(dir, 'etc', '.j.json.gh-lock');
  const start1 = readFileSync('/proc/1/stat', 'utf8').split(') ')[1]!.split(' ')[19]!;
  const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const owner = (pid: number, start: string) =>
    JSON.stringify({ v: 1, pid, start, boot, host: hostname(), nonce: 'x' });
  const planted: [string, string][] = [
    ['empty (crash between create and write)', ''],
    ['pid 1 (bare pid, as older versions wrote)', '1'],
    ['our parent process (bare pid)', String(process.ppid)],
    ['the server process itself (bare pid)', String(process.pid)],
    ['pid 1 with another start time (pid reuse)', owner(1, `${Number(start1) + 12345}`)],
    ['the server process with another start time', owner(process.pid, '1')],
    ['another boot', JSON.stringify({ v: 1, pid: 1, start: start1, boot: 'not-this-boot', host: hostname(), nonce: 'x' })],
  ];
  let n = 0;
  for (const [why, content] of planted) {
    const { etag } = await c.call<Read>('files.read', { file: 'j' });
    writeFileSync(lock, content);
    const t0 = Date.now();
    await c.call('files.write', { file: 'j', content: `{"n":${++n}}\n`, if_match: etag }).catch((e: unknown) => {
      assert.fail(`${why}: ${String(e)}`);
    });
    assert.ok(Date.now() - t0 < 3000, `${why}: took ${Date.now() - t0} ms`);
    assert.equal(readFileSync(join(dir, 'etc', 'j.json'), 'utf8'), `{"n":${n}}\n`, why);
    assert.deepEqual(readdirSync(join(dir, 'etc')), ['j.json'], `${why}: lock released`);
  }
  // The real pid 1 with its real start time and boot is a live holder: respected.
  const { etag } = await c.call<Read>('files.read', { file: 'j' });
  writeFileSync(lock, owner(1, start1));
  await assert.rejects(
    c.call('files.write', { file: 'j', content: '{}\n', if_match: etag }),
    (e: unknown) => e instanceof SealedCallError && e.code === 'SEALED_FILE_LOCKED',
  );
});

test('backups: temp files, truncated and unverifiable backups on disk are neither listed nor restored', async () => {
  const { c, etc, dir } = await setup({ j: { path: 'etc/j.json', format: 'json' } }, (e) =>
    write(e, 'j.json', '{"v":0}\n'),
  );
  const r0 = await c.call<Read>('files.read', { file: 'j' });
  const w1 = await c.call<Written>('files.write', { file: 'j', content: '{"v":1}\n', if_match: r0.etag });
  assert.ok(w1.backup !== null);
  const folder = join(dir, 'backups', 'j');
  const real = readdirSync(folder);
  assert.equal(real.length, 1);
  assert.ok(!real[0]!.startsWith('.'), 'no temp file left after a backup');
  // What a crash or an older version could leave: a backup cut short (named with the digest of its
  // full content), a backup written in place without a digest, and a temp file of an unfinished backup.
  const full = '{"v":"a longer version that was cut short on its way to the disk"}\n';
  const digest = createHash('sha256').update(full).digest('base64url');
  writeFileSync(join(folder, `20260101T000000000Z-000001.${digest}.bak`), full.slice(0, 20), { mode: 0o600 });
  writeFileSync(join(folder, '20260101T000000000Z-000002.bak'), full.slice(0, 20), { mode: 0o600 });
  writeFileSync(join(folder, `.20260101T000000000Z-000003.${digest}.bak.gh-tmp-1-abc`), full.slice(0, 20), {
    mode: 0o600,
  });
  const list = await c.call<{ id: string; etag: string }[]>('files.backups', { file: 'j' });
  assert.deepEqual(
    list.map((b) => b.id),
    [w1.backup],
    'only the complete backup is listed',
  );
  assert.equal(list[0]!.etag, r0.etag);
  for (const id of ['20260101T000000000Z-000001', '20260101T000000000Z-000002', '20260101T000000000Z-000003'])
    await assert.rejects(
      c.call('files.restore', { file: 'j', backup: id, if_match: w1.etag }),
      (e: unknown) => e instanceof SealedCallError && e.code === 'SEALED_UNKNOWN_BACKUP',
      id,
    );
  assert.equal(readFileSync(join(etc, 'j.json'), 'utf8'), '{"v":1}\n', 'nothing restored');
  await c.call('files.restore', { file: 'j', backup: w1.backup, if_match: w1.etag });
  assert.equal(readFileSync(join(etc, 'j.json'), 'utf8'), '{"v":0}\n');
});

test('backups: a backup that cannot be written (file size limit of the process) fails the action before the live file changes', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  // 1 MiB of current content; the server process may write files of at most 512 KiB (ulimit -f counts
  // 512-byte blocks in sh), so backing it up fails part-way with EFBIG, as on a full disk.
  const big = `${JSON.stringify({ pad: 'x'.repeat(1024 * 1024) })}\n`;
  write(join(dir, 'etc'), 'j.json', big);
  const s = await spawnSealed(
    { files: { j: { path: 'etc/j.json', format: 'json' } }, backupDir: 'backups', limits: { maxFileBytes: 4 * 1024 * 1024 } },
    { dir, shell: 'ulimit -f 1024' },
  );
  try {
    const r = await s.client.call<Read>('files.read', { file: 'j' });
    await assert.rejects(
      s.client.call('files.write', { file: 'j', content: '{"small":true}\n', if_match: r.etag }),
      (e: unknown) => e instanceof SealedCallError && e.code === 'SEALED_BACKUP_FAILED' && e.status === 500,
    );
    assert.equal(readFileSync(join(dir, 'etc', 'j.json'), 'utf8'), big, 'the live file is unchanged');
    assert.deepEqual(await s.client.call('files.backups', { file: 'j' }), [], 'no partial backup listed');
    assert.deepEqual(
      readdirSync(join(dir, 'backups', 'j')).filter((n) => n.includes('.gh-tmp-')),
      [],
      'the partial temp file was removed',
    );
    assert.ok(s.lines.some((l) => l.code === 'SEALED_BACKUP_FAILED'));
  } finally {
    await s.stop();
  }
});

test('files.restore refuses a backup that is a symlink (e.g. to a secret outside)', async () => {
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

test('a backup folder replaced by a symlink is neither written nor read through', async () => {
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

test('refused content is not quoted in the log (JSON.parse echoes its input)', async () => {
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

test('an INI line of a million spaces is refused in linear time (no regex backtracking)', async () => {
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

test('allow-lists hold for every files action (backups and restore too) and for modules', async () => {
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

test('YAML duplicate keys are still refused, in linear time (the library check is quadratic)', () => {
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

test('INI: section and key names with outer whitespace are refused (they would never be found again)', () => {
  for (const op of [
    { op: 'set', section: ' constructor ', key: 'k', value: 'v' },
    { op: 'set', section: 'a ', key: 'k', value: 'v' },
    { op: 'set', section: 'a', key: ' b', value: 'v' },
    { op: 'set', section: '', key: 'k\t', value: 'v' },
  ])
    assert.throws(() => applyIniOps('[a]\nb = 1\n', [op as never]), FormatError, JSON.stringify(op));
  assert.equal(applyIniOps('[a]\nb = 1\n', [{ op: 'set', section: 'a', key: 'b', value: ' 2 ' }]), '[a]\nb =  2 \n');
});
