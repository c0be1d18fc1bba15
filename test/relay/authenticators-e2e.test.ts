// The real authenticators (static, http, lambda) end to end: a running relay on 127.0.0.1, raw TCP and
// WebSocket clients, real authorizer servers, and the relay's whole log captured to prove no secret is in it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rawClient, authenticate, pair, tempDir, destroyAllClients, deadline, startRelay, captureLog } from '../helpers/relay.ts';
import type { RelayServer } from '../../src/relay/server.ts';
import { hashToken } from '../../src/relay/authenticators/static.ts';

const FAILED_LINE =
  '{"id":0,"params":{"authenticationError":"AuthenticationErrorAuthenticationFailed"},"status":"success"}\n';
const answerLine = (error: string) =>
  `{"id":0,"params":{"authenticationError":"${error}"},"status":"success"}\n`;

interface Relay {
  server: RelayServer;
  url(kind: 'tcp' | 'ws'): string;
  logText(): string;
  logRecords(): Record<string, unknown>[];
  close(): Promise<void>;
}

const running = new Set<Relay>();
const servers = new Set<Server>();
after(async () => {
  destroyAllClients();
  for (const r of running) await r.close();
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((res) => s.close(res));
  }
});

/** A relay (test/helpers' startRelay) with its log (debug level) captured in memory. */
async function startLoggedRelay(overrides: Record<string, unknown>): Promise<Relay> {
  const captured = captureLog();
  const started = await startRelay({ authenticator: { kind: 'dev' }, ...overrides }, { log: captured.log });
  const relay: Relay = {
    server: started.server,
    url: (kind) => started.url(kind),
    logText: captured.text,
    logRecords: captured.records,
    close: async () => {
      running.delete(relay);
      await started.close();
    },
  };
  running.add(relay);
  return relay;
}

