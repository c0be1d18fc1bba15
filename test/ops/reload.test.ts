/**
 * Reload without dropping anything: a renewed certificate under open TLS tunnels (relay tls + wss) — the
 * tunnels keep relaying, new handshakes get the new certificate (peer fingerprints compared); a bad
 * certificate keeps the old one; changed keys that need a restart are named once. And SIGHUP to a spawned
 * `gatehouse serve`: tunnels survive, the reload is logged, the process does not exit (it used to, 129).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { validateConfig } from '../../src/core/config/load.ts';
import { gatewayConfigSchema } from '../../src/config.ts';
import { createGateway } from '../../src/gateway.ts';
import { captureLog, deadline, pair, peerFingerprint, selfSignedCert, tempDir } from '../helpers/relay.ts';
import { gatehouse } from '../helpers/cli.ts';

test('a renewed certificate: open tls and wss tunnels keep relaying, new handshakes get the new certificate', async () => {
  const dir = tempDir();
  const old = selfSignedCert(dir);
  const renewed = selfSignedCert(tempDir());
  const raw = {
    relay: { listeners: [{ kind: 'tls', port: 0 }, { kind: 'wss', port: 0 }], tls: { certFile: 'cert.pem', keyFile: 'key.pem' }, monitor: { enabled: false } },
  };
  const cap = captureLog();
  const gw = await createGateway(validateConfig(gatewayConfigSchema, raw), { log: cap.log, baseDir: dir });
  await gw.start();
  try {
    const [tls, wss] = gw.relay!.listeners;
    const before = await peerFingerprint(tls!.port);
    assert.equal(await peerFingerprint(wss!.port), before);
    const t1 = await pair(tls!.url, wss!.url);
    const t2 = await pair(wss!.url, tls!.url);

    copyFileSync(renewed.certFile, old.certFile);
    copyFileSync(renewed.keyFile, old.keyFile);
    const report = await gw.reload(validateConfig(gatewayConfigSchema, raw));
    assert.deepEqual(report, { failed: [], restartNeeded: [] });
    const after = await peerFingerprint(tls!.port);
    assert.notEqual(after, before);
    assert.equal(await peerFingerprint(wss!.port), after);

    // The tunnels opened under the old certificate still carry bytes both ways.
    for (const { a, b, aOffset, bOffset } of [t1, t2]) {
      a.send('after-renewal-a');
      await b.waitFor('after-renewal-a');
      b.send('after-renewal-b');
      await a.waitFor('after-renewal-b');
      assert.ok(!a.isClosed && !b.isClosed);
      assert.ok(a.received().length > aOffset && b.received().length > bOffset);
    }
    // A third pair over the new certificate.
    const t3 = await pair(tls!.url, wss!.url);
    t3.a.send('new');
    await t3.b.waitFor('new');

    // A broken certificate file: the reload fails, the certificate in force stays.
    writeFileSync(old.certFile, 'not a certificate');
    const bad = await gw.reload(validateConfig(gatewayConfigSchema, raw));
    assert.deepEqual(bad.failed, ['relay']);
    assert.equal(await peerFingerprint(tls!.port), after);
    assert.ok(cap.records().some((r) => r.msg === 'reload failed; the previous state stays in force' && r.code === 'CORE_TLS_MATERIAL'));

    // Keys that need a restart are named, each once.
    const changed = { relay: { ...raw.relay, timeouts: { aloneMs: 9000 } }, log: { level: 'debug' } };
    copyFileSync(renewed.certFile, old.certFile);
    const r1 = await gw.reload(validateConfig(gatewayConfigSchema, changed));
    const r2 = await gw.reload(validateConfig(gatewayConfigSchema, changed));
    assert.deepEqual(r1.restartNeeded, ['relay.timeouts.aloneMs']);
    assert.deepEqual(r2.restartNeeded, ['relay.timeouts.aloneMs']);
    assert.equal(cap.records().filter((r) => r.msg === 'restart needed: this change takes effect after a restart' && r.key === 'relay.timeouts.aloneMs').length, 1);
    for (const t of [t1, t2, t3]) {
      t.a.destroy();
      t.b.destroy();
    }
  } finally {
    await gw.close({ graceMs: 0 });
  }
});

test('SIGHUP to `gatehouse serve`: tunnels survive, the reload is logged, a bad file is refused, the process keeps running', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'g.toml');
  const base = ['[log]', 'level = "info"', '[relay]', 'listeners = [{ kind = "tcp", port = 0 }]', '[relay.monitor]', 'enabled = false', ''];
  writeFileSync(cfg, base.join('\n'));
  const server = gatehouse(['serve', '--config', cfg], { cwd: dir });
  try {
    const banner = await server.waitForStdout(/Press Ctrl-C/);
    const url = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const t = await pair(url, url);
    const waitLog = (needle: string, what: string) =>
      deadline(
        (async () => {
          while (!server.stderr().includes(needle)) await new Promise((r) => setTimeout(r, 20));
        })(),
        5000,
        what,
      );
    writeFileSync(cfg, base.join('\n').replace('level = "info"', 'level = "debug"').replace('enabled = false', 'enabled = false\n[relay.timeouts]\naloneMs = 9000'));
    server.child.kill('SIGHUP');
    await waitLog('"msg":"configuration reloaded"', 'the reload log line');
    assert.match(server.stderr(), /"signal":"SIGHUP".*"msg":"reloading"/);
    assert.match(server.stderr(), /"level":"info".*"msg":"log level changed"/);
    assert.match(server.stderr(), /"level":"warn".*"key":"relay\.timeouts\.aloneMs".*"msg":"restart needed/);
    writeFileSync(cfg, '[relay]\nbogus = 1\n');
    server.child.kill('SIGHUP');
    await waitLog('reload refused: the config file is not valid', 'the refused reload');
    assert.match(server.stderr(), /"code":"CORE_CONFIG_INVALID"/);
    t.a.send('still here');
    await t.b.waitFor('still here');
    assert.equal(server.child.exitCode, null, 'the process is still running');
    t.a.destroy();
    t.b.destroy();
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.exited(), { code: 0, signal: null });
  } finally {
    server.child.kill('SIGKILL');
  }
});
