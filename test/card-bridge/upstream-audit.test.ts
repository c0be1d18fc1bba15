/**
 * The CloudFoxy REST upstream (backends/cloudfoxy.ts) as a client of a hostile or broken server on
 * 127.0.0.1: redirects, absurd lengths, bad bytes, resets. Each bad answer fails its one request with a coded
 * error, the token never leaves for another origin, and later requests still work.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { CloudFoxyBackend } from '../../src/card-bridge/backends/cloudfoxy.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { captureLog } from '../helpers/relay.ts';

const TOKEN = 'cf-token-5e1d-very-secret';
const TERMINAL = '/10.9.9.9@1';
const SELECT = Buffer.from('00A40400', 'hex');

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function listen(server: Server | NetServer): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
}

/** An upstream that answers /hello and /inventory normally and `/api/v1/basic` with `basic`. */
async function upstream(basic: () => Handler): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/api/v1/hello') return res.end('CloudFoxy\nuptime 100 s\n\n');
    if (path === '/api/v1/inventory') return res.end(`${TERMINAL} 3B021450\n`);
    basic()(req, res);
  });
  return { url: await listen(server), server };
}

function backendFor(url: string, log = captureLog().log, extra: Record<string, unknown> = {}): CloudFoxyBackend {
  const cfg = validateConfig(cardBridgeConfigSchema, {
    backends: [{ kind: 'cloudfoxy', url, token: TOKEN, pollIntervalMs: 60000, requestTimeoutMs: 1500, maxResponseBytes: 4096, ...extra }],
  }).backends[0];
  assert.ok(cfg?.kind === 'cloudfoxy');
  return new CloudFoxyBackend(cfg, log);
}

const outcome = (p: Promise<Buffer>): Promise<unknown> => p.then((b) => b.toString('hex').toUpperCase(), (e: unknown) => e);

test('a redirect to another origin: the token is not sent there, the request fails CARD_UPSTREAM_FAILED', async () => {
  const elsewhere: (string | undefined)[] = [];
  const other = createServer((req, res) => {
    elsewhere.push(req.headers['x-auth-token'] as string | undefined);
    res.end('9000\n');
  });
  const otherUrl = await listen(other);
  let mode: 'away' | 'loop' | 'ok' = 'away';
  const up = await upstream(() => (req, res) => {
    if (mode === 'ok') return res.end('9000\n');
    res.writeHead(302, { location: mode === 'away' ? `${otherUrl}${req.url ?? '/'}` : (req.url ?? '/') });
    res.end();
  });
  const c = captureLog();
  const be = backendFor(up.url, c.log);
  try {
    await be.start();
    for (const m of ['away', 'loop'] as const) {
      mode = m;
      const err = await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal));
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), `${m}: ${String(err)}`);
      assert.match((err as Error).message, /redirect/i, m);
    }
    assert.deepEqual(elsewhere, [], 'the other origin saw no request (and so no X-Auth-Token)');
    mode = 'ok';
    assert.equal(await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal)), '9000');
    assert.ok(!c.text().includes(TOKEN));
  } finally {
    await be.close();
    await stop(up.server);
    await stop(other);
  }
});

test('absurd or broken bodies: Content-Length 1e15, invalid UTF-8, endless chunks, reset mid-answer, 5xx: one coded failure each, then it works', async () => {
  let mode = '';
  const up = await upstream(() => (_req, res) => {
    switch (mode) {
      case 'length':
        res.writeHead(200, { 'content-length': '1000000000000000' });
        res.write('9000\n');
        return;
      case 'utf8':
        res.end(Buffer.from([0x39, 0x30, 0xff, 0xfe, 0x30, 0x30, 0x0a]));
        return;
      case 'chunks': {
        res.writeHead(200);
        const t = setInterval(() => res.write('90'.repeat(512)), 2);
        res.on('close', () => clearInterval(t));
        return;
      }
      case 'reset':
        res.writeHead(200, { 'content-length': '100' });
        res.write('90');
        setTimeout(() => res.socket?.destroy(), 10);
        return;
      case '5xx':
        res.writeHead(503);
        res.end('C0FF\n');
        return;
      default:
        res.end('6F0090 00\n'.replace(' ', ''));
    }
  });
  const be = backendFor(up.url);
  try {
    await be.start();
    for (const m of ['length', 'utf8', 'chunks', 'reset', '5xx']) {
      mode = m;
      const err = await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal));
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), `${m}: ${String(err)}`);
      mode = '';
      assert.equal(await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal)), '6F009000', `after ${m}`);
    }
  } finally {
    await be.close();
    await stop(up.server);
  }
});

