/**
 * `gatehouse tunnel` as a person uses it, against a real relay: "waiting for partner…" and "connected to
 * NAME" on stderr; the relay's alone timeout reported as such (not "end of stream"); --keep-open lets a
 * receiver with </dev/null get everything; a sender cut off before the end of its input exits 1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { BIN, gatehouse } from '../helpers/cli.ts';
import { deadline, startRelay } from '../helpers/relay.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A `gatehouse tunnel` whose stdout is kept as bytes (stdin closed at once: `</dev/null`). */
function binaryReceiver(args: string[]) {
  const child = spawn(process.execPath, [BIN, 'tunnel', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
  child.stdin.end();
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { stdout: () => Buffer.concat(chunks), stderr: () => err, closed: (ms: number) => deadline(closed, ms, 'receiver exit') };
}

async function until(fn: () => boolean, ms: number, what: string): Promise<void> {
  await deadline(
    (async () => {
      while (!fn()) await new Promise((r) => setTimeout(r, 20));
    })(),
    ms,
    what,
  );
}

test('alone: "waiting for partner…", then the relay giving up is said as such; exit 1', async () => {
  const relay = await startRelay({ authenticator: { kind: 'dev' }, timeouts: { aloneMs: 300 } });
  try {
    for (const kind of ['tcp', 'ws']) {
      const p = gatehouse(['tunnel', '--url', relay.url(kind), '--token', 'alone-token']);
      const { code } = await p.exited(10000);
      assert.equal(code, 1, p.stderr());
      assert.match(p.stderr(), /^waiting for partner…\n/);
      assert.match(p.stderr(), /no partner arrived: the relay gave up waiting \(its alone timeout, relay\.timeouts\.aloneMs\)/);
      assert.doesNotMatch(p.stderr(), /end of stream/);
    }
  } finally {
    await relay.close();
  }
});

test('--keep-open: a receiver with empty stdin gets every byte; both say who they are connected to and exit 0', async () => {
  const relay = await startRelay({ authenticator: { kind: 'dev' } });
  try {
    const data = randomBytes(4 * 1024 * 1024);
    const receiver = binaryReceiver(['--url', relay.url('tcp'), '--token', 'keep', '--name', 'receiver', '--keep-open']);
    const got = receiver.stdout;
    await until(() => receiver.stderr().includes('waiting for partner'), 5000, 'receiver waiting');
    const sender = gatehouse(['tunnel', '--url', relay.url('ws'), '--token', 'keep', '--name', 'sender']);
    sender.child.stdin!.end(data);
    assert.equal(await receiver.closed(20000), 0, receiver.stderr());
    assert.equal((await sender.exited(20000)).code, 0, sender.stderr());
    assert.equal(got().length, data.length);
    assert.equal(sha(got()), sha(data));
    assert.match(receiver.stderr(), /connected to sender\n/);
    assert.match(sender.stderr(), /connected to receiver\n/);
  } finally {
    await relay.close();
  }
});

test('without --keep-open the receiver ends the tunnel at once: the sender, cut off before the end of its input, exits 1', async () => {
  const relay = await startRelay({ authenticator: { kind: 'dev' } });
  try {
    const receiver = gatehouse(['tunnel', '--url', relay.url('tcp'), '--token', 'cut', '--name', 'receiver'], { input: '' });
    await until(() => receiver.stderr().includes('waiting for partner'), 5000, 'receiver waiting');
    const sender = gatehouse(['tunnel', '--url', relay.url('tcp'), '--token', 'cut', '--name', 'sender']);
    sender.child.stdin!.on('error', () => undefined);
    // Input that keeps coming and has not ended when the tunnel closes (as `cat big-file |` would be).
    const chunk = randomBytes(64 * 1024);
    const feed = setInterval(() => sender.child.stdin!.write(chunk), 5);
    const { code } = await sender.exited(15000).finally(() => clearInterval(feed));
    assert.equal(code, 1, sender.stderr());
    assert.match(sender.stderr(), /the tunnel closed before all of stdin was sent/);
    assert.equal((await receiver.exited(15000)).code, 0, receiver.stderr());
  } finally {
    await relay.close();
  }
});
