/**
 * nymea-remoteproxy's JSON-RPC layer (pure): request decoding with nymea's id coercion and check order,
 * param validation against the method templates, and the exact response / notification shapes.
 * Byte-exact output comes from `toCompactJson` (sorted keys) plus a trailing newline.
 */
import { GatewayError, errorSpec } from '../../core/errors.ts';
import { parseJsonMessage, toCompactJson, toIndentedJson } from './json.ts';
import { API, type MethodName, type ParamTemplate } from './api.ts';

export interface DecodedRequest {
  readonly id: number;
  readonly method: MethodName;
  readonly params: Readonly<Record<string, string>>;
}

/** A request that must be answered with an error and then closed. */
export interface RequestFailure {
  readonly id: number;
  readonly error: GatewayError;
  /** The exact `error` text to send. */
  readonly text: string;
}

/**
 * x86-64's conversion of a double to qint64 (cvttsd2si): truncation toward zero, and the "integer
 * indefinite" value INT64_MIN for anything out of range. Qt's qRound64 leaves the range undefined in
 * C++; this is what a Qt 5 build on x86-64 does.
 */
function toInt64(d: number): bigint {
  if (!(d >= -(2 ** 63) && d < 2 ** 63)) return -(2n ** 63n);
  return BigInt(Math.trunc(d));
}

/**
 * Qt 5's qRound64(double), in double arithmetic as C++ does it (halves away from zero, −2.5 → −2):
 * `d >= 0 ? qint64(d + 0.5) : qint64(d - double(qint64(d - 1)) + 0.5) + qint64(d - 1)`; the sum wraps.
 */
export function qRound64(d: number): bigint {
  if (d >= 0) return toInt64(d + 0.5);
  const down = toInt64(d - 1);
  return BigInt.asIntN(64, toInt64(d - Number(down) + 0.5) + down);
}

/** QChar::isSpace: the whitespace QString::toLongLong trims (not U+FEFF, which JS's trim() removes). */
function isQtSpace(code: number): boolean {
  return (
    code === 0x20 || (code >= 0x09 && code <= 0x0d) || code === 0x85 || code === 0xa0 || code === 0x1680 || (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 || code === 0x2029 || code === 0x202f || code === 0x205f || code === 0x3000
  );
}

/** QString::toLongLong (base 10, C locale): Qt whitespace around an optional sign and ASCII digits, within 64 bits. */
function qStringToLongLong(s: string): bigint | null {
  let a = 0;
  let z = s.length;
  while (a < z && isQtSpace(s.charCodeAt(a))) a++;
  while (z > a && isQtSpace(s.charCodeAt(z - 1))) z--;
  const t = s.slice(a, z);
  if (!/^[+-]?\d+$/.test(t)) return null;
  const n = BigInt(t);
  return n >= -(2n ** 63n) && n < 2n ** 63n ? n : null;
}

/**
 * The response id nymea derives from a request id, `QVariant::toInt(&ok)` on Qt 5.15 (x86-64): the value
 * becomes a qint64 (integers as they are; other doubles through qRound64; booleans 1/0; strings through
 * QString::toLongLong), then `int()` keeps its low 32 bits (99999999999 → 1215752191). Null, objects,
 * arrays and strings that are not base-10 integers within 64 bits are not convertible → null.
 */
export function coerceId(raw: unknown): number | null {
  let n: bigint;
  if (typeof raw === 'bigint') n = raw;
  else if (typeof raw === 'number') {
    if (Number.isNaN(raw)) return null;
    // Qt keeps a double that is exactly a 64-bit integer as an integer (no rounding step).
    n = Number.isInteger(raw) && raw >= -(2 ** 63) && raw < 2 ** 63 ? BigInt(raw) : qRound64(raw);
  } else if (typeof raw === 'boolean') n = raw ? 1n : 0n;
  else if (typeof raw === 'string') {
    const parsed = qStringToLongLong(raw);
    if (parsed === null) return null;
    n = parsed;
  } else return null;
  return Number(BigInt.asIntN(32, n));
}

/** QVariant::toString() of a JSON value, as nymea uses it for `method` and String params (null → ""). */
export function variantToString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return '';
}