test('a raw TCP upstream that answers garbage or closes at once: coded failure, no crash', async () => {
  let mode = 'garbage';
  const sockets = new Set<Socket>();
  const raw = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.once('data', () => {
      if (mode === 'garbage') s.end('HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n9000');
      else if (mode === 'http0') s.end('SSH-2.0-OpenSSH\r\n');
      else s.destroy();
    });
  });
  const url = await listen(raw);
  const be = backendFor(url);
  try {
    await be.start();
    for (const m of ['garbage', 'http0', 'close']) {
      mode = m;
      const err = await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal));
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), `${m}: ${String(err)}`);
    }
  } finally {
    await be.close();
    for (const s of sockets) s.destroy();
    await new Promise((r) => raw.close(r));
  }
});

test('a failing upstream is logged once per kind of failure every 10 s, not once per request (a storm cannot flood the log)', async () => {
  const up = await upstream(() => (_req, res) => {
    res.writeHead(500);
    res.end('oops\n');
  });
  const c = captureLog();
  const be = backendFor(up.url, c.log);
  try {
    await be.start();
    for (let i = 0; i < 30; i++) {
      const err = await outcome(be.transmit(TERMINAL, Buffer.from('00A4040000', 'hex'), new AbortController().signal));
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), String(err));
    }
    const warns = c.records().filter((r) => r.level === 'warn' && r.msg === 'upstream request failed');
    assert.equal(warns.length, 1, c.text());
  } finally {
    await be.close();
    await stop(up.server);
  }
});

test('a failed upstream request is logged at warn with its code and reason, never the token or the APDU (a VERIFY carries the PIN)', async () => {
  let mode = '5xx';
  const up = await upstream(() => (_req, res) => {
    if (mode === '5xx') {
      res.writeHead(500);
      res.end('oops\n');
    } else if (mode === 'nothex') {
      res.end('<html>31323334</html>\n');
    } else {
      res.socket?.destroy();
    }
  });
  const c = captureLog();
  const be = backendFor(up.url, c.log);
  const verify = Buffer.from('00200081083132333435363738', 'hex');
  try {
    await be.start();
    for (const m of ['5xx', 'nothex', 'reset']) {
      mode = m;
      const err = await outcome(be.transmit(TERMINAL, verify, new AbortController().signal));
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), `${m}: ${String(err)}`);
    }
    const warns = c.records().filter((r) => r.level === 'warn' && r.code === 'CARD_UPSTREAM_FAILED');
    assert.equal(warns.length, 3, c.text());
    assert.match(String(warns[0]?.reason), /HTTP 500/);
    assert.match(String(warns[1]?.reason), /not hex/);
    assert.equal(warns[0]?.terminal, TERMINAL);
    assert.equal(c.records().filter((r) => r.level === 'error' || r.level === 'fatal').length, 0, c.text());
    assert.ok(!c.text().includes(TOKEN) && !c.text().includes('3132333435363738'), c.text());
    // A caller that gave up (its client went away) is not the upstream's fault: no warning.
    const before = c.records().length;
    mode = '5xx';
    const ac = new AbortController();
    ac.abort();
    await outcome(be.transmit(TERMINAL, verify, ac.signal));
    assert.equal(c.records().slice(before).filter((r) => r.level === 'warn').length, 0, c.text());
  } finally {
    await be.close();
    await stop(up.server);
  }
});

test('config: a CloudFoxy url with user:password@ is refused (fetch refuses it, and the logs would carry the password)', () => {
  assert.throws(
    () => validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'cloudfoxy', url: 'http://admin:hunter2-secret@127.0.0.1:1', token: 't' }] }),
    (err: unknown) => /url/.test(String(err)) && /password/.test(String(err)) && !String(err).includes('hunter2-secret'),
  );
});

test('at most maxConcurrentRequests upstream requests (sockets) at a time; past it they wait, within their own deadline', async () => {
  let hang = false;
  let open = 0;
  let most = 0;
  const up = await upstream(() => (_req, res) => {
    if (hang) return;
    open++;
    most = Math.max(most, open);
    // Counted down before the answer leaves: the backend cannot free the slot before this.
    setTimeout(() => {
      open--;
      res.end('9000\n');
    }, 30);
  });
  let be: CloudFoxyBackend | undefined;
  try {
    be = backendFor(up.url, captureLog().log, { requestTimeoutMs: 5000, maxConcurrentRequests: 4 });
    await be.start();
    // 16 cards at once (an ALIASES over a big inventory reads every card's certificates in parallel).
    const ok = await Promise.all(
      Array.from({ length: 16 }, (_, i) => outcome(be!.transmit(`/10.9.9.9@${i}`, SELECT, new AbortController().signal))),
    );
    assert.deepEqual(ok, Array.from({ length: 16 }, () => '9000'));
    assert.ok(most >= 1 && most <= 4, `the upstream saw ${most} requests at once`);
    // A hanging upstream: every request, holding a slot or waiting for one, leaves by its deadline, coded.
    hang = true;
    const be2 = backendFor(up.url, captureLog().log, { requestTimeoutMs: 800, maxConcurrentRequests: 2 });
    try {
      const failed = await Promise.all(
        Array.from({ length: 6 }, (_, i) => outcome(be2.transmit(`/10.9.9.9@${i}`, SELECT, new AbortController().signal))),
      );
      for (const r of failed) assert.ok(isGatewayError(r, 'CARD_UPSTREAM_FAILED'), String(r));
      hang = false;
      assert.equal(await outcome(be2.transmit(TERMINAL, SELECT, new AbortController().signal)), '9000', 'slots are free again');
    } finally {
      await be2.close();
    }
  } finally {
    await be?.close();
    await stop(up.server);
  }
});

