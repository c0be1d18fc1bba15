/**
 * `gatehouse init` as an operator runs it: in a directory whose path has spaces, twice (the second run
 * changes nothing), and where a target name is a symlink pointing elsewhere (dangling or not): nothing is
 * written through it. Secrets stay private (0600) and out of stderr.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { runGatehouse, assertNoCrash } from '../helpers/cli.ts';
import { tempDir } from '../helpers/relay.ts';

test('init in a path with spaces, run twice: the second run exits 73 and leaves every file as it was', async () => {
  const dir = join(tempDir('gatehouse init '), 'my gate house');
  const first = await runGatehouse(['init', dir, '--tls']);
  assert.equal(first.code, 0, first.stderr);
  const token = /Relay token \(shown once; only its hash is stored\): (\S+)/.exec(first.stdout)![1]!;
  assert.ok(!first.stderr.includes(token), 'the token is not on stderr');
  for (const f of ['tokens', 'key.pem']) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
  assert.equal(statSync(dir).mode & 0o777, 0o700, 'the folder init made for the key is private');
  assert.equal(statSync(join(dir, 'gatehouse.toml')).mode & 0o077 & 0o002, 0, 'not world-writable');
  const before = new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
  assert.deepEqual([...before.keys()].sort(), ['cert.pem', 'gatehouse.toml', 'key.pem', 'tokens']);
  for (const args of [['init', dir], ['init', dir, '--tls']]) {
    const again = await runGatehouse(args);
    assert.equal(again.code, 73, again.stderr);
    assertNoCrash(again.stderr);
    assert.match(again.stderr, /refusing to overwrite/);
  }
  for (const [f, bytes] of before) assert.ok(readFileSync(join(dir, f)).equals(bytes), `${f} unchanged`);
  assert.deepEqual(readdirSync(dir).sort(), [...before.keys()].sort());
});

test('init refuses a target name that is a symlink to elsewhere, dangling or not: nothing is written through it', async () => {
  for (const name of ['tokens', 'gatehouse.toml', 'key.pem']) {
    const dir = tempDir();
    const elsewhere = tempDir();
    const victim = join(elsewhere, 'victim');
    symlinkSync(victim, join(dir, name));
    const r = await runGatehouse(['init', dir, '--tls']);
    assert.equal(r.code, 73, `${name}: ${r.stdout}${r.stderr}`);
    assertNoCrash(r.stderr);
    assert.ok(r.stderr.includes(name), `${name} named: ${r.stderr}`);
    assert.ok(!existsSync(victim), `${name}: nothing created through the link`);
    assert.ok(lstatSync(join(dir, name)).isSymbolicLink(), 'the link is left alone');
    assert.deepEqual(readdirSync(dir), [name], `${name}: nothing else written`);
  }
});
