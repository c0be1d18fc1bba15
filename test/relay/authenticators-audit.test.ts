// The remote authorizers (http, lambda) as clients of a hostile or broken authorizer on 127.0.0.1: whatever
// it answers, the client is refused unless the answer is a clear yes, and a hanging authorizer cannot make
// the relay hold an unbounded number of requests (and sockets) open to it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { captureLog, deadline } from '../helpers/relay.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { relayConfigSchema } from '../../src/relay/config.ts';
import { createHttpAuthenticator } from '../../src/relay/authenticators/http.ts';
import { createLambdaAuthenticator } from '../../src/relay/authenticators/lambda.ts';
import type { Authenticator, AuthRequest, AuthResult } from '../../src/relay/authenticators/types.ts';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

let server: Server;
let base: string;
let handler: Handler = (_req, res) => res.end('{}');
let requests = 0;

before(async () => {
  server = createServer((req, res) => {
    requests++;
    req.resume();
    req.on('end', () => handler(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const TOKEN = 'tok-audit-4b1f-very-secret';
const BEARER = 'bearer-audit-77aa-very-secret';
const AWS_SECRET = 'aws-secret-audit-0c0c-very-secret';
const request: AuthRequest = {
  token: TOKEN,
  uuid: '5f0c3c2e-0000-4000-8000-0000000000aa',
  name: 'audit',
  nonce: '',
  remoteAddress: '127.0.0.1',
};

const json = (value: string, headers: Record<string, string> = {}): Handler => {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers });
    res.end(value);
  };
};

const kinds: Record<string, (log: ReturnType<typeof captureLog>['log'], extra?: Record<string, unknown>) => Promise<Authenticator>> = {
  http: (log, extra = {}) =>
    createHttpAuthenticator({ kind: 'http', url: `${base}/auth`, bearer: new Secret(BEARER), maxInFlight: 256, ...extra }, { log, baseDir: '/' }),
  lambda: (log, extra = {}) =>
    createLambdaAuthenticator(
      {
        kind: 'lambda',
        endpoint: base,
        functionName: 'auth',
        region: 'eu-west-1',
        accessKeyId: new Secret('AKIDAUDIT'),
        secretAccessKey: new Secret(AWS_SECRET),
        maxInFlight: 256,
        ...extra,
      },
      { log, baseDir: '/' },
    ),
};

const settleWithin = async (ps: { settled: boolean }[], n: number, ms: number): Promise<void> => {
  const until = Date.now() + ms;
  while (ps.filter((p) => p.settled).length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
};

for (const [kind, make] of Object.entries(kinds)) {
  test(`${kind}: a hanging authorizer holds at most maxInFlight requests; the rest are refused at once (ProxyError, RELAY_AUTHORIZER_BUSY, one warning)`, async () => {
    handler = () => undefined; // never answers
    requests = 0;
    const c = captureLog();
    const auth = await make(c.log, { maxInFlight: 4 });
    const controllers = Array.from({ length: 12 }, () => new AbortController());
    const calls = controllers.map((ac) => {
      const call: { settled: boolean; result?: AuthResult; done: Promise<AuthResult> } = {
        settled: false,
        done: auth.authenticate(request, ac.signal),
      };
      void call.done.then((r) => {
        call.settled = true;
        call.result = r;
      });
      return call;
    });
    try {
      await settleWithin(calls, 8, 3000);
      for (let i = 0; i < 100 && requests < 4; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(calls.filter((x) => x.settled).length, 8, 'all but maxInFlight answered at once');
      for (const x of calls.slice(4)) assert.deepEqual(x.result, { error: 'AuthenticationErrorProxyError' });
      assert.equal(requests, 4, 'the authorizer saw maxInFlight requests');
      const busy = c.records().filter((r) => r.code === 'RELAY_AUTHORIZER_BUSY');
      assert.equal(busy.length, 1, c.text());
      assert.equal(busy[0]?.level, 'warn');
    } finally {
      for (const ac of controllers) ac.abort();
    }
    for (const x of calls.slice(0, 4)) assert.deepEqual(await x.done, { error: 'AuthenticationErrorAborted' });
    // Their slots are free again.
    handler = json('{"isValid":true,"user":"u"}');
    assert.deepEqual(await auth.authenticate(request, new AbortController().signal), { error: 'AuthenticationErrorNoError', user: 'u' });
    assert.ok(![TOKEN, BEARER, AWS_SECRET].some((s) => c.text().includes(s)), c.text());
  });

  test(`${kind}: hostile answers never accept the client (prototype keys, wrong types, 1e309, nulls, redirects)`, async () => {
    const c = captureLog();
    const auth = await make(c.log);
    const refused = ['AuthenticationErrorProxyError', 'AuthenticationErrorAuthenticationFailed'];
    const bodies = [
      '{"__proto__":{"isValid":true}}',
      '{"constructor":{"prototype":{"isValid":true}},"x":1}',
      '{"isValid":"true"}',
      '{"isValid":1}',
      '{"isValid":1e309}',
      '{"isValid":null}',
      '{"isValid":[true]}',
      '[{"isValid":true}]',
      'true',
      'null',
      '"isValid"',
      '{"isValid":true',
      '{"isValid":true}{"isValid":true}',
    ];
    for (const body of bodies) {
      handler = json(body);
      const r = await auth.authenticate(request, new AbortController().signal);
      assert.ok(refused.includes(r.error), `${body} → ${r.error}`);
    }
    handler = (_req, res) => {
      res.writeHead(307, { location: `${base}/elsewhere` });
      res.end();
    };
    const before = requests;
    assert.deepEqual(await auth.authenticate(request, new AbortController().signal), { error: 'AuthenticationErrorProxyError' });
    assert.equal(requests - before, 1, 'the redirect was not followed');
    assert.ok(![TOKEN, BEARER, AWS_SECRET].some((s) => c.text().includes(s)), c.text());
  });
}

test('http and lambda: an https authorizer whose certificate is not trusted → ProxyError, the warning names it, nothing sent', async () => {
  const { selfSignedCert, tempDir } = await import('../helpers/relay.ts');
  const { readFileSync } = await import('node:fs');
  const { createServer: createHttpsServer } = await import('node:https');
  const files = selfSignedCert(tempDir());
  let seen = 0;
  const tlsServer = createHttpsServer({ cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) }, (_req, res) => {
    seen++;
    res.end('{"isValid":true}');
  });
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  const tlsBase = `https://127.0.0.1:${(tlsServer.address() as AddressInfo).port}`;
  try {
    for (const kind of ['http', 'lambda'] as const) {
      const c = captureLog();
      const auth = await kinds[kind]!(c.log, kind === 'http' ? { url: `${tlsBase}/auth` } : { endpoint: tlsBase });
      assert.deepEqual(await auth.authenticate(request, new AbortController().signal), { error: 'AuthenticationErrorProxyError' }, kind);
      const warn = c.records().find((r) => r.level === 'warn' && r.code === 'RELAY_AUTHENTICATOR_ERROR');
      assert.match(String(warn?.reason), /SELF_SIGNED|certificate/i, c.text());
      assert.ok(![TOKEN, BEARER, AWS_SECRET].some((x) => c.text().includes(x)), c.text());
    }
    assert.equal(seen, 0);
  } finally {
    tlsServer.closeAllConnections();
    await new Promise((r) => tlsServer.close(r));
  }
});

test('relay client (gatehouse tunnel): a relay that accepts and never finishes the TLS handshake or WebSocket upgrade fails by timeoutMs', async () => {
  const { createServer: createNetServer } = await import('node:net');
  const { openTunnel } = await import('../../src/relay/client.ts');
  const sockets = new Set<import('node:net').Socket>();
  const mute = createNetServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const port = (mute.address() as AddressInfo).port;
  try {
    for (const scheme of ['tls', 'wss', 'ws'] as const) {
      const err = await deadline(openTunnel({ url: `${scheme}://127.0.0.1:${port}`, token: TOKEN, timeoutMs: 300 }), 5000, scheme).then(
        (t) => {
          t.destroy();
          return undefined;
        },
        (e: unknown) => e,
      );
      assert.match(String(err), /300 ms/, scheme);
      assert.ok(!String(err).includes(TOKEN));
    }
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => mute.close(r));
  }
});

test('http and lambda: a gzip bomb (50 MB in 50 KB) → ProxyError RELAY_AUTHORIZER_RESPONSE_TOO_LARGE (the cap counts decoded bytes)', async () => {
  const { gzipSync } = await import('node:zlib');
  const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024, 0x20));
  handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(bomb.length) });
    res.end(bomb);
  };
  for (const kind of ['http', 'lambda'] as const) {
    const c = captureLog();
    const auth = await kinds[kind]!(c.log);
    assert.deepEqual(await auth.authenticate(request, new AbortController().signal), { error: 'AuthenticationErrorProxyError' }, kind);
    assert.ok(c.records().some((r) => r.level === 'warn' && r.code === 'RELAY_AUTHORIZER_RESPONSE_TOO_LARGE'), c.text());
  }
});

