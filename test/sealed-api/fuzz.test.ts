/** Properties: no input crashes the envelope parser or the format validators except with their own errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { parse as parseToml } from 'smol-toml';
import { stringify as stringifyYaml } from 'yaml';
import { parseCompactJwe, checkClaims, EnvelopeError } from '../../src/sealed-api/envelope.ts';
import { formatOf, FormatError } from '../../src/sealed-api/formats/index.ts';
import { FILE_FORMATS, type FileFormat } from '../../src/sealed-api/config.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { gatewayConfigSchema } from '../../src/config.ts';

test('parseCompactJwe never throws; it accepts only 5 base64url segments with an object header', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.array(fc.base64String(), { maxLength: 7 }).map((a) => a.join('.')),
      ),
      (s) => {
        const out = parseCompactJwe(s);
        if (out !== undefined) {
          assert.equal(out.segments.length, 5);
          assert.equal(typeof out.header, 'object');
        }
      },
    ),
  );
});

test('checkClaims throws only EnvelopeError for any claims object', () => {
  const checks = {
    aud: 'a',
    htu: '/v1/rpc',
    nowMs: Date.now(),
    skewMs: 30000,
    maxLifetimeMs: 120000,
    notBeforeMs: 0,
  };
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.constantFrom('v', 'aud', 'iat', 'exp', 'jti', 'htm', 'htu', 'act', 'args', 'rk'),
        fc.jsonValue(),
      ),
      (claims) => {
        try {
          checkClaims(claims, checks);
        } catch (err) {
          assert.ok(err instanceof EnvelopeError, String(err));
        }
      },
    ),
  );
});

test('format validators and operations fail only with FormatError', () => {
  const fragments = fc
    .array(
      fc.oneof(
        fc.constantFrom(
          '[Interface]\n',
          '[Peer]\n',
          'PrivateKey = ',
          'PublicKey=',
          'AllowedIPs = 10.0.0.1/32',
          '#',
          ';',
          '=',
          '\n',
          '\r\n',
          '[',
          ']',
          'a: 1\n',
          '{',
          '}',
          '"',
        ),
        fc.string({ maxLength: 8 }),
      ),
      { maxLength: 30 },
    )
    .map((a) => a.join(''));
  const doc = fc.jsonValue({ maxDepth: 3 });
  const text = fc.oneof(
    fragments,
    doc.map((v) => JSON.stringify(v, null, 2)),
    doc.map((v) => stringifyYaml(v)),
  );
  const ops = fc.array(
    fc.record(
      {
        op: fc.constantFrom('set', 'delete', 'peer.upsert', 'peer.remove', 'interface.set'),
        path: fc.array(fc.oneof(fc.string({ maxLength: 3 }), fc.nat(3)), { minLength: 1, maxLength: 3 }),
        value: fc.jsonValue(),
        section: fc.string({ maxLength: 4 }),
        key: fc.string({ minLength: 1, maxLength: 4 }),
        publicKey: fc.string({ maxLength: 44 }),
        set: fc.dictionary(
          fc.constantFrom('AllowedIPs', 'Endpoint', 'MTU', 'DNS'),
          fc.oneof(fc.string({ maxLength: 12 }), fc.constant(null)),
        ),
      },
      { requiredKeys: ['op'] },
    ),
    { minLength: 1, maxLength: 3 },
  );
  for (const format of FILE_FORMATS) {
    fc.assert(
      fc.property(text, ops, (t, o) => {
        for (const fn of [() => formatOf(format).validate(t), () => formatOf(format).apply(t, o)]) {
          try {
            fn();
          } catch (err) {
            assert.ok(err instanceof FormatError, `${format}: ${String(err)}`);
          }
        }
      }),
      { numRuns: 200 },
    );
  }
});

test('the example config in docs/sealed-api.md is valid TOML and validates', () => {
  const doc = readFileSync(new URL('../../docs/sealed-api.md', import.meta.url), 'utf8');
  const block = /```toml\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block !== undefined);
  const config = validateConfig(gatewayConfigSchema, parseToml(block));
  assert.equal(config.sealedApi.files.wg0?.format, 'wireguard');
});

test('path operations refuse paths through scalars, bad indexes and TOML nulls (FormatError, file unchanged)', () => {
  const cases: [FileFormat, string, unknown][] = [
    ['yaml', 'a: 1\n', [{ op: 'set', path: ['a', 'b'], value: 1 }]],
    ['yaml', '5\n', [{ op: 'set', path: ['a'], value: 1 }]],
    ['json', '{"a":"str"}', [{ op: 'set', path: ['a', 'b'], value: 1 }]],
    ['json', '5', [{ op: 'set', path: ['a'], value: 1 }]],
    ['json', '[]', [{ op: 'delete', path: [5] }]],
    ['json', '{"a":[1]}', [{ op: 'delete', path: ['a', 'length'] }]],
    ['json', '{"a":[1]}', [{ op: 'set', path: ['a', 5], value: 1 }]],
    ['json', '{"a":{}}', [{ op: 'set', path: ['a', 0], value: 1 }]],
    ['toml', 'a = 1', [{ op: 'set', path: ['b'], value: null }]],
    ['toml', 'a = 1', [{ op: 'set', path: ['b'], value: [1, null] }]],
    ['toml', 'a = 1', [{ op: 'set', path: ['a', 'b'], value: 1 }]],
  ];
  for (const [format, text, ops] of cases)
    assert.throws(() => formatOf(format).apply(text, ops), FormatError, `${format} ${JSON.stringify(ops)}`);
  assert.equal(formatOf('json').apply('{"a":[1]}', [{ op: 'set', path: ['a', 1], value: 2 }]), '{"a":[1,2]}');
});
