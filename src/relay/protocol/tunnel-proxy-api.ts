/**
 * The JSON-RPC API of nymea's tunnel-proxy mode (nymea-remoteproxy 1.9–1.13), pure: the method table, the
 * `RemoteProxy.Introspect` document, and request decoding in nymea's check order (JSON → id → method form
 * → namespace → method → params, the first three shared with the legacy relay through `decodeEnvelope`).
 *
 * Namespaces: `RemoteProxy` (Hello, Introspect) and `TunnelProxy` (RegisterServer, RegisterClient,
 * DisconnectClient, Ping); `Authentication` does not exist here ("No such namespace"). Param templates
 * use nymea's basic types: `String` (strings, numbers, booleans and null convert), `Uuid` (strings only;
 * whether they parse is the method's business: TunnelProxyErrorInvalidUuid), `UInt` (numbers, numeric
 * text and booleans). Detail texts of refused params are nymea's (`Param <value> is not a uuid.`, …).
 * Descriptions in the Introspect document are our own words; its keys and templates are nymea's.
 */
import { toIndentedJson } from './json.ts';
import { MAX_ECHOED_PARAMS_CHARS, coerceId, decodeEnvelope, fail, variantToString, type RequestFailure } from './jsonrpc.ts';

export const TUNNEL_PROXY_ERRORS = [
  'TunnelProxyErrorNoError',
  'TunnelProxyErrorInvalidUuid',
  'TunnelProxyErrorInternalServerError',
  'TunnelProxyErrorServerNotFound',
  'TunnelProxyErrorForbiddenCall',
  'TunnelProxyErrorAlreadyRegistered',
  'TunnelProxyErrorNotRegistered',
  'TunnelProxyErrorUnknownSocketAddress',
] as const;
export type TunnelProxyError = (typeof TUNNEL_PROXY_ERRORS)[number];

type Template = Readonly<Record<string, string>>;
interface MethodSpec {
  readonly description: string;
  readonly params: Template;
  readonly returns: Template;
}

const ERROR_REF = '$ref:TunnelProxyError';

const METHOD_SPECS = {
  RemoteProxy: {
    Hello: {
      description: 'Tells a client which proxy server it reached: server, name, version and API version.',
      params: {},
      returns: { apiVersion: 'String', name: 'String', server: 'String', version: 'String' },
    },
    Introspect: {
      description: 'Describes this API: methods, notifications and types.',
      params: {},
      returns: { methods: 'Object', notifications: 'Object', types: 'Object' },
    },
  },
  TunnelProxy: {
    DisconnectClient: {
      description: 'A registered server asks the proxy to close the client connection at this socket address.',
      params: { socketAddress: 'UInt' },
      returns: { tunnelProxyError: ERROR_REF },
    },
    Ping: {
      description: 'Keeps a connection alive; the timestamp comes back as sent.',
      params: { timestamp: 'UInt' },
      returns: { timestamp: 'UInt' },
    },
    RegisterClient: {
      description: 'Registers this connection as a client of the server with serverUuid. On success every further byte is relayed to and from that server.',
      params: { clientName: 'String', clientUuid: 'Uuid', serverUuid: 'Uuid' },
      returns: { tunnelProxyError: ERROR_REF },
    },
    RegisterServer: {
      description: 'Registers this connection as the server with serverUuid. On success both directions switch to SLIP frames carrying the clients of this server.',
      params: { serverName: 'String', serverUuid: 'Uuid' },
      returns: { slipEnabled: 'Bool', tunnelProxyError: ERROR_REF },
    },
  },
} as const satisfies Record<string, Record<string, MethodSpec>>;

