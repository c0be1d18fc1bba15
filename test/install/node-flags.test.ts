/**
 * How the `gatehouse` command starts node (the `#!` line of bin/gatehouse.js): with node's defaults, no
 * flags; run the way the kernel runs an installed command (the file itself, not `node FILE`), the serving
 * process is node and the gateway serves every front end of a full config. Why no flags: bin/gatehouse.js
 * and docs/benchmarks.md ("The semi-space flag, removed").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { BIN, gatehouse } from '../helpers/cli.ts';
import { deadline, tempDir } from '../helpers/relay.ts';

/** The one line every one of these depends on. */
const SHEBANG = '#!/usr/bin/env node';

test('bin/gatehouse.js starts node with its defaults (no flags), and `npm start` runs the command itself', () => {
  assert.equal(readFileSync(BIN, 'utf8').split('\n', 1)[0], SHEBANG);
  const scripts = (JSON.parse(readFileSync(join(BIN, '..', '..', 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.equal(scripts.start, './bin/gatehouse.js serve', '`npm start` runs the command itself, so it gets the same flags');
});

/** The first line a TCP client gets back for `line` on 127.0.0.1:`port`. */
function ask(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(line));
    let got = '';
    s.setEncoding('utf8').on('data', (t: string) => {
      got += t;
      const end = got.indexOf('\n');
      if (end >= 0) {
        s.destroy();
        resolve(got.slice(0, end));
      }
    });
    s.on('error', reject);
  });
}

test('the command run through its #! line serves relay, card bridge and sealed API, node with no flags', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    [
      '[shutdown]',
      'graceMs = 1000',
      '[relay]',
      'listeners = [{ kind = "tcp", port = 0 }, { kind = "ws", port = 0 }]',
      '[relay.monitor]',
      'path = "monitor.sock"',
      '[cardBridge]',
      'listeners = [{ kind = "tcp", port = 0 }]',
      'backends = [{ kind = "simulator" }]',
      '[sealedApi]',
      'port = 0',
      'stateDir = "state"',
      '',
    ].join('\n'),
  );
  const served = gatehouse(['serve', '--config', cfg], { cwd: dir, command: BIN });
  const server = served.child;
  try {
    const out = await served.waitForStdout('Press Ctrl-C', 30_000);
    // env replaced itself with node: the serving process is node, with no flag before the script.
    const argv = readFileSync(`/proc/${String(server.pid)}/cmdline`, 'utf8').split('\0');
    assert.match(argv[0] ?? '', /node$/);
    assert.ok(!(argv[1] ?? '').startsWith('--'), argv.join(' '));
    const relayPort = Number(/ {2}tcp {2}tcp:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    assert.match(await deadline(ask(relayPort, '{"id":0,"method":"RemoteProxy.Hello"}\n'), 10_000, 'the relay Hello'), /"name":"gatehouse"/);
    // The card bridge: its simulated readers listed, its listener accepting.
    assert.match(out, /cards: {3}[1-9]\d* readers/);
    const cardsPort = Number(/Card bridge[^\n]*\n {2}tcp {2}tcp:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    await deadline(
      new Promise<void>((resolve, reject) => {
        const s = connect(cardsPort, '127.0.0.1', () => {
          s.destroy();
          resolve();
        });
        s.on('error', reject);
      }),
      10_000,
      'a card bridge connection',
    );
    // The sealed API answers (a GET on its path: 405, it takes sealed POSTs only).
    const sealedUrl = /^ {2}http (http:\/\/127\.0\.0\.1:\d+\S*)/m.exec(out)?.[1];
    assert.ok(sealedUrl !== undefined, out);
    const res = await deadline(fetch(sealedUrl), 10_000, 'the sealed API');
    await res.arrayBuffer();
    assert.equal(res.status, 405);
    server.kill('SIGTERM');
    assert.deepEqual(await served.exited(15_000), { code: 0, signal: null });
  } finally {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  }
});
