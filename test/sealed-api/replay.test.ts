/**
 * The shared replay directory under faults, with the server in its own process: the directory vanishing
 * while the server runs (the periodic sweep must not kill the process; requests get a sealed 503 until
 * the directory is back).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { spawnSealed } from './helpers.ts';

test('the replay directory removed while the server runs: the process survives its sweeps; requests get a sealed 503, then work once it is back', async () => {
  const s = await spawnSealed({ replayDir: 'replay', timeouts: { replaySweepMs: 50 } });
  try {
    assert.deepEqual(await s.client.call('ping'), { pong: true });
    rmSync(join(s.dir, 'replay'), { recursive: true, force: true });
    // Ten sweeps' worth of time against a missing directory.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(s.child.exitCode, null, `the server process exited: ${JSON.stringify(s.lines.slice(-3))}`);
    await assert.rejects(
      s.client.call('ping'),
      (e: unknown) => e instanceof SealedCallError && e.sealed && e.status === 503 && e.code === 'SEALED_REPLAY_STORE_FAILED',
    );
    const sweepErrors = s.lines.filter((l) => l.msg === 'replay directory sweep failed');
    assert.equal(sweepErrors.length, 1, 'the sweep failure is logged once while it lasts, not every 50 ms');
    mkdirSync(join(s.dir, 'replay'), { mode: 0o700 });
    assert.deepEqual(await s.client.call('ping'), { pong: true }, 'served again once the directory is back');
    assert.equal(s.child.exitCode, null);
  } finally {
    await s.stop();
  }
  assert.equal(await s.exited, 0, 'clean exit on SIGTERM');
});
