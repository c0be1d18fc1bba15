/**
 * Reusable fast-check generators for hostile client input, shared by every front end's tests:
 * names that collide with `Object.prototype` (alone, dotted, or wrapped), JSON values whose keys are such
 * names (as own properties, the way `JSON.parse` makes them), invalid UTF-8 byte strings, and numbers at
 * and beyond the edges of int32 / int64 / double. Pure: no sockets. Keep the exports stable; other suites
 * import them.
 */
import fc from 'fast-check';

/** Every key a plain object inherits from `Object.prototype`, plus `prototype` (a function's own key). */
export const PROTOTYPE_KEYS = [
  'constructor',
  '__proto__',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
  'prototype',
] as const;
export type PrototypeKey = (typeof PROTOTYPE_KEYS)[number];

/** Keys reachable one step further (`constructor.name`, `toString.call`, …) once a prototype key matched. */
export const SECOND_LEVEL_KEYS = ['name', 'length', 'call', 'apply', 'bind', 'caller', 'arguments', 'x'] as const;

/** One of `PROTOTYPE_KEYS`. */
export function prototypeKey(): fc.Arbitrary<PrototypeKey> {
  return fc.constantFrom(...PROTOTYPE_KEYS);
}

/**
 * A name a client might choose: a prototype key (most often), a prototype key with a dot path
 * (`constructor.name`, `__proto__.x`), one in a different case or with padding, or an ordinary short
 * string (also non-ASCII and empty). Never longer than 64 UTF-16 units.
 */
export function hostileName(): fc.Arbitrary<string> {
  const key = prototypeKey();
  return fc.oneof(
    { weight: 6, arbitrary: key },
    { weight: 2, arbitrary: fc.tuple(key, fc.constantFrom<string>(...SECOND_LEVEL_KEYS, ...PROTOTYPE_KEYS)).map(([a, b]) => `${a}.${b}`) },
    { weight: 1, arbitrary: key.map((k) => k.toUpperCase()) },
    { weight: 1, arbitrary: fc.tuple(key, fc.constantFrom(' ', '\t', '\u00a0', '\u0000', '.')).map(([k, pad]) => `${pad}${k}${pad}`) },
    { weight: 2, arbitrary: fc.string({ maxLength: 24, unit: 'grapheme' }) },
    { weight: 1, arbitrary: fc.constant('') },
  );
}

/** An object whose own enumerable keys are `keys` (also `__proto__`, as `JSON.parse` would make it). */
export function objectWithOwnKeys(entries: readonly (readonly [string, unknown])[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
}

/**
 * Finite doubles and integers at the edges: ±0, ±2^31 (and ±1), ±2^32, ±2^53 (and ±1), ±2^63, halves
 * (qRound's edge), 99999999999, Number.MAX_VALUE, the smallest subnormal, plus random doubles.
 */
export function hugeNumber(): fc.Arbitrary<number> {
  return fc.oneof(
    fc.constantFrom(
      0, -0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 2147483647, 2147483648, -2147483648, -2147483649, 2147483647.5, -2147483648.5,
      4294967295, 4294967296, 99999999999, -99999999999, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 63, -(2 ** 63), 2 ** 64,
      1e21, -1e21, 1e300, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, -Number.MIN_VALUE,
    ),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.integer({ min: -(2 ** 40), max: 2 ** 40 }).map((n) => n + 0.5),
  );
}

/**
 * JSON number *texts* a double cannot hold exactly or at all: overflow to ±Infinity (`1e400`), underflow
 * (`1e-400`), more digits than a double keeps, huge exponents, `-0`, and the values of `hugeNumber()`.
 */
export function hugeNumberText(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom(
      '1e400', '-1e400', '1E+309', '1e-400', '-0', '-0.0', '0e0', '99999999999', '-99999999999', '9223372036854775807',
      '9223372036854775808', '-9223372036854775809', '18446744073709551616', '123456789012345678901234567890',
      '2147483647.5', '-2147483648.5', '1e999999999', '0.' + '0'.repeat(400) + '1', '9'.repeat(400),
    ),
    hugeNumber().map((n) => (Object.is(n, -0) ? '-0' : JSON.stringify(n))),
    fc.tuple(fc.integer({ min: -9, max: 9 }), fc.integer({ min: -99999, max: 99999 })).map(([m, e]) => `${m}e${e}`),
  );
}

/**
 * A JSON value (what `JSON.parse` could return) built from hostile parts: keys from `hostileName()` as own
 * properties, strings that are prototype keys, `hugeNumber()`s, null, booleans, arrays; depth ≤ 3.
 */
export function hostileJsonValue(): fc.Arbitrary<unknown> {
  const { value } = fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constant(null),
      fc.boolean(),
      hugeNumber(),
      hostileName(),
      fc.array(tie('value'), { maxLength: 4 }),
      fc.array(fc.tuple(hostileName(), tie('value')), { maxLength: 4 }).map((e) => objectWithOwnKeys(e)),
    ),
  }));
  return value;
}

/** An object (as a JSON request's `params` would be) with hostile keys and hostile values. */
export function hostileJsonObject(): fc.Arbitrary<Record<string, unknown>> {
  return fc.array(fc.tuple(hostileName(), hostileJsonValue()), { maxLength: 5 }).map((e) => objectWithOwnKeys(e));
}

/**
 * Byte strings that are not valid UTF-8 (each contains at least one fault): lone continuation bytes,
 * truncated sequences (followed by `A`, so a later continuation byte cannot complete them), overlong forms (`C0 AF`, `E0 80 AF`), UTF-16 surrogates encoded (`ED A0 80`),
 * code points above U+10FFFF, and the never-valid bytes F5..FF; surrounded by valid ASCII/UTF-8.
 * None contains `"`, `\` or a newline, so each fits inside a JSON string literal in a line protocol.
 */
export function invalidUtf8Bytes(): fc.Arbitrary<Uint8Array> {
  const fault = fc.constantFrom<readonly number[]>(
    [0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xc3, 0x41], [0xe2, 0x82, 0x41], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf],
    [0xf0, 0x80, 0x80, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0xf0, 0x9f, 0x98, 0x41], [0xf5], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xfe], [0xff],
  );
  const clean = fc.string({ maxLength: 8, unit: 'grapheme' }).map((s) => [...Buffer.from(s.replace(/["\\\n\r]/g, ''), 'utf8')]);
  return fc.tuple(clean, fault, fc.array(fc.tuple(fault, clean), { maxLength: 2 }), clean).map(([a, f, more, b]) => {
    const bytes = [...a, ...f];
    for (const [g, c] of more) bytes.push(...g, ...c);
    bytes.push(...b);
    return Uint8Array.from(bytes);
  });
}

/** True when `bytes` is not valid UTF-8 (for asserting on generated input). */
export function isInvalidUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return false;
  } catch {
    return true;
  }
}
