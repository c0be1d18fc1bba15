/**
 * What operators rely on, with real processes and signals: a SIGHUP whose file is refused (invalid TOML,
 * a token file gone) keeps the old config, says why with the file, and counts as a failed reload; a reload
 * that fails part-way applies none of the relay's parts; `serve --workers` kills a worker that hangs at
 * shutdown once the grace period is over and exits 0.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { validateConfig } from '../../src/core/config/load.ts';
import { gatewayConfigSchema } from '../../src/config.ts';
import { createGateway } from '../../src/gateway.ts';
import { hashToken } from '../../src/relay/authenticators/static.ts';
import { gatehouse } from '../helpers/cli.ts';
import { authenticate, captureLog, deadline, NO_ERROR, peerFingerprint, rawClient, selfSignedCert, tempDir, TUNNEL_ESTABLISHED } from '../helpers/relay.ts';

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  await deadline(
    (async () => {
      while (!check()) await new Promise((r) => setTimeout(r, 20));
    })(),
    ms,
    what,
  );
}

async function reloadCount(opsUrl: string, result: 'ok' | 'failed'): Promise<number> {
  const text = await (await deadline(fetch(`${opsUrl}/metrics`), 5000, 'scrape')).text();
  const m = new RegExp(`^gatehouse_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

test('SIGHUP with a refused file (invalid TOML, token file gone): old config kept, error names the file, counted as failed', { timeout: 25000 }, async () => {
  const dir = tempDir('gatehouse audit ');
  const cfg = join(dir, 'gatehouse.toml');
  const tokens = join(dir, 'tokens');
  writeFileSync(tokens, `${hashToken('good-token', 'alice')}\n`);
  const good = ['[relay]', 'listeners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]', '[relay.authenticator]', 'kind = "static"', 'file = "tokens"', '[relay.monitor]', 'enabled = false', '[ops]', 'port = 0', ''].join('\n');
  writeFileSync(cfg, good);
  const server = gatehouse(['serve', '--config', cfg, '--log-format', 'json'], { cwd: dir });
  try {
    const banner = await server.waitForStdout(/Press Ctrl-C/);
    const url = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const opsUrl = /Ops: (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(banner)![1]!;
    const count = (needle: string) => server.stderr().split('\n').filter((l) => l.includes(needle)).length;

    // Invalid TOML: refused, logged once with the file, counted.
    writeFileSync(cfg, `${good}\n[relay\n`);
    server.child.kill('SIGHUP');
    await until(() => count('reload refused') === 1, 5000, 'the refused reload');
    const refused = server.stderr().split('\n').find((l) => l.includes('reload refused'))!;
    assert.match(refused, /"level":"error"/);
    assert.ok(refused.includes('gatehouse.toml'), `the error names the file: ${refused}`);
    assert.equal(await reloadCount(opsUrl, 'failed'), 1, 'an invalid file counts as a failed reload');

    // Unknown key with a wrong type: names the key.
    writeFileSync(cfg, good.replace('[ops]', '[ops]\nbogusKey = 1\nscrapeTimeoutMs = "soon"'));
    server.child.kill('SIGHUP');
    await until(() => count('reload refused') === 2, 5000, 'the second refused reload');
    const second = server.stderr().split('\n').filter((l) => l.includes('reload refused'))[1]!;
    assert.ok(second.includes('ops.bogusKey') && second.includes('ops.scrapeTimeoutMs'), second);
    assert.equal(await reloadCount(opsUrl, 'failed'), 2);

    // The config file itself gone (moved away mid-edit): refused with CORE_CONFIG_UNREADABLE and the path.
    unlinkSync(cfg);
    server.child.kill('SIGHUP');
    await until(() => count('reload refused') === 3, 5000, 'the refused reload of a missing file');
    const third = server.stderr().split('\n').filter((l) => l.includes('reload refused'))[2]!;
    assert.ok(third.includes('CORE_CONFIG_UNREADABLE') && third.includes('gatehouse.toml'), third);
    assert.equal(await reloadCount(opsUrl, 'failed'), 3);

    // The token file vanishes: the SIGHUP reload fails (the file named), the old table stays in force.
    writeFileSync(cfg, good);
    unlinkSync(tokens);
    server.child.kill('SIGHUP');
    await until(() => count('configuration reloaded') === 1, 5000, 'the reload after the token file went');
    assert.equal(await reloadCount(opsUrl, 'failed'), 4, 'a token file that cannot be read fails the reload');
    assert.equal(await reloadCount(opsUrl, 'ok'), 0);
    const failedLine = server.stderr().split('\n').find((l) => l.includes('reload failed; the previous state stays in force'));
    assert.ok(failedLine !== undefined && failedLine.includes('RELAY_TOKEN_FILE_INVALID') && failedLine.includes('tokens'), `one error line naming the token file:\n${server.stderr().slice(-3000)}`);
    const a = await rawClient(url);
    a.send(authenticate('good-token'));
    await a.waitFor(NO_ERROR);
    const b = await rawClient(url);
    b.send(authenticate('good-token', { id: 5 }));
    await b.waitFor(TUNNEL_ESTABLISHED);
    a.destroy();
    b.destroy();

    // Back in place: the next reload succeeds.
    writeFileSync(tokens, `${hashToken('good-token', 'alice')}\n`);
    server.child.kill('SIGHUP');
    await until(() => count('configuration reloaded') === 2, 5000, 'the good reload');
    assert.equal(await reloadCount(opsUrl, 'ok'), 1);
    assert.equal(server.child.exitCode, null);
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.exited(), { code: 0, signal: null });
  } finally {
    server.child.kill('SIGKILL');
  }
});

test('a reload that fails part-way applies nothing: a renewed certificate with a broken token file, a changed log level', async () => {
  const dir = tempDir();
  const old = selfSignedCert(dir);
  const renewed = selfSignedCert(tempDir());
  writeFileSync(join(dir, 'tokens'), `${hashToken('t1', 'a')}\n`);
  const raw = (level: string) => ({
    log: { level },
    relay: { listeners: [{ kind: 'tls', port: 0 }], tls: { certFile: 'cert.pem', keyFile: 'key.pem' }, authenticator: { kind: 'static', file: 'tokens' }, monitor: { enabled: false }, timeouts: { closeFlushMs: 700 } },
  });
  const cap = captureLog();
  const levels: string[] = [];
  const gw = await createGateway(validateConfig(gatewayConfigSchema, raw('info')), { log: cap.log, baseDir: dir, setLogLevel: (l) => levels.push(l) });
  await gw.start();
  try {
    const port = gw.relay!.listeners[0]!.port;
    const before = await peerFingerprint(port);
    copyFileSync(renewed.certFile, old.certFile);
    copyFileSync(renewed.keyFile, old.keyFile);
    writeFileSync(join(dir, 'tokens'), 'this is not a token line\n');
    const report = await gw.reload(validateConfig(gatewayConfigSchema, raw('debug')));
    assert.deepEqual(report.failed, ['relay']);
    assert.equal(await peerFingerprint(port), before, 'the renewed certificate is not applied when the token file is refused');
    assert.deepEqual(levels, [], 'the log level is not applied by a failed reload');

    // A certificate with a key that is not its own: refused (CORE_TLS_MATERIAL), nothing applied.
    writeFileSync(join(dir, 'tokens'), `${hashToken('t2', 'b')}\n`);
    const other = selfSignedCert(tempDir());
    copyFileSync(other.keyFile, old.keyFile);
    const mismatched = await gw.reload(validateConfig(gatewayConfigSchema, raw('debug')));
    assert.deepEqual(mismatched.failed, ['relay']);
    assert.equal(await peerFingerprint(port), before);
    assert.ok(cap.records().some((r) => r.msg === 'reload failed; the previous state stays in force' && r.code === 'CORE_TLS_MATERIAL' && String((r.err as { message?: unknown } | undefined)?.message).includes('key.pem')));
    assert.deepEqual(levels, []);

    // Fixed: all of it applies.
    copyFileSync(renewed.keyFile, old.keyFile);
    const ok = await gw.reload(validateConfig(gatewayConfigSchema, raw('debug')));
    assert.deepEqual(ok.failed, []);
    assert.notEqual(await peerFingerprint(port), before);
    assert.deepEqual(levels, ['debug']);
  } finally {
    await gw.close({ graceMs: 0 });
  }
});

test('serve --workers 2: a worker that hangs at shutdown is killed after the grace period; the primary exits 0', { timeout: 25000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(cfg, '[shutdown]\ngraceMs = 500\n[relay]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]\n[relay.monitor]\nenabled = false\n[ops]\nport = 0\n');
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json'], { cwd: dir });
  let stoppedPid: number | undefined;
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    const opsUrl = /Ops: (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(banner)![1]!;
    assert.equal((await fetch(`${opsUrl}/readyz`)).status, 200);
    const primary = server.child.pid!;
    const pids = new Set<number>();
    for (const line of server.stderr().split('\n')) {
      const m = /"pid":(\d+)/.exec(line);
      if (m !== null && Number(m[1]) !== primary) pids.add(Number(m[1]));
    }
    assert.equal(pids.size, 2, `two worker pids in the logs: ${[...pids].join(', ')}`);
    stoppedPid = [...pids][0]!;
    // A stopped process reads no message and runs no timer: it hangs until killed.
    process.kill(stoppedPid, 'SIGSTOP');
    server.child.kill('SIGTERM');
    // While the other worker drains and this one hangs, the load balancer is told to stay away.
    await until(() => server.stderr().includes('shutting down: every worker drains'), 5000, 'the drain');
    const readyz = await fetch(`${opsUrl}/readyz`);
    assert.deepEqual([readyz.status, await readyz.text()], [503, 'draining\n']);
    assert.deepEqual(await server.exited(10000), { code: 0, signal: null }, `exited:\n${server.stderr().slice(-2000)}`);
    assert.throws(() => process.kill(stoppedPid!, 0), /ESRCH/, 'the hung worker is gone');
    assert.match(server.stderr(), /"worker":\d+.*did not stop within the grace period/);
  } finally {
    if (stoppedPid !== undefined) {
      try {
        process.kill(stoppedPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    server.child.kill('SIGKILL');
  }
});

test('serve --workers 2: a slot whose replacements keep crashing backs off (1 s, 2 s, 4 s); the other worker serves on', { timeout: 28000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  const good = '[shutdown]\ngraceMs = 300\n[relay]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]\n[relay.monitor]\nenabled = false\n';
  writeFileSync(cfg, good);
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json'], { cwd: dir });
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    const url = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const primary = server.child.pid!;
    const workerPids = [...new Set(server.stderr().split('\n').map((l) => Number(/"pid":(\d+)/.exec(l)?.[1] ?? NaN)).filter((p) => !Number.isNaN(p) && p !== primary))];
    assert.equal(workerPids.length, 2);
    // Every replacement now fails at its start (exit 78): the slot keeps crashing.
    writeFileSync(cfg, `${good}bogus = 1\n`);
    process.kill(workerPids[0]!, 'SIGKILL');
    const exits = () =>
      server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('a worker exited; starting a replacement'))
        .map((l) => JSON.parse(l) as { delayMs: number });
    await until(() => exits().length >= 3, 20000, 'three exits in the crashing slot');
    const seen = exits().slice(0, 3);
    assert.deepEqual(seen.map((e) => e.delayMs), [1000, 2000, 4000], 'the back-off doubles');
    // The other worker was never touched: pairs keep forming on the shared port.
    const a = await rawClient(url);
    a.send(authenticate('still-serving'));
    await a.waitFor(NO_ERROR);
    const b = await rawClient(url);
    b.send(authenticate('still-serving', { id: 5 }));
    await b.waitFor(TUNNEL_ESTABLISHED);
    a.destroy();
    b.destroy();
    process.kill(workerPids[1]!, 0);
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.exited(10000), { code: 0, signal: null });
  } finally {
    server.child.kill('SIGKILL');
  }
});

test('serve --workers 2: SIGHUPs while the workers start (systemctl reload right after start) do not kill them; rapid SIGHUPs coalesce', { timeout: 28000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(cfg, '[shutdown]\ngraceMs = 300\n[relay]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = 0 }]\n[relay.monitor]\nenabled = false\n');
  const server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json'], { cwd: dir });
  // The primary handles SIGHUP before it forks: once it has a child, every SIGHUP lands on a handler of
  // its, while the workers are still starting.
  const children = () => {
    try {
      return readFileSync(`/proc/${server.child.pid!}/task/${server.child.pid!}/children`, 'utf8').trim();
    } catch {
      return '';
    }
  };
  await until(() => children() !== '', 20000, 'the primary forking its workers');
  const hups = setInterval(() => server.child.kill('SIGHUP'), 30);
  try {
    const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 20000);
    clearInterval(hups);
    const url = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    assert.doesNotMatch(server.stderr(), /a worker exited|failed to start/);
    // A burst of SIGHUPs: each worker runs at most the one in progress and one more.
    const before = server.stderr().split('\n').filter((l) => l.includes('"configuration reloaded"')).length;
    for (let i = 0; i < 20; i++) server.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 1500));
    const reloads = server.stderr().split('\n').filter((l) => l.includes('"configuration reloaded"')).length - before;
    assert.ok(reloads >= 2 && reloads <= 4, `2 workers × (1 + 1 queued) reloads at most, got ${reloads}`);
    const a = await rawClient(url);
    a.send(authenticate('after-hups'));
    await a.waitFor(NO_ERROR);
    const b = await rawClient(url);
    b.send(authenticate('after-hups', { id: 5 }));
    await b.waitFor(TUNNEL_ESTABLISHED);
    a.destroy();
    b.destroy();
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.exited(10000), { code: 0, signal: null });
  } finally {
    clearInterval(hups);
    server.child.kill('SIGKILL');
  }
});

test('a reload that fails in one front end applies nothing in another: the relay keeps its certificate while the card bridge\'s is refused', async () => {
  const dir = tempDir();
  const relayCert = selfSignedCert(dir);
  const cardDir = join(dir, 'card');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(cardDir);
  const cardCert = selfSignedCert(cardDir);
  const renewed = selfSignedCert(tempDir());
  const raw = {
    relay: { listeners: [{ kind: 'tls', port: 0 }], tls: { certFile: 'cert.pem', keyFile: 'key.pem' }, monitor: { enabled: false }, timeouts: { closeFlushMs: 700 } },
    cardBridge: { listeners: [{ kind: 'tls', port: 0 }], backends: [{ kind: 'simulator' }], tls: { certFile: 'card/cert.pem', keyFile: 'card/key.pem' } },
  };
  const cap = captureLog();
  const gw = await createGateway(validateConfig(gatewayConfigSchema, raw), { log: cap.log, baseDir: dir });
  await gw.start();
  try {
    const relayPort = gw.relay!.listeners[0]!.port;
    const cardPort = gw.cardBridge!.listeners[0]!.port;
    const relayBefore = await peerFingerprint(relayPort);
    const cardBefore = await peerFingerprint(cardPort);
    copyFileSync(renewed.certFile, relayCert.certFile);
    copyFileSync(renewed.keyFile, relayCert.keyFile);
    writeFileSync(cardCert.certFile, 'not a certificate');
    const bad = await gw.reload(validateConfig(gatewayConfigSchema, raw));
    assert.deepEqual(bad.failed, ['cardBridge']);
    assert.equal(await peerFingerprint(relayPort), relayBefore, 'the relay\'s renewed certificate waits for a reload that succeeds');
    assert.equal(await peerFingerprint(cardPort), cardBefore);

    copyFileSync(renewed.certFile, cardCert.certFile);
    copyFileSync(renewed.keyFile, cardCert.keyFile);
    const ok = await gw.reload(validateConfig(gatewayConfigSchema, raw));
    assert.deepEqual(ok.failed, []);
    assert.notEqual(await peerFingerprint(relayPort), relayBefore);
    assert.notEqual(await peerFingerprint(cardPort), cardBefore);
  } finally {
    await gw.close({ graceMs: 0 });
  }
});
