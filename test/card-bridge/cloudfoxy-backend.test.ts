/**
 * The CloudFoxy REST upstream backend (backends/cloudfoxy.ts) against a hostile upstream: every call ends
 * by its deadline however the upstream drips, floods or stalls; an APDU is never sent twice after a reset.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { CloudFoxyBackend } from '../../src/card-bridge/backends/cloudfoxy.ts';
import { isGatewayError } from '../../src/core/errors.ts';
import { testLogger } from './helpers.ts';


async function hostile(onBasic: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void): Promise<{ url: string; server: Server; basics: () => number }> {
  let n = 0;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/api/v1/hello') return res.end('CloudFoxy\nuptime 100 s\n');
    if (url.pathname === '/api/v1/inventory') return res.end('/10.9.9.9@1 3B021450\n');
    n++;
    onBasic(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`, server, basics: () => n };
}

function backendFor(url: string, extra: Record<string, unknown> = {}): CloudFoxyBackend {
  const cfg = validateConfig(cardBridgeConfigSchema, {
    backends: [{ kind: 'cloudfoxy', url, token: 't', pollIntervalMs: 60000, requestTimeoutMs: 700, maxResponseBytes: 4096, ...extra }],
  }).backends[0];
  assert.ok(cfg?.kind === 'cloudfoxy');
  return new CloudFoxyBackend(cfg, testLogger());
}

async function stopServer(s: Server): Promise<void> {
  s.closeAllConnections();
  await new Promise((r) => s.close(r));
}

test('hostile upstream: slow drip, endless line, no newline, silence: every call ends by its deadline', async () => {
  const timers = new Set<NodeJS.Timeout>();
  let mode = 'drip';
  const h = await hostile((_req, res) => {
    if (mode === 'drip') {
      res.writeHead(200);
      const t = setInterval(() => res.write('9'), 50);
      timers.add(t);
      res.on('close', () => clearInterval(t));
    } else if (mode === 'endless') {
      res.writeHead(200);
      const t = setInterval(() => res.write('90'.repeat(1024)), 5);
      timers.add(t);
      res.on('close', () => clearInterval(t));
    } else if (mode === 'nonewline') {
      res.end('9000');
    } else if (mode === 'silence') {
      // never answers
    }
  });
  const be = backendFor(h.url);
  try {
    await be.start();
    for (const m of ['drip', 'endless', 'silence']) {
      mode = m;
      const t0 = Date.now();
      const err = await be.transmit('/10.9.9.9@1', Buffer.from('00A40400', 'hex'), new AbortController().signal).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), `${m}: ${String(err)}`);
      assert.ok(Date.now() - t0 < 3000, `${m}: ${Date.now() - t0} ms`);
    }
    mode = 'nonewline';
    assert.equal((await be.transmit('/10.9.9.9@1', Buffer.from('00A40400', 'hex'), new AbortController().signal)).toString('hex'), '9000');
  } finally {
    for (const t of timers) clearInterval(t);
    await be.close();
    await stopServer(h.server);
  }
});

test('hostile upstream: a connection reset after the request arrived does not send the APDU (e.g. a VERIFY PIN) twice', async () => {
  const h = await hostile((req) => req.socket.destroy());
  const be = backendFor(h.url);
  try {
    await be.start();
    const before = h.basics();
    const verify = Buffer.from('0020008604' + '31323334', 'hex');
    const err = await be.transmit('/10.9.9.9@1', verify, new AbortController().signal).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(isGatewayError(err, 'CARD_UPSTREAM_FAILED'), String(err));
    assert.equal(h.basics() - before, 1, 'the APDU reached the upstream once');
  } finally {
    await be.close();
    await stopServer(h.server);
  }
});

test('hostile upstream: start() and close() are bounded when /hello and /inventory never answer', async () => {
  const server = createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  const be = backendFor(`http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`);
  try {
    const t0 = Date.now();
    await be.start();
    assert.ok(Date.now() - t0 < 4000, `start took ${Date.now() - t0} ms`);
    assert.deepEqual(be.readers(), []);
  } finally {
    await be.close();
    await stopServer(server);
  }
});
