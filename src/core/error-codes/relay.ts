/**
 * Error codes of the relay front end. The JSON-RPC texts and close reasons are nymea-remoteproxy 1.8.4's
 * exact strings (see docs/protocols.md); stock clients and nymea's own tests compare them byte for byte.
 * Close code 1011 is what nymea uses for every server-initiated WebSocket close except shutdown (1000).
 */
import type { ErrorSpec } from '../errors.ts';

const closeWith = (reason: string, code = 1011) => ({ code, reason });

export const relayErrors = {
  RELAY_INVALID_JSON: {
    summary: 'A client sent a message that is not valid JSON.',
    httpStatus: 400,
    jsonRpcText: 'Failed to parse JSON data: ',
    close: closeWith('Invalid JSON data received.'),
  },
  RELAY_MISSING_ID: {
    summary: "A request had no integer-convertible 'id'.",
    httpStatus: 400,
    jsonRpcText: "Error parsing command. Missing 'id'",
    close: closeWith('The id property is missing in the request.'),
  },
  RELAY_INVALID_METHOD: {
    summary: "A request's method is missing or not of the form Namespace.Method.",
    httpStatus: 400,
    jsonRpcText: "Error parsing method. Got: '%s'', Expected: 'Namespace.method'",
    close: closeWith('Invalid method passed.'),
  },
  RELAY_NO_SUCH_NAMESPACE: {
    summary: 'A request named an unknown namespace.',
    httpStatus: 404,
    jsonRpcText: 'No such namespace',
    close: closeWith('No such namespace.'),
  },
  RELAY_NO_SUCH_METHOD: {
    summary: 'A request named an unknown method.',
    httpStatus: 404,
    jsonRpcText: 'No such method',
    close: closeWith('No such method.'),
  },
  RELAY_INVALID_PARAMS: {
    summary: "A request's params do not match the method's template.",
    httpStatus: 400,
    jsonRpcText: 'Invalid params: ',
    close: closeWith('Invalid params passed.'),
  },
  RELAY_COMMAND_TIMEOUT: {
    summary: 'An asynchronous reply (the authenticator, then the rendezvous offer) took longer than the JSON-RPC timeout.',
    httpStatus: 504,
    jsonRpcText: 'Command timed out',
    close: closeWith('API call timeouted.'),
  },
  RELAY_PARTNER_ON_OTHER_NODE: {
    summary: 'The partner with this (token, nonce) waits on another gateway node (process or machine) that this one cannot forward to; the client is answered AuthenticationErrorProxyError and closed, the partner keeps waiting.',
    httpStatus: 503,
    close: closeWith('Proxy error.'),
  },
  RELAY_FORWARD_FAILED: {
    summary: 'The tunnel to a partner waiting on another gateway node could not be set up (its node did not answer, refused the cluster key, or the handshake timed out); the client is answered AuthenticationErrorProxyError and closed, the key is free again. A forward handshake this node refused is logged with the same code.',
    httpStatus: 503,
    close: closeWith('Proxy error.'),
  },
  RELAY_FORWARD_BUSY: {
    summary: 'The cluster forward listener already had 1,024 handshakes under way (or 256 from one address), counted from the TCP accept (with `forwardTls`, the TLS handshake included); the new connection was closed without a byte (logged at most every 10 s). A node of ours whose claim is refused answers its client ProxyError (`RELAY_FORWARD_FAILED`).',
    httpStatus: 503,
  },
  RELAY_PRESENCE_FAILED: {
    summary: "This node could not publish its view to Redis or read the other nodes' (Redis away or slow): `gatehouse monitor --cluster` and the cluster metrics miss it (or all nodes) until Redis answers again. No client is affected.",
    httpStatus: 503,
  },
  RELAY_RENDEZVOUS_FAILED: {
    summary: 'The rendezvous table could not be asked (it failed); the client is answered AuthenticationErrorProxyError and closed.',
    httpStatus: 503,
    close: closeWith('Proxy error.'),
  },
  RELAY_AUTHENTICATION_FAILED: {
    summary: 'Authenticate answered with an AuthenticationError other than NoError; the client is closed.',
    httpStatus: 401,
    close: closeWith('API call was not successfully.'),
  },
  RELAY_INACTIVE_TIMEOUT: {
    summary: 'A client sent nothing for the inactive timeout before authenticating.',
    httpStatus: 408,
    close: closeWith('Proxy timeout occurred. The socket was inactive.'),
  },
  RELAY_ALONE_TIMEOUT: {
    summary: 'An authenticated client waited longer than the alone timeout for its partner.',
    httpStatus: 408,
    close: closeWith('Proxy timeout occurred. The tunnel partner did not show up.'),
  },
  RELAY_DATA_BEFORE_TUNNEL: {
    summary: 'A client sent data after authenticating but before its tunnel was established.',
    httpStatus: 400,
    close: closeWith('Data received while authenticated but not remote connected.'),
  },
  RELAY_TUNNEL_EXISTS: {
    summary: 'A third client authenticated with a (token, nonce) that already has a tunnel.',
    httpStatus: 409,
    close: closeWith('Tunnel already exists for this token nonce combination.'),
  },
  RELAY_DUPLICATE_UUID: {
    summary: 'Both clients of a pair used the same uuid; both are closed.',
    httpStatus: 409,
    close: closeWith('Duplicated client UUID.'),
  },
  RELAY_CLIENT_LOOP: {
    summary: 'Both clients of a pair that used a nonce have the same uuid (a client talking to itself); both are closed.',
    httpStatus: 409,
    close: closeWith('Client loop detected.'),
  },
  RELAY_PARTNER_CLOSED: {
    summary: 'The tunnel partner disconnected; this side is closed after pending data is flushed.',
    httpStatus: 410,
    close: closeWith('Tunnel client disconnected'),
  },
  RELAY_MESSAGE_TOO_LARGE: {
    summary: 'More than the message limit (10240 bytes) of incomplete JSON arrived before the tunnel.',
    httpStatus: 413,
    close: closeWith('Data buffer size violation.'),
  },
  RELAY_UNREAD_ANSWERS: {
    summary: 'Before the tunnel, a client sent requests (Hello, Introspect) without reading the answers: past limits.maxUnreadAnswerBytes of unread answers it is no longer read (nor answered) until it catches up, and when its phase deadline (inactiveMs; jsonRpcMs while authenticating; aloneMs while waiting) passes meanwhile it is dropped at once, nothing flushed.',
    httpStatus: 503,
    close: closeWith('Answers were not read.'),
  },
  RELAY_BINARY_NOT_EXPECTED: {
    summary: 'A WebSocket binary frame arrived before the tunnel was established.',
    httpStatus: 400,
    close: closeWith('Binary message not expected.'),
  },
  RELAY_WS_INVALID_UTF8: {
    summary: 'A WebSocket text frame that is not valid UTF-8 arrived before the tunnel; closed 1007 without an answer, as QWebSocket does.',
    httpStatus: 400,
    close: { code: 1007, reason: 'Invalid UTF-8 code encountered.' },
  },
  RELAY_WS_MESSAGE_TOO_LARGE: {
    summary: 'A WebSocket message over the phase limit arrived (limits.maxMessageBytes before the tunnel, limits.tunnelBufferBytes in it); the WebSocket layer closes it.',
    httpStatus: 413,
    close: { code: 1009, reason: '' },
  },
  RELAY_SHUTDOWN: {
    summary: 'The server is stopping; clients are told and closed.',
    httpStatus: 503,
    close: closeWith('Stop server', 1000),
  },
  RELAY_TUNNEL_IDLE_TIMEOUT: {
    summary: 'An established tunnel carried no data for the configured tunnel idle timeout (off by default).',
    httpStatus: 408,
    close: closeWith('Proxy timeout occurred. The tunnel was idle.'),
  },
  RELAY_LIMIT_WAITING_PER_TOKEN: {
    summary: 'Too many clients are already waiting for partners under this token (across nonces).',
    httpStatus: 429,
    jsonRpcText: 'Too many clients waiting for this token.',
    close: closeWith('Too many clients waiting for this token.'),
  },
  RELAY_LIMIT_AUTH_BACKOFF: {
    summary: 'This address failed authentication too often; it must wait before trying again.',
    httpStatus: 429,
    jsonRpcText: 'Too many failed authentications from this address. Retry later.',
    close: closeWith('Too many failed authentications from this address.'),
  },
  RELAY_AUTHENTICATOR_ERROR: {
    summary: 'The authenticator backend failed (unreachable, bad answer); the client got ProxyError.',
    httpStatus: 502,
  },
  RELAY_AUTHORIZER_BUSY: {
    summary:
      'The HTTP or Lambda authorizer already had `maxInFlight` requests open (it is slow or hangs); the client got ProxyError at once.',
    httpStatus: 503,
  },
  RELAY_AUTHORIZER_RESPONSE_TOO_LARGE: {
    summary: 'The HTTP or Lambda authorizer answered with a body over 64 KiB; the client got ProxyError.',
    httpStatus: 502,
  },
  RELAY_TOKEN_FILE_INVALID: {
    summary: "The static authenticator's token file is unreadable or has a malformed line (named by number).",
    httpStatus: 500,
  },
  RELAY_TP_INACTIVE_TIMEOUT: {
    summary: 'Tunnel proxy: a connection did not register as server or client within the inactive timeout (from connect, not re-armed by traffic).',
    httpStatus: 408,
    close: closeWith('Tunnelproxy client timeout occurred. The socket was inactive.'),
  },
  RELAY_TP_SERVER_IDLE_TIMEOUT: {
    summary: 'Tunnel proxy: a registered server connection sent nothing for timeouts.serverIdleMs (servers send TunnelProxy.Ping to stay up).',
    httpStatus: 408,
    close: closeWith('Tunnelproxy client timeout occurred. The socket was inactive.'),
  },
  RELAY_TP_ALREADY_REGISTERED: {
    summary: 'Tunnel proxy: a second Register on one connection, or a server or client uuid already registered; answered TunnelProxyErrorAlreadyRegistered, then closed.',
    httpStatus: 409,
    close: closeWith('Already registered'),
  },
  RELAY_TP_UUID_CROSS_REGISTRATION: {
    summary: 'Tunnel proxy: a uuid already registered in the other role (server vs client); answered TunnelProxyErrorAlreadyRegistered, then closed.',
    httpStatus: 409,
    close: closeWith('UUID cross registeration'),
  },
  RELAY_TP_SERVER_NOT_FOUND: {
    summary: 'Tunnel proxy: a client registered for a server uuid that no connection serves; answered TunnelProxyErrorServerNotFound, then closed.',
    httpStatus: 404,
    close: closeWith('Unknown server'),
  },
  RELAY_TP_SERVER_NOT_ALLOWED: {
    summary: 'Tunnel proxy: a server uuid outside tunnelProxy.allowServerUuids tried to register; answered TunnelProxyErrorForbiddenCall, then closed.',
    httpStatus: 403,
    close: closeWith('Server uuid not allowed.'),
  },
  RELAY_TP_SERVER_GONE: {
    summary: "Tunnel proxy: the client's server connection went away; the client is flushed and closed.",
    httpStatus: 410,
    close: closeWith('Server disconnected'),
  },
  RELAY_TP_DISCONNECT_REQUESTED: {
    summary: 'Tunnel proxy: the server asked (DisconnectClient) to close this client.',
    httpStatus: 410,
    close: closeWith('Server requested disconnect.'),
  },
  RELAY_TP_SLOW_CLIENT: {
    summary: 'Tunnel proxy: a client kept more than limits.clientBufferBytes unread for timeouts.slowClientMs while its server connection was paused for it; closed so its siblings go on.',
    httpStatus: 503,
    close: closeWith('Client did not read its data in time.'),
  },
  RELAY_TP_UNREAD_ANSWERS: {
    summary: 'Tunnel proxy: a connection kept sending requests without reading the answers: before registration, more than the relay limits.maxUnreadAnswerBytes unread (it is then not read) until its inactive deadline passed; on a server connection, more than limits.serverBufferBytes of control answers queued while it was paused for them. Dropped at once.',
    httpStatus: 503,
    close: closeWith('Answers were not read.'),
  },
  RELAY_TP_BAD_FRAME: {
    summary: "Tunnel proxy: the server sent a SLIP frame with an invalid escape for this client; the client's stream is corrupt and it is closed (the server connection and its other clients go on).",
    httpStatus: 502,
    close: closeWith('Invalid frame from the server.'),
  },
  RELAY_TP_LIMIT_SERVERS: {
    summary: 'Tunnel proxy: limits.maxServers server connections are registered already.',
    httpStatus: 503,
    jsonRpcText: 'Too many servers registered.',
    close: closeWith('Too many servers registered.'),
  },
  RELAY_TP_LIMIT_SERVERS_PER_IP: {
    summary: 'Tunnel proxy: limits.maxServersPerIp server connections from this address are registered already.',
    httpStatus: 429,
    jsonRpcText: 'Too many servers registered from this address.',
    close: closeWith('Too many servers registered from this address.'),
  },
  RELAY_TP_LIMIT_CLIENTS_PER_SERVER: {
    summary: 'Tunnel proxy: the server has limits.maxClientsPerServer clients already (at most 65,534 addresses exist).',
    httpStatus: 503,
    jsonRpcText: 'Too many clients for this server.',
    close: closeWith('Too many clients for this server.'),
  },
  RELAY_TP_DIRECTORY_FAILED: {
    summary: "Tunnel proxy across nodes: the shared directory of servers (Redis, or the primary process for `serve --workers`) could not be asked. A RegisterServer is answered TunnelProxyErrorInternalServerError and closed; a RegisterClient for a server that is not on this node is answered TunnelProxyErrorServerNotFound and closed, as for an unknown server.",
    httpStatus: 503,
    close: closeWith('Internal server error.'),
  },
  RELAY_TOKEN_FILE_TOO_LARGE: {
    summary: "The static authenticator's token file is larger than 8 MiB.",
    httpStatus: 500,
  },
} as const satisfies Record<string, ErrorSpec>;
