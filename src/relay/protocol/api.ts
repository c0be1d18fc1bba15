/**
 * The relay's JSON-RPC API surface as nymea-remoteproxy 1.8.4 declares it (descriptions are nymea's own
 * wire text, typos included, because clients may compare the Introspect document): methods with their param and
 * return templates, the one notification, the enum types. `introspect()` renders it as
 * `RemoteProxy.Introspect` returns it. Templates: `o:` marks an optional key, `$ref:Type` an enum.
 */

export type ParamTemplate = Readonly<Record<string, string>>;

export const AUTHENTICATION_ERRORS = [
  'AuthenticationErrorNoError',
  'AuthenticationErrorUnknown',
  'AuthenticationErrorTimeout',
  'AuthenticationErrorAborted',
  'AuthenticationErrorAuthenticationFailed',
  'AuthenticationErrorProxyError',
] as const;
export type AuthenticationError = (typeof AUTHENTICATION_ERRORS)[number];

export function isAuthenticationError(s: string): s is AuthenticationError {
  return (AUTHENTICATION_ERRORS as readonly string[]).includes(s);
}

interface MethodSpec {
  readonly description: string;
  readonly params: ParamTemplate;
  readonly returns: ParamTemplate;
}

export const API = {
  namespaces: {
    Authentication: {
      Authenticate: {
        description:
          'Authenticate this connection. The returned AuthenticationError informs about the result. If the authentication was not successfull, the server will close the connection immediatly after sending the error response. The given id should be a unique id the other tunnel client can understand. Once the authentication was successfull, you can wait for the RemoteProxy.TunnelEstablished notification. If you send any data before getting this notification, the server will close the connection. If the tunnel client does not show up within 10 seconds, the server will close the connection.',
        params: { uuid: 'String', name: 'String', token: 'String', 'o:nonce': 'String' },
        returns: { authenticationError: '$ref:AuthenticationError' },
      },
    },
    RemoteProxy: {
      Hello: {
        description: 'Once connected to this server, a client can get information about the server by saying Hello. The response informs the client about this proxy server.',
        params: {},
        returns: { server: 'String', name: 'String', version: 'String', apiVersion: 'String' },
      },
      Introspect: {
        description: 'Introspect this API.',
        params: {},
        returns: { methods: 'Object', notifications: 'Object', types: 'Object' },
      },
    },
  },
  notifications: {
    'RemoteProxy.TunnelEstablished': {
      description:
        'Emitted whenever the tunnel has been established successfully. This is the last message from the remote proxy server! Any following data will be from the other tunnel client until the connection will be closed. The parameter contain some information about the other tunnel client.',
      params: { name: 'String', uuid: 'String' },
    },
  },
  // nymea 1.x lists every type of its global type table here, the tunnel proxy's enum included.
  types: {
    AuthenticationError: AUTHENTICATION_ERRORS,
    BasicType: ['Uuid', 'String', 'Int', 'UInt', 'Double', 'Bool', 'Variant', 'Object'],
    TunnelProxyError: [
      'TunnelProxyErrorNoError',
      'TunnelProxyErrorInvalidUuid',
      'TunnelProxyErrorInternalServerError',
      'TunnelProxyErrorServerNotFound',
      'TunnelProxyErrorForbiddenCall',
      'TunnelProxyErrorAlreadyRegistered',
      'TunnelProxyErrorNotRegistered',
      'TunnelProxyErrorUnknownSocketAddress',
    ],
  },
} as const satisfies {
  namespaces: Record<string, Record<string, MethodSpec>>;
  notifications: Record<string, { description: string; params: ParamTemplate }>;
  types: Record<string, readonly string[]>;
};

export type MethodName = 'Authentication.Authenticate' | 'RemoteProxy.Hello' | 'RemoteProxy.Introspect';

/** The `RemoteProxy.Introspect` result. */
export function introspect(): Record<string, unknown> {
  const methods: Record<string, unknown> = {};
  for (const [ns, ms] of Object.entries(API.namespaces)) {
    for (const [name, spec] of Object.entries(ms as Record<string, MethodSpec>)) {
      methods[`${ns}.${name}`] = { description: spec.description, params: spec.params, returns: spec.returns };
    }
  }
  return { methods, notifications: API.notifications, types: API.types };
}
