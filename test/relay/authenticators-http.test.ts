// The HTTP authorizer, called directly against a real HTTP server on 127.0.0.1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { captureLog as capture } from '../helpers/relay.ts';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Secret } from '../../src/core/config/secret.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { createHttpAuthenticator } from '../../src/relay/authenticators/http.ts';
import { AUTHORIZER_MAX_RESPONSE_BYTES } from '../../src/relay/authenticators/post-json.ts';
import type { Authenticator, AuthRequest } from '../../src/relay/authenticators/types.ts';


interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}
type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** A real authorizer: each test sets `handler`; every request is recorded. */
let server: Server;
let base: string;
let handler: Handler = (_req, res) => res.end('{}');
const seen: Seen[] = [];
const aborted: string[] = [];

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      handler(req, res, body);
    });
    res.on('close', () => {
      if (!res.writableFinished) aborted.push(req.url ?? '');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const TOKEN = 'tok-7f3c-very-secret';
const BEARER = 'bearer-9d2e-very-secret';
const req = (token = TOKEN): AuthRequest => ({
  token,
  uuid: '5f0c3c2e-0000-4000-8000-000000000001',
  name: 'alpha',
  nonce: 'n1',
  remoteAddress: '127.0.0.1',
});
const run = (auth: Authenticator, r = req()) => auth.authenticate(r, new AbortController().signal);

async function make(
  path: string,
  c = capture(),
  bearer: string | null = BEARER,
): Promise<Authenticator> {
  return createHttpAuthenticator(
    { kind: 'http', url: `${base}${path}`, maxInFlight: 256, ...(bearer === null ? {} : { bearer: new Secret(bearer) }) },
    { log: c.log, baseDir: '/' },
  );
}

const json = (status: number, value: unknown, extra: Record<string, string> = {}): Handler => {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...extra });
    res.end(typeof value === 'string' ? value : JSON.stringify(value));
  };
};

test('valid token: exact request (POST JSON body, bearer), NoError with the user', async () => {
  handler = json(200, { isValid: true, user: 'alice' });
  seen.length = 0;
  const c = capture();
  const auth = await make('/authorize?realm=x', c);
  assert.equal(auth.kind, 'http');
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'alice' });
  assert.equal(seen.length, 1);
  const s = seen[0]!;
  assert.equal(s.method, 'POST');
  assert.equal(s.url, '/authorize?realm=x');
  assert.equal(s.headers.authorization, `Bearer ${BEARER}`);
  assert.equal(s.headers['content-type'], 'application/json');
  assert.equal(
    s.body,
    `{"token":"${TOKEN}","uuid":"5f0c3c2e-0000-4000-8000-000000000001","name":"alpha","nonce":"n1"}`,
  );
  assert.ok(!c.text().includes(TOKEN) && !c.text().includes(BEARER));
});

test('no bearer configured: no Authorization header; a positive answer without user', async () => {
  handler = json(200, { isValid: true });
  seen.length = 0;
  const auth = await make('/a', capture(), null);
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError' });
  assert.equal(seen[0]!.headers.authorization, undefined);
});

test('isValid false → AuthenticationFailed (any 2xx accepted)', async () => {
  handler = json(200, { isValid: false, user: 'mallory' });
  const auth = await make('/a');
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorAuthenticationFailed' });
  handler = json(203, { isValid: true, user: 'bob' });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'bob' });
});

