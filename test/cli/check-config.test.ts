/**
 * `gatehouse check-config` through the real CLI: the effective config (defaults filled in) as TOML and JSON,
 * secrets redacted, the printed TOML valid again; every problem listed with exit 78.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { assertNoCrash, runGatehouse } from '../helpers/cli.ts';
import { tempDir } from '../helpers/relay.ts';

const SECRETS = ['bearer-s3cret-value', 'hunter2-url-password'];

/** A relay with an http authenticator carrying two secrets (a bearer token, a password in its URL). */
function sampleConfig(dir: string): string {
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    [
      '[relay]',
      'listeners = [{ kind = "tcp", port = 0 }]',
      '[relay.authenticator]',
      'kind = "http"',
      `url = "https://svc:${SECRETS[1]}@127.0.0.1:9/check"`,
      `bearer = "${SECRETS[0]}"`,
      '[relay.limits]',
      'maxConnections = 500',
      '',
    ].join('\n'),
  );
  return cfg;
}

test('check-config prints the effective config as TOML: defaults filled in, secrets redacted, itself valid', async () => {
  const dir = tempDir();
  const cfg = sampleConfig(dir);
  const r = await runGatehouse(['check-config', cfg]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^# .*gatehouse\.toml: valid \(relay enabled\)\.\n/);
  for (const s of SECRETS) assert.ok(!r.stdout.includes(s), `secret ${s} printed`);
  const doc = parseToml(r.stdout) as Record<string, Record<string, Record<string, unknown>>>;
  assert.equal(doc.relay!.authenticator!.bearer, '[redacted]');
  assert.equal(doc.relay!.authenticator!.url, 'https://svc:[redacted]@127.0.0.1:9/check');
  assert.equal(doc.relay!.limits!.maxConnections, 500, 'the file\'s value');
  assert.equal(doc.relay!.limits!.maxConnectionsPerIp, 1000, 'a default filled in');
  assert.equal(doc.shutdown!.graceMs, 10000);
  assert.deepEqual({ ...doc.cardBridge }, { enabled: false });
  assert.deepEqual({ ...doc.sealedApi }, { enabled: false });
  // The output is a config that gives the same effective config again.
  const again = join(dir, 'effective.toml');
  writeFileSync(again, r.stdout);
  const r2 = await runGatehouse(['check-config', again]);
  assert.equal(r2.code, 0, r2.stderr);
  const body = (s: string) => s.split('\n').filter((l) => !l.startsWith('#')).join('\n');
  assert.equal(body(r2.stdout), body(r.stdout));
});

test('check-config --json prints the same effective config as JSON', async () => {
  const dir = tempDir();
  const cfg = sampleConfig(dir);
  const [json, toml] = await Promise.all([runGatehouse(['check-config', '--json', cfg]), runGatehouse(['check-config', cfg])]);
  assert.equal(json.code, 0, json.stderr);
  for (const s of SECRETS) assert.ok(!json.stdout.includes(s), `secret ${s} printed`);
  assert.deepEqual(JSON.parse(json.stdout), JSON.parse(JSON.stringify(parseToml(toml.stdout))));
});

test('check-config exits 78 and lists every schema problem with its key', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'bad.toml');
  writeFileSync(cfg, '[relay]\nbogus = 1\n[relay.limits]\nmaxConnections = "many"\n[shutdown]\ngraceMs = -1\n');
  const r = await runGatehouse(['check-config', cfg]);
  assert.equal(r.code, 78);
  assert.equal(r.stdout, '');
  assertNoCrash(r.stderr);
  assert.match(r.stderr, /^gatehouse check-config: CORE_CONFIG_INVALID: invalid configuration \(3 problems\)/);
  assert.match(r.stderr, /relay\.bogus: unknown key/);
  assert.match(r.stderr, /relay\.limits\.maxConnections:/);
  assert.match(r.stderr, /shutdown\.graceMs:/);
});

test('check-config exits 78 for the files a config names: TLS material and the token file, all listed', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'files.toml');
  writeFileSync(
    cfg,
    [
      '[relay]',
      'listeners = [{ kind = "tls", port = 0 }]',
      '[relay.tls]',
      'certFile = "missing-cert.pem"',
      'keyFile = "missing-key.pem"',
      '[relay.authenticator]',
      'kind = "static"',
      'file = "tokens"',
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, 'tokens'), 'not a hash\n');
  const r = await runGatehouse(['check-config', cfg]);
  assert.equal(r.code, 78, r.stderr);
  assertNoCrash(r.stderr);
  assert.match(r.stderr, /gatehouse check-config: CORE_TLS_MATERIAL: relay\.tls: cannot read TLS certificate .*missing-cert\.pem \(ENOENT\)/);
  assert.match(r.stderr, /gatehouse check-config: RELAY_TOKEN_FILE_INVALID: relay\.authenticator\.file: .*tokens: invalid token file:\n {2}line 1: expected sha256/);
  assert.match(r.stderr, /files\.toml: 2 problems\n$/);

  // With real material and a good token file the same config is valid.
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=t',
    '-keyout', join(dir, 'missing-key.pem'), '-out', join(dir, 'missing-cert.pem')], { stdio: 'ignore' });
  writeFileSync(join(dir, 'tokens'), `sha256:${'ab'.repeat(32)} alice\n`);
  const ok = await runGatehouse(['check-config', cfg]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /\[relay\.tls\]\ncertFile = "missing-cert\.pem"\nkeyFile = "missing-key\.pem"\nminVersion = "TLSv1\.2"\n/);
});

test('check-config: a config with no front end, and a missing file, exit 78', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'empty.toml');
  writeFileSync(cfg, '[log]\nlevel = "warn"\n');
  const r = await runGatehouse(['check-config', cfg]);
  assert.equal(r.code, 78);
  assert.match(r.stderr, /CORE_CONFIG_INVALID: no front end is enabled/);
  const missing = await runGatehouse(['check-config', join(dir, 'nope.toml')]);
  assert.equal(missing.code, 78);
  assert.match(missing.stderr, /^gatehouse check-config: CORE_CONFIG_UNREADABLE: cannot read config file .*nope\.toml \(ENOENT\)\n$/);
});
