/**
 * Active audit of the sealed API with the server in its own process: killed with SIGKILL in the middle
 * of a loop of sealed writes (the file is old or new, never partial; backups verify; the next start is
 * clean and writes at once), and a managed folder made read-only under a server that runs unprivileged
 * (a coded sealed error, the original intact, writes work again once the folder is writable).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { etagOf } from '../../src/sealed-api/actions/files.ts';
import { spawnSealed, startSealed, tempDir } from './helpers.ts';

const SEALED_DIR = new URL('.', import.meta.url).pathname;

const FILES = { data: { path: 'etc/data.json', format: 'json', backupsKept: 4 } };

test(
  'SIGKILL of the gateway during a loop of sealed writes: old or new content, never partial; the next start is clean',
  { timeout: 19000 },
  async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'etc'));
    const first = '{"n":0}\n';
    writeFileSync(join(dir, 'etc', 'data.json'), first);
    const s = await spawnSealed({ files: FILES }, { dir });
    const sent = new Set([first]);
    let current = first;
    let acknowledged = 0;
    const loop = (async () => {
      for (let n = 1; n < 10000; n++) {
        const content = `{"n":${n},"pad":"${String(n % 10).repeat(150000)}"}\n`;
        sent.add(content);
        try {
          await s.client.call('files.write', { file: 'data', content, if_match: etagOf(current) });
        } catch {
          return; // the server is gone
        }
        current = content;
        acknowledged++;
      }
    })();
    // Kill at a random moment once a few writes went through.
    while (acknowledged < 3) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, Math.random() * 40));
    s.child.kill('SIGKILL');
    assert.equal(await s.exited, 'SIGKILL');
    await loop;
    s.client.close();
    const onDisk = readFileSync(join(dir, 'etc', 'data.json'), 'utf8');
    assert.ok(sent.has(onDisk), `torn file of ${onDisk.length} bytes`);
    assert.ok(onDisk === current || sent.has(onDisk), 'the last acknowledged write or one sent after it');

    const again = await startSealed({ files: FILES }, { dir });
    try {
      assert.deepEqual(
        readdirSync(join(dir, 'etc')).filter((n) => n.includes('.gh-tmp-')),
        [],
        'no temp file after the next start',
      );
      const c = await again.client('after-crash');
      const read = await c.call<{ content: string; etag: string }>('files.read', { file: 'data' });
      assert.equal(read.content, onDisk);
      const backups = await c.call<{ id: string; etag: string }[]>('files.backups', { file: 'data' });
      // A kill between writing a backup and pruning the oldest leaves one more than backupsKept; the next
      // write prunes back to it (below).
      const kept = FILES.data.backupsKept;
      assert.ok(backups.length >= 1 && backups.length <= kept + 1, `backups bounded: ${backups.length}`);
      for (const b of backups)
        assert.ok(
          [...sent].some((x) => etagOf(x) === b.etag),
          'every listed backup is a whole earlier content',
        );
      // The lock file of the killed process does not block the next writer.
      const t0 = Date.now();
      await c.call('files.write', { file: 'data', content: '{"after":true}\n', if_match: read.etag });
      assert.ok(
        Date.now() - t0 < 900,
        'the dead holder\u2019s lock is taken over at once (not after the 1 s legacy grace)',
      );
      assert.equal(readFileSync(join(dir, 'etc', 'data.json'), 'utf8'), '{"after":true}\n');
      assert.deepEqual(readdirSync(join(dir, 'etc')).sort(), ['data.json'], 'no temp or lock file left');
      const after = await c.call<{ id: string }[]>('files.backups', { file: 'data' });
      assert.ok(after.length <= kept, `backups pruned to backupsKept after the next write: ${after.length}`);
    } finally {
      await again.close();
    }
  },
);

test(
  'managed folder made read-only under an unprivileged server: a sealed 500 SEALED_FILE_IO_FAILED, original intact; writable again: works',
  { timeout: 19000 },
  async () => {
    const dir = tempDir();
    const etc = join(dir, 'etc');
    mkdirSync(etc);
    const original = '{"keep":1}\n';
    writeFileSync(join(etc, 'data.json'), original);
    // The test runs as root (chmod binds no root): the server drops to nobody before it starts.
    const nobody = 65534;
    const s = await spawnSealed(
      { files: FILES },
      {
        dir,
        shell: `chown -R ${nobody}:${nobody} "${dir}" && exec setpriv --reuid=${nobody} --regid=${nobody} --clear-groups "$0" "$@"; true`,
      },
    );
    try {
      chmodSync(etc, 0o555);
      await assert.rejects(
        s.client.call('files.write', { file: 'data', content: '{"new":1}\n', if_match: etagOf(original) }),
        (e: unknown) => {
          assert.ok(e instanceof SealedCallError && e.sealed, String(e));
          assert.equal(`${e.status} ${e.code}`, '500 SEALED_FILE_IO_FAILED', e.message);
          assert.match(e.message, /data could not be written \(EACCES\); it is unchanged/);
          assert.doesNotMatch(e.message, new RegExp(dir), 'no server path in the answer');
          return true;
        },
      );
      assert.equal(readFileSync(join(etc, 'data.json'), 'utf8'), original);
      assert.deepEqual(readdirSync(etc), ['data.json']);
      const logged = () => s.lines.some((l) => l.code === 'SEALED_FILE_IO_FAILED' && l.level === 'error');
      for (let i = 0; i < 100 && !logged(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(logged(), 'logged at error for the operator');
      chmodSync(etc, 0o755);
      await s.client.call('files.write', {
        file: 'data',
        content: '{"new":1}\n',
        if_match: etagOf(original),
      });
      assert.equal(readFileSync(join(etc, 'data.json'), 'utf8'), '{"new":1}\n');
    } finally {
      chmodSync(etc, 0o755);
      await s.stop();
    }
  },
);

/** A child process that holds the cross-process writer lock of `path` until killed (fixtures/locker.ts). */
function holdLock(path: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(SEALED_DIR, 'fixtures', 'locker.ts'), path],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('locker never took the lock'));
    }, 15000);
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

