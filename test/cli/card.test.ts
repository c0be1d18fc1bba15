/**
 * `gatehouse card` as a new user meets it, against a real `gatehouse serve` with the default simulated
 * cards: every name `card list` prints is accepted by `card reset` / `card apdu` (with or without the
 * listing's `Foxy USB` prefix), the README's example APDU succeeds, and `card sign` without a PIN says
 * how to give one.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertNoCrash, gatehouse, runGatehouse, type Spawned } from '../helpers/cli.ts';
import { tempDir } from '../helpers/relay.ts';

let dir: string;
let server: Spawned;
let port: string;

before(async () => {
  dir = tempDir('gatehouse-cli-card-');
  // The embedded defaults' card bridge (simulator with its default cards), on port 0.
  writeFileSync(join(dir, 'g.toml'), '[cardBridge]\nlisteners = [{ kind = "tcp", port = 0 }]\nbackends = [{ kind = "simulator" }]\n');
  server = gatehouse(['serve', '--config', join(dir, 'g.toml')], { cwd: dir });
  const banner = await server.waitForStdout(/Press Ctrl-C/, 30000);
  port = /Card bridge[^\n]*\n\s+tcp\s+tcp:\/\/127\.0\.0\.1:(\d+)/.exec(banner)![1]!;
});

after(async () => {
  server.child.kill('SIGTERM');
  await server.exited();
});

const card = (args: string[], env: Record<string, string> = {}) => runGatehouse(['card', ...args, '--port', port], { cwd: dir, env });

test('every name `card list` prints works in `card reset` and `card apdu`, with or without the "Foxy USB" prefix', { timeout: 60000 }, async () => {
  const list = await card(['list']);
  assert.equal(list.code, 0, list.stderr);
  const names = list.stdout.split('\n').filter((l) => l !== '');
  assert.deepEqual(names, ['Foxy USB Gatehouse Sim 00', 'Foxy USB Gatehouse Sim 01', 'Foxy USB Gatehouse Sim Signing 02']);
  for (const name of names) {
    for (const form of [name, name.replace(/^Foxy USB /, '')]) {
      const reset = await card(['reset', form]);
      assert.equal(reset.code, 0, `${form}: ${reset.stderr}`);
      assert.match(reset.stdout, /^3B[0-9A-F]+\n$/);
      const apdu = await card(['apdu', form, '80EE000002CAFE']);
      assert.equal(apdu.code, 0, `${form}: ${apdu.stderr}`);
      assert.equal(apdu.stdout, 'CAFE9000\n');
    }
  }
});

test("the README's example `card apdu \"Gatehouse Sim 00\" 00A4040000` succeeds (SELECT without AID → 9000)", { timeout: 60000 }, async () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const example = /card apdu "([^"]+)" ([0-9A-F]+)/.exec(readme);
  assert.ok(example !== null, 'the README has a card apdu example');
  const r = await card(['apdu', example[1]!, example[2]!]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '9000\n');
  // The same on the signing card, and SELECT MF by P1-P2 = 0000 with no data.
  const s = await card(['apdu', 'Gatehouse Sim Signing 02', '00A4040000', '00A4000000']);
  assert.equal(s.stdout, '9000\n9000\n');
});

test('`card sign` without a PIN says how to give one (exit 64); with it, it signs', { timeout: 60000 }, async () => {
  const file = join(dir, 'doc.txt');
  writeFileSync(file, 'sign me');
  const none = await card(['sign', 'Novák', file], { GATEHOUSE_CARD_PIN: '' });
  assert.equal(none.code, 64, none.stderr);
  assertNoCrash(none.stderr);
  assert.match(none.stderr, /the card needs a PIN: put it in the environment variable GATEHOUSE_CARD_PIN/);
  assert.match(none.stderr, /--pin-env/);
  const own = await card(['sign', 'Novák', file, '--pin-env', 'MY_PIN'], { GATEHOUSE_CARD_PIN: '' });
  assert.match(own.stderr, /environment variable MY_PIN/);
  const signed = await card(['sign', 'Novák', file], { GATEHOUSE_CARD_PIN: '1234' });
  assert.equal(signed.code, 0, signed.stderr);
  assert.match(signed.stdout, /^[0-9A-F]{512}\n$/);
});
