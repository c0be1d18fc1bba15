import { test, before, after } from 'node:test';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import assert from 'node:assert/strict';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { CloudFoxyBackend } from '../../src/card-bridge/backends/cloudfoxy.ts';
import { startBridge, oneShot, decodeListing, testLogger, type StartedBridge, type RawCard } from './helpers.ts';

const TOKEN = 'cf-token-123';
const FP_TOKEN = 'fp-token-456';
const CARDS: RawCard[] = [
  { name: '/192.168.42.10@1', script: [{ command: '80AA0000', response: 'C001' }] },
  { name: 'USB Reader 1' },
  { name: 'Slow One', delayMs: 1500 },
];

let upstream: StartedBridge;
let cfPort = 0;
before(async () => {
  upstream = await startBridge({
    cards: CARDS,
    config: {
      cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: TOKEN },
      foxyproxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: FP_TOKEN },
    },
  });
  cfPort = upstream.server.listeners.find((l) => l.kind === 'cloudfoxy-api')!.port;
});
after(() => upstream.close());

const cf = (path: string, token: string | null = TOKEN) =>
  fetch(`http://127.0.0.1:${cfPort}${path}`, token === null ? {} : { headers: { 'X-Auth-Token': token } });

function upstreamBackend(overrides: Record<string, unknown> = {}): CloudFoxyBackend {
  const cfg = validateConfig(cardBridgeConfigSchema, {
    backends: [{ kind: 'cloudfoxy', url: `http://127.0.0.1:${cfPort}`, token: TOKEN, pollIntervalMs: 60000, ...overrides }],
  });
  const b = cfg.backends[0];
  assert.ok(b?.kind === 'cloudfoxy');
  return new CloudFoxyBackend(b, testLogger());
}

test('CloudFoxy REST API: token required; hello, inventory, basic (reset, APDU, reset+APDU), errors', async () => {
  assert.equal((await cf('/api/v1/hello', null)).status, 401);
  assert.equal((await cf('/api/v1/hello', 'wrong')).status, 401);
  const hello = await (await cf('/api/v1/hello')).text();
  assert.match(hello, /^CloudFoxy REST API \(Gatehouse\)\nuptime \d+ s\nstarted \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n$/);
  assert.equal(await (await cf('/api/v1/inventory')).text(), '/192.168.42.10@1 3B021450\nUSB Reader 1 3B021450\nSlow One 3B021450\n');
  const t = encodeURIComponent('/192.168.42.10@1');
  assert.equal(await (await cf(`/api/v1/basic?reset=1&terminal=${t}`)).text(), '3B021450\n');
  assert.equal(await (await cf(`/api/v1/basic?reset=0&terminal=${t}&apdu=80EE000002BEEF`)).text(), 'BEEF9000\n');
  assert.equal(await (await cf(`/api/v1/basic?reset=1&terminal=${t}&apdu=80EE000001AA`)).text(), 'AA9000\n');
  const nf = await cf('/api/v1/basic?reset=0&terminal=nope&apdu=80EE000001AA');
  assert.equal(nf.status, 404);
  assert.equal((await nf.text()).split('\n')[0], 'C083');
  const bad = await cf(`/api/v1/basic?reset=0&terminal=${t}&apdu=80EE00`);
  assert.equal(bad.status, 400);
  assert.equal((await bad.text()).split('\n')[0], 'C087');
});

test('upstream backend through our own REST server over real HTTP: line protocol end to end', async () => {
  const backend = upstreamBackend();
  const front = await startBridge({ backends: [backend] });
  try {
    assert.deepEqual(
      decodeListing((await oneShot(front.port, '>*\n>1:LIST\n\n')).slice(3, -4)),
      ['Foxy NET 192.168.42.10-1', 'Foxy USB USB Reader 1', 'Foxy USB Slow One'],
    );
    assert.equal(
      await oneShot(front.port, '>Foxy NET 192.168.42.10-1|\n>1:APDU:80EE000003010203|\n>2:RESET\n>USB Reader 1\n>3:APDU:80EE000001FF\n\n'),
      '>1:0102039000\n>2:3B021450\n>3:FF9000\n@@\n',
    );
    assert.equal(await oneShot(front.port, '>nope\n>1:RESET\n\n'), '>1:C083\n@@\n');
  } finally {
    await front.close();
  }
});

