/**
 * Line-protocol load clients in a worker thread, so the bridge (main thread) and its clients do not share
 * one event loop. Opens `clients` persistent connections, each sending one-APDU requests back to back for
 * `ms`, and posts the latencies (ms) and error count back.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

export interface ClientJob {
  readonly port: number;
  readonly clients: number;
  readonly terminals: readonly string[];
  readonly ms: number;
  readonly apdu: string;
  readonly expect: string;
}

export interface ClientResult {
  readonly latencies: Float64Array;
  readonly elapsedMs: number;
  readonly errors: number;
}

export function runClients(job: ClientJob): Promise<ClientResult> {
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); });`;
  const worker = new Worker(boot, { eval: true, workerData: job });
  return new Promise((resolve, reject) => {
    worker.once('message', (r: ClientResult) => {
      void worker.terminate();
      resolve(r);
    });
    worker.once('error', reject);
  });
}

if (!isMainThread && parentPort !== null) {
  const out = parentPort;
  const job = workerData as ClientJob;
  const { CardClient } = await import('../../src/card-bridge/client.ts');
  const conns = await Promise.all(Array.from({ length: job.clients }, () => CardClient.connect({ host: '127.0.0.1', port: job.port, timeoutMs: 30000 })));
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const until = t0 + job.ms;
  await Promise.all(
    conns.map(async (c, w) => {
      const reader = job.terminals[w % job.terminals.length]!;
      while (performance.now() < until) {
        const s = performance.now();
        const [a] = await c.request(reader, [`1:APDU:${job.apdu}`]);
        lat.push(performance.now() - s);
        if (a?.result !== job.expect) errors++;
      }
    }),
  );
  const elapsedMs = performance.now() - t0;
  for (const c of conns) c.close();
  out.postMessage({ latencies: Float64Array.from(lat), elapsedMs, errors } satisfies ClientResult);
}