test('an https upstream whose certificate is not trusted: coded failure naming it, the token never sent', async () => {
  const { selfSignedCert, tempDir } = await import('../helpers/relay.ts');
  const { readFileSync } = await import('node:fs');
  const { createServer: createHttpsServer } = await import('node:https');
  const files = selfSignedCert(tempDir());
  let requests = 0;
  const server = createHttpsServer({ cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) }, (_req, res) => {
    requests++;
    res.end('9000\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const c = captureLog();
  const be = backendFor(`https://127.0.0.1:${(server.address() as AddressInfo).port}`, c.log);
  try {
    await be.start();
    const err = await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal));
    assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), String(err));
    assert.match((err as Error).message, /SELF_SIGNED|certificate/i);
    assert.equal(requests, 0);
    assert.ok(c.records().some((r) => r.level === 'warn' && r.msg === 'upstream poll failed' && /certificate|SELF_SIGNED/i.test(String(r.reason))), c.text());
    assert.ok(!c.text().includes(TOKEN));
  } finally {
    await be.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test('CardClient (gatehouse card): a bridge that accepts and never finishes the TLS handshake fails the connect by timeoutMs', async () => {
  const { CardClient } = await import('../../src/card-bridge/client.ts');
  const sockets = new Set<Socket>();
  let closed = 0;
  const mute = createNetServer((s) => {
    sockets.add(s);
    s.resume();
    s.on('error', () => undefined);
    s.on('close', () => closed++);
  });
  const url = new URL(await listen(mute));
  try {
    const { deadline } = await import('../helpers/relay.ts');
    const err = await deadline(CardClient.connect({ host: '127.0.0.1', port: Number(url.port), tls: true, timeoutMs: 300 }), 5000, 'connect').then(
      (c) => {
        c.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    assert.match(String(err), /300 ms/);
    for (let i = 0; i < 200 && closed < sockets.size; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(closed, 1, 'the connection was closed');
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => mute.close(r));
  }
});

test('a gzip bomb (50 MB of zeros in 50 KB): the cap counts decoded bytes, the request fails coded', async () => {
  const { gzipSync } = await import('node:zlib');
  const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024, 0x30));
  const up = await upstream(() => (_req, res) => {
    res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': String(bomb.length) });
    res.end(bomb);
  });
  const be = backendFor(up.url);
  try {
    await be.start();
    const err = await outcome(be.transmit(TERMINAL, SELECT, new AbortController().signal));
    assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), String(err));
    assert.match((err as Error).message, /over 4096 bytes/);
  } finally {
    await be.close();
    await stop(up.server);
  }
});

test('through the bridge: an inventory naming readers __proto__, constructor, toString is served as plain names; a hanging upstream answers C083 by its deadline', async () => {
  const { startBridge, LineClient } = await import('./helpers.ts');
  const names = ['__proto__', 'constructor', 'toString'];
  let hang = false;
  const terminals: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/api/v1/hello') return res.end('CloudFoxy\nuptime 100 s\n\n');
    if (url.pathname === '/api/v1/inventory') return res.end(names.map((n) => `${n} 3B021450\n`).join(''));
    terminals.push(url.searchParams.get('terminal') ?? '');
    if (!hang) res.end('9000\n');
  });
  const be = backendFor(await listen(server), captureLog().log, { requestTimeoutMs: 600 });
  await be.start();
  const bridge = await startBridge({ backends: [be] });
  try {
    const c = await LineClient.connect(bridge.port);
    const list = await c.request('>*|\n>1:LIST\n\n');
    const listed = /^>1:(.*)$/m.exec(list)?.[1]?.split('|').map((b) => Buffer.from(b, 'base64').toString()) ?? [];
    assert.deepEqual(listed.sort(), names.map((n) => `Foxy USB ${n}`).sort(), list);
    for (const [i, n] of names.entries()) assert.match(await c.request(`>${n}|\n>${i + 2}:APDU:00A40400\n\n`), new RegExp(`^>${i + 2}:9000$`, 'm'), n);
    assert.deepEqual(terminals, names);
    assert.match(await c.request('>hasOwnProperty|\n>9:APDU:00A40400\n\n'), /^>9:C083$/m);
    hang = true;
    assert.match(await c.request('>__proto__|\n>10:APDU:00A40400\n\n'), /^>10:C083$/m);
  } finally {
    await bridge.close();
    await be.close();
    await stop(server);
  }
});