test('upstream: C0 hardware errors are retried 3 times then C083; a stalled upstream hits its own deadline', async () => {
  const backend = upstreamBackend({ requestTimeoutMs: 300 });
  const front = await startBridge({ backends: [backend] });
  try {
    const card = upstream.sim!.card('/192.168.42.10@1')!;
    card.log.length = 0;
    assert.equal(await oneShot(front.port, '>/192.168.42.10@1\n>1:APDU:80AA0000\n\n'), '>1:C083\n@@\n');
    assert.deepEqual(card.log, ['80AA0000', '80AA0000', '80AA0000', '80AA0000']);
    const t0 = Date.now();
    assert.equal(await oneShot(front.port, '>Slow One\n>1:RESET\n\n'), '>1:C083\n@@\n');
    assert.ok(Date.now() - t0 < 1400, 'answered before the slow card finished');
  } finally {
    await front.close();
  }
});

test('upstream restart (smaller uptime on /hello) rebuilds the caches', async () => {
  const backend = upstreamBackend();
  const front = await startBridge({ backends: [backend] });
  try {
    await new Promise((r) => setTimeout(r, 30));
    await backend.poll();
    const gen = front.server.cards.generation;
    await upstream.close();
    upstream = await startBridge({
      cards: CARDS,
      config: {
        cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: cfPort, token: TOKEN },
        foxyproxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: FP_TOKEN },
      },
    });
    await backend.poll();
    assert.ok(front.server.cards.generation > gen, 'change fired after the restart');
    assert.equal(await oneShot(front.port, '>USB Reader 1\n>1:APDU:80EE000001AB\n\n'), '>1:AB9000\n@@\n');
  } finally {
    await front.close();
  }
});

test('foxyproxy HTTP API: token required; command(s), select, hello', async () => {
  const port = upstream.server.listeners.find((l) => l.kind === 'foxyproxy-api')!.port;
  const base = `http://127.0.0.1:${port}/api/v1.0`;
  const auth = { Authorization: `Bearer ${FP_TOKEN}`, 'Content-Type': 'application/json' };
  assert.equal((await fetch(`${base}/hello`)).status, 401);
  assert.deepEqual(await (await fetch(`${base}/hello`, { headers: auth })).json(), { result: true });
  const one = await fetch(`${base}/command`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ data: { reader: 'USB Reader 1', command: { id: '1', line: 'APDU:80EE000002CAFE' } } }),
  });
  assert.deepEqual(await one.json(), { response: [{ id: '1', line: 'CAFE9000' }] });
  const many = await fetch(`${base}/command`, {
    method: 'POST',
    headers: { 'X-Auth-Token': FP_TOKEN },
    body: JSON.stringify({ data: { reader: 'Foxy NET 192.168.42.10-1', commands: [{ id: '1', line: 'RESET' }, { id: '2', line: 'APDU|80EE000001AA' }, { id: '3', line: 'BOGUS' }] } }),
  });
  assert.deepEqual(await many.json(), { response: [{ id: '1', line: '3B021450' }, { id: '2', line: 'AA9000' }, { id: '3', line: 'C081' }] });
  assert.equal((await fetch(`${base}/command`, { method: 'POST', headers: auth, body: '{"data":' })).status, 400);
  const tooMany = { data: { reader: 'USB Reader 1', commands: Array.from({ length: 65 }, (_, i) => ({ id: String(i), line: 'RESET' })) } };
  assert.equal((await fetch(`${base}/command`, { method: 'POST', headers: auth, body: JSON.stringify(tooMany) })).status, 400);
  const huge = await fetch(`${base}/command`, { method: 'POST', headers: auth, body: 'x'.repeat(1048577) });
  assert.equal(huge.status, 413);
  const sel = await fetch(`${base}/select/${encodeURIComponent('Slow')}`, { headers: auth });
  assert.deepEqual(await sel.json(), { result: true, selected: ['Foxy USB Slow One'] });
  assert.deepEqual(decodeListing((await oneShot(upstream.port, '>*\n>1:READERS\n\n')).slice(3, -4))[0], 'Foxy USB Slow One');
});

