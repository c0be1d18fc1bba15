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

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

/** Qt's qRound: halves away from zero. */
function qRound(d: number): number {
  return d >= 0 ? Math.floor(d + 0.5) : Math.ceil(d - 0.5);
}

/**
 * The response id nymea derives from a request id (QVariant::toInt): integers as they are, doubles
 * rounded half away from zero, booleans 1/0, numeric strings parsed; anything else (or out of int32) → null.
 */
export function coerceId(raw: unknown): number | null {
  let n: number;
  if (typeof raw === 'number') {
    if (!Number.isFinite(raw)) return null;
    n = qRound(raw);
  } else if (typeof raw === 'boolean') {
    n = raw ? 1 : 0;
  } else if (typeof raw === 'string') {
    const t = raw.trim();
    if (!/^[+-]?\d+$/.test(t)) return null;
    n = Number(t);
  } else {
    return null;
  }
  return n >= INT32_MIN && n <= INT32_MAX ? n : null;
}

/** QVariant::toString() of a JSON value, as nymea uses it for `method`. */
function variantToString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return '';
}

function fail(id: number, code: 'RELAY_INVALID_JSON' | 'RELAY_MISSING_ID' | 'RELAY_INVALID_METHOD' | 'RELAY_NO_SUCH_NAMESPACE' | 'RELAY_NO_SUCH_METHOD' | 'RELAY_INVALID_PARAMS', detail = ''): RequestFailure {
  const base = errorSpec(code).jsonRpcText ?? '';
  const text = code === 'RELAY_INVALID_METHOD' ? base.replace('%s', detail) : base + detail;
  return { id, error: new GatewayError(code, text), text };
}

/**
 * Validates `params` against a template as nymea's validator does, with its detail texts:
 * template keys in sorted order, each required unless `o:`-prefixed (`Missing key <key> in <params>`);
 * `String` accepts strings, numbers and booleans (converted) and nothing else
 * (`Param  is not a string.`, the value's text being empty for objects, arrays and null); then every
 * key the template does not name is refused (`Forbidden key "<key>" in <params>`). `<params>` is the
 * params object as Qt's indented JSON.
 * @returns the params as strings, or the detail text that follows `Invalid params: `.
 */
export function validateParams(template: ParamTemplate, params: Record<string, unknown>): { ok: true; params: Record<string, string> } | { ok: false; detail: string } {
  const out: Record<string, string> = {};
  for (const rawKey of Object.keys(template).sort()) {
    const optional = rawKey.startsWith('o:');
    const key = optional ? rawKey.slice(2) : rawKey;
    if (!Object.hasOwn(params, key)) {
      if (optional) continue;
      return { ok: false, detail: `Missing key ${rawKey} in ${toIndentedJson(params)}` };
    }
    const v = params[key];
    if (template[rawKey] === 'String') {
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[key] = variantToString(v);
      else return { ok: false, detail: 'Param  is not a string.' };
    }
  }
  for (const key of Object.keys(params).sort()) {
    // nymea looks a key up as itself or with the `o:` prefix, so a literal "o:nonce" passes (and is ignored).
    if (!Object.hasOwn(template, key) && !Object.hasOwn(template, `o:${key}`)) {
      return { ok: false, detail: `Forbidden key "${key}" in ${toIndentedJson(params)}` };
    }
  }
  return { ok: true, params: out };
}

/**
 * Decodes one framed message in nymea's check order: JSON → id → method form → namespace → method → params.
 */
export function decodeRequest(text: string): { ok: true; request: DecodedRequest } | { ok: false; failure: RequestFailure } {
  const parsed = parseJsonMessage(text);
  if (!parsed.ok) return { ok: false, failure: fail(-1, 'RELAY_INVALID_JSON', parsed.message) };
  // A top-level array reads as an empty map, as QVariant::toMap() does.
  const msg = (Array.isArray(parsed.value) ? {} : parsed.value) as Record<string, unknown>;
  const id = coerceId(msg.id);
  if (id === null) return { ok: false, failure: fail(-1, 'RELAY_MISSING_ID') };
  const methodText = variantToString(msg.method);
  const parts = methodText.split('.');
  if (parts.length !== 2) return { ok: false, failure: fail(id, 'RELAY_INVALID_METHOD', methodText) };
  const [ns, name] = parts as [string, string];
  const namespace = API.namespaces[ns as keyof typeof API.namespaces] as Record<string, { params: ParamTemplate }> | undefined;
  if (namespace === undefined) return { ok: false, failure: fail(id, 'RELAY_NO_SUCH_NAMESPACE') };
  const method = namespace[name];
  if (method === undefined) return { ok: false, failure: fail(id, 'RELAY_NO_SUCH_METHOD') };
  const rawParams = msg.params;
  const params = rawParams !== null && typeof rawParams === 'object' && !Array.isArray(rawParams) ? (rawParams as Record<string, unknown>) : {};
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