/** A local authorizer; `handle` decides each answer. */
async function startAuthorizer(
  handle: (req: IncomingMessage, res: ServerResponse, body: string) => void,
): Promise<string> {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks).toString()));
  });
  servers.add(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

async function unusedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Authenticates one TCP client with `token`; resolves with everything it received once the relay closed it. */
async function rejected(relay: Relay, token: string): Promise<string> {
  const c = await rawClient(relay.url('tcp'));
  c.send(authenticate(token, { id: 0 }));
  await c.closed(10000);
  c.destroy();
  return c.received().toString();
}

function assertNoSecrets(relay: Relay, secrets: readonly string[]): void {
  const text = relay.logText();
  assert.ok(text.length > 0, 'the relay logged something');
  for (const s of secrets)
    assert.ok(!text.includes(s), `secret ${JSON.stringify(s.slice(0, 6))}… appears in the log`);
}

// ---------------------------------------------------------------- static

test('static: a listed token pairs (TCP + WS, user shown), an unknown one gets AuthenticationFailed and is closed', async () => {
  const dir = tempDir();
  const file = join(dir, 'tokens');
  const good = `good-${crypto.randomUUID()}`;
  const bad = `bad-${crypto.randomUUID()}`;
  writeFileSync(file, `# relay tokens\n${hashToken(good, 'alice')}\n`);
  const relay = await startLoggedRelay({ authenticator: { kind: 'static', file, reloadCheckMs: 100 } });

  const { a, b } = await pair(relay.url('tcp'), relay.url('ws'), { token: good });
  assert.deepEqual(
    [...relay.server.sessions].map((s) => s.userName),
    ['alice', 'alice'],
  );
  a.destroy();
  b.destroy();

  assert.equal(await rejected(relay, bad), FAILED_LINE);
  // WebSocket: the same answer as a text frame, then close 1011 with nymea's reason.
  const w = await rawClient(relay.url('ws'));
  w.send(authenticate(bad, { id: 0 }));
  const how = await w.closed(10000);
  assert.equal(w.frames()[0]?.data.toString(), FAILED_LINE);
  assert.deepEqual(how, { code: 1011, reason: 'API call was not successfully.' });

  // Reload without restart: a new token works; a broken file keeps the old table.
  const added = `added-${crypto.randomUUID()}`;
  writeFileSync(join(dir, 'tokens.new'), `${hashToken(good, 'alice')}\n${hashToken(added, 'bob')}\n`);
  renameSync(join(dir, 'tokens.new'), file);
  await deadline(
    (async () => {
      while (!relay.logRecords().some((r) => r.msg === 'token file reloaded'))
        await new Promise((r) => setTimeout(r, 20));
    })(),
    8000,
    'token file reloaded',
  );
  const p2 = await pair(relay.url('ws'), relay.url('tcp'), { token: added });
  p2.a.destroy();
  p2.b.destroy();

  writeFileSync(file, `${hashToken(bad)}\nthis line is broken\n`);
  await deadline(
    (async () => {
      while (!relay.logRecords().some((r) => r.msg === 'token file not reloaded; keeping the previous table'))
        await new Promise((r) => setTimeout(r, 20));
    })(),
    8000,
    'reload warning',
  );
  const p3 = await pair(relay.url('tcp'), relay.url('tcp'), { token: added });
  p3.a.destroy();
  p3.b.destroy();
  assert.equal(await rejected(relay, bad), FAILED_LINE);

  assertNoSecrets(relay, [good, bad, added]);
  await relay.close();
});

test('static: a malformed token file fails the relay start, naming the line', async () => {
  const dir = tempDir();
  const file = join(dir, 'tokens');
  writeFileSync(file, `${hashToken('x')}\n\nsha256:short alice\n`);
  await assert.rejects(
    startLoggedRelay({ authenticator: { kind: 'static', file } }),
    /RELAY_TOKEN_FILE_INVALID|line 3/,
  );
});

// ---------------------------------------------------------------- http

test('http: valid pairs, invalid gets AuthenticationFailed; the authorizer sees token/uuid/name/nonce and the bearer', async () => {
  const good = `good-${crypto.randomUUID()}`;
  const bearer = `bearer-${crypto.randomUUID()}`;
  const bodies: unknown[] = [];
  const url = await startAuthorizer((req, res, body) => {
    const parsed = JSON.parse(body) as { token: string };
    bodies.push(parsed);
    if (req.headers.authorization !== `Bearer ${bearer}`) return void res.writeHead(401).end();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(parsed.token === good ? { isValid: true, user: 'carol' } : { isValid: false }));
  });
  const relay = await startLoggedRelay({ authenticator: { kind: 'http', url: `${url}/check`, bearer } });
  const { a, b } = await pair(relay.url('tcp'), relay.url('ws'), {
    token: good,
    nonce: 'n-7',
    nameA: 'alpha',
  });
  assert.deepEqual(
    [...relay.server.sessions].map((s) => s.userName),
    ['carol', 'carol'],
  );
  a.destroy();
  b.destroy();
  assert.deepEqual(Object.keys(bodies[0] as object), ['token', 'uuid', 'name', 'nonce']);
  assert.equal((bodies[0] as { token: string; nonce: string; name: string }).nonce, 'n-7');
  assert.equal((bodies[0] as { name: string }).name, 'alpha');
  const bad = `bad-${crypto.randomUUID()}`;
  assert.equal(await rejected(relay, bad), FAILED_LINE);
  assertNoSecrets(relay, [good, bad, bearer]);
  await relay.close();
});

test('http: an authorizer slower than the authentication timeout → AuthenticationErrorTimeout, request aborted', async () => {
  let sawClose = false;
  const url = await startAuthorizer((_req, res) => {
    res.on('close', () => {
      sawClose = true;
    });
    const t = setTimeout(() => res.end('{"isValid":true}'), 5000);
    res.on('close', () => clearTimeout(t));
  });
  const relay = await startLoggedRelay({
    authenticator: { kind: 'http', url },
    timeouts: { authenticationMs: 300 },
  });
  const token = `slow-${crypto.randomUUID()}`;
  assert.equal(await rejected(relay, token), answerLine('AuthenticationErrorTimeout'));
  await deadline(
    (async () => {
      while (!sawClose) await new Promise((r) => setTimeout(r, 20));
    })(),
    5000,
    'authorizer request aborted',
  );
  assertNoSecrets(relay, [token]);
  await relay.close();
});