for (const [name, h, reason] of [
  ['HTTP 500', json(500, { isValid: true }), /HTTP status 500/],
  ['HTTP 401', json(401, { isValid: true }), /HTTP status 401/],
  ['a redirect (not followed)', json(302, '', { location: '/elsewhere' }), /request failed/],
  ['a body that is not JSON', json(200, '<html>isValid</html>'), /not valid JSON/],
  ['JSON without isValid', json(200, { valid: true }), /no boolean isValid/],
  ['isValid as a string', json(200, { isValid: 'true' }), /no boolean isValid/],
  ['a JSON array', json(200, [true]), /no boolean isValid/],
  [
    'a connection closed mid-answer',
    ((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"isValid":');
      setTimeout(() => res.socket?.destroy(), 20);
    }) as Handler,
    /reading the response failed|request failed/,
  ],
] as const) {
  test(`${name} → ProxyError with a warning naming the reason, never the secrets`, async () => {
    handler = h;
    const c = capture();
    const auth = await make('/a', c);
    assert.deepEqual(await run(auth), { error: 'AuthenticationErrorProxyError' });
    const warn = c.records().find((r) => r.msg === 'HTTP authorizer failed');
    assert.ok(warn !== undefined, c.text());
    assert.equal(warn.level, 'warn');
    assert.match(String(warn.reason), reason);
    assert.ok(!c.text().includes(TOKEN) && !c.text().includes(BEARER), c.text());
  });
}

test('unreachable authorizer (nothing listens) → ProxyError, reason ECONNREFUSED', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const c = capture();
  const auth = await createHttpAuthenticator(
    { kind: 'http', url: `http://127.0.0.1:${port}/a`, bearer: new Secret(BEARER), maxInFlight: 256 },
    { log: c.log, baseDir: '/' },
  );
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorProxyError' });
  const warn = c.records().find((r) => r.msg === 'HTTP authorizer failed');
  assert.equal(warn?.code, 'RELAY_AUTHENTICATOR_ERROR');
  assert.match(String(warn.reason), /ECONNREFUSED/);
});

test('response body: exactly 64 KiB is read; one byte more → ProxyError RELAY_AUTHORIZER_RESPONSE_TOO_LARGE (declared or chunked)', async () => {
  const answer = '{"isValid":true,"user":"big"}';
  const exact = answer + ' '.repeat(AUTHORIZER_MAX_RESPONSE_BYTES - answer.length);
  assert.equal(exact.length, 65536);
  const auth = await make('/a');
  handler = json(200, exact);
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'big' });
  // Chunked (no Content-Length): the cap applies while reading.
  handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(exact.slice(0, 30000));
    res.end(exact.slice(30000));
  };
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'big' });

  for (const chunked of [false, true]) {
    const c = capture();
    const over = await make('/a', c);
    handler = chunked
      ? (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write(exact);
          res.end(' ');
        }
      : json(200, `${exact} `);
    assert.deepEqual(await run(over), { error: 'AuthenticationErrorProxyError' }, `chunked=${chunked}`);
    const warn = c.records().find((r) => r.msg === 'HTTP authorizer failed');
    assert.equal(warn?.code, 'RELAY_AUTHORIZER_RESPONSE_TOO_LARGE');
  }
});

test('abort (the session timeout) ends the request at once: Aborted, the authorizer sees the close, no warning', async () => {
  aborted.length = 0;
  handler = () => undefined; // never answers
  const c = capture();
  const auth = await make('/slow', c);
  const ac = new AbortController();
  const started = Date.now();
  const pending = auth.authenticate(req(), ac.signal);
  setTimeout(() => ac.abort(), 100);
  assert.deepEqual(await pending, { error: 'AuthenticationErrorAborted' });
  assert.ok(Date.now() - started < 5000);
  for (let i = 0; i < 100 && aborted.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(aborted, ['/slow']);
  assert.equal(c.records().filter((r) => r.level === 'warn').length, 0);
});

test('config: only http(s) URLs; user:password in the URL is refused at start', async () => {
  await assert.rejects(
    createHttpAuthenticator(
      { kind: 'http', url: `http://u:p@127.0.0.1:1/a`, maxInFlight: 256 },
      { log: capture().log, baseDir: '/' },
    ),
    (err: unknown) => isGatewayError(err, 'CORE_CONFIG_INVALID'),
  );
  const { relayConfigSchema } = await import('../../src/relay/config.ts');
  const parsed = relayConfigSchema.safeParse({ authenticator: { kind: 'http', url: 'ftp://127.0.0.1/x' } });
  assert.equal(parsed.success, false);
});
