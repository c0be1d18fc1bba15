/**
 * The ops listener of a whole gateway (relay + card bridge + sealed API) over real sockets: /metrics in
 * Prometheus text (validated by `promtool check metrics` when installed; required with
 * GATEHOUSE_REQUIRE_PROMTOOL=1), what each front end counts, hostile names never becoming labels, the
 * reader label cap, /healthz, /readyz (503 while draining), 404/405.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { importJWK, type CryptoKey } from 'jose';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { gatewayConfigSchema } from '../../src/config.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { addClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { sealedApiConfigSchema } from '../../src/sealed-api/config.ts';
import { generateClientKey, importPublic } from '../../src/sealed-api/keys.ts';
import { SealedClient } from '../../src/sealed-api/client.ts';
import { loadSplice } from '../../src/relay/splice.ts';
import { authenticate, deadline, NO_ERROR, pair, rawClient, tempDir } from '../helpers/relay.ts';
import { LineClient, decodeListing, oneResult } from '../card-bridge/helpers.ts';

async function startGateway(dir: string, extra: Record<string, unknown> = {}): Promise<Gateway> {
  const config = validateConfig(gatewayConfigSchema, {
    relay: { listeners: [{ kind: 'tcp', port: 0 }, { kind: 'ws', port: 0 }], monitor: { enabled: false } },
    cardBridge: { listeners: [{ kind: 'tcp', port: 0 }], backends: [{ kind: 'simulator' }] },
    sealedApi: { port: 0, stateDir: 'state' },
    ops: { port: 0, ...extra },
  });
  const gw = await createGateway(config, { log: silentLogger(), baseDir: dir });
  await gw.start();
  return gw;
}

async function get(gw: Gateway, path: string, method = 'GET'): Promise<{ status: number; text: string; type: string | null }> {
  const res = await deadline(fetch(`${gw.ops!.url}${path}`, { method }), 5000, `${method} ${path}`);
  return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
}

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const cardPort = (gw: Gateway) => gw.cardBridge!.listeners[0]!.port;

test('/metrics: relay, card bridge and sealed API outcomes; client-chosen strings never become labels; promtool accepts it', async (t) => {
  const dir = tempDir();
  const gw = await startGateway(dir, { maxReaderLabels: 1 });
  try {
    const [tcp, ws] = gw.relay!.listeners;
    const { a, b, bOffset } = await pair(tcp!.url, ws!.url, { nameA: '__proto__', nameB: 'evil"} 1\nx' });
    a.send('x'.repeat(1000));
    await b.waitForBytes(bOffset + 1000);
    // Card bridge: a listing, APDUs on two readers (the label cap is 1: the second is `other`), a made-up command.
    const readers = decodeListing(await oneResult(cardPort(gw), '>*|\n>1:LIST\n\n'));
    assert.ok(readers.length >= 2, `readers: ${readers.join(', ')}`);
    for (const r of readers.slice(0, 2)) await oneResult(cardPort(gw), `>${r}|\n>1:APDU:00A4040007A0000000030000|\n\n`);
    const c = await LineClient.connect(cardPort(gw));
    await c.request('>*|\n>1:__PROTO__\n\n');
    c.destroy();
    // Sealed API: refused before authentication, then an authenticated call of a registered action and
    // of an action name the server does not have.
    const sealed = gw.sealedApi!;
    await fetch(sealed.url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
    await fetch(`${sealed.url}/constructor`, { method: 'POST' });
    const key = await generateClientKey('me');
    const paths = sealedPaths(validateConfig(sealedApiConfigSchema, { stateDir: 'state' }), dir);
    await addClient(paths, { name: 'me', jwk: key.publicJwk, allow: ['*'], files: ['*'] });
    await sealed.reload();
    const info = sealed.serverInfo();
    const client = new SealedClient({
      url: sealed.url,
      clientKid: key.kid,
      clientKey: (await importJWK(key.privateJwk, 'EdDSA')) as CryptoKey,
      serverKid: info.kid,
      serverKey: await importPublic(info.jwk, 'ECDH-ES'),
    });
    await client.call('time');
    await assert.rejects(client.call('hasOwnProperty'));
    client.close();

    const { status, text, type } = await get(gw, '/metrics');
    assert.equal(status, 200);
    assert.match(type ?? '', /^text\/plain; version=0\.0\.4/);
    assert.equal(sample(text, 'gatehouse_relay_tunnels_total'), 1);
    assert.equal(sample(text, 'gatehouse_relay_tunnels_open'), 1);
    assert.equal(sample(text, 'gatehouse_relay_connections{transport="tcp",state="tunnel"}'), 1);
    assert.equal(sample(text, 'gatehouse_relay_connections{transport="ws",state="tunnel"}'), 1);
    assert.equal(sample(text, 'gatehouse_relay_authentications_total{result="AuthenticationErrorNoError"}'), 2);
    assert.equal(sample(text, 'gatehouse_relay_handshake_seconds_count{transport="tcp"}'), 1);
    assert.ok((sample(text, 'gatehouse_relay_bytes_total{path="js"}') ?? 0) >= 1000);
    // The tcp-ws tunnel runs on the JavaScript path (a WS side); the kernel relay's own counts when it is built.
    assert.equal(sample(text, 'gatehouse_relay_tunnels_by_path{path="js"}'), 1);
    assert.equal(sample(text, 'gatehouse_relay_tunnels_by_path{path="kernel"}'), 0);
    if (loadSplice() !== undefined) {
      assert.equal(sample(text, 'gatehouse_relay_kernel_tunnels{kind="pipeless"}'), 0);
      assert.equal(sample(text, 'gatehouse_relay_kernel_tunnels{kind="light"}'), 0);
      assert.ok((sample(text, 'gatehouse_relay_kernel_pipe_bytes') ?? -1) >= 0);
      assert.ok((sample(text, 'gatehouse_relay_kernel_spin_seconds_total') ?? -1) >= 0);
    }
    assert.equal(sample(text, 'gatehouse_card_requests_total{command="LIST",code="ok"}'), 1);
    assert.equal(sample(text, 'gatehouse_card_requests_total{command="APDU",code="ok"}'), 2);
    assert.equal(sample(text, 'gatehouse_card_requests_total{command="unknown",code="CARD_UNKNOWN_COMMAND"}'), 1);
    assert.equal(sample(text, `gatehouse_card_apdu_seconds_count{reader="${readers[0]}"}`) ?? sample(text, `gatehouse_card_apdu_seconds_count{reader="other"}`), 1);
    assert.equal(sample(text, 'gatehouse_card_apdu_seconds_count{reader="other"}'), 1);
    assert.equal(sample(text, 'gatehouse_card_readers{card="present"}'), readers.length);
    assert.equal(sample(text, 'gatehouse_sealed_refusals_total{reason="SEALED_UNSUPPORTED_MEDIA_TYPE"}'), 1);
    assert.equal(sample(text, 'gatehouse_sealed_refusals_total{reason="SEALED_NOT_FOUND"}'), 1);
    assert.equal(sample(text, 'gatehouse_sealed_refusals_total{reason="SEALED_UNKNOWN_ACTION"}'), 1);
    assert.equal(sample(text, 'gatehouse_sealed_requests_total{action="time",status="200"}'), 1);
    assert.equal(sample(text, 'gatehouse_sealed_requests_total{action="unregistered",status="404"}'), 1);
    assert.equal(sample(text, 'gatehouse_sealed_replay_cache_entries'), 2);
    assert.equal(sample(text, 'gatehouse_front_end_ready{front_end="relay"}'), 1);
    assert.ok(sample(text, 'process_cpu_user_seconds_total') !== undefined, 'process metrics');
    assert.match(text, /^gatehouse_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m);
    // Names a client chose (relay client names, the made-up command and action, the path) are nowhere.
    for (const hostile of ['__proto__', '__PROTO__', 'evil', 'hasOwnProperty', 'constructor', '127.0.0.1'])
      assert.ok(!text.includes(hostile), `${hostile} appears in /metrics`);
    a.destroy();
    b.destroy();

    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10000 });
    if (promtool.error !== undefined) {
      if (process.env.GATEHOUSE_REQUIRE_PROMTOOL === '1') assert.fail(`promtool is required here (GATEHOUSE_REQUIRE_PROMTOOL=1): ${promtool.error.message}`);
      t.skip('promtool not installed (Debian package prometheus)');
    } else {
      assert.equal(promtool.status, 0, `promtool check metrics:\n${promtool.stdout}${promtool.stderr}`);
    }
  } finally {
    await gw.close({ graceMs: 0 });
  }
});

test('/healthz and /readyz: ready once listening, 503 "draining" while tunnels drain; other paths 404, other methods 405', async () => {
  const gw = await startGateway(tempDir());
  let closed: Promise<void> | undefined;
  try {
    assert.deepEqual(await get(gw, '/healthz').then((r) => [r.status, r.text]), [200, 'ok\n']);
    assert.deepEqual(await get(gw, '/readyz').then((r) => [r.status, r.text]), [200, 'ready\n']);
    assert.equal((await get(gw, '/nope')).status, 404);
    assert.equal((await get(gw, '/metrics', 'POST')).status, 405);
    assert.equal((await get(gw, '/healthz', 'HEAD')).status, 200);
    // An open tunnel keeps the relay draining for the grace period; meanwhile the ops listener answers.
    const [tcp] = gw.relay!.listeners;
    const { a, b } = await pair(tcp!.url, tcp!.url);
    const waiting = await rawClient(tcp!.url);
    waiting.send(authenticate('alone'));
    await waiting.waitFor(NO_ERROR);
    closed = gw.close({ graceMs: 3000 });
    const r = await get(gw, '/readyz');
    assert.deepEqual([r.status, r.text], [503, 'draining\n']);
    assert.equal((await get(gw, '/healthz')).status, 200);
    a.end();
    b.end();
    await deadline(closed, 8000, 'gateway close');
    await assert.rejects(fetch(`${gw.ops!.url}/healthz`), 'the ops listener closes last');
  } finally {
    await (closed ?? gw.close({ graceMs: 0 }));
  }
});

test('[ops] is off without its section; on with it; a port in use fails the start with CORE_LISTEN_FAILED', async () => {
  const off = validateConfig(gatewayConfigSchema, { relay: { listeners: [{ kind: 'tcp', port: 0 }], monitor: { enabled: false } } });
  assert.equal(off.ops.enabled, false);
  const gw = await startGateway(tempDir());
  try {
    const clash = validateConfig(gatewayConfigSchema, { relay: { listeners: [{ kind: 'tcp', port: 0 }], monitor: { enabled: false } }, ops: { port: gw.ops!.port } });
    assert.equal(clash.ops.host, '127.0.0.1');
    const second = await createGateway(clash, { log: silentLogger(), baseDir: tempDir() });
    await assert.rejects(second.start(), (e: Error & { code?: string }) => e.code === 'CORE_LISTEN_FAILED' && /ops listener/.test(e.message));
  } finally {
    await gw.close({ graceMs: 0 });
  }
});
