// The AWS Lambda authorizer: SigV4 against AWS's published examples, and real requests to a local Lambda
// Invoke endpoint on 127.0.0.1 that checks the signature itself (its own SigV4 code, below).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { captureLog as capture } from '../helpers/relay.ts';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Secret } from '../../src/core/config/secret.ts';
import { createLambdaAuthenticator, lambdaInvokeUrl } from '../../src/relay/authenticators/lambda.ts';
import { signRequest, signingKey } from '../../src/relay/authenticators/sigv4.ts';
import type { Authenticator, AuthRequest } from '../../src/relay/authenticators/types.ts';


const ACCESS_KEY = 'AKIDLOCALTEST0001';
const SECRET_KEY = 'wJalr-local-secret-key/K7MDENG+bPxRfiCY';
const SESSION_TOKEN = 'session-token-local-FwoGZXIvYXdzE';
const REGION = 'eu-west-1';
const TOKEN = 'user-token-4a1b-very-secret';

// ---- the verifying endpoint (independent of src/: its own canonical request) ----

const enc = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const hex = (d: string) => createHash('sha256').update(d).digest('hex');
const mac = (k: string | Buffer, d: string) => createHmac('sha256', k).update(d).digest();

/** Checks an incoming request's SigV4 Authorization; returns null when valid, else why not. */
function verifySigV4(
  req: IncomingMessage,
  body: string,
  secret: string,
  expectSessionToken: boolean,
): string | null {
  const auth = req.headers.authorization ?? '';
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(
      auth,
    );
  if (m === null) return 'malformed Authorization';
  const [, keyId, day, region, service, signedHeaders, signature] = m as unknown as string[];
  if (keyId !== ACCESS_KEY) return 'unknown access key';
  if (region !== REGION || service !== 'lambda') return 'wrong scope';
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  if (!/^\d{8}T\d{6}Z$/.test(amzDate) || amzDate.slice(0, 8) !== day) return 'bad x-amz-date';
  const when = Date.UTC(
    +amzDate.slice(0, 4),
    +amzDate.slice(4, 6) - 1,
    +amzDate.slice(6, 8),
    +amzDate.slice(9, 11),
    +amzDate.slice(11, 13),
    +amzDate.slice(13, 15),
  );
  if (Math.abs(Date.now() - when) > 5 * 60_000) return 'request time too skewed';
  const names = signedHeaders!.split(';');
  for (const need of ['host', 'x-amz-date', 'content-type', 'x-amz-invocation-type']) {
    if (!names.includes(need)) return `${need} not signed`;
  }
  if (
    expectSessionToken &&
    (!names.includes('x-amz-security-token') || req.headers['x-amz-security-token'] !== SESSION_TOKEN)
  ) {
    return 'session token missing';
  }
  const url = new URL(req.url ?? '/', 'http://x');
  const canonical = [
    req.method,
    url.pathname.split('/').map(enc).join('/'),
    '',
    names.map((n) => `${n}:${String(req.headers[n] ?? '').trim()}\n`).join(''),
    signedHeaders,
    hex(body),
  ].join('\n');
  const toSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    `${day}/${region}/${service}/aws4_request`,
    hex(canonical),
  ].join('\n');
  const key = mac(mac(mac(mac(`AWS4${secret}`, day), region), service), 'aws4_request');
  const expected = mac(key, toSign);
  if (!timingSafeEqual(expected, Buffer.from(signature!, 'hex'))) return 'signature mismatch';
  return null;
}

interface Invocation {
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}
type FunctionImpl = (payload: unknown, res: ServerResponse) => void;