test('upstream failure modes against a misbehaving CloudFoxy server: 500, non-hex, oversized answers, wrong token', async () => {
  let mode = 'ok';
  const fake = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.headers['x-auth-token'] !== TOKEN) return res.writeHead(401).end('unauthorized\n');
    if (url.pathname === '/api/v1/hello') return res.end('CloudFoxy\nuptime 100 s\n');
    if (url.pathname === '/api/v1/inventory') return res.end('/10.1.1.1@1 3B021450\n');
    if (mode === '500') return res.writeHead(500).end('boom\n');
    if (mode === 'text') return res.end('not hex at all\n');
    if (mode === 'huge') return res.end('90'.repeat(4096));
    return res.end('9000\n');
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const addr = fake.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
  const mk = (token: string) => {
    const cfg = validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'cloudfoxy', url, token, pollIntervalMs: 60000, maxResponseBytes: 1024 }] }).backends[0];
    assert.ok(cfg?.kind === 'cloudfoxy');
    return new CloudFoxyBackend(cfg, testLogger());
  };
  const front = await startBridge({ backends: [mk(TOKEN)] });
  const unauth = mk('wrong-token');
  const other = await startBridge({ backends: [unauth] });
  try {
    const ask = () => oneShot(front.port, '>/10.1.1.1@1\n>1:APDU:80EE000001AA\n\n');
    assert.equal(await ask(), '>1:9000\n@@\n');
    for (const m of ['500', 'text', 'huge']) {
      mode = m;
      assert.equal(await ask(), '>1:C083\n@@\n', m);
    }
    assert.deepEqual(unauth.readers(), [], 'a rejected token gives no inventory');
    assert.equal(await oneShot(other.port, '>/10.1.1.1@1\n>1:RESET\n\n'), '>1:C083\n@@\n');
  } finally {
    await front.close();
    await other.close();
    fake.closeAllConnections();
    await new Promise((r) => fake.close(r));
  }
});

// ---------------------------------------------------------------------------------------------------
// /hello as foxyproxy reads it (its parse steps re-implemented from its source)
// ---------------------------------------------------------------------------------------------------

/** Python's `str.splitlines()` (the separators that can appear in text we serve). */
const pySplitlines = (s: string): string[] => {
  // eslint-disable-next-line no-control-regex -- Python splits on these file/group/record separators too
  const out = s.split(/\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/);
  if (out[out.length - 1] === '') out.pop();
  return out;
};
/** Python's `int(str)`: optional whitespace and sign, ASCII digits (single `_` between), else ValueError. */
const pyInt = (s: string | undefined): number => {
  if (s === undefined || !/^\s*[+-]?\d+(_\d+)*\s*$/.test(s)) throw new Error(`ValueError: invalid literal for int(): ${JSON.stringify(s)}`);
  return Number(s.replace(/_/g, ''));
};
/** `FoxyClient.get_request`: body lines without 'null' and empty ones (1.x reads the body whatever the status). */
const pyLines = (body: string): string[] => pySplitlines(body).filter((l) => l !== 'null' && l.length > 0);

/** foxyproxy 1.x `BeaconThread`: fewer than 3 lines → `exit()`; `int(lines[1].split()[1])`. */
function foxyproxy1Uptime(body: string): number {
  const lines = pyLines(body);
  if (lines.length < 3) throw new Error(`Hello request returns incorrect data ${lines.join('|')} (exit)`);
  return pyInt(lines[1]!.trim().split(/\s+/)[1]);
}

/** foxyproxy 2.x `CloudFoxy.downtime`: 200 only; a first line whose [-4:-2] is C0 is a hardware error (retried, then "down"); then as 1.x. */
function foxyproxy2Uptime(status: number, body: string): number {
  if (status !== 200) throw new Error('upstream error status (None)');
  const content = pySplitlines(body);
  if (content.length > 0 && content[0]!.length >= 4 && ['C0', 'c0'].includes(content[0]!.slice(-4, -2))) throw new Error('hardware error on /hello');
  const lines = pyLines(body);
  if (lines.length < 3) throw new Error(`Hello request returns incorrect data ${lines.join('|')}`);
  return pyInt(lines[1]!.trim().split(/\s+/)[1]);
}

