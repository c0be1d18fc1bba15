/**
 * The command the banner and `init` print (cliCommand): `npx gatehouse` inside a checkout, the checkout's
 * bin/gatehouse.js outside it (npx elsewhere would fetch another package). Installed (`gatehouse`): pack.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { cliCommand } from '../../src/gateway.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('cliCommand: npx gatehouse inside the checkout, node <checkout>/bin/gatehouse.js outside it', () => {
  assert.equal(cliCommand(ROOT), 'npx gatehouse');
  assert.equal(cliCommand(join(ROOT, 'docs')), 'npx gatehouse');
  assert.equal(cliCommand(tmpdir()), `node ${join(ROOT, 'bin', 'gatehouse.js')}`);
  assert.equal(cliCommand(`${ROOT.replace(/\/$/, '')}-other`), `node ${join(ROOT, 'bin', 'gatehouse.js')}`, 'a sibling folder whose name starts alike');
});
