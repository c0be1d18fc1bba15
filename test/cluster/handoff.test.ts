/**
 * `serve --workers 2` without Redis: a plain TCP or WebSocket client whose partner waits in the other
 * worker moves there (its socket is handed over, relay/cluster/handoff.ts), so the tunnel runs in one
 * process: the exact bytes of a local pair on every side, data both ways, the close travelling, the
 * moves counted in /metrics and no tunnel forwarded. TLS clients cannot move: theirs are forwarded.
 * Races (the partner leaving while a client moves to it), duplicate uuids and bytes sent before the
 * answer end as they do in one process, and no key stays blocked.
 *
 * The primary hands each listener's connections to the workers in turn, so two clients connected one
 * after the other to the same listener land in different workers; across two listeners, one connection
 * more to one of them between two pairs puts exactly one of the two pairs across the workers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse, type Spawned } from '../helpers/cli.ts';
import { rawClient, lines, selfSignedCert, tempDir, NO_ERROR, TUNNEL_ESTABLISHED, type RawClient } from '../helpers/relay.ts';

let server: Spawned;
const urls = new Map<string, string>();
let ops = '';
const opened: RawClient[] = [];

before(async () => {
  const dir = tempDir();
  const { certFile, keyFile } = selfSignedCert(dir);
  const cfg = join(dir, 'gatehouse.toml');
  const listeners = ['tcp', 'ws', 'tls', 'wss'].map((k) => `{ kind = "${k}", host = "127.0.0.1", port = 0 }`).join(', ');
  writeFileSync(
    cfg,
    `[shutdown]\ngraceMs = 300\n[relay]\nlisteners = [${listeners}]\nauthenticator = { kind = "dev" }\ntls = { certFile = ${JSON.stringify(certFile)}, keyFile = ${JSON.stringify(keyFile)} }\n[relay.monitor]\nenabled = false\n[ops]\nhost = "127.0.0.1"\nport = 0\n`,
  );
  server = gatehouse(['serve', '--config', cfg, '--workers', '2', '--log-format', 'json']);
  const banner = await server.waitForStdout(/2 worker processes[\s\S]*Press Ctrl-C/, 30000);
  for (const k of ['tcp', 'ws', 'tls', 'wss']) urls.set(k, new RegExp(`(${k}://127\\.0\\.0\\.1:\\d+)`).exec(banner)![1]!);
  ops = /Ops: (http:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
});

after(async () => {
  for (const c of opened) c.destroy();
  if (server.child.exitCode === null) {
    server.child.kill('SIGTERM');
    await server.exited(10000).catch(() => server.child.kill('SIGKILL'));
  }
});

async function client(kind: string): Promise<RawClient> {
  const c = await rawClient(urls.get(kind)!);
  opened.push(c);
  return c;
}

/** The JSON-RPC texts a client received: lines on a stream, text frames on a WebSocket (each ends in a newline). */
function texts(c: RawClient): string[] {
  return c.kind === 'ws' || c.kind === 'wss' ? c.frames().map((f) => f.data.toString()) : lines(c.received()).map((l) => `${l}\n`);
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${ops}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

function auth(token: string, id: number, name: string, uuid: string): string {
  return `{"id":${id},"method":"Authentication.Authenticate","params":{"name":"${name}","token":"${token}","uuid":"${uuid}"}}\n`;
}

/** a waits, b comes second (so in the other worker); both see the tunnel; returns them. */
async function pairUp(kindA: string, kindB: string, token = `tok-${crypto.randomUUID()}`): Promise<[RawClient, RawClient]> {
  const a = await client(kindA);
  a.send(auth(token, 0, 'alpha', '{E1D4D9B0-1C2A-4F51-9C1E-0A0B0C0D0E0F}'));
  await a.waitFor(NO_ERROR);
  const b = await client(kindB);
  b.send(auth(token, 7, 'beta', '5f0c3c2e-0000-4000-8000-000000000001'));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  return [a, b];
}

/** Sends `n` bytes each way and checks they arrive whole and in order. */
async function flows(a: RawClient, b: RawClient, n: number): Promise<void> {
  const bytes = (seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => 0x61 + ((i * 7 + seed) % 26)));
  const aOff = a.received().length;
  const bOff = b.received().length;
  const ab = bytes(1);
  const ba = bytes(5);
  a.send(ab);
  b.send(ba);
  assert.ok((await b.waitForBytes(bOff + n, 10000)).subarray(bOff).equals(ab), 'a → b whole');
  assert.ok((await a.waitForBytes(aOff + n, 10000)).subarray(aOff).equals(ba), 'b → a whole');
}

/** One connection more to `kind`'s listener (it turns that listener's round robin by one). */
async function turn(kind: string): Promise<void> {
  const c = await client(kind);
  c.send('{"id":1,"method":"RemoteProxy.Hello"}\n');
  await c.waitFor('"id":1,');
  c.destroy();
}

/**
 * Runs `pairs` for (kindA, kindB) twice; when the kinds differ, with one more connection to kindB's
 * listener in between, so exactly one of the two pairs spans the workers. Returns the moves counted.
 */