const NOTIFICATIONS = {
  // nymea 1.13 still declares the legacy notification in its RemoteProxy handler.
  'RemoteProxy.TunnelEstablished': {
    description: 'Legacy relay only: the tunnel to the partner is up.',
    params: { name: 'String', uuid: 'String' },
  },
  'TunnelProxy.ClientConnected': {
    description: 'Sent to a server when a client registered for it; the socket address frames its data.',
    params: { clientName: 'String', clientPeerAddress: 'String', clientUuid: 'String', socketAddress: 'UInt' },
  },
  'TunnelProxy.ClientDisconnected': {
    description: 'Sent to a server when the client at this socket address is gone.',
    params: { socketAddress: 'UInt' },
  },
} as const;

const TYPES = {
  BasicType: ['Uuid', 'String', 'Int', 'UInt', 'Double', 'Bool', 'Variant', 'Object'],
  TunnelProxyError: TUNNEL_PROXY_ERRORS,
} as const;

/** The `RemoteProxy.Introspect` result of the tunnel-proxy listeners. */
export function tunnelProxyIntrospect(): Record<string, unknown> {
  const methods: Record<string, unknown> = {};
  for (const [ns, ms] of Object.entries(METHOD_SPECS)) {
    for (const [name, spec] of Object.entries(ms as Record<string, MethodSpec>)) methods[`${ns}.${name}`] = spec;
  }
  return { methods, notifications: NOTIFICATIONS, types: TYPES };
}

export type TunnelProxyRequest =
  | { readonly id: number; readonly method: 'RemoteProxy.Hello' | 'RemoteProxy.Introspect' }
  | { readonly id: number; readonly method: 'TunnelProxy.RegisterServer'; readonly serverName: string; readonly serverUuid: string | null }
  | { readonly id: number; readonly method: 'TunnelProxy.RegisterClient'; readonly clientName: string; readonly clientUuid: string | null; readonly serverUuid: string | null }
  | { readonly id: number; readonly method: 'TunnelProxy.DisconnectClient'; readonly socketAddress: number }
  /** `timestamp` is echoed as the client sent it (nymea returns the value it got). */
  | { readonly id: number; readonly method: 'TunnelProxy.Ping'; readonly timestamp: unknown };

/** namespace → method → param template; Maps, so a client-chosen name finds only what we declared. */
const TABLE: ReadonlyMap<string, ReadonlyMap<string, Template>> = new Map(
  Object.entries(METHOD_SPECS).map(([ns, ms]) => [ns, new Map(Object.entries(ms as Record<string, MethodSpec>).map(([m, spec]) => [m, spec.params]))]),
);

/** QVariant::toString of a value for nymea's detail texts (objects, arrays and null give ""). */
const shown = (v: unknown): string => variantToString(v);

/** QVariant::canConvert for the basic types of our templates. */
function convertible(type: string, v: unknown): boolean {
  switch (type) {
    case 'String':
      return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean';
    case 'Uuid':
      return typeof v === 'string';
    case 'UInt':
      return typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean';
    default:
      return false;
  }
}

const NOT_A: Readonly<Record<string, string>> = { String: 'string', Uuid: 'uuid', UInt: 'int' };

/** Each template's keys in order, sorted once (sorting them per request cost ~1.7 KiB of garbage a registration). */
const SORTED_KEYS = new Map<Template, readonly string[]>();
for (const methods of TABLE.values()) for (const template of methods.values()) SORTED_KEYS.set(template, Object.keys(template).sort());

/** True when `template` has no entry for the request's `key` (as itself or as an optional `o:` key). */
function forbidden(template: Template, key: string): boolean {
  return !Object.hasOwn(template, key) && !Object.hasOwn(template, `o:${key}`);
}

