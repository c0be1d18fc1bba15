/**
 * Logs a person can read: readable lines in pretty mode and JSON otherwise, secrets redacted in both;
 * `--log-level` and GATEHOUSE_LOG_LEVEL on `gatehouse serve`; tunnel established/closed at info with both
 * remote addresses; a failed relay authentication at warn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, prettyLogs, prettyStream } from '../../src/core/log.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { authenticate, captureLog, pair, rawClient, startRelay, tempDir } from '../helpers/relay.ts';
import { gatehouse } from '../helpers/cli.ts';

function sink(): { stream: Writable; text: () => string } {
  let out = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => out };
}

const SECRETS = { token: 'tok-SECRET-1', pin: '123456', headers: { authorization: 'Bearer SECRET-2' }, cfg: new Secret('SECRET-3') };

test('pretty and JSON modes print the same record, secrets redacted in both', () => {
  const pretty = sink();
  const p = createLogger({ level: 'info' }, prettyStream({ colorize: false, destination: pretty.stream }));
  p.child({ frontEnd: 'relay' }).warn({ ...SECRETS, remote: '127.0.0.1' }, 'authentication failed');
  const json = sink();
  const j = createLogger({ level: 'info' }, json.stream);
  j.child({ frontEnd: 'relay' }).warn({ ...SECRETS, remote: '127.0.0.1' }, 'authentication failed');
  assert.match(pretty.text(), /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: authentication failed \{.*"frontEnd":"relay".*\}\n$/);
  assert.doesNotMatch(pretty.text(), /^\{/, 'not JSON');
  const rec = JSON.parse(json.text()) as Record<string, unknown>;
  assert.equal(rec.level, 'warn');
  for (const out of [pretty.text(), json.text()]) {
    for (const s of ['tok-SECRET-1', '123456', 'SECRET-2', 'SECRET-3']) assert.ok(!out.includes(s), `${s} leaked: ${out}`);
    assert.match(out, /\[redacted\]/);
  }
  assert.equal(prettyLogs('auto', true), true);
  assert.equal(prettyLogs('auto', false), false);
  assert.equal(prettyLogs('json', true), false);
  assert.equal(prettyLogs('pretty', false), true);
});

test('tunnel established and closed at info with both remote addresses; a failed authentication at warn', async () => {
  const cap = captureLog();
  const relay = await startRelay({ authenticator: { kind: 'mock' } }, { log: cap.log });
  try {
    const { a, b } = await pair(relay.url('tcp'), relay.url('ws'));
    a.destroy();
    await b.closed();
    const bad = await rawClient(relay.url('tcp'));
    bad.send(authenticate('mock:0:AuthenticationErrorAuthenticationFailed'));
    await bad.closed();
    const recs = cap.records();
    const est = recs.find((r) => r.msg === 'tunnel established');
    const closed = recs.find((r) => r.msg === 'tunnel closed');
    assert.equal(est?.level, 'info');
    assert.deepEqual(est?.remotes, ['127.0.0.1', '127.0.0.1']);
    assert.equal(closed?.level, 'info');
    assert.deepEqual(closed?.remotes, ['127.0.0.1', '127.0.0.1']);
    const failed = recs.find((r) => r.msg === 'authentication failed');
    assert.equal(failed?.level, 'warn');
    assert.equal(failed?.authenticationError, 'AuthenticationErrorAuthenticationFailed');
    assert.equal(failed?.remote, '127.0.0.1');
    assert.ok(!cap.text().includes('mock:0:'), 'the token is not logged');
  } finally {
    await relay.close();
  }
});

test('serve: --log-level beats GATEHOUSE_LOG_LEVEL beats the file; --log-format pretty prints readable lines; a bad env level is a usage error', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'g.toml');
  writeFileSync(cfg, '[log]\nlevel = "warn"\n[relay]\nlisteners = [{ kind = "tcp", port = 0 }]\n[relay.monitor]\nenabled = false\n');
  const run = async (args: string[], env: Record<string, string> = {}) => {
    const p = gatehouse(['serve', '--config', cfg, ...args], { cwd: dir, env });
    // 'close' (every pipe read), not 'exit': the last log lines may still be in the pipe at exit.
    const closed = new Promise((resolve) => p.child.once('close', resolve));
    await p.waitForStdout(/Press Ctrl-C/);
    // The log lines before the banner may still be on their way (asynchronous destination): give them a
    // moment on a loaded machine, then stop.
    for (let i = 0; i < 50 && !/relay listening/.test(p.stderr()); i++) await new Promise((r) => setTimeout(r, 20));
    p.child.kill('SIGTERM');
    await p.exited();
    await closed;
    return p.stderr();
  };
  assert.doesNotMatch(await run([]), /relay listening/, 'file level warn hides info');
  assert.match(await run([], { GATEHOUSE_LOG_LEVEL: 'info' }), /"msg":"relay listening"/);
  const debug = await run(['--log-level', 'debug'], { GATEHOUSE_LOG_LEVEL: 'error' });
  assert.match(debug, /"msg":"relay listening"/);
  const pretty = await run(['--log-level', 'info', '--log-format', 'pretty']);
  assert.match(pretty, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO.*: relay listening/m);
  const bad = gatehouse(['serve', '--config', cfg], { cwd: dir, env: { GATEHOUSE_LOG_LEVEL: 'loud' } });
  assert.equal((await bad.exited()).code, 64);
  assert.match(bad.stderr(), /GATEHOUSE_LOG_LEVEL=loud is not a log level/);
});
