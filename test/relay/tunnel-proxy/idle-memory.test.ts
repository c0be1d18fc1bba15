/**
 * What an idle multiplexed client costs in JavaScript heap: registered clients that send nothing, counted
 * after full collections (V8's `gc`, obtained for this test alone as young-gc.ts does). Both ends live in
 * this process (the client's socket and the test's server connection too), so the bound is for both: 400
 * idle clients cost 6.3 KiB of heap each (under tsx) with the per-event closures and the eager fault
 * boundary an idle client used to keep, and 4.3 KiB each without them (December 2026).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { startTp } from './harness.ts';
import { deadline, request } from '../../helpers/relay.ts';

const CLIENTS = 400;
/** KiB of heap per idle client, both ends: 6.3 before the closures went, 4.3 after. */
const BOUND_KIB = 5;

function collector(): () => void {
  setFlagsFromString('--expose-gc');
  try {
    return runInNewContext('gc') as () => void;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}

function heapAfterGc(gc: () => void): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

/** A bare socket that sends one registration and resolves once its answer says `ok` (rejects otherwise). */
function register(port: number, body: string, ok: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' });
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString('latin1');
      if (!got.includes('\n')) return;
      s.off('data', onData);
      if (got.includes(ok)) resolve(s);
      else reject(new Error(got));
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(body);
  });
}

/** A bare server connection that reads and drops everything after its registration (nothing kept per client). */
async function bareServer(port: number, serverUuid: string): Promise<Socket> {
  const s = await register(port, request(1, 'TunnelProxy.RegisterServer', { serverName: 's', serverUuid }), '"slipEnabled":true');
  s.on('data', () => undefined);
  return s;
}

/** A bare client socket registered for `serverUuid`; resolves once it has its NoError answer. */
function idleClient(port: number, serverUuid: string): Promise<Socket> {
  return register(port, request(1, 'TunnelProxy.RegisterClient', { clientName: 'c', clientUuid: crypto.randomUUID(), serverUuid }), 'TunnelProxyErrorNoError');
}

async function openClients(port: number, serverUuid: string, n: number): Promise<Socket[]> {
  const out: Socket[] = [];
  for (let i = 0; i < n; i += 50) out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => idleClient(port, serverUuid)))));
  return out;
}

async function closeAll(sockets: Socket[]): Promise<void> {
  await Promise.all(sockets.map((s) => new Promise<void>((r) => (s.destroyed ? r() : (s.once('close', () => r()), s.destroy())))));
}

test(`an idle tunnel-proxy client costs under ${BOUND_KIB} KiB of heap (both ends, ${CLIENTS} clients)`, { timeout: 15_000 }, async (t) => {
  const gc = collector();
  const relay = await startTp({ limits: { maxClientsPerServer: 1024 } }, { kinds: ['tcp'] });
  try {
    const port = Number(new URL(relay.tpUrl('tcp')).port);
    const uuid = crypto.randomUUID();
    const server = await bareServer(port, uuid);
    // First-use costs (code, shapes, pools) are not an idle client's: one round before measuring.
    await closeAll(await openClients(port, uuid, 50));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(relay.server.tunnelProxy?.registry.clients.size, 0);
    const before = heapAfterGc(gc);
    const clients = await deadline(openClients(port, uuid, CLIENTS), 10_000, 'idle clients registered');
    await new Promise((r) => setTimeout(r, 100));
    const perClientKib = (heapAfterGc(gc) - before) / CLIENTS / 1024;
    assert.equal(relay.server.tunnelProxy?.registry.clients.size, CLIENTS);
    await closeAll(clients);
    assert.ok(perClientKib < BOUND_KIB, `${perClientKib.toFixed(2)} KiB of heap per idle client (both ends), bound ${BOUND_KIB}`);
    t.diagnostic(`heap per idle client, both ends: ${perClientKib.toFixed(2)} KiB`);
    await closeAll([server]);
  } finally {
    await relay.close();
  }
});