test('http: unreachable authorizer → ProxyError; an answer over 64 KiB → ProxyError; no secrets logged', async () => {
  const bearer = `bearer-${crypto.randomUUID()}`;
  const down = await startLoggedRelay({
    authenticator: { kind: 'http', url: `http://127.0.0.1:${await unusedPort()}/x`, bearer },
  });
  const t1 = `t1-${crypto.randomUUID()}`;
  assert.equal(await rejected(down, t1), answerLine('AuthenticationErrorProxyError'));
  assert.ok(
    down
      .logRecords()
      .some((r) => r.msg === 'HTTP authorizer failed' && /ECONNREFUSED/.test(String(r.reason))),
  );
  assertNoSecrets(down, [t1, bearer]);
  await down.close();

  const url = await startAuthorizer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ isValid: true, pad: 'x'.repeat(64 * 1024) }));
  });
  const big = await startLoggedRelay({ authenticator: { kind: 'http', url, bearer } });
  const t2 = `t2-${crypto.randomUUID()}`;
  assert.equal(await rejected(big, t2), answerLine('AuthenticationErrorProxyError'));
  assert.ok(
    big.logRecords().some((r) => r.code === 'RELAY_AUTHORIZER_RESPONSE_TOO_LARGE' && r.level === 'warn'),
  );
  assertNoSecrets(big, [t2, bearer]);
  await big.close();
});

// ---------------------------------------------------------------- lambda

test('lambda: signed invoke to a local endpoint; valid pairs, invalid gets AuthenticationFailed; no AWS secret logged', async () => {
  const accessKeyId = 'AKIDE2E0000001';
  const secretAccessKey = `secret-${crypto.randomUUID()}`;
  const sessionToken = `session-${crypto.randomUUID()}`;
  const good = `good-${crypto.randomUUID()}`;
  let verified = 0;
  const url = await startAuthorizer((req, res, body) => {
    // A compact SigV4 check from the known secret (the unit test file has the thorough one).
    const m =
      /Credential=([^/]+)\/(\d{8})\/([^/]+)\/lambda\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(
        req.headers.authorization ?? '',
      );
    const h = (d: string) => createHash('sha256').update(d).digest('hex');
    const k = (key: string | Buffer, d: string) => createHmac('sha256', key).update(d).digest();
    let ok = m !== null && m[1] === accessKeyId;
    if (ok && m !== null) {
      const names = m[4]!.split(';');
      const canonical = [
        'POST',
        req.url,
        '',
        names.map((n) => `${n}:${String(req.headers[n])}\n`).join(''),
        m[4],
        h(body),
      ].join('\n');
      const amzDate = String(req.headers['x-amz-date']);
      const toSign = ['AWS4-HMAC-SHA256', amzDate, `${m[2]}/${m[3]}/lambda/aws4_request`, h(canonical)].join(
        '\n',
      );
      const key = k(k(k(k(`AWS4${secretAccessKey}`, m[2]!), m[3]!), 'lambda'), 'aws4_request');
      ok = k(key, toSign).toString('hex') === m[5] && req.headers['x-amz-security-token'] === sessionToken;
    }
    if (!ok) return void res.writeHead(403, { 'x-amzn-ErrorType': 'InvalidSignatureException' }).end('{}');
    verified++;
    const { token } = JSON.parse(body) as { token: string };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify(
        token === good
          ? { isValid: true, verifiedData: { verifiedParsedToken: { email: 'dora@example.org' } } }
          : { isValid: false },
      ),
    );
  });
  const relay = await startLoggedRelay({
    authenticator: {
      kind: 'lambda',
      endpoint: url,
      functionName: 'authorizer',
      region: 'eu-central-1',
      accessKeyId,
      secretAccessKey,
      sessionToken,
    },
  });
  const { a, b } = await pair(relay.url('ws'), relay.url('tcp'), { token: good });
  assert.deepEqual(
    [...relay.server.sessions].map((s) => s.userName),
    ['dora@example.org', 'dora@example.org'],
  );
  a.destroy();
  b.destroy();
  const bad = `bad-${crypto.randomUUID()}`;
  assert.equal(await rejected(relay, bad), FAILED_LINE);
  assert.equal(verified, 3);
  assertNoSecrets(relay, [good, bad, accessKeyId, secretAccessKey, sessionToken]);
  await relay.close();
});

test('lambda: unreachable endpoint → ProxyError', async () => {
  const relay = await startLoggedRelay({
    authenticator: {
      kind: 'lambda',
      endpoint: `http://127.0.0.1:${await unusedPort()}`,
      functionName: 'f',
      region: 'eu-west-1',
      accessKeyId: 'AKIDX',
      secretAccessKey: 'never-logged-secret-value',
    },
  });
  const token = `t-${crypto.randomUUID()}`;
  assert.equal(await rejected(relay, token), answerLine('AuthenticationErrorProxyError'));
  assertNoSecrets(relay, [token, 'never-logged-secret-value']);
  await relay.close();
});
