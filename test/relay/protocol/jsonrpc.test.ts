import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { coerceId, decodeRequest, errorResponse, notification, successResponse, validateParams } from '../../../src/relay/protocol/jsonrpc.ts';
import { parseJsonMessage, qtJsonError, toCompactJson, toIndentedJson } from '../../../src/relay/protocol/json.ts';

test('compact JSON sorts keys at every level, as Qt writes it', () => {
  assert.equal(toCompactJson({ z: 1, a: { y: [1, { c: 'x', b: null }], b: true } }), '{"a":{"b":true,"y":[1,{"b":null,"c":"x"}]},"z":1}');
  assert.equal(successResponse(3, { b: 'x', a: 'y' }), '{"id":3,"params":{"a":"y","b":"x"},"status":"success"}\n');
  assert.equal(errorResponse(-1, 'No such method'), '{"error":"No such method","id":-1,"status":"error"}\n');
  assert.equal(notification(0, 'RemoteProxy.TunnelEstablished', { uuid: 'u', name: 'n' }), '{"id":0,"notification":"RemoteProxy.TunnelEstablished","params":{"name":"n","uuid":"u"}}\n');
});

test('indented JSON uses 4 spaces and sorted keys', () => {
  assert.equal(toIndentedJson({ b: [], a: { c: 1 } }), '{\n    "a": {\n        "c": 1\n    },\n    "b": [\n    ]\n}\n');
});

test('id coercion follows QVariant::toInt', () => {
  assert.equal(coerceId(5), 5);
  assert.equal(coerceId('5'), 5);
  assert.equal(coerceId(' 7 '), 7);
  assert.equal(coerceId(5.7), 6);
  assert.equal(coerceId(-2.5), -3);
  assert.equal(coerceId(-3), -3);
  assert.equal(coerceId(true), 1);
  assert.equal(coerceId('5.7'), null);
  assert.equal(coerceId('abc'), null);
  assert.equal(coerceId(null), null);
  assert.equal(coerceId(undefined), null);
  assert.equal(coerceId({}), null);
  assert.equal(coerceId(2 ** 31), null);
  assert.equal(coerceId(2 ** 31 - 1), 2 ** 31 - 1);
});

test('Qt-style parse error messages', () => {
  assert.equal(qtJsonError('{"a":1}{"b":2}'), 'garbage at the end of the document');
  assert.equal(qtJsonError('{"a":1'), 'invalid termination by number');
  assert.equal(qtJsonError('{"a":"x"'), 'unterminated object');
  assert.equal(qtJsonError('{"a" 1}'), 'missing name separator');
  assert.equal(qtJsonError('{"a":1 "b":2}'), 'unterminated object');
  assert.equal(qtJsonError('{"a":1]'), 'unterminated object');
  assert.equal(qtJsonError('{a:1}'), 'unterminated object');
  assert.equal(qtJsonError('{"a":1,}'), 'object is missing after a comma');
  assert.equal(qtJsonError('{"a":}'), 'object is missing after a comma');
  assert.equal(qtJsonError('{"a":[1,]}'), 'object is missing after a comma');
  assert.equal(qtJsonError('{"a":[1 2]}'), 'missing value separator');
  assert.equal(qtJsonError('{"a":tru}'), 'illegal value');
  assert.equal(qtJsonError('{"a":"x\\q"}'), 'invalid escape sequence');
  assert.equal(qtJsonError('{"a":"x'), 'unterminated string');
  assert.equal(qtJsonError('{"a":[1,2}'), 'missing value separator');
  assert.equal(qtJsonError('hello'), 'illegal value');
  const scalar = parseJsonMessage('42');
  assert.deepEqual(scalar, { ok: false, message: 'illegal value' });
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

test('property: decodeRequest never throws, whatever the text', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.json()), (text) => {
      const r = decodeRequest(text);
      if (!r.ok) assert.ok(r.failure.text.length > 0);
    }),
    { numRuns: 1000 },
  );
});
