/**
 * User mistakes are not crashes: each case runs the real CLI (against a real `gatehouse serve` where a
 * server is involved) and asserts the documented exit code (usage 64, no input 66, unavailable 69,
 * can't create 73, configuration 78), a message that says what to do, and no stack trace or
 * "unexpected error" on stderr.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertNoCrash, gatehouse, runGatehouse, type Spawned } from '../helpers/cli.ts';
import { selfSignedCert, tempDir } from '../helpers/relay.ts';

let dir: string;
let server: Spawned;
let urls: { relayTcp: string; relayTls: string; cardPort: string; sealed: string };

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

before(async () => {
  dir = tempDir('gatehouse-cli-errors-');
  selfSignedCert(dir);
  writeFileSync(
    join(dir, 'g.toml'),
    [
      '[relay]',
      'listeners = [{ kind = "tcp", port = 0 }, { kind = "tls", port = 0 }]',
      '[relay.tls]',
      'certFile = "cert.pem"',
      'keyFile = "key.pem"',
      '[cardBridge]',
      'listeners = [{ kind = "tcp", port = 0 }]',
      'backends = [{ kind = "simulator", cards = [{ name = "Desk Reader" }] }]',
      '[sealedApi]',
      'port = 0',
      'stateDir = "state"',
      '',
    ].join('\n'),
  );
  server = gatehouse(['serve', '--config', join(dir, 'g.toml')], { cwd: dir });
  const banner = await server.waitForStdout(/Press Ctrl-C/, 30000);
  const card = /Card bridge[^\n]*\n\s+tcp\s+tcp:\/\/127\.0\.0\.1:(\d+)/.exec(banner);
  urls = {
    relayTcp: /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!,
    relayTls: /(tls:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!,
    cardPort: card![1]!,
    sealed: /(http:\/\/127\.0\.0\.1:\d+\/v1\/rpc)/.exec(banner)![1]!,
  };
  const keygen = await runGatehouse(['clients', 'keygen', '--out', 'me.json'], { cwd: dir });
  assert.equal(keygen.code, 0, keygen.stderr);
});

after(async () => {
  server.child.kill('SIGTERM');
  await server.exited();
});

async function expectExit(args: string[], code: number, message: RegExp, opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<void> {
  const r = await runGatehouse(args, { cwd: opts.cwd ?? dir, ...(opts.env === undefined ? {} : { env: opts.env }) });
  assert.equal(r.code, code, `gatehouse ${args.join(' ')}: exit ${String(r.code)}\n${r.stderr}`);
  assertNoCrash(r.stderr);
  assert.match(r.stderr, message);
}

test('a refused connection: call, card and tunnel say "is the gateway running at URL?" and exit 69', { timeout: 60000 }, async () => {
  const port = await closedPort();
  await expectExit(['card', 'list', '--port', String(port)], 69, new RegExp(`is the gateway running at tcp://127\\.0\\.0\\.1:${port}\\?`));
  await expectExit(
    ['call', `http://127.0.0.1:${port}/v1/rpc`, 'ping', '--key', 'me.json', '-c', 'g.toml'],
    69,
    new RegExp(`is the gateway running at http://127\\.0\\.0\\.1:${port}/v1/rpc\\?`),
  );
  await expectExit(['tunnel', '--url', `tcp://127.0.0.1:${port}`, '--token', 't'], 69, new RegExp(`is the gateway running at tcp://127\\.0\\.0\\.1:${port}\\?`));
});

test('http vs https: TLS spoken to a plain listener and plain spoken to a TLS listener are explained, exit 69', { timeout: 60000 }, async () => {
  await expectExit(
    ['call', urls.sealed.replace('http:', 'https:'), 'ping', '--key', 'me.json', '-c', 'g.toml'],
    69,
    /did not answer with TLS: it looks like a plain listener \(use http:\/\/ instead of https:\/\/\)/,
  );
  await expectExit(['tunnel', '--url', urls.relayTls.replace('tls:', 'tcp:'), '--token', 't'], 69, /TLS listener, use tls:\/\/ or wss:\/\//);
});

test('init refuses to overwrite: exit 73 and nothing is changed', { timeout: 60000 }, async () => {
  const target = tempDir('gatehouse-cli-init-');
  writeFileSync(join(target, 'tokens'), 'keep me\n');
  await expectExit(['init', target], 73, /refusing to overwrite .*tokens \(remove them or choose another directory\)/);
  assert.equal(readFileSync(join(target, 'tokens'), 'utf8'), 'keep me\n');
  assert.equal(existsSync(join(target, 'gatehouse.toml')), false);
});

test('argument validation is a usage error (64) naming the argument', { timeout: 60000 }, async () => {
  await expectExit(['card', 'list', '--port', 'abc'], 64, /--port <port>.*'abc' is invalid/);
  await expectExit(['card', 'list', '--port', '70000'], 64, /--port <port>/);
  await expectExit(['card', 'apdu', 'Desk Reader', '00zz', '--port', urls.cardPort], 64, /is not an APDU/);
  await expectExit(['clients', 'add', '-c', 'g.toml', '--name', 'x', '--key', 'me.json', '--expires', 'next tuesday'], 64, /--expires <iso>.*is invalid.*ISO 8601/);
  await expectExit(['clients', 'add', '-c', 'g.toml', '--name', 'x', '--key', 'me.json', '--expires-in-days', 'soon'], 64, /--expires-in-days/);
  await expectExit(['clients', 'rotate-server-key', '-c', 'g.toml', '--overlap-hours', '-1'], 64, /--overlap-hours/);
  await expectExit(['call', urls.sealed, 'ping', '[1,2]', '--key', 'me.json', '-c', 'g.toml'], 64, /ARGS must be a JSON object/);
  await expectExit(['call', 'not a url', 'ping', '--key', 'me.json'], 64, /is not a URL/);
  await expectExit(['tunnel', '--url', 'http://127.0.0.1:1', '--token', 't'], 64, /use tcp:\/\/, tls:\/\//);
  await expectExit(['tunnel', '--url', urls.relayTcp, '--token', 't', '--timeout', 'NaN'], 64, /--timeout <ms>/);
  await expectExit(['card', 'list', '--bogus'], 64, /unknown option '--bogus'/);
  await expectExit(['nonsense'], 64, /unknown command 'nonsense'/);
});

test('a file named on the command line that is missing: exit 66', { timeout: 60000 }, async () => {
  await expectExit(['card', 'sign', 'Novák', join(dir, 'no-such-file.pdf'), '--port', urls.cardPort], 66, /FILE .*no-such-file\.pdf: no such file/);
  await expectExit(['call', urls.sealed, 'ping', '--key', 'missing.json', '-c', 'g.toml'], 66, /--key missing\.json: no such file/);
  await expectExit(['clients', 'add', '-c', 'g.toml', '--name', 'y', '--key', 'missing.json'], 66, /--key missing\.json: no such file/);
});

test('a missing token file named by the config: exit 78 (configuration), like a missing TLS file', { timeout: 60000 }, async () => {
  const d = tempDir('gatehouse-cli-tokens-');
  writeFileSync(join(d, 'g.toml'), '[relay]\nlisteners = [{ kind = "tcp", port = 0 }]\n[relay.authenticator]\nkind = "static"\nfile = "tokens"\n');
  await expectExit(['serve', '--config', join(d, 'g.toml')], 78, /RELAY_TOKEN_FILE_INVALID: .*tokens: cannot read the token file/, { cwd: d });
  writeFileSync(join(d, 'tls.toml'), '[relay]\nlisteners = [{ kind = "tls", port = 0 }]\n[relay.tls]\ncertFile = "c.pem"\nkeyFile = "k.pem"\n');
  await expectExit(['serve', '--config', join(d, 'tls.toml')], 78, /CORE_TLS_MATERIAL/, { cwd: d });
});

test('--help lists the exit codes', { timeout: 30000 }, async () => {
  const r = await runGatehouse(['--help']);
  assert.equal(r.code, 0);
  for (const code of ['64', '66', '69', '70', '73', '78']) assert.match(r.stdout, new RegExp(`^ {2}${code} {2}\\S`, 'm'));
});
