import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { coerceId, decodeRequest, errorResponse, notification, successResponse, validateParams } from '../../../src/relay/protocol/jsonrpc.ts';
import { parseJsonMessage, qtJsonError, toCompactJson, toIndentedJson } from '../../../src/relay/protocol/json.ts';
import { PROTOTYPE_KEYS, hostileJsonObject, hostileJsonValue, hostileName, hugeNumberText, invalidUtf8Bytes } from '../../helpers/hostile.ts';

test('compact JSON sorts keys at every level, as Qt writes it', () => {
  assert.equal(toCompactJson({ z: 1, a: { y: [1, { c: 'x', b: null }], b: true } }), '{"a":{"b":true,"y":[1,{"b":null,"c":"x"}]},"z":1}');
  assert.equal(successResponse(3, { b: 'x', a: 'y' }), '{"id":3,"params":{"a":"y","b":"x"},"status":"success"}\n');
  assert.equal(errorResponse(-1, 'No such method'), '{"error":"No such method","id":-1,"status":"error"}\n');
  assert.equal(notification(0, 'RemoteProxy.TunnelEstablished', { uuid: 'u', name: 'n' }), '{"id":0,"notification":"RemoteProxy.TunnelEstablished","params":{"name":"n","uuid":"u"}}\n');
});

test('indented JSON uses 4 spaces and sorted keys', () => {
  assert.equal(toIndentedJson({ b: [], a: { c: 1 } }), '{\n    "a": {\n        "c": 1\n    },\n    "b": [\n    ]\n}\n');
});

test('id coercion follows QVariant::toInt (Qt 5.15, x86-64)', () => {
  assert.equal(coerceId(5), 5);
  assert.equal(coerceId('5'), 5);
  assert.equal(coerceId(' 7 '), 7);
  assert.equal(coerceId('+7'), 7);
  assert.equal(coerceId('\u00a07\u3000'), 7); // QChar::isSpace
  assert.equal(coerceId('\ufeff7'), null); // U+FEFF is not a Qt space (JS trim() would strip it)
  assert.equal(coerceId(5.7), 6);
  assert.equal(coerceId(-3), -3);
  assert.equal(coerceId(true), 1);
  assert.equal(coerceId(false), 0);
  assert.equal(coerceId('5.7'), null);
  assert.equal(coerceId('abc'), null);
  assert.equal(coerceId(''), null);
  assert.equal(coerceId('0x10'), null);
  assert.equal(coerceId(null), null);
  assert.equal(coerceId(undefined), null);
  assert.equal(coerceId({}), null);
  assert.equal(coerceId([]), null);
  assert.equal(coerceId(2 ** 31 - 1), 2 ** 31 - 1);
});

test('ids round like qRound64 and wrap to 32 bits like int(qint64)', () => {
  // qRound64: halves away from zero for positives, toward +inf for negatives (-2.5 -> -2).
  assert.equal(coerceId(-2.5), -2);
  assert.equal(coerceId(-1.5), -1);
  assert.equal(coerceId(-0.5), 0);
  assert.equal(coerceId(2.5), 3);
  assert.equal(coerceId(-2.6), -3);
  assert.equal(coerceId(0.49999999999999994), 1); // d + 0.5 rounds to 1.0 in double arithmetic, as in C++
  // Beyond 32 bits: the low 32 bits of the qint64, signed.
  assert.equal(coerceId(99999999999), 1215752191);
  assert.equal(coerceId(-99999999999), -1215752191);
  assert.equal(coerceId(2 ** 31), -(2 ** 31));
  assert.equal(coerceId(2 ** 32), 0);
  assert.equal(coerceId(2 ** 32 + 5.5), 6);
  assert.equal(coerceId('99999999999'), 1215752191);
  assert.equal(coerceId(' -4294967297 '), -1);
  assert.equal(coerceId('9223372036854775807'), -1);
  assert.equal(coerceId('9223372036854775808'), null); // beyond qint64: toLongLong fails
  assert.equal(coerceId(9007199254740993n), 1); // an integer literal Qt keeps as qint64, exactly
  // Doubles beyond qint64: x86-64's conversion gives INT64_MIN, whose low 32 bits are 0.
  assert.equal(coerceId(1e19), 0);
  assert.equal(coerceId(1e300), 0);
  assert.equal(coerceId(-1e300), 0);
  // The JSON text decides the value: the decoder keeps integers beyond 2^53 exactly.
  const id = (text: string) => {
    const r = decodeRequest(`{"id":${text},"method":"RemoteProxy.Hello"}`);
    return r.ok ? r.request.id : r.failure.id;
  };
  assert.equal(id('9007199254740993'), 1);
  assert.equal(id('9007199254740993.0'), 0); // not an integer text: a double (2^53)
  assert.equal(id('-2.5'), -2);
  assert.equal(id('99999999999'), 1215752191);
  assert.equal(id('1e2'), 100);
  assert.equal(id('-0'), 0);
});

