/**
 * The CLI's last-resort handler: an uncaught exception or unhandled rejection is ONE fatal JSON log line
 * (pino format: level, time, pid, name, err {type, message, stack, code}, msg) and exit 70, never a bare
 * stack. The crash is provoked by GATEHOUSE_TEST_CRASH, honoured only with GATEHOUSE_TEST=1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runGatehouse } from '../helpers/cli.ts';

interface FatalLine {
  level: string;
  time: string;
  pid: number;
  name: string;
  msg: string;
  err: { type: string; message: string; stack: string; code: string };
}

function theOneLine(stderr: string): FatalLine {
  const lines = stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `exactly one line on stderr, got:\n${stderr}`);
  return JSON.parse(lines[0]!) as FatalLine;
}

for (const [kind, msg] of [
  ['exception', 'uncaught exception'],
  ['rejection', 'unhandled promise rejection'],
] as const) {
  test(`an ${msg} writes one fatal JSON line and exits 70`, { timeout: 30000 }, async () => {
    const r = await runGatehouse(['tokens', 'hash', 'some-token'], { env: { GATEHOUSE_TEST: '1', GATEHOUSE_TEST_CRASH: kind } });
    assert.equal(r.code, 70, r.stderr);
    const line = theOneLine(r.stderr);
    assert.equal(line.level, 'fatal');
    assert.equal(line.name, 'gatehouse');
    assert.equal(typeof line.pid, 'number');
    assert.ok(!Number.isNaN(Date.parse(line.time)));
    assert.equal(line.msg, msg);
    assert.equal(line.err.message, `test crash (${kind})`);
    assert.equal(line.err.code, 'GATEHOUSE_TEST_CRASH');
    assert.equal(line.err.type, 'Error');
    assert.match(line.err.stack, /^Error: test crash[\s\S]*\n {4}at /);
  });
}

test('the crash switch does nothing without GATEHOUSE_TEST=1', { timeout: 30000 }, async () => {
  const r = await runGatehouse(['tokens', 'hash', 'some-token'], { env: { GATEHOUSE_TEST: '', GATEHOUSE_TEST_CRASH: 'exception' } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^sha256:[0-9a-f]{64}\n$/);
});