/** `obj[key]` when `key` is obj's own property; never an inherited one. */
function own(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

interface MethodEntry {
  readonly params: ParamTemplate;
}

/** namespace → method → entry. Maps, so a client-chosen name can only find what we declared. */
const METHODS: ReadonlyMap<string, ReadonlyMap<string, MethodEntry>> = new Map(
  Object.entries(API.namespaces).map(([ns, methods]) => [ns, new Map(Object.entries(methods as Record<string, MethodEntry>))]),
);

/**
 * The most of a client's params echoed back (indented) in an `Invalid params` text. Qt echoes them whole;
 * indentation makes a deep nest cost the square of its depth (8 KiB of nested arrays: 16 MB), so past
 * this the echo is cut and ends with `…`. Any params within nymea's 10240-byte message limit that are not
 * nested deeply fit whole.
 */
export const MAX_ECHOED_PARAMS_CHARS = 16384;

/** A coded failure with nymea's JSON-RPC text (`detail` appended, or put in place of `%s`). */
export function fail(id: number, code: 'RELAY_INVALID_JSON' | 'RELAY_MISSING_ID' | 'RELAY_INVALID_METHOD' | 'RELAY_NO_SUCH_NAMESPACE' | 'RELAY_NO_SUCH_METHOD' | 'RELAY_INVALID_PARAMS', detail = ''): RequestFailure {
  const base = errorSpec(code).jsonRpcText ?? '';
  const text = code === 'RELAY_INVALID_METHOD' ? base.replace('%s', () => detail) : base + detail;
  return { id, error: new GatewayError(code, text), text };
}

/**
 * Validates `params` against a template as nymea's validator does, with its detail texts:
 * template keys in sorted order, each required unless `o:`-prefixed (`Missing key <key> in <params>`);
 * `String` accepts strings, numbers, booleans and null (QVariant::canConvert: null reads as "") and
 * refuses objects and arrays (`Param  is not a string.`, their text being empty); then every
 * key the template does not name is refused (`Forbidden key "<key>" in <params>`). `<params>` is the
 * params object as Qt's indented JSON, at most MAX_ECHOED_PARAMS_CHARS of it.
 * @returns the params as strings, or the detail text that follows `Invalid params: `.
 */
export function validateParams(template: ParamTemplate, params: Record<string, unknown>): { ok: true; params: Record<string, string> } | { ok: false; detail: string } {
  // Only template keys (ours) are ever written to `out`.
  const out: Record<string, string> = {};
  for (const rawKey of Object.keys(template).sort()) {
    const optional = rawKey.startsWith('o:');
    const key = optional ? rawKey.slice(2) : rawKey;
    if (!Object.hasOwn(params, key)) {
      if (optional) continue;
      return { ok: false, detail: `Missing key ${rawKey} in ${toIndentedJson(params, MAX_ECHOED_PARAMS_CHARS)}` };
    }
    const v = params[key];
    if (template[rawKey] === 'String') {
      if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') out[key] = variantToString(v);
      else return { ok: false, detail: 'Param  is not a string.' };
    }
  }
  for (const key of Object.keys(params).sort()) {
    // nymea looks a key up as itself or with the `o:` prefix, so a literal "o:nonce" passes (and is ignored).
    if (!Object.hasOwn(template, key) && !Object.hasOwn(template, `o:${key}`)) {
      return { ok: false, detail: `Forbidden key "${key}" in ${toIndentedJson(params, MAX_ECHOED_PARAMS_CHARS)}` };
    }
  }
  return { ok: true, params: out };
}

/**
 * Decodes one framed message (its bytes; text is taken as UTF-8) in nymea's check order:
 * JSON → id → method form → namespace → method → params. Every name a client sends is looked up in a
 * Map or with Object.hasOwn, so `constructor`, `__proto__`, `toString`… are unknown names like any other.
 */
/** A request whose JSON, id and `Namespace.Method` form passed; namespace, method and params not yet checked. */
export interface RequestEnvelope {
  readonly id: number;
  readonly namespace: string;
  readonly method: string;
  /** The method text as sent (`Namespace.Method`). */
  readonly methodText: string;
  /** The params object (an absent or non-object `params` reads as empty, as QVariant::toMap() does). */
  readonly params: Record<string, unknown>;
}

/**
 * The first steps of nymea's check order, shared by every JSON-RPC API on our listeners: JSON → id →
 * method form. Never throws; `params` is a plain object read only with Object.hasOwn.
 */
export function decodeEnvelope(message: Uint8Array | string): { ok: true; envelope: RequestEnvelope } | { ok: false; failure: RequestFailure } {
  const parsed = parseJsonMessage(message);
  if (!parsed.ok) return { ok: false, failure: fail(-1, 'RELAY_INVALID_JSON', parsed.message) };
  // A top-level array reads as an empty map, as QVariant::toMap() does.
  const msg: Record<string, unknown> = Array.isArray(parsed.value) ? {} : parsed.value;
  const id = coerceId(own(msg, 'id'));
  if (id === null) return { ok: false, failure: fail(-1, 'RELAY_MISSING_ID') };
  const methodText = variantToString(own(msg, 'method'));
  const parts = methodText.split('.');
  if (parts.length !== 2) return { ok: false, failure: fail(id, 'RELAY_INVALID_METHOD', methodText) };
  const [namespace, method] = parts as [string, string];
  const rawParams = own(msg, 'params');
  const params = rawParams !== null && typeof rawParams === 'object' && !Array.isArray(rawParams) ? (rawParams as Record<string, unknown>) : {};
  return { ok: true, envelope: { id, namespace, method, methodText, params } };
}

/**
 * Decodes one framed message (its bytes; text is taken as UTF-8) in nymea's check order:
 * JSON → id → method form → namespace → method → params. Every name a client sends is looked up in a
 * Map or with Object.hasOwn, so `constructor`, `__proto__`, `toString`… are unknown names like any other.
 */
export function decodeRequest(message: Uint8Array | string): { ok: true; request: DecodedRequest } | { ok: false; failure: RequestFailure } {
  const env = decodeEnvelope(message);
  if (!env.ok) return env;
  const { id, namespace: ns, method: name, methodText, params } = env.envelope;
  const namespace = METHODS.get(ns);
  if (namespace === undefined) return { ok: false, failure: fail(id, 'RELAY_NO_SUCH_NAMESPACE') };
  const method = namespace.get(name);
  if (method === undefined) return { ok: false, failure: fail(id, 'RELAY_NO_SUCH_METHOD') };
  const checked = validateParams(method.params, params);
  if (!checked.ok) return { ok: false, failure: fail(id, 'RELAY_INVALID_PARAMS', checked.detail) };
  return { ok: true, request: { id, method: methodText as MethodName, params: checked.params } };
}

/** `{"id":…,"params":…,"status":"success"}\n` */
export function successResponse(id: number, params: Record<string, unknown>): string {
  return `${toCompactJson({ id, params, status: 'success' })}\n`;
}

/** `{"error":…,"id":…,"status":"error"}\n` */
export function errorResponse(id: number, text: string): string {
  return `${toCompactJson({ error: text, id, status: 'error' })}\n`;
}

/** `{"id":…,"notification":…,"params":…}\n` */
export function notification(id: number, name: string, params: Record<string, unknown>): string {
  return `${toCompactJson({ id, notification: name, params })}\n`;
}
