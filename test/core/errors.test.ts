import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CATALOGUE, GatewayError, isGatewayError } from '../../src/core/errors.ts';
import { renderErrorsDoc } from '../../src/core/errors-doc.ts';

test('docs/errors.md matches the catalogue (run npm run docs:errors)', () => {
  assert.equal(readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8'), renderErrorsDoc());
});

test('every code is upper snake case with a known prefix and a summary', () => {
  for (const [code, spec] of Object.entries(ERROR_CATALOGUE)) {
    assert.match(code, /^(CORE|RELAY|CARD|SEALED)_[A-Z0-9_]+$/, code);
    assert.ok(spec.summary.length > 10, code);
    assert.ok(spec.httpStatus >= 400 && spec.httpStatus < 600, code);
  }
});

test('GatewayError carries its code and catalogue entry', () => {
  const err = new GatewayError('RELAY_DUPLICATE_UUID');
  assert.equal(isGatewayError(err, 'RELAY_DUPLICATE_UUID'), true);
  assert.equal(isGatewayError(err as unknown, 'RELAY_TUNNEL_EXISTS'), false);
  assert.equal(isGatewayError(new Error('x')), false);
  assert.equal(err.spec.close?.reason, 'Duplicated client UUID.');
  assert.equal(err.message, ERROR_CATALOGUE.RELAY_DUPLICATE_UUID.summary);
});
