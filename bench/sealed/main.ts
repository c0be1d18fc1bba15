/**
 * `npm run bench:sealed`: the sealed protocol against a plain HTTP server running the same actions
 * (same action registry and runner, in the same process) without sealing, in one run.
 * For a no-op action (`ping`) and `files.read` (a 10-peer wg0.conf), with 1, 8 and 32 concurrent
 * clients: requests per second, p50/p99 latency and the server's CPU time per request (measured in the
 * server process with process.cpuUsage). Sealed requests are built before each timed phase so the
 * load generator's signing/ECDH cost does not limit the server; that cost is reported separately.
 * Env: BENCH_REQUESTS (per phase, default 2000), BENCH_PORT (default 21500).
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { SealedClient, type Prepared } from '../../src/sealed-api/client.ts';

const N = Number(process.env.BENCH_REQUESTS ?? 2000);
const PORT = Number(process.env.BENCH_PORT ?? 21500);
const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-sealed-'));
const child = fork(new URL('./server.ts', import.meta.url).pathname, [dir, String(PORT)], {
  execArgv: ['--import', 'tsx'],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});

function ask<T>(msg: object, key: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: Record<string, unknown>) => {
      if (key in m) {
        child.off('message', on);
        resolve(m[key] as T);
      }
    };
    child.on('message', on);
    if (Object.keys(msg).length > 0) child.send(msg);
  });
}

const { url, plain: plainUrl } = await ask<{ url: string; plain: string }>({}, 'ready');

async function serverCpuUs(): Promise<number> {
  const c = await ask<NodeJS.CpuUsage>({ cmd: 'cpu' }, 'cpu');
  return c.user + c.system;
}

interface Row {
  action: string;
  clients: number;
  mode: 'sealed' | 'plain';
  rps: number;
  p50: number;
  p99: number;
  cpuUs: number;
}

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

async function phase(
  action: string,
  args: Record<string, unknown>,
  clients: number,
  mode: 'sealed' | 'plain',
): Promise<Row> {
  const sealed = await SealedClient.fromFiles(url, join(dir, 'client.json'), join(dir, 'server.json'), {
    maxSockets: clients,
    lifetimeMs: 120000,
  });
  const plain = await SealedClient.fromFiles(plainUrl, join(dir, 'client.json'), join(dir, 'server.json'), {
    maxSockets: clients,
  });
  let prepared: Prepared[] = [];
  if (mode === 'sealed') {
    prepared = [];
    for (let i = 0; i < N; i++) prepared.push(await sealed.prepare(action, args));
  }
  const body = JSON.stringify({ act: action, args });
  // Warm up the sockets.
  await Promise.all(
    Array.from({ length: clients }, () =>
      plain.send(JSON.stringify({ act: 'ping', args: {} }), 'application/json'),
    ),
  );
  const latencies: number[] = [];
  let next = 0;
  const cpu0 = await serverCpuUs();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < N) {
        const i = next++;
        const s = performance.now();
        if (mode === 'sealed') {
          const p = prepared[i]!;
          await sealed.open(p, await sealed.send(p.jwe));
        } else {
          const a = await plain.send(body, 'application/json');
          if (a.status !== 200) throw new Error(`plain ${a.status} ${a.body}`);
          JSON.parse(a.body);
        }
        latencies.push(performance.now() - s);
      }
    }),
  );
  const wall = performance.now() - t0;
  const cpu1 = await serverCpuUs();
  sealed.close();
  plain.close();
  latencies.sort((a, b) => a - b);
  return {
    action,
    clients,
    mode,
    rps: (N / wall) * 1000,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    cpuUs: (cpu1 - cpu0) / N,
  };
}

// Client-side cost of building one sealed request (sign + ECDH + encrypt), for reference.
const probe = await SealedClient.fromFiles(url, join(dir, 'client.json'), join(dir, 'server.json'));
const c0 = process.cpuUsage();
for (let i = 0; i < 500; i++) await probe.prepare('ping');
const c1 = process.cpuUsage(c0);
probe.close();

const rows: Row[] = [];
for (const [action, args] of [
  ['ping', {}],
  ['files.read', { file: 'wg0' }],
] as const) {
  for (const clients of [1, 8, 32]) {
    for (const mode of ['plain', 'sealed'] as const) rows.push(await phase(action, args, clients, mode));
  }
}
child.send({ cmd: 'stop' });

const f = (n: number, d = 0) => n.toFixed(d);
const lines = [
  `Sealed API benchmark: ${N} requests per phase, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node ${process.version}`,
  `client cost to build one sealed request: ${f((c1.user + c1.system) / 500)} µs CPU`,
  '',
  '| action     | clients | plain req/s | sealed req/s | ratio | plain p50/p99 ms | sealed p50/p99 ms | server CPU/req plain | sealed  |',
  '|------------|--------:|------------:|-------------:|------:|-----------------:|------------------:|---------------------:|--------:|',
];
for (let i = 0; i < rows.length; i += 2) {
  const p = rows[i]!;
  const s = rows[i + 1]!;
  lines.push(
    `| ${p.action.padEnd(10)} | ${String(p.clients).padStart(7)} | ${f(p.rps).padStart(11)} | ${f(s.rps).padStart(12)} | ${f(s.rps / p.rps, 2).padStart(5)} | ${`${f(p.p50, 2)} / ${f(p.p99, 2)}`.padStart(16)} | ${`${f(s.p50, 2)} / ${f(s.p99, 2)}`.padStart(17)} | ${`${f(p.cpuUs)} µs`.padStart(20)} | ${`${f(s.cpuUs)} µs`.padStart(7)} |`,
  );
}
console.log(lines.join('\n'));
rmSync(dir, { recursive: true, force: true });
