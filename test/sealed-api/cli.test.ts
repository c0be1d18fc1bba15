/**
 * The CLI, spawned as users run it: clients keygen / add / list / show / revoke / server-key /
 * rotate-server-key, and `gatehouse call` against a running server that picks the changes up live.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSealed, tempDir, type StartedSealed } from './helpers.ts';

const BIN = new URL('../../bin/gatehouse.js', import.meta.url).pathname;

function gh(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, timeout: 30000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

let s: StartedSealed | undefined;
after(async () => s?.close());

test('clients keygen/add/list/show/revoke and call, against a live server', async () => {
  const dir = tempDir();
  writeFileSync(
    join(dir, 'gh.toml'),
    '[relay]\nenabled = false\n[cardBridge]\nenabled = false\n[sealedApi]\nstateDir = "state"\nreloadCheckMs = 100\n',
  );
  s = await startSealed({}, { dir });
  const url = s.server.url;
  const keygen = await gh(dir, 'clients', 'keygen', '--out', 'me.json', '--name', 'me');
  assert.equal(keygen.code, 0, keygen.stderr);
  assert.equal(statSync(join(dir, 'me.json')).mode & 0o777, 0o600);
  assert.equal((await gh(dir, 'clients', 'keygen', '--out', 'me.json')).code, 73, 'no silent overwrite (EX_CANTCREAT)');
  const add = await gh(
    dir,
    'clients',
    'add',
    '-c',
    'gh.toml',
    '--name',
    'me',
    '--key',
    'me.json',
    '--allow',
    'time,ping',
  );
  assert.equal(add.code, 0, add.stderr);
  const added = JSON.parse(add.stdout) as { client: { kid: string }; server: { kid: string } };
  assert.equal(added.server.kid, s.server.serverInfo().kid, 'prints the server key to pin');
  assert.equal(
    (await gh(dir, 'clients', 'add', '-c', 'gh.toml', '--name', 'me', '--key', 'me.json')).code,
    1,
    'names are never overwritten',
  );
  const list = await gh(dir, 'clients', 'list', '-c', 'gh.toml');
  assert.match(list.stdout, new RegExp(`^me +active +${added.client.kid} +allow=time,ping files=-`, 'm'));
  const show = JSON.parse((await gh(dir, 'clients', 'show', '-c', 'gh.toml', 'me')).stdout) as {
    status: string;
  };
  assert.equal(show.status, 'active');
  await new Promise((r) => setTimeout(r, 300));
  const call = await gh(dir, 'call', url, 'time', '{"timeZone":"UTC"}', '--key', 'me.json', '-c', 'gh.toml');
  assert.equal(call.code, 0, call.stderr);
  assert.equal((JSON.parse(call.stdout) as { timeZone: string }).timeZone, 'UTC');
  const denied = await gh(
    dir,
    'call',
    url,
    'files.read',
    '{"file":"x"}',
    '--key',
    'me.json',
    '-c',
    'gh.toml',
  );
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /403 SEALED_FORBIDDEN/);
  assert.equal((await gh(dir, 'clients', 'revoke', '-c', 'gh.toml', 'me')).code, 0);
  await new Promise((r) => setTimeout(r, 300));
  const revoked = await gh(dir, 'call', url, 'ping', '--key', 'me.json', '-c', 'gh.toml');
  assert.match(revoked.stderr, /401 unauthorized/);
  const rotated = JSON.parse(
    (await gh(dir, 'clients', 'rotate-server-key', '-c', 'gh.toml', '--overlap-hours', '1')).stdout,
  ) as { kid: string };
  assert.notEqual(rotated.kid, added.server.kid);
});