for (const [kind, make] of Object.entries(kinds)) {
  test(`${kind}: a failing authorizer is logged once per kind of failure every 10 s, not once per client (a storm of clients cannot flood the log)`, async () => {
    handler = (_req, res) => {
      res.writeHead(500);
      res.end('down');
    };
    const c = captureLog();
    const auth = await make(c.log);
    for (let i = 0; i < 50; i++) assert.deepEqual(await auth.authenticate(request, new AbortController().signal), { error: 'AuthenticationErrorProxyError' });
    handler = json('[]');
    for (let i = 0; i < 50; i++) assert.deepEqual(await auth.authenticate(request, new AbortController().signal), { error: 'AuthenticationErrorProxyError' });
    const warns = c.records().filter((r) => r.level === 'warn' && /authorizer failed/.test(String(r.msg)));
    assert.equal(warns.length, 2, c.text());
    assert.match(String(warns[0]!.reason), /500/);
    assert.equal(warns[1]!.code, 'RELAY_AUTHENTICATOR_ERROR');
    handler = json('{}');
  });
}

test('config: maxInFlight defaults to 256 for http and lambda, at least 1', () => {
  const parse = (authenticator: Record<string, unknown>) => validateConfig(relayConfigSchema, { authenticator }).authenticator;
  const http = parse({ kind: 'http', url: 'http://127.0.0.1:1/a' });
  assert.equal(http.kind === 'http' ? http.maxInFlight : undefined, 256);
  const lambda = parse({ kind: 'lambda', functionName: 'f', region: 'r', accessKeyId: 'a', secretAccessKey: 's' });
  assert.equal(lambda.kind === 'lambda' ? lambda.maxInFlight : undefined, 256);
  assert.throws(() => parse({ kind: 'http', url: 'http://127.0.0.1:1/a', maxInFlight: 0 }), /maxInFlight/);
});
