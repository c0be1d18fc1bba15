import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, verify, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBridge, type StartedBridge } from './helpers.ts';
import { tempDir } from '../helpers/relay.ts';

const BIN = new URL('../../bin/gatehouse.js', import.meta.url).pathname;
let bridge: StartedBridge;
before(async () => {
  bridge = await startBridge({
    cards: [{ name: 'Desk Reader' }, { name: 'Signer', signing: { commonName: 'Karel Čapek', pin: 'karel-pin-1' } }],
  });
});
after(() => bridge.close());

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, 'card', ...args, '--port', String(bridge.port)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

test('gatehouse card list / reset / apdu', async () => {
  const list = await cli(['list']);
  assert.equal(list.code, 0, list.err);
  assert.equal(list.out, 'Foxy USB Desk Reader\nFoxy USB Signer\n');
  const reset = await cli(['reset', 'Desk Reader']);
  assert.equal(reset.out, '3B021450\n');
  const apdu = await cli(['apdu', 'Desk Reader', '80EE000002CAFE', '80 EE 00 00 01 01']);
  assert.equal(apdu.code, 0, apdu.err);
  assert.equal(apdu.out, 'CAFE9000\n019000\n');
  const bad = await cli(['reset', 'nowhere']);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /C083/);
});

test('gatehouse card sign: hashes a file, PIN from the environment, signature verifies against chain', async () => {
  const dir = tempDir('gatehouse-card-cli-');
  const file = join(dir, 'doc.txt');
  writeFileSync(file, 'sign me');
  const chain = await cli(['chain', 'Čapek']);
  assert.equal(chain.code, 0, chain.err);
  const cert = new X509Certificate(`${chain.out.split('-----END CERTIFICATE-----')[0] ?? ''}-----END CERTIFICATE-----\n`);
  const sig = await cli(['sign', 'Čapek', file, '--out', join(dir, 'sig.bin')], { GATEHOUSE_CARD_PIN: 'karel-pin-1' });
  assert.equal(sig.code, 0, sig.err);
  assert.ok(verify('sha256', Buffer.from('sign me'), cert.publicKey, Buffer.from(sig.out.trim(), 'hex')));
  const wrong = await cli(['sign', 'Čapek', file], { GATEHOUSE_CARD_PIN: 'nope-nope' });
  assert.equal(wrong.code, 1);
  assert.match(wrong.err, /C085/);
  assert.equal(createHash('sha256').update('x').digest().length, 32);
});