let server: Server;
let endpoint: string;
let impl: FunctionImpl = (_p, res) => res.end('{}');
let expectSessionToken = false;
const invocations: Invocation[] = [];

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      invocations.push({ path: req.url ?? '', headers: req.headers, body });
      const problem = verifySigV4(req, body, SECRET_KEY, expectSessionToken);
      if (problem !== null) {
        res.writeHead(403, {
          'content-type': 'application/json',
          'x-amzn-ErrorType': 'InvalidSignatureException',
        });
        res.end(JSON.stringify({ message: `test endpoint: ${problem}` }));
        return;
      }
      if (req.method !== 'POST' || !/^\/2015-03-31\/functions\/[^/]+\/invocations$/.test(req.url ?? '')) {
        res.writeHead(404).end();
        return;
      }
      if (req.headers['x-amz-invocation-type'] !== 'RequestResponse') {
        res.writeHead(400).end('{"message":"invocation type"}');
        return;
      }
      impl(JSON.parse(body), res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const req = (token = TOKEN): AuthRequest => ({
  token,
  uuid: 'u-1',
  name: 'alpha',
  nonce: '',
  remoteAddress: '127.0.0.1',
});
const run = (auth: Authenticator, r = req()) => auth.authenticate(r, new AbortController().signal);
const answer =
  (value: unknown, status = 200, headers: Record<string, string> = {}): FunctionImpl =>
  (_p, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(typeof value === 'string' ? value : JSON.stringify(value));
  };

function make(
  opts: {
    c?: ReturnType<typeof capture>;
    secret?: string;
    sessionToken?: string;
    functionName?: string;
  } = {},
) {
  return createLambdaAuthenticator(
    {
      kind: 'lambda',
      endpoint: `${endpoint}/`,
      functionName: opts.functionName ?? 'system-services-authorizer-dev-checkToken',
      region: REGION,
      accessKeyId: new Secret(ACCESS_KEY),
      secretAccessKey: new Secret(opts.secret ?? SECRET_KEY),
      maxInFlight: 256,
      ...(opts.sessionToken === undefined ? {} : { sessionToken: new Secret(opts.sessionToken) }),
    },
    { log: (opts.c ?? capture()).log, baseDir: '/' },
  );
}

// ---- tests ----

test('SigV4 matches AWS published examples (get-vanilla, post-vanilla, derived signing key)', () => {
  const creds = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
  const at = new Date(Date.UTC(2015, 7, 30, 12, 36, 0));
  const get = signRequest(
    { method: 'GET', url: new URL('https://example.amazonaws.com/'), headers: {}, body: '' },
    creds,
    'us-east-1',
    'service',
    at,
  );
  assert.equal(
    get.headers.authorization,
    'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
  );
  assert.equal(get.headers['x-amz-date'], '20150830T123600Z');
  const post = signRequest(
    { method: 'POST', url: new URL('https://example.amazonaws.com/'), headers: {}, body: '' },
    creds,
    'us-east-1',
    'service',
    at,
  );
  assert.equal(post.signature, '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b');
  assert.equal(
    signingKey('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', '20120215', 'us-east-1', 'iam').toString('hex'),
    'f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d',
  );
});

test('invoke URL: endpoint (trailing slash tolerated) + /2015-03-31/functions/<name>/invocations; ARNs encoded', () => {
  assert.equal(
    lambdaInvokeUrl('https://lambda.eu-west-1.amazonaws.com/', 'checkToken').href,
    'https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/checkToken/invocations',
  );
  assert.equal(
    lambdaInvokeUrl('https://lambda.eu-west-1.amazonaws.com', 'arn:aws:lambda:eu-west-1:123:function:f')
      .pathname,
    '/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A123%3Afunction%3Af/invocations',
  );
});

test('valid token: signed POST {"token"} with RequestResponse; isValid true → NoError with userId', async () => {
  impl = answer({ isValid: true, userId: 'user-42' });
  invocations.length = 0;
  const c = capture();
  const auth = await make({ c });
  assert.equal(auth.kind, 'lambda');
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'user-42' });
  assert.equal(invocations.length, 1);
  const inv = invocations[0]!;
  assert.equal(inv.path, '/2015-03-31/functions/system-services-authorizer-dev-checkToken/invocations');
  assert.equal(inv.body, `{"token":"${TOKEN}"}`);
  assert.equal(inv.headers['x-amz-invocation-type'], 'RequestResponse');
  assert.equal(inv.headers['x-amz-security-token'], undefined);
  for (const s of [TOKEN, SECRET_KEY, ACCESS_KEY]) assert.ok(!c.text().includes(s), s);
});

test("nymea's answer shape: the user is verifiedData.verifiedParsedToken.email; `user` also accepted", async () => {
  const auth = await make();
  impl = answer({
    isValid: true,
    verifiedData: {
      vendorId: 'v',
      userPoolId: 'p',
      verifiedParsedToken: { email: 'a@example.org', 'cognito:username': 'a' },
    },
  });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'a@example.org' });
  impl = answer({ isValid: true, user: 'bob' });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'bob' });
  impl = answer({ isValid: true });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError' });
});

test('isValid false (or missing in a non-empty answer, as nymea reads it) → AuthenticationFailed', async () => {
  const auth = await make();
  impl = answer({ isValid: false, userId: 'x' });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorAuthenticationFailed' });
  impl = answer({ message: 'expired' });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorAuthenticationFailed' });
});

