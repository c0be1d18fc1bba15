/** The `gatehouse` binary end to end: help, config errors, serve + tunnel + monitor, graceful SIGTERM. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse } from '../helpers/cli.ts';
import { tempDir } from '../helpers/relay.ts';

test('--help lists the subcommands', async () => {
  const p = gatehouse(['--help']);
  assert.deepEqual(await p.exited(), { code: 0, signal: null });
  for (const cmd of ['serve', 'monitor', 'tunnel']) assert.match(p.stdout(), new RegExp(`\\b${cmd}\\b`));
});

test('an invalid config exits 78 and lists every problem with its key', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'bad.toml');
  writeFileSync(cfg, '[relay]\nbogus = 1\n[relay.timeouts]\ninactiveMs = "soon"\n');
  const p = gatehouse(['serve', '--config', cfg]);
  const { code } = await p.exited();
  assert.equal(code, 78);
  assert.match(p.stderr(), /CORE_CONFIG_INVALID/);
  assert.match(p.stderr(), /relay\.bogus: unknown key/);
  assert.match(p.stderr(), /relay\.timeouts\.inactiveMs:/);
});

test('serve prints how to connect; two `gatehouse tunnel` processes pair and pipe; monitor --json; SIGTERM drains', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'gatehouse.toml');
  writeFileSync(
    cfg,
    [
      '[log]',
      'level = "info"',
      '[shutdown]',
      'graceMs = 2000',
      '[relay]',
      'listeners = [{ kind = "tcp", port = 0 }, { kind = "ws", port = 0 }]',
      // The second `gatehouse tunnel` process may take seconds to start on a loaded machine: the first must
      // still be waiting for it (the default alone timeout is 8 s).
      '[relay.timeouts]',
      'aloneMs = 60000',
      '[relay.monitor]',
      'path = "mon.sock"',
      '',
    ].join('\n'),
  );
  const server = gatehouse(['serve', '--config', cfg]);
  try {
    const banner = await server.waitForStdout(/tcp:\/\/127\.0\.0\.1:\d+[\s\S]*Press Ctrl-C/);
    const tcpUrl = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    const wsUrl = /(ws:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    assert.match(server.stderr(), /DEV AUTHENTICATOR/);
    const one = gatehouse(['tunnel', '--url', tcpUrl, '--token', 'cli-token', '--name', 'one']);
    one.child.stdin!.write('hello from one\n');
    const two = gatehouse(['tunnel', '--url', wsUrl, '--token', 'cli-token', '--name', 'two', '--verbose']);
    await two.waitForStdout('hello from one');
    const mon = gatehouse(['monitor', '--socket', join(dir, 'mon.sock'), '--json']);
    assert.equal((await mon.exited()).code, 0);
    const doc = JSON.parse(mon.stdout()) as { proxyStatistic: { tunnelCount: number; clients: { name: string }[] } };
    assert.equal(doc.proxyStatistic.tunnelCount, 1);
    assert.deepEqual(doc.proxyStatistic.clients.map((c) => c.name).sort(), ['one', 'two']);
    assert.match(two.stderr(), />> \{"id":1,"method":"Authentication.Authenticate"/);
    // The live view renders clients and tunnels in the terminal.
    const live = gatehouse(['monitor', '--socket', join(dir, 'mon.sock')]);
    const screen = await live.waitForStdout(/TUNNELS[\s\S]*<->/);
    assert.match(screen, /clients 2 {3}tunnels 1/);
    assert.match(screen, /\bone\b[\s\S]*\btunnel\b/);
    live.child.kill('SIGTERM');
    await live.exited();
    // two (WebSocket, no half-close) ends its stdin: its data is flushed to one, then the tunnel ends.
    two.child.stdin!.end('bye\n');
    await one.waitForStdout('bye');
    assert.equal((await one.exited()).code, 0);
    assert.equal((await two.exited()).code, 0);
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.exited(), { code: 0, signal: null });
    assert.match(server.stderr(), /"msg":"shutting down"/);
    assert.match(server.stderr(), /"msg":"stopped"/);
    assert.doesNotMatch(server.stderr(), /cli-token/);
  } finally {
    server.child.kill('SIGKILL');
  }
});
