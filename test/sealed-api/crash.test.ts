/**
 * Crash safety of managed-file writes: a writer process killed with SIGKILL at random moments leaves the
 * old or the new file, never a torn one; the temp files it left are removed when the server next starts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSealed, tempDir } from './helpers.ts';

const BYTES = 2 * 1024 * 1024;
const ROUNDS = 8;

function runAndKill(path: string, afterMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', new URL('./fixtures/writer.ts', import.meta.url).pathname, path, String(BYTES)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('writer never became ready'));
    }, 30000);
    child.stdout.once('data', () => {
      setTimeout(() => child.kill('SIGKILL'), afterMs);
    });
    child.once('exit', (_code, signal) => {
      clearTimeout(deadline);
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`writer exited by itself (${String(signal)})`));
    });
  });
}

test('SIGKILL mid-write leaves the old or the new file, never a torn one; the next start removes temp files', async () => {
  const dir = tempDir();
  const etc = join(dir, 'etc');
  mkdirSync(etc);
  const path = join(etc, 'data.json');
  const valid = new Set([`"${'A'.repeat(BYTES)}"\n`, `"${'B'.repeat(BYTES)}"\n`, '"initial"\n']);
  writeFileSync(path, '"initial"\n');
  let sawTemp = false;
  for (let round = 0; round < ROUNDS; round++) {
    await runAndKill(path, 20 + Math.floor(Math.random() * 150));
    const content = readFileSync(path, 'utf8');
    assert.ok(valid.has(content), `round ${round}: torn file of ${content.length} bytes`);
    if (readdirSync(etc).some((n) => n.includes('.gh-tmp-'))) sawTemp = true;
  }
  const s = await startSealed(
    { files: { data: { path: 'etc/data.json', format: 'json' } }, limits: { maxFileBytes: 4 * BYTES } },
    { dir },
  );
  try {
    assert.deepEqual(readdirSync(etc), ['data.json'], 'no stray temp file after the next start');
    const c = await s.client('admin');
    const r = await c.call<{ content: string }>('files.read', { file: 'data' });
    assert.ok(valid.has(r.content));
    console.log(`temp files seen after a kill: ${sawTemp}`);
    if (sawTemp) assert.ok(s.lines.some((l) => l.msg === 'removed temp files left by an interrupted write'));
  } finally {
    await s.close();
  }
});