test('Qt-style parse error messages', () => {
  assert.equal(qtJsonError('{"a":1}{"b":2}'), 'garbage at the end of the document');
  assert.equal(qtJsonError('{"a":1'), 'invalid termination by number');
  // Qt counts a closing quote that is the document's last byte as an unterminated string.
  assert.equal(qtJsonError('{"a":"x"'), 'unterminated string');
  assert.equal(qtJsonError('{"a" 1}'), 'missing name separator');
  assert.equal(qtJsonError('{"a":1 "b":2}'), 'unterminated object');
  assert.equal(qtJsonError('{"a":1]'), 'unterminated object');
  assert.equal(qtJsonError('{a:1}'), 'unterminated object');
  assert.equal(qtJsonError('{"a":1,}'), 'object is missing after a comma');
  assert.equal(qtJsonError('{"a":}'), 'object is missing after a comma');
  assert.equal(qtJsonError('{"a":[1,]}'), 'object is missing after a comma');
  assert.equal(qtJsonError('{"a":[1 2]}'), 'missing value separator');
  assert.equal(qtJsonError('{"a":tru}'), 'illegal value');
  assert.equal(qtJsonError('{"a":"x\\u12G4"}'), 'invalid escape sequence');
  assert.equal(qtJsonError('{"a":"x\\u12"}'), 'invalid escape sequence');
  assert.equal(qtJsonError('{"a":"x'), 'unterminated string');
  // After `2` Qt reads `}` as a token and then finds the end of the input: unterminated array.
  assert.equal(qtJsonError('{"a":[1,2}'), 'unterminated array');
  assert.equal(qtJsonError('{"a":[1,2} '), 'unterminated array');
  assert.equal(qtJsonError('{"a":[1,2}}'), 'missing value separator');
  assert.equal(qtJsonError('hello'), 'illegal value');
  const scalar = parseJsonMessage('42');
  assert.deepEqual(scalar, { ok: false, message: 'illegal value' });
  assert.equal(qtJsonError('{"a":x}'), 'illegal number');
  assert.equal(qtJsonError('{"a":,}'), 'illegal value');
  assert.equal(qtJsonError('{"a":-}'), 'illegal number');
  assert.equal(qtJsonError('{"a":1e}'), 'illegal number');
  assert.equal(qtJsonError(`{"a":${'['.repeat(1023)}${']'.repeat(1023)}}`), 'no error occurred');
  assert.equal(qtJsonError(`{"a":${'['.repeat(1024)}${']'.repeat(1024)}}`), 'too deeply nested document');
});

