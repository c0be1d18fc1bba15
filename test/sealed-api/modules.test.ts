/** Custom modules: loaded from config, validated arguments, client context, failures and timeouts sealed. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { startSealed, tempDir, write, type StartedSealed } from './helpers.ts';

const started: StartedSealed[] = [];
after(async () => {
  for (const s of started) await s.close();
});

const JS_MODULES = {
  'boom.mjs': `export default { run() { throw new Error('secret detail /etc/shadow'); } };`,
  'slow.mjs': `export default { run(_a, ctx) { return new Promise((r) => { const t = setTimeout(() => r('late'), 5000); ctx.signal.addEventListener('abort', () => { clearTimeout(t); r('aborted'); }); }); } };`,
  'noargs.mjs': `export default { run(args) { return { got: args }; } };`,
};

async function start(modules: Record<string, unknown>, raw: Record<string, unknown> = {}) {
  const dir = tempDir();
  for (const [name, text] of Object.entries(JS_MODULES)) write(dir, name, text);
  const s = await startSealed({ modules, ...raw }, { dir });
  started.push(s);
  return s;
}

test('a TypeScript module gets validated args (defaults applied) and the client context', async () => {
  const s = await start({
    echo: { file: fileURLToPath(new URL('./fixtures/echo-module.ts', import.meta.url)) },
    free: { file: 'noargs.mjs' },
  });
  const c = await s.client('alice', { allow: ['echo', 'free'] });
  assert.deepEqual(await c.call('echo', { text: 'hi' }), {
    echo: 'hi',
    client: 'alice',
    address: '127.0.0.1',
  });
  assert.deepEqual(await c.call('echo', { text: 'ab', times: 2 }), {
    echo: 'abab',
    client: 'alice',
    address: '127.0.0.1',
  });
  await assert.rejects(
    c.call('echo', { text: 'x', times: 9 }),
    (e: unknown) => e instanceof SealedCallError && e.status === 422 && e.code === 'SEALED_INVALID_ARGS',
  );
  await assert.rejects(
    c.call('echo', { text: 'x', extra: 1 }),
    (e: unknown) => e instanceof SealedCallError && e.status === 422,
  );
  assert.deepEqual(await c.call('free', { any: [1] }), { got: { any: [1] } });
  await assert.rejects(
    c.call('time'),
    (e: unknown) => e instanceof SealedCallError && e.status === 403,
    'allow-list applies to built-ins too',
  );
});

test('a failing module is a sealed 500 without details; a slow one a sealed 504 and is aborted', async () => {
  const s = await start(
    { boom: { file: 'boom.mjs' }, slow: { file: 'slow.mjs' } },
    { timeouts: { actionMs: 200 } },
  );
  const c = await s.client('alice');
  await assert.rejects(
    c.call('boom'),
    (e: unknown) =>
      e instanceof SealedCallError &&
      e.status === 500 &&
      e.code === 'SEALED_ACTION_FAILED' &&
      !e.message.includes('shadow'),
  );
  assert.ok(
    s.lines.some((l) => l.msg === 'action failed'),
    'the detail is in the log',
  );
  await assert.rejects(
    c.call('slow'),
    (e: unknown) => e instanceof SealedCallError && e.status === 504 && e.code === 'SEALED_ACTION_TIMEOUT',
  );
  assert.deepEqual(await c.call('ping'), { pong: true }, 'the server carries on');
});

test('bad module config fails the start: missing file, no run(), shadowing a built-in', async () => {
  const dir = tempDir();
  write(dir, 'norun.mjs', 'export default { hello: 1 };');
  write(dir, 'ok.mjs', 'export default { run() { return 1; } };');
  for (const modules of [
    { x: { file: 'missing.mjs' } },
    { x: { file: 'norun.mjs' } },
    { ping: { file: 'ok.mjs' } },
  ]) {
    await assert.rejects(
      startSealed({ modules }, { dir }),
      (e: unknown) => isGatewayError(e, 'SEALED_MODULE_INVALID'),
      JSON.stringify(modules),
    );
  }
});