test(
  'a write that timed out (504) waiting for the writer lock does not happen later, once the lock is free',
  { timeout: 19000 },
  async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'etc'));
    const original = '{"v":1}\n';
    writeFileSync(join(dir, 'etc', 'data.json'), original);
    const s = await startSealed({ files: FILES, timeouts: { actionMs: 400, fileLockMs: 5000 } }, { dir });
    try {
      const c = await s.client('late');
      const holder = await holdLock(join(dir, 'etc', 'data.json'));
      try {
        await assert.rejects(
          c.call('files.write', { file: 'data', content: '{"v":2}\n', if_match: etagOf(original) }),
          (e: unknown) => {
            assert.ok(e instanceof SealedCallError && e.sealed);
            assert.equal(`${e.status} ${e.code}`, '504 SEALED_ACTION_TIMEOUT');
            return true;
          },
        );
      } finally {
        const gone = new Promise((done) => holder.once('exit', done));
        holder.kill('SIGKILL');
        await gone;
      }
      // The timed-out write now finds the lock free (a dead holder is taken over at once).
      const deadline = Date.now() + 1500;
      while (Date.now() < deadline && readdirSync(join(dir, 'etc')).length > 1)
        await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(
        readFileSync(join(dir, 'etc', 'data.json'), 'utf8'),
        original,
        'the client was told 504: the file must not change after',
      );
      assert.deepEqual(await c.call<unknown[]>('files.backups', { file: 'data' }), [], 'no backup either');
    } finally {
      await s.close();
    }
  },
);

test(
  'a starting gateway removes only the temp files of dead writers, not the in-flight temp file of a live one',
  { timeout: 19000 },
  async () => {
    const dir = tempDir();
    const etc = join(dir, 'etc');
    mkdirSync(etc);
    writeFileSync(join(etc, 'data.json'), '{}\n');
    // A live writer (a child that sleeps), our own pid (a previous process's, as pid 1 in a container
    // restarted after a crash) and a pid that is not running.
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    let dead = 4_000_000;
    for (;;) {
      try {
        process.kill(dead, 0);
        dead--;
      } catch {
        break;
      }
    }
    const live = `.data.json.gh-tmp-${String(sleeper.pid)}-inflight01`;
    writeFileSync(join(etc, live), 'half');
    writeFileSync(join(etc, `.data.json.gh-tmp-${dead}-deadbeef0101`), 'half');
    writeFileSync(join(etc, `.data.json.gh-tmp-${process.pid}-previous01`), 'half');
    const s = await startSealed({ files: FILES }, { dir });
    try {
      assert.deepEqual(
        readdirSync(etc).sort(),
        [live, 'data.json'].sort(),
        'only the live writer’s temp file is kept',
      );
    } finally {
      sleeper.kill('SIGKILL');
      await s.close();
    }
  },
);