test('Qt 5 parser leniencies and refusals JSON.parse does not share', () => {
  // Unknown escapes yield the escaped character; raw control characters are accepted; a BOM is skipped.
  assert.deepEqual(parseJsonMessage('{"a":"x\\q\\\'\\%"}'), { ok: true, value: { a: "xq'%" } });
  assert.deepEqual(parseJsonMessage('{"a":"tab\there\u0000nul"}'), { ok: true, value: { a: 'tab\there\u0000nul' } });
  assert.deepEqual(parseJsonMessage('\ufeff{"a":1}'), { ok: true, value: { a: 1 } });
  assert.deepEqual(parseJsonMessage('{"a":1.,"b":.5,"c":-.5e1}'), { ok: true, value: { a: 1, b: 0.5, c: -5 } });
  // Overflow and underflow of a double are illegal numbers (JSON.parse gives Infinity and 0).
  assert.equal(qtJsonError('{"a":1e400}'), 'illegal number');
  assert.equal(qtJsonError('{"a":-1e400}'), 'illegal number');
  assert.equal(qtJsonError('{"a":1e-400}'), 'illegal number');
  assert.equal(qtJsonError('{"a":0e-400}'), 'no error occurred');
  // `__proto__` is a key like any other, as JSON.parse makes it.
  const proto = parseJsonMessage('{"__proto__":{"x":1},"constructor":2}');
  assert.ok(proto.ok && !Array.isArray(proto.value));
  assert.deepEqual(Object.keys(proto.value), ['__proto__', 'constructor']);
  assert.equal(Object.getPrototypeOf(proto.value), Object.prototype);
});

