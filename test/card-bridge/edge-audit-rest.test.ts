/**
 * The card bridge's served REST APIs (CloudFoxy, foxyproxy) against hostile HTTP clients over raw sockets:
 * request targets that are not URLs, bodies cut off mid-way, and a Content-Length over the body limit.
 * Each gets a clear 4xx (or nothing, when the client is gone), nothing is logged as our own fault, and the
 * APIs keep serving.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { captureLog, deadline } from '../helpers/relay.ts';
import { startBridge, type StartedBridge } from './helpers.ts';

const TOKEN = 'edge-rest-token';
let b: StartedBridge;
let cfPort = 0;
let fpPort = 0;
const logged = captureLog();

before(async () => {
  b = await startBridge({
    cards: [{ name: 'Edge A' }],
    config: {
      cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: TOKEN },
      foxyproxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: TOKEN },
      limits: { maxConnectionsPerIp: 1000 },
    },
    log: logged.log,
  });
  cfPort = b.server.listeners.find((l) => l.kind === 'cloudfoxy-api')!.port;
  fpPort = b.server.listeners.find((l) => l.kind === 'foxyproxy-api')!.port;
});
after(() => b.close());

/** Writes `head`, then resolves with everything the server sent once it closed (or `destroyAfterMs` passed). */
function exchange(port: number, head: string, opts: { destroyAfterMs?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    s.on('error', () => undefined);
    s.on('close', () => resolve(out));
    s.write(head);
    if (opts.destroyAfterMs !== undefined) setTimeout(() => s.destroy(), opts.destroyAfterMs);
  });
}

const errorsLogged = (): string[] =>
  logged
    .records()
    .filter((r) => r.level === 'error' || r.level === 'fatal')
    .map((r) => JSON.stringify(r));

async function stillServes(): Promise<void> {
  const cf = await fetch(`http://127.0.0.1:${cfPort}/api/v1/basic?reset=1&terminal=Edge%20A`, { headers: { 'X-Auth-Token': TOKEN } });
  assert.equal(await cf.text(), '3B021450\n');
  const fp = await fetch(`http://127.0.0.1:${fpPort}/api/v1.0/command`, {
    method: 'POST',
    headers: { 'X-Auth-Token': TOKEN },
    body: JSON.stringify({ data: { reader: 'Edge A', command: { id: '1', line: 'RESET' } } }),
  });
  assert.deepEqual(await fp.json(), { response: [{ id: '1', line: '3B021450' }] });
}

test('a request target that is not a URL is answered 400 on both APIs (not 500), with or without a token, and nothing is logged as our fault', async () => {
  const targets = ['http://[', '//[', 'http://x:99999/api/v1/hello', 'http://%zz/api/v1/hello', 'http://[::1/api/v1.0/hello', 'http://[', '//:0'];
  for (const port of [cfPort, fpPort]) {
    for (const target of targets) {
      for (const token of [`X-Auth-Token: ${TOKEN}\r\n`, '']) {
        const out = await deadline(exchange(port, `GET ${target} HTTP/1.1\r\nHost: x\r\n${token}Connection: close\r\n\r\n`), 5000, target);
        assert.match(out, /^HTTP\/1\.1 400 /, `${port} ${JSON.stringify(target)}: ${JSON.stringify(out.split('\r\n')[0])}`);
      }
    }
  }
  assert.deepEqual(errorsLogged(), []);
  await stillServes();
});

test('a client that goes away in the middle of its POST body is not our fault: nothing logged at error, the API serves on', async () => {
  const head = `POST /api/v1.0/command HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\n`;
  await deadline(exchange(fpPort, `${head}Content-Length: 100\r\n\r\n{"data":`, { destroyAfterMs: 100 }), 5000, 'cut body');
  await deadline(exchange(fpPort, `${head}Transfer-Encoding: chunked\r\n\r\n5\r\n{"dat`, { destroyAfterMs: 100 }), 5000, 'cut chunked body');
  // the server has seen both closes once a later request on a new connection is answered
  await stillServes();
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(errorsLogged(), []);
});

test('a Content-Length over the 1 MiB body limit is answered 413 at once, before any body byte; exactly 1 MiB is read', async () => {
  const head = `POST /api/v1.0/command HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nConnection: close\r\n`;
  for (const length of ['1048577', '99999999999999999999', '1e309']) {
    const out = await deadline(exchange(fpPort, `${head}Content-Length: ${length}\r\n\r\n`), 5000, `Content-Length ${length}`);
    assert.match(out, /^HTTP\/1\.1 (413|400) /, `${length}: ${JSON.stringify(out.split('\r\n')[0])}`);
  }
  const at = await deadline(exchange(fpPort, `${head}Content-Length: 1048577\r\n\r\n`), 5000, 'one byte past');
  assert.match(at, /^HTTP\/1\.1 413 /);
  // exactly at the limit: read, then judged as JSON (a 400, not a 413)
  const body = `"${'a'.repeat(1048576 - 2)}"`;
  const full = await deadline(exchange(fpPort, `${head}Content-Length: ${body.length}\r\n\r\n${body}`), 5000, 'at the limit');
  assert.match(full, /^HTTP\/1\.1 400 /);
  assert.deepEqual(errorsLogged(), []);
  await stillServes();
});