test('temporary credentials: x-amz-security-token is sent and signed', async () => {
  expectSessionToken = true;
  try {
    impl = answer({ isValid: true, userId: 's' });
    invocations.length = 0;
    const c = capture();
    const auth = await make({ c, sessionToken: SESSION_TOKEN });
    assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 's' });
    assert.match(String(invocations[0]!.headers.authorization), /SignedHeaders=[^,]*x-amz-security-token/);
    assert.ok(!c.text().includes(SESSION_TOKEN));
  } finally {
    expectSessionToken = false;
  }
});

test('a function ARN as the name: the double-encoded canonical path verifies', async () => {
  impl = answer({ isValid: true, userId: 'arn-user' });
  const auth = await make({ functionName: 'arn:aws:lambda:eu-west-1:123456789012:function:checkToken' });
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorNoError', user: 'arn-user' });
});

for (const [name, setup, reason] of [
  ['a wrong secret key (403 InvalidSignatureException)', { secret: 'not-the-secret' }, /HTTP status 403/],
  [
    'X-Amz-Function-Error (the function threw)',
    {
      impl: answer({ errorMessage: 'boom', errorType: 'Error' }, 200, {
        'X-Amz-Function-Error': 'Unhandled',
      }),
    },
    /function error: Unhandled/,
  ],
  ['an empty object (nymea: ProxyError)', { impl: answer({}) }, /non-empty JSON object/],
  ['not JSON', { impl: answer('oops') }, /not valid JSON/],
  ['HTTP 429 throttling', { impl: answer({ message: 'Rate exceeded' }, 429) }, /HTTP status 429/],
  ['HTTP 500', { impl: answer({ isValid: true }, 500) }, /HTTP status 500/],
  ['a body over 64 KiB', { impl: answer({ isValid: true, pad: 'x'.repeat(65536) }) }, /larger than 65536/],
] as const) {
  test(`${name} → ProxyError, a warning with the reason and no secrets`, async () => {
    if ('impl' in setup) impl = setup.impl;
    const c = capture();
    const auth = await make({ c, ...('secret' in setup ? { secret: setup.secret } : {}) });
    assert.deepEqual(await run(auth), { error: 'AuthenticationErrorProxyError' });
    const warn = c.records().find((r) => r.msg === 'Lambda authorizer failed');
    assert.ok(warn !== undefined, c.text());
    assert.equal(warn.level, 'warn');
    assert.match(String(warn.reason), reason);
    for (const s of [TOKEN, SECRET_KEY, ACCESS_KEY, 'not-the-secret']) assert.ok(!c.text().includes(s), s);
  });
}

test('unreachable endpoint → ProxyError; abort → Aborted at once', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const c = capture();
  const auth = await createLambdaAuthenticator(
    {
      kind: 'lambda',
      endpoint: `http://127.0.0.1:${port}`,
      functionName: 'f',
      region: REGION,
      accessKeyId: new Secret(ACCESS_KEY),
      secretAccessKey: new Secret(SECRET_KEY),
      maxInFlight: 256,
    },
    { log: c.log, baseDir: '/' },
  );
  assert.deepEqual(await run(auth), { error: 'AuthenticationErrorProxyError' });
  assert.match(String(c.records().find((r) => r.msg === 'Lambda authorizer failed')?.reason), /ECONNREFUSED/);

  impl = () => undefined; // never answers
  const slow = await make();
  const ac = new AbortController();
  const pending = slow.authenticate(req(), ac.signal);
  setTimeout(() => ac.abort(), 100);
  assert.deepEqual(await pending, { error: 'AuthenticationErrorAborted' });
});

test("config: the endpoint defaults to nymea's https://lambda.<region>.amazonaws.com; secrets print [redacted]", async () => {
  const { relayConfigSchema } = await import('../../src/relay/config.ts');
  const cfg = relayConfigSchema.parse({
    authenticator: {
      kind: 'lambda',
      functionName: 'checkToken',
      region: 'eu-west-1',
      accessKeyId: ACCESS_KEY,
      secretAccessKey: SECRET_KEY,
    },
  });
  assert.equal(cfg.authenticator.kind, 'lambda');
  assert.ok(!JSON.stringify(cfg).includes(SECRET_KEY));
  const c = capture();
  if (cfg.authenticator.kind !== 'lambda') return;
  await createLambdaAuthenticator(cfg.authenticator, { log: c.log, baseDir: '/' });
  const info = c.records().find((r) => r.msg === 'Lambda authorizer configured');
  assert.equal(info?.origin, 'https://lambda.eu-west-1.amazonaws.com');
  assert.ok(!c.text().includes(SECRET_KEY) && !c.text().includes(ACCESS_KEY));
});