test('invalid UTF-8 inside a string is `invalid UTF8 string`; outside a string it is an unexpected token', () => {
  const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
  for (const bad of [[0xff], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
    assert.equal(qtJsonError(bytes('{"a":"x', bad, '"}')), 'invalid UTF8 string');
    assert.equal(qtJsonError(bytes('{"', bad, '":1}')), 'invalid UTF8 string');
  }
  // The first fault in the string wins: an escape error before the bad byte, the bad byte before one.
  assert.equal(qtJsonError(bytes('{"a":"\\u12G4', [0xff], '"}')), 'invalid escape sequence');
  assert.equal(qtJsonError(bytes('{"a":"', [0xff], '\\u12G4"}')), 'invalid UTF8 string');
  // An escaped non-ASCII lead byte strands its continuation byte.
  assert.equal(qtJsonError('{"a":"\\é"}'), 'invalid UTF8 string');
  // Outside strings a stray byte is a token Qt does not know.
  assert.equal(qtJsonError(bytes('{', [0xff], '"a":1}')), 'unterminated object');
  assert.equal(qtJsonError(bytes('{"a":', [0xff], '}')), 'illegal number');
  assert.equal(qtJsonError(bytes('[1', [0xff], ']')), 'missing value separator');
  assert.equal(qtJsonError(bytes([0xff], '{}')), 'illegal value');
  assert.equal(qtJsonError(bytes('{}', [0xff])), 'garbage at the end of the document');
  // Valid UTF-8 (also 4-byte sequences and noncharacters) passes and decodes.
  assert.deepEqual(parseJsonMessage(bytes('{"a":"', [0xf0, 0x9f, 0x98, 0x80, 0xef, 0xbf, 0xbf], '"}')), { ok: true, value: { a: '\u{1f600}\uffff' } });
  const r = decodeRequest(bytes('{"id":7,"method":"RemoteProxy.', [0xff], '"}'));
  assert.ok(!r.ok);
  assert.deepEqual({ id: r.failure.id, text: r.failure.text }, { id: -1, text: 'Failed to parse JSON data: invalid UTF8 string' });
});

test('decode: nymea check order (JSON, id, method, namespace, method, params)', () => {
  const fail = (text: string) => {
    const r = decodeRequest(text);
    assert.ok(!r.ok);
    return { id: r.failure.id, text: r.failure.text, code: r.failure.error.code };
  };
  assert.deepEqual(fail('{"id":1,'), { id: -1, code: 'RELAY_INVALID_JSON', text: 'Failed to parse JSON data: unterminated object' });
  assert.deepEqual(fail('{"method":"RemoteProxy.Hello"}'), { id: -1, code: 'RELAY_MISSING_ID', text: "Error parsing command. Missing 'id'" });
  assert.deepEqual(fail('[1,2]'), { id: -1, code: 'RELAY_MISSING_ID', text: "Error parsing command. Missing 'id'" });
  assert.deepEqual(fail('{"id":"x","method":"Nope"}'), { id: -1, code: 'RELAY_MISSING_ID', text: "Error parsing command. Missing 'id'" });
  assert.deepEqual(fail('{"id":2,"method":"Hello"}'), { id: 2, code: 'RELAY_INVALID_METHOD', text: "Error parsing method. Got: 'Hello'', Expected: 'Namespace.method'" });
  assert.deepEqual(fail('{"id":2}'), { id: 2, code: 'RELAY_INVALID_METHOD', text: "Error parsing method. Got: ''', Expected: 'Namespace.method'" });
  assert.deepEqual(fail('{"id":2,"method":"A.B.C"}'), { id: 2, code: 'RELAY_INVALID_METHOD', text: "Error parsing method. Got: 'A.B.C'', Expected: 'Namespace.method'" });
  assert.deepEqual(fail('{"id":3,"method":"Foo.Hello"}'), { id: 3, code: 'RELAY_NO_SUCH_NAMESPACE', text: 'No such namespace' });
  assert.deepEqual(fail('{"id":"4","method":"RemoteProxy.Foo"}'), { id: 4, code: 'RELAY_NO_SUCH_METHOD', text: 'No such method' });
  assert.equal(fail('{"id":5,"method":"Authentication.Authenticate","params":{"name":"n","token":"t"}}').code, 'RELAY_INVALID_PARAMS');
});

test('params: absent, {} and null are all empty; String accepts numbers and booleans', () => {
  for (const params of ['', ',"params":{}', ',"params":null']) {
    const r = decodeRequest(`{"id":1,"method":"RemoteProxy.Hello"${params}}`);
    assert.ok(r.ok);
    assert.deepEqual(r.request.params, {});
  }
  const tpl = { uuid: 'String', name: 'String', token: 'String', 'o:nonce': 'String' };
  assert.deepEqual(validateParams(tpl, { uuid: 12, name: true, token: 't' }), { ok: true, params: { uuid: '12', name: 'true', token: 't' } });
  assert.equal(validateParams(tpl, { uuid: {}, name: 'n', token: 't' }).ok, false);
  assert.equal(validateParams(tpl, { uuid: [], name: 'n', token: 't' }).ok, false);
  assert.equal(validateParams(tpl, { uuid: 'u', name: 'n', token: 't', extra: 1 }).ok, false);
  assert.equal(validateParams(tpl, { uuid: 'u', name: 'n' }).ok, false);
  assert.deepEqual(validateParams(tpl, { uuid: 'u', name: 'n', token: 't', nonce: 'x' }), { ok: true, params: { uuid: 'u', name: 'n', token: 't', nonce: 'x' } });
  assert.equal(validateParams({}, { a: 1 }).ok, false);
});

test('param detail texts are nymea validator texts (params as Qt indented JSON)', () => {
  const tpl = { uuid: 'String', name: 'String', token: 'String', 'o:nonce': 'String' };
  assert.deepEqual(validateParams(tpl, { your: 'mamma' }), { ok: false, detail: 'Missing key name in {\n    "your": "mamma"\n}\n' });
  assert.deepEqual(validateParams(tpl, {}), { ok: false, detail: 'Missing key name in {\n}\n' });
  assert.deepEqual(validateParams(tpl, { name: 'n', token: 't' }), { ok: false, detail: 'Missing key uuid in {\n    "name": "n",\n    "token": "t"\n}\n' });
  assert.deepEqual(validateParams(tpl, { name: { a: 1 }, token: 't', uuid: 'u' }), { ok: false, detail: 'Param  is not a string.' });
  assert.deepEqual(validateParams({}, { 'törööö': 'chooo-chooo' }), { ok: false, detail: 'Forbidden key "törööö" in {\n    "törööö": "chooo-chooo"\n}\n' });
  assert.deepEqual(validateParams(tpl, { name: 'n', token: 't', uuid: 'u', 'o:nonce': 'x' }), { ok: true, params: { name: 'n', token: 't', uuid: 'u' } });
});

test('null for a String param reads as "" (QVariant(nullptr) converts to an empty string)', () => {
  const r = decodeRequest('{"id":1,"method":"Authentication.Authenticate","params":{"uuid":null,"name":null,"token":null,"nonce":null}}');
  assert.ok(r.ok);
  assert.deepEqual(r.request.params, { name: '', nonce: '', token: '', uuid: '' });
  const tpl = { uuid: 'String', name: 'String', token: 'String', 'o:nonce': 'String' };
  assert.deepEqual(validateParams(tpl, { uuid: null, name: 'n', token: 't' }), { ok: true, params: { uuid: '', name: 'n', token: 't' } });
  // Objects and arrays still are not strings.
  assert.deepEqual(validateParams(tpl, { uuid: [], name: 'n', token: 't' }), { ok: false, detail: 'Param  is not a string.' });
});

test('method and namespace names that are Object.prototype keys are unknown names (nymea texts)', () => {
  const answer = (text: string) => {
    const r = decodeRequest(text);
    assert.ok(!r.ok, text);
    return `${r.failure.error.code} ${r.failure.id} ${r.failure.text}`;
  };
  assert.equal(answer('{"id":1,"method":"RemoteProxy.constructor","params":{}}'), 'RELAY_NO_SUCH_METHOD 1 No such method');
  assert.equal(answer('{"id":1,"method":"Authentication.toString"}'), 'RELAY_NO_SUCH_METHOD 1 No such method');
  assert.equal(answer('{"id":1,"method":"Authentication.hasOwnProperty"}'), 'RELAY_NO_SUCH_METHOD 1 No such method');
  assert.equal(answer('{"id":1,"method":"RemoteProxy.__proto__"}'), 'RELAY_NO_SUCH_METHOD 1 No such method');
  assert.equal(answer('{"id":1,"method":"constructor.name"}'), 'RELAY_NO_SUCH_NAMESPACE 1 No such namespace');
  assert.equal(answer('{"id":1,"method":"__proto__.x"}'), 'RELAY_NO_SUCH_NAMESPACE 1 No such namespace');
  assert.equal(answer('{"id":1,"method":"toString.call"}'), 'RELAY_NO_SUCH_NAMESPACE 1 No such namespace');
  for (const key of PROTOTYPE_KEYS) {
    assert.equal(answer(`{"id":2,"method":"${key}.Hello"}`), 'RELAY_NO_SUCH_NAMESPACE 2 No such namespace');
    assert.equal(answer(`{"id":2,"method":"RemoteProxy.${key}"}`), 'RELAY_NO_SUCH_METHOD 2 No such method');
    assert.equal(answer(`{"id":"${key}","method":"RemoteProxy.Hello"}`), "RELAY_MISSING_ID -1 Error parsing command. Missing 'id'");
    assert.equal(
      answer(`{"id":3,"method":"RemoteProxy.Hello","params":{"${key}":1}}`),
      `RELAY_INVALID_PARAMS 3 Invalid params: Forbidden key "${key}" in {\n    "${key}": 1\n}\n`,
    );
  }
  // A message that *is* a prototype key map: no id, however the object is shaped.
  assert.equal(answer('{"__proto__":{"id":1,"method":"RemoteProxy.Hello"}}'), "RELAY_MISSING_ID -1 Error parsing command. Missing 'id'");
  // A replacement pattern in the method text is copied literally.
  assert.equal(answer('{"id":4,"method":"$&$\'"}'), "RELAY_INVALID_METHOD 4 Error parsing method. Got: '$&$''', Expected: 'Namespace.method'");
});

const KNOWN: Record<string, readonly string[]> = { RemoteProxy: ['Hello', 'Introspect'], Authentication: ['Authenticate'] };
const isKnownNs = (ns: string) => Object.hasOwn(KNOWN, ns);

/** The answer nymea gives for a request object, computed independently of the decoder (for the property). */
function expectedFailure(msg: Record<string, unknown>): string | null {
  const id = Object.hasOwn(msg, 'id') ? coerceId(msg.id) : null;
  if (id === null) return "Error parsing command. Missing 'id'";
  const m = Object.hasOwn(msg, 'method') ? msg.method : undefined;
  const text = typeof m === 'string' ? m : typeof m === 'number' || typeof m === 'bigint' ? String(m) : typeof m === 'boolean' ? String(m) : '';
  const parts = text.split('.');
  if (parts.length !== 2) return `Error parsing method. Got: '${text}'', Expected: 'Namespace.method'`;
  const [ns, name] = parts as [string, string];
  if (!isKnownNs(ns)) return 'No such namespace';
  if (!KNOWN[ns]!.includes(name)) return 'No such method';
  return null; // params decide
}

test('property: hostile names in every position never throw and get nymea\'s exact answer', () => {
  const request = fc.record(
    {
      id: fc.oneof(fc.integer(), hostileName(), fc.constant(null)),
      method: fc.oneof(
        fc.tuple(fc.oneof(hostileName(), fc.constantFrom('RemoteProxy', 'Authentication')), fc.oneof(hostileName(), fc.constantFrom('Hello', 'Authenticate'))).map(([a, b]) => `${a}.${b}`),
        hostileName(),
        hostileJsonValue(),
      ),
      params: fc.oneof(hostileJsonObject(), hostileJsonValue()),
    },
    { requiredKeys: [] },
  );
  fc.assert(
    fc.property(request, fc.array(fc.tuple(hostileName(), hostileJsonValue()), { maxLength: 2 }), (req, extra) => {
      const msg: Record<string, unknown> = {};
      for (const [k, v] of [...Object.entries(req), ...extra]) Object.defineProperty(msg, k, { value: v, enumerable: true, writable: true, configurable: true });
      const text = JSON.stringify(msg);
      const parsed = JSON.parse(text) as Record<string, unknown>;
      const r = decodeRequest(text);
      const expected = expectedFailure(parsed);
      if (expected === null) {
        if (!r.ok) assert.ok(r.failure.text.startsWith('Invalid params: '), r.failure.text);
      } else {
        assert.ok(!r.ok, text);
        assert.equal(r.failure.text, expected);
      }
    }),
    { numRuns: 2000 },
  );
});

test('property: decodeRequest never throws, whatever the bytes', () => {
  const text = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.json(),
    hostileJsonValue().map((v) => JSON.stringify(v) ?? 'null'),
    fc.tuple(hostileName(), hugeNumberText()).map(([k, n]) => `{"id":${n},"method":${JSON.stringify(k)},"params":{${JSON.stringify(k)}:${n}}}`),
  );
  const bytes = fc.oneof(
    text.map((t) => Buffer.from(t)),
    fc.uint8Array({ maxLength: 200 }),
    fc.tuple(fc.constantFrom('{"id":1,"method":"', '{"', '{"id":"', '{"id":1,"params":{"uuid":"'), invalidUtf8Bytes()).map(([a, b]) => Buffer.concat([Buffer.from(a), b, Buffer.from('"}')])),
  );
  fc.assert(
    fc.property(bytes, (b) => {
      const r = decodeRequest(b);
      if (!r.ok) assert.ok(r.failure.text.length > 0);
    }),
    { numRuns: 2000 },
  );
});

