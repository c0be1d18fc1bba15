/**
 * The unfinished-request attack on the card bridge's line protocol (no authentication): N connections each
 * send most of a large request and never finish it. Prints the gateway's peak RSS beside its idle RSS, with
 * the shared budget (limits.maxBufferedBytes) at its default and, for comparison, effectively unbounded.
 *
 *   node --import tsx bench/cards/unfinished.ts [--connections 1000] [--bytes 912000]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const CONNECTIONS = arg('connections', 1000);
const BYTES = arg('bytes', 912_000); // 0.87 MiB

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const rssMb = (pid: number, field: 'VmRSS' | 'VmHWM'): number => {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) / 1024;
};

async function run(maxBufferedBytes: number | undefined): Promise<{ idle: number; peak: number; refused: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-unfinished-'));
  const port = await freePort();
  const limits = [`maxConnections = ${CONNECTIONS + 100}`, `maxConnectionsPerIp = ${CONNECTIONS + 100}`, 'maxRequestBytes = 1048576'];
  if (maxBufferedBytes !== undefined) limits.push(`maxBufferedBytes = ${maxBufferedBytes}`);
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `[log]\nlevel = "error"\n[cardBridge]\nlisteners = [{ kind = "tcp", host = "127.0.0.1", port = ${port} }]\nbackends = [{ kind = "simulator" }]\n[cardBridge.timeouts]\nrequestReadMs = 600000\nidleMs = 600000\n[cardBridge.limits]\n${limits.join('\n')}\n`,
  );
  const child = spawn(process.execPath, ['bin/gatehouse.js', 'serve', '--config', join(dir, 'gatehouse.toml')], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('Gatehouse is running') && resolve()));
  await new Promise((r) => setTimeout(r, 500));
  const idle = rssMb(child.pid!, 'VmRSS');
  // Command lines under maxLineBytes (128 KiB), adding up to BYTES, the last one unfinished.
  const parts = ['>Gatehouse Sim 00|\n'];
  let size = parts[0]!.length;
  for (let id = 1; size < BYTES; id++) {
    const hex = Math.min(120_000, BYTES - size);
    parts.push(`>${id}:APDU:${'0'.repeat(hex)}${size + hex + 12 < BYTES ? '\n' : ''}`);
    size += hex + 12;
  }
  const line = Buffer.from(parts.join(''));
  const sockets: Socket[] = [];
  let refused = 0;
  let peak = idle;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(child.pid!, 'VmRSS'))), 20);
  for (let i = 0; i < CONNECTIONS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, CONNECTIONS - i) }, () =>
        new Promise<void>((resolve) => {
          const s = connect({ host: '127.0.0.1', port });
          sockets.push(s);
          s.on('error', () => resolve());
          s.on('data', () => refused++);
          s.on('connect', () => s.write(line, () => resolve()));
          s.on('close', () => resolve());
        }),
      ),
    );
  }
  await new Promise((r) => setTimeout(r, 1500));
  clearInterval(sampler);
  peak = Math.max(peak, rssMb(child.pid!, 'VmHWM'));
  for (const s of sockets) s.destroy();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  return { idle, peak, refused };
}

const budgeted = await run(process.env.BUDGET === undefined ? undefined : Number(process.env.BUDGET));
const unbounded = await run(2 ** 40);
console.log(`unfinished-request attack: ${CONNECTIONS} connections × ${(BYTES / 1048576).toFixed(2)} MiB`);
console.log('| budget | idle RSS, MB | peak RSS, MB | connections answered C089 |');
console.log('|---|---:|---:|---:|');
console.log(`| default (32 MiB) | ${budgeted.idle.toFixed(0)} | ${budgeted.peak.toFixed(0)} | ${budgeted.refused} |`);
console.log(`| none (2^40) | ${unbounded.idle.toFixed(0)} | ${unbounded.peak.toFixed(0)} | ${unbounded.refused} |`);