/** nymea's validateMap: template keys in order (missing, then type), then keys the template lacks. */
function validate(template: Template, params: Record<string, unknown>): string | undefined {
  for (const key of SORTED_KEYS.get(template) ?? Object.keys(template).sort()) {
    if (!Object.hasOwn(params, key)) return `Missing key ${key} in ${toIndentedJson(params, MAX_ECHOED_PARAMS_CHARS)}`;
    const type = template[key]!;
    const v = params[key];
    if (!convertible(type, v)) return `Param ${shown(v)} is not a ${NOT_A[type] ?? type}.`;
  }
  // The first forbidden key in sorted order is the one named; the sort is only needed when there is one.
  let any = false;
  for (const key in params) if (Object.hasOwn(params, key) && forbidden(template, key)) any = true;
  if (!any) return undefined;
  for (const key of Object.keys(params).sort()) {
    if (forbidden(template, key)) return `Forbidden key "${key}" in ${toIndentedJson(params, MAX_ECHOED_PARAMS_CHARS)}`;
  }
  return undefined;
}

/**
 * QUuid from a string as Qt 5.15 reads it: an optional `{`, then 8-4-4-4-12 hex digits with hyphens;
 * anything after them is ignored. Returns the uuid lower-case without braces, or null when it does not
 * parse or is the null uuid (both are TunnelProxyErrorInvalidUuid).
 */
export function parseUuid(raw: unknown): string | null {
  if (typeof raw !== 'string') return null;
  const m = /^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})/.exec(raw);
  if (m === null) return null;
  const uuid = m[1]!.toLowerCase();
  return uuid === '00000000-0000-0000-0000-000000000000' ? null : uuid;
}

/** QVariant::toUInt cast to quint16, as nymea reads `socketAddress` (unconvertible → 0). */
function toSocketAddress(v: unknown): number {
  if (typeof v === 'string' && v.trim().startsWith('-')) return 0;
  const n = coerceId(v);
  return n === null ? 0 : n & 0xffff;
}

/** Decodes one tunnel-proxy JSON-RPC message; see the file header. Never throws. */
export function decodeTunnelProxyRequest(message: Uint8Array | string): { ok: true; request: TunnelProxyRequest } | { ok: false; failure: RequestFailure } {
  const env = decodeEnvelope(message);
  if (!env.ok) return env;
  const { id, namespace, method, params } = env.envelope;
  const methods = TABLE.get(namespace);
  if (methods === undefined) return { ok: false, failure: fail(id, 'RELAY_NO_SUCH_NAMESPACE') };
  const template = methods.get(method);
  if (template === undefined) return { ok: false, failure: fail(id, 'RELAY_NO_SUCH_METHOD') };
  const detail = validate(template, params);
  if (detail !== undefined) return { ok: false, failure: fail(id, 'RELAY_INVALID_PARAMS', detail) };
  const p = (k: string): unknown => (Object.hasOwn(params, k) ? params[k] : undefined);
  switch (`${namespace}.${method}`) {
    case 'RemoteProxy.Hello':
      return { ok: true, request: { id, method: 'RemoteProxy.Hello' } };
    case 'RemoteProxy.Introspect':
      return { ok: true, request: { id, method: 'RemoteProxy.Introspect' } };
    case 'TunnelProxy.RegisterServer':
      return { ok: true, request: { id, method: 'TunnelProxy.RegisterServer', serverName: variantToString(p('serverName')), serverUuid: parseUuid(p('serverUuid')) } };
    case 'TunnelProxy.RegisterClient':
      return {
        ok: true,
        request: { id, method: 'TunnelProxy.RegisterClient', clientName: variantToString(p('clientName')), clientUuid: parseUuid(p('clientUuid')), serverUuid: parseUuid(p('serverUuid')) },
      };
    case 'TunnelProxy.DisconnectClient':
      return { ok: true, request: { id, method: 'TunnelProxy.DisconnectClient', socketAddress: toSocketAddress(p('socketAddress')) } };
    default:
      return { ok: true, request: { id, method: 'TunnelProxy.Ping', timestamp: p('timestamp') } };
  }
}

/** A uuid as QUuid::toString() writes it (braces, lower case), as nymea sends `clientUuid`. */
export function bracedUuid(uuid: string): string {
  return `{${uuid}}`;
}
