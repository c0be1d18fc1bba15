/**
 * contrib/systemd/gatehouse.service: `systemd-analyze verify` accepts it, `systemd-analyze security` rates
 * its exposure low, and it keeps the hardening the operations docs promise. Needs no running systemd.
 * Skips only where systemd-analyze is missing and not required; CI requires it (GATEHOUSE_REQUIRE_SYSTEMD=1
 * from .ci/run, package list .ci/packages-ops.txt), so there a missing tool fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/relay.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const UNIT = join(ROOT, 'contrib', 'systemd', 'gatehouse.service');
const ci = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const required = ci || process.env.GATEHOUSE_REQUIRE_SYSTEMD === '1';

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return join(dir, cmd);
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

const analyze = which('systemd-analyze');
const skip = analyze === undefined && !required ? 'systemd-analyze is not installed (CI installs it: .ci/packages-ops.txt)' : false;

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    if (analyze === undefined) {
      reject(new Error('systemd-analyze is required here (CI or GATEHOUSE_REQUIRE_SYSTEMD=1) but not installed: see .ci/packages-ops.txt'));
      return;
    }
    execFile(analyze, args, { timeout: 30_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err === null) resolve({ code: 0, stdout, stderr });
      else if (typeof err.code === 'number') resolve({ code: err.code, stdout, stderr });
      else reject(new Error(`systemd-analyze ${args.join(' ')}: ${err.message}`));
    });
  });
}

/**
 * The unit as shipped, with ExecStart pointing at this checkout's bin/gatehouse.js: verify checks that the
 * command exists, and /opt/gatehouse is only there once the package is installed as docs/operations.md says.
 */
function unitHere(): string {
  const text = readFileSync(UNIT, 'utf8');
  assert.match(text, /^ExecStart=\/opt\/gatehouse\/bin\/gatehouse serve --config \/etc\/gatehouse\/gatehouse\.toml$/m);
  const file = join(tempDir('gatehouse-unit-'), 'gatehouse.service');
  writeFileSync(file, text.replaceAll('/opt/gatehouse/bin/gatehouse', join(ROOT, 'bin', 'gatehouse.js')));
  return file;
}

test('systemd-analyze verify accepts contrib/systemd/gatehouse.service', { skip, timeout: 60_000 }, async () => {
  const file = unitHere();
  const r = await run(['verify', file]);
  const ours = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('gatehouse.service'));
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  assert.deepEqual(ours, [], 'no warning about our unit');
});

test('systemd-analyze security rates the unit at most 2.0 (OK)', { skip, timeout: 60_000 }, async () => {
  const file = unitHere();
  const r = await run(['security', '--offline=true', '--no-pager', file]);
  const m = /Overall exposure level for gatehouse\.service: (\d+(\.\d+)?)/.exec(`${r.stdout}${r.stderr}`);
  assert.ok(m !== null, `${r.stdout}${r.stderr}`);
  assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]}:\n${r.stdout}`);
});

test('the unit keeps the hardening docs/operations.md describes', () => {
  const text = readFileSync(UNIT, 'utf8');
  const directives = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m !== null) directives.set(m[1]!, [...(directives.get(m[1]!) ?? []), m[2]!]);
  }
  const one = (k: string) => directives.get(k)?.join(' | ');
  assert.equal(one('User'), 'gatehouse');
  assert.equal(one('StateDirectory'), 'gatehouse');
  assert.equal(one('ConfigurationDirectory'), 'gatehouse');
  assert.equal(one('RuntimeDirectory'), 'gatehouse');
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('ProtectHome'), 'yes');
  assert.equal(one('PrivateTmp'), 'yes');
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('RestrictAddressFamilies'), 'AF_UNIX AF_INET AF_INET6');
  assert.equal(one('SystemCallFilter'), '@system-service | ~@privileged');
  assert.equal(one('Restart'), 'on-failure');
  assert.equal(one('RestartPreventExitStatus'), '64 78');
  assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.ok(Number(one('LimitNOFILE')) >= 65536, 'LimitNOFILE covers the default connection limits');
  assert.equal(directives.get('MemoryDenyWriteExecute'), undefined, 'V8 needs W+X memory');
});