test('/hello parses as foxyproxy 1.x and 2.x parse it, and they notice a restart (the uptime decreases)', async () => {
  // the old two-line, decimal answer is what broke them (the parsers re-implemented here reject it)
  assert.throws(() => foxyproxy1Uptime('CloudFoxy REST API (Gatehouse)\nuptime 14.932 s\n'));
  assert.throws(() => foxyproxy2Uptime(200, 'CloudFoxy REST API (Gatehouse)\nuptime 14.932 s\nx\n'));
  const live = await cf('/api/v1/hello');
  const liveBody = await live.text();
  assert.ok(Number.isInteger(foxyproxy1Uptime(liveBody)));
  assert.ok(Number.isInteger(foxyproxy2Uptime(live.status, liveBody)));

  const { createCloudFoxyApi } = await import('../../src/card-bridge/rest/cloudfoxy.ts');
  const { Secret } = await import('../../src/core/config/secret.ts');
  /** One served /hello of a CloudFoxy API that started at `startedAt` (a restarted server starts later). */
  const helloOf = async (startedAt: number): Promise<{ status: number; body: string }> => {
    const api = createCloudFoxyApi(upstream.server.cards, { token: new Secret(TOKEN), log: testLogger(), startedAt });
    const port = await api.listen('127.0.0.1', 0);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/hello`, { headers: { 'X-Auth-Token': TOKEN } });
      return { status: r.status, body: await r.text() };
    } finally {
      await api.close(0);
    }
  };
  const running = await helloOf(Date.now() - 25_500);
  const later = await helloOf(Date.now() - 35_200);
  const restarted = await helloOf(Date.now());
  for (const [name, uptime] of [
    ['1.x', (h: { status: number; body: string }) => foxyproxy1Uptime(h.body)],
    ['2.x', (h: { status: number; body: string }) => foxyproxy2Uptime(h.status, h.body)],
  ] as const) {
    assert.equal(uptime(running), 25, name);
    assert.ok(uptime(later) >= uptime(running), `${name}: no restart while it runs`);
    assert.ok(uptime(restarted) < uptime(later), `${name}: the restart is noticed`);
  }
});

test('a card answer shorter than 2 bytes (or an ATR) is C086, never a result: line protocol and REST', async () => {
  let answer = '90';
  const fake = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/api/v1/hello') return res.end('CloudFoxy\nuptime 100 s\nx\n');
    if (url.pathname === '/api/v1/inventory') return res.end('/10.1.1.2@1 3B021450\n');
    return res.end(`${answer}\n`);
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const addr = fake.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
  const cfg = validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'cloudfoxy', url, token: TOKEN, pollIntervalMs: 60000 }] }).backends[0];
  assert.ok(cfg?.kind === 'cloudfoxy');
  const front = await startBridge({ backends: [new CloudFoxyBackend(cfg, testLogger())], config: { cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: TOKEN } } });
  const rest = front.url('cloudfoxy-api').replace(/\/api\/v1\/$/, '');
  try {
    for (const a of ['90', '', '6A']) {
      answer = a;
      assert.equal(await oneShot(front.port, '>/10.1.1.2@1|\n>1:APDU:00A4040000|\n>2:RESET|\n\n'), '>1:C086\n>2:C086\n@@\n', `card answered ${JSON.stringify(a)}`);
      const r = await fetch(`${rest}/api/v1/basic?reset=0&terminal=${encodeURIComponent('/10.1.1.2@1')}&apdu=00A4040000`, { headers: { 'X-Auth-Token': TOKEN } });
      assert.equal(r.status, 502);
      assert.equal((await r.text()).split('\n')[0], 'C086');
    }
    answer = '9000';
    assert.equal(await oneShot(front.port, '>/10.1.1.2@1|\n>1:APDU:00A4040000|\n\n'), '>1:9000\n@@\n');
  } finally {
    await front.close();
    fake.closeAllConnections();
    await new Promise((r) => fake.close(r));
  }
});

// ---------------------------------------------------------------------------------------------------
// The REST APIs we serve against hostile clients
// ---------------------------------------------------------------------------------------------------


const CF = 'cf-review-token';
const FP = 'fp-review-token';

async function withApis(fn: (cf: string, fp: string, b: StartedBridge) => Promise<void>, config: Record<string, unknown> = {}): Promise<void> {
  const b = await startBridge({
    cards: [{ name: 'Rest One' }, { name: 'Rest Two', delayMs: 20 }],
    config: {
      cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: CF },
      foxyproxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: FP },
      ...config,
    },
  });
  try {
    await fn(b.url('cloudfoxy-api').replace(/\/api\/v1\/$/, ''), b.url('foxyproxy-api').replace(/\/api\/v1\.0\/$/, ''), b);
  } finally {
    await b.close();
  }
}

test('REST: tokens (missing, wrong, longer, prefix, case), odd paths and terminal names get defined answers', async () => {
  await withApis(async (cf, fp) => {
    for (const tok of [undefined, '', 'x', CF.slice(0, -1), `${CF}x`, CF.toUpperCase(), `${CF} x`]) {
      const r = await fetch(`${cf}/api/v1/hello`, { headers: tok === undefined ? {} : { 'X-Auth-Token': tok } });
      assert.equal(r.status, 401, `token ${JSON.stringify(tok)}`);
    }
    const h = { 'X-Auth-Token': CF };
    for (const t of ['../../etc/passwd', '%2e%2e%2f', '/', '', '\u0000', 'Rest', 'x'.repeat(4000)]) {
      const r = await fetch(`${cf}/api/v1/basic?reset=1&terminal=${encodeURIComponent(t)}`, { headers: h });
      assert.ok([404, 409].includes(r.status), `terminal ${JSON.stringify(t.slice(0, 20))}: ${r.status}`);
      await r.text();
    }
    const fh = { Authorization: `Bearer ${FP}` };
    for (const p of ['/api/v1.0/select/%E0%A4%A', '/api/v1.0/select/%', '/api/v1.0/select/..%2F..%2Fetc']) {
      const r = await fetch(`${fp}${p}`, { headers: fh });
      assert.ok(r.status === 400 || r.status === 200, `${p}: ${r.status}`);
      await r.text();
    }
    for (const body of ['{"data":{"reader":"Rest One","commands":[null]}}', '{"data":{"reader":"Rest One","commands":[1,"x"]}}', 'null', '[]', '{"data":null}']) {
      const r = await fetch(`${fp}/api/v1.0/command`, { method: 'POST', headers: fh, body });
      assert.equal(r.status, 400, `${body}: ${r.status} ${await r.text()}`);
    }
  });
});

test('REST: oversized query and body; concurrent requests on one card are serialised and all answered', async () => {
  await withApis(async (cf, fp) => {
    const h = { 'X-Auth-Token': CF };
    const big = await fetch(`${cf}/api/v1/basic?reset=0&terminal=Rest%20One&apdu=${'A'.repeat(70000)}`, { headers: h }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    assert.ok(big instanceof Error || big.status === 431 || big.status === 400, String(big instanceof Error ? big : big.status));
    const fh = { Authorization: `Bearer ${FP}` };
    const r = await fetch(`${fp}/api/v1.0/command`, { method: 'POST', headers: fh, body: 'x'.repeat(1048577) }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    assert.ok(r instanceof Error || r.status === 413);
    const all = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        fetch(`${cf}/api/v1/basic?reset=0&terminal=Rest%20Two&apdu=00A40400${i % 2 === 0 ? '00' : ''}`, { headers: h }).then(async (x) => [x.status, await x.text()] as const),
      ),
    );
    for (const [status, text] of all) assert.equal(status, 200, text);
  });
});

test('REST slowloris: a client that never finishes its headers or body is cut off by the header / request deadline', async () => {
  const { createCloudFoxyApi } = await import('../../src/card-bridge/rest/cloudfoxy.ts');
  const { Secret } = await import('../../src/core/config/secret.ts');
  const b = await startBridge({ cards: [{ name: 'one' }] });
  const api = createCloudFoxyApi(b.server.cards, { token: new Secret(CF), log: testLogger(), startedAt: Date.now(), requestTimeoutMs: 800 });
  const port = await api.listen('127.0.0.1', 0);
  try {
    const t0 = Date.now();
    const results = await Promise.all(
      ['GET /api/v1/hello HTTP/1.1\r\nHost: x\r\nX-Au', `POST /api/v1/hello HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${CF}\r\nContent-Length: 100\r\n\r\nab`].map(
        (head) =>
          new Promise<number>((resolve) => {
            const s = connect({ host: '127.0.0.1', port }, () => s.write(head));
            const drip = setInterval(() => s.write(head.startsWith('GET') ? 'x' : 'y'), 100);
            s.on('error', () => undefined);
            s.on('close', () => {
              clearInterval(drip);
              resolve(Date.now() - t0);
            });
            setTimeout(() => s.destroy(), 15000).unref();
          }),
      ),
    );
    for (const ms of results) assert.ok(ms < 6000, `cut off after ${ms} ms`);
  } finally {
    await api.close(0);
    await b.close();
  }
});

test('foxyproxy API: commands stop when the HTTP client goes away', async () => {
  await withApis(async (_cf, fp, b) => {
    const card = b.sim!.card('Rest Two')!;
    b.sim!.setDelay('Rest Two', 80);
    card.log.length = 0;
    const commands = Array.from({ length: 20 }, (_, i) => ({ id: String(i), line: 'APDU:80EE000001AA' }));
    const ac = new AbortController();
    const r = fetch(`${fp}/api/v1.0/command`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${FP}` },
      body: JSON.stringify({ data: { reader: 'Rest Two', commands } }),
      signal: ac.signal,
    }).catch(() => undefined);
    await new Promise((res) => setTimeout(res, 200));
    ac.abort();
    await r;
    await new Promise((res) => setTimeout(res, 800));
    assert.ok(card.log.length <= 5, `${card.log.length} APDUs ran for a client that had gone`);
  });
});