test('property: a message with invalid UTF-8 inside a string is always `invalid UTF8 string`', () => {
  fc.assert(
    fc.property(invalidUtf8Bytes(), fc.constantFrom('{"id":1,"method":"', '{"', '{"id":1,"params":{"uuid":"', '["'), (bad, prefix) => {
      const r = decodeRequest(Buffer.concat([Buffer.from(prefix), bad, Buffer.from(prefix.startsWith('[') ? '"]' : '"}')]));
      assert.ok(!r.ok);
      assert.equal(r.failure.text, 'Failed to parse JSON data: invalid UTF8 string');
    }),
    { numRuns: 1000 },
  );
});

test('property: on standard JSON documents the parser agrees with JSON.parse', () => {
  fc.assert(
    fc.property(fc.json({ depthSize: 'small' }), (text) => {
      const value = JSON.parse(text) as unknown;
      if (value === null || typeof value !== 'object') return;
      const r = parseJsonMessage(text);
      assert.ok(r.ok, text);
      // Integers a double cannot hold exactly come back as bigint (Qt keeps them as qint64): compare as doubles.
      const asDoubles = (v: unknown): unknown =>
        typeof v === 'bigint' ? Number(v) : Array.isArray(v) ? v.map(asDoubles) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, asDoubles(x)])) : v;
      assert.deepEqual(asDoubles(r.value), value);
    }),
    { numRuns: 500 },
  );
});
