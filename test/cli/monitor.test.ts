/**
 * `gatehouse monitor` as a person uses it: the view fits the terminal (width and height), shows users,
 * tunnel rows with both names, bytes and rate, the Gatehouse version; the live view waits for the gateway
 * and retries when it stops.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderMonitorView } from '../../src/cli/monitor.ts';
import { gatehouseVersion } from '../../src/core/version.ts';
import { gatehouse } from '../helpers/cli.ts';
import { tempDir } from '../helpers/relay.ts';

const client = (id: string, name: string, user: string, rx: number) => ({
  id: `{${id}-0000-0000-0000-000000000000}`,
  address: '127.0.0.1',
  name,
  uuid: '',
  userName: user,
  authenticated: true,
  tunnelConnected: true,
  rxDataCount: rx,
  txDataCount: 0,
  timestamp: 1000,
});

test('the view fits the terminal, names both ends of a tunnel with users, bytes and rate, and the version', () => {
  const clients = [client('aaaaaaaa', 'laptop', 'alice', 1000), client('bbbbbbbb', 'nymea-box', 'bob', 1000)];
  for (let i = 0; i < 50; i++) clients.push(client(`c${String(i).padStart(7, '0')}`, `idle-${i}`, '', 0));
  const doc = {
    proxyStatistic: { clientCount: clients.length, tunnelCount: 1, clients, tunnels: [{ clientOne: clients[0]!.id, clientTwo: clients[1]!.id, timestamp: 1000 }] },
  };
  const first = renderMonitorView(doc, 2_000_000, { columns: 80, rows: 20, version: '9.8.7' });
  clients[0]!.rxDataCount += 2048;
  const second = renderMonitorView(doc, 2_002_000, { columns: 80, rows: 20, previous: first.history, version: '9.8.7' });
  const lines = second.text.split('\n');
  assert.ok(lines.length <= 20, `${lines.length} lines`);
  for (const l of lines) assert.ok(l.length <= 80, `too wide: ${l}`);
  assert.match(lines[0]!, /^Gatehouse 9\.8\.7 {3}clients 52 {3}tunnels 1/);
  assert.match(second.text, /<-> +laptop \(alice\) +nymea-box \(bob\) +4\.0 KiB +1\.0 KiB\/s/);
  assert.match(second.text, /USER/);
  assert.match(lines.at(-1)!, /^… \d+ more rows/);
});

test('live view: waits for the gateway, shows it with the Gatehouse version once it runs, says so when it stops and resumes when it is back', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'g.toml');
  writeFileSync(cfg, '[relay]\nlisteners = [{ kind = "tcp", port = 0 }]\n[relay.monitor]\npath = "mon.sock"\nintervalMs = 200\n');
  const mon = gatehouse(['monitor', '--socket', join(dir, 'mon.sock')]);
  const server = gatehouse(['serve', '--config', cfg], { cwd: dir });
  try {
    await mon.waitForStdout(/cannot reach .*mon\.sock; retrying/, 5000).catch(() => undefined);
    const banner = await server.waitForStdout(/Press Ctrl-C/);
    const url = /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    await mon.waitForStdout(new RegExp(`Gatehouse ${gatehouseVersion().replace(/\./g, '\\.')} {3}clients 0`), 15000);
    server.child.kill('SIGTERM');
    await server.exited();
    await mon.waitForStdout(/monitor socket closed .*retrying/, 15000);
    assert.ok(url !== '');
    // The gateway comes back: the view resumes by itself (the first document may be a push that raced
    // the monitor's refresh; both forms are read).
    const mark = mon.stdout().length;
    const again = gatehouse(['serve', '--config', cfg], { cwd: dir });
    try {
      await again.waitForStdout(/Press Ctrl-C/);
      const versionLine = new RegExp(`Gatehouse ${gatehouseVersion().replace(/\./g, '\\.')} {3}clients 0`);
      const until = Date.now() + 15000;
      while (!versionLine.test(mon.stdout().slice(mark))) {
        assert.ok(Date.now() < until, `the view did not resume: ${mon.stdout().slice(-400)} / ${mon.stderr().slice(-400)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      again.child.kill('SIGTERM');
      await again.exited();
    }
    mon.child.kill('SIGTERM');
    assert.equal((await mon.exited()).code, 0);
  } finally {
    mon.child.kill('SIGKILL');
    server.child.kill('SIGKILL');
  }
});