async function twice(kindA: string, kindB: string, check: (a: RawClient, b: RawClient) => Promise<void>): Promise<number> {
  const before = await metric('gatehouse_relay_clients_moved_total');
  for (let round = 0; round < 2; round++) {
    if (round === 1 && kindA !== kindB) await turn(kindB);
    const [a, b] = await pairUp(kindA, kindB);
    await check(a, b);
  }
  return (await metric('gatehouse_relay_clients_moved_total')) - before;
}

test('plain clients move to the partner\'s worker: the exact bytes of a local pair, data both ways, the close travels, nothing forwarded', { timeout: 60000 }, async () => {
  const combos: [string, string][] = [['tcp', 'tcp'], ['tcp', 'ws'], ['ws', 'tcp'], ['ws', 'ws']];
  for (const [ka, kb] of combos) {
    const moved = await twice(ka, kb, async (a, b) => {
    const at = texts(a);
    const bt = texts(b);
    assert.equal(at[0], '{"id":0,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}\n', `${ka}/${kb}`);
    assert.match(at[1]!, /^\{"id":\d+,"notification":"RemoteProxy.TunnelEstablished","params":\{"name":"beta","uuid":"5f0c3c2e-0000-4000-8000-000000000001"\}\}\n$/);
    assert.equal(bt[0], '{"id":7,"params":{"authenticationError":"AuthenticationErrorNoError"},"status":"success"}\n', `${ka}/${kb}`);
    assert.match(bt[1]!, /^\{"id":\d+,"notification":"RemoteProxy.TunnelEstablished","params":\{"name":"alpha","uuid":"e1d4d9b0-1c2a-4f51-9c1e-0a0b0c0d0e0f"\}\}\n$/);
    assert.equal(at.length, 2);
    assert.equal(bt.length, 2);
    await flows(a, b, 300_000);
    // The machine's view (the primary merges the workers'): this tunnel and its two clients, whichever
    // worker each client came to first (the previous pair's tunnel may take a moment to finish closing).
    const view = async () => {
      const text = await (await fetch(`${ops}/metrics`)).text();
      const open = Number(/^gatehouse_relay_tunnels_open (\d+)$/m.exec(text)?.[1]);
      const inTunnel = [...text.matchAll(/^gatehouse_relay_connections\{transport="\w+",state="tunnel"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
      return `${open} tunnel, ${inTunnel} clients in a tunnel`;
    };
    let seen = await view();
    for (let i = 0; i < 40 && seen !== '1 tunnel, 2 clients in a tunnel'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      seen = await view();
    }
    assert.equal(seen, '1 tunnel, 2 clients in a tunnel', `${ka}/${kb}`);
    // The (maybe) moved client leaves: its partner is closed (stream: FIN; WebSocket: nymea's close).
    b.end();
    await a.closed(5000);
    a.destroy();
    b.destroy();
    });
    // Same listener: both pairs span the workers; two listeners: exactly one of them.
    assert.equal(moved, ka === kb ? 2 : 1, `${ka}/${kb}: clients moved`);
  }
  // A forwarded tunnel's far side has a negative session id; none of these was forwarded.
  const established = server.stderr().split('\n').filter((l) => l.includes('"tunnel established"'));
  assert.equal(established.filter((l) => /"sessions":\[-\d+,|,-\d+\]/.test(l)).length, 0, 'no tunnel forwarded');
});

test('pairs whose two clients authenticate at the same moment: every one meets (the move can overtake the partner\'s own answer)', { timeout: 60000 }, async () => {
  // Both clients of a pair authenticate together: the primary's "wait" answer for one and the other's
  // move reach the same worker back to back. Before the fix some pairs waited both, never to meet.
  const rounds = 4;
  for (let r = 0; r < rounds; r++) {
    await Promise.all(
      Array.from({ length: 24 }, async (_, i) => {
        const token = `sim-${crypto.randomUUID()}`;
        const [a, b] = await Promise.all([client(i % 3 === 0 ? 'ws' : 'tcp'), client(i % 2 === 0 ? 'tcp' : 'ws')]);
        a.send(auth(token, 0, 'alpha', `{${crypto.randomUUID()}}`));
        b.send(auth(token, 1, 'beta', `{${crypto.randomUUID()}}`));
        await a.waitFor(TUNNEL_ESTABLISHED, 5000);
        await b.waitFor(TUNNEL_ESTABLISHED, 5000);
        await flows(a, b, 2000);
        a.destroy();
        b.destroy();
      }),
    );
  }
});

test('a TLS client cannot move: a plain one moves to it, and it is forwarded to a plain one', { timeout: 30000 }, async () => {
  const forwardedLines = () => server.stderr().split('\n').filter((l) => l.includes('"tunnel established"') && /"sessions":\[-\d+,|,-\d+\]/.test(l)).length;
  const check = async (a: RawClient, b: RawClient) => {
    await flows(a, b, 100_000);
    a.end();
    await b.closed(5000);
  };
  // A plain newcomer moves to its TLS partner's worker.
  assert.equal(await twice('tls', 'tcp', check), 1, 'tls/tcp: the tcp client moved once');
  assert.equal(await twice('wss', 'ws', check), 1, 'wss/ws: the ws client moved once');
  // A TLS newcomer stays where it is: its tunnel is forwarded.
  const before = forwardedLines();
  assert.equal(await twice('tcp', 'tls', check), 0, 'tcp/tls: nothing moved');
  assert.equal(await twice('ws', 'wss', check), 0, 'ws/wss: nothing moved');
  // The log line is written after the monitor's view: give it a moment.
  await new Promise((r) => setTimeout(r, 200));
  // One of each two pairs spanned the workers and was forwarded: a line on each of the two workers.
  assert.equal(forwardedLines() - before, 4, 'one of each two pairs forwarded');
});

test('the partner leaving as its partner moves to it: clean outcomes, and the key is free again', { timeout: 60000 }, async () => {
  // The waiting partner leaves as its partner moves to it, many times over: every outcome is a clean one.
  for (let i = 0; i < 12; i++) {
    const token = `race-${crypto.randomUUID()}`;
    const a = await client(i % 2 === 0 ? 'tcp' : 'ws');
    a.send(auth(token, 0, 'alpha', `{00000000-0000-4000-8000-${String(i).padStart(12, '0')}}`));
    await a.waitFor(NO_ERROR);
    const b = await client(i % 3 === 0 ? 'ws' : 'tcp');
    b.send(auth(token, 1, 'beta', `{10000000-0000-4000-8000-${String(i).padStart(12, '0')}}`));
    setTimeout(() => a.destroy(), i % 4);
    // b either waits (its partner gone before the offer), or pairs and then loses its partner.
    await b.waitFor('"id":1,', 5000);
    b.destroy();
    // The key is free again: a new pair with the same token meets.
    await new Promise((r) => setTimeout(r, 50));
    const [c, d] = await pairUp(i % 2 === 0 ? 'ws' : 'tcp', 'tcp', token);
    c.destroy();
    d.destroy();
  }

});

test('a newcomer gone right after its Authenticate (maybe mid-move): its partner is closed or waits on, and the key meets again', { timeout: 60000 }, async () => {
  for (let i = 0; i < 10; i++) {
    const token = `gone-${crypto.randomUUID()}`;
    const a = await client(i % 2 === 0 ? 'tcp' : 'ws');
    a.send(auth(token, 0, 'alpha', `{${crypto.randomUUID()}}`));
    await a.waitFor(NO_ERROR);
    const b = await client(i % 3 === 0 ? 'ws' : 'tcp');
    b.send(auth(token, 1, 'beta', `{${crypto.randomUUID()}}`));
    setTimeout(() => b.destroy(), i % 3);
    await new Promise((r) => setTimeout(r, 300));
    if (a.isClosed) {
      const [c, d] = await pairUp('tcp', 'tcp', token);
      c.destroy();
      d.destroy();
    } else {
      // b never reached the table: a still waits, and the next client of the key meets it.
      const c = await client('tcp');
      c.send(auth(token, 2, 'gamma', `{${crypto.randomUUID()}}`));
      await c.waitFor(TUNNEL_ESTABLISHED);
      await a.waitFor(TUNNEL_ESTABLISHED);
      await flows(a, c, 1000);
      a.destroy();
      c.destroy();
    }
  }
});

test('the same uuid on both sides, across the workers: both closed, as in one process; then the key is free', { timeout: 20000 }, async () => {
  {
    const token = `dup-${crypto.randomUUID()}`;
    const uuid = '{AAAAAAAA-0000-4000-8000-000000000001}';
    const a = await client('tcp');
    a.send(auth(token, 0, 'alpha', uuid));
    await a.waitFor(NO_ERROR);
    const b = await client('ws');
    b.send(auth(token, 1, 'beta', uuid));
    await a.closed(5000);
    await b.closed(5000);
    assert.ok(!texts(b).some((t) => t.includes(TUNNEL_ESTABLISHED)));
    const [c, d] = await pairUp('tcp', 'tcp', token);
    c.destroy();
    d.destroy();
  }

});

// Bytes after the Authenticate, in the same write: not moved (the forward path judges them), and the
// client is closed as data before the tunnel, its partner with it.
test('bytes sent with the Authenticate: closed as data before the tunnel, partner too; the gateway runs on', { timeout: 20000 }, async () => {
  {
    const token = `early-${crypto.randomUUID()}`;
    const a = await client('tcp');
    a.send(auth(token, 0, 'alpha', '{BBBBBBBB-0000-4000-8000-000000000001}'));
    await a.waitFor(NO_ERROR);
    const b = await client('tcp');
    b.send(auth(token, 1, 'beta', '{BBBBBBBB-0000-4000-8000-000000000002}') + '{"id":3');
    await b.closed(5000);
    await a.closed(5000);
    const [c, d] = await pairUp('tcp', 'ws', token);
    await flows(c, d, 1000);
    c.destroy();
    d.destroy();
  }
  assert.doesNotMatch(server.stderr(), /CORE_INTERNAL|"level":"fatal"|"level":60/);
  assert.equal(server.child.exitCode, null, 'the gateway runs on');
});
