/**
 * Starts a private pcscd with a vpcd reader (two slots) for the PC/SC tests and the benchmark, and stops
 * it again. pcscd is one per machine (socket /run/pcscd/pcscd.comm): when one is already running or the
 * binaries are missing, `startPcscd` returns the reason instead, and callers skip with it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '../helpers/relay.ts';

export const PCSCD_BIN = '/usr/sbin/pcscd';
export const VPCD_DRIVER = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so';
export const PCSCD_SOCKET = '/run/pcscd/pcscd.comm';
export const VPCD_NAME = 'Gatehouse VPCD';

export interface RunningPcscd {
  /** vpcd's port for slot 0 (slot 1 is port + 1). */
  readonly port: number;
  /** PC/SC reader names of the two slots. */
  readonly readers: readonly [string, string];
  stop(): Promise<void>;
}

function freePortPair(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => {
        if (port === 0 || port >= 65535) reject(new Error('no port'));
        const t = createServer();
        t.once('error', () => resolve(freePortPair()));
        t.listen({ host: '127.0.0.1', port: port + 1 }, () => t.close(() => resolve(port)));
      });
    });
    s.once('error', reject);
  });
}

function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      if (readFileSync(f, 'utf8').split('\n').some((l) => l.includes(`:${hex} `) && / 0A /.test(l))) return true;
    } catch {
      // no such table
    }
  }
  return false;
}

/** Starts pcscd; resolves with the running daemon, or a string saying why it cannot run here. */
export async function startPcscd(): Promise<RunningPcscd | string> {
  if (!existsSync(PCSCD_BIN)) return `pcscd is not installed (${PCSCD_BIN}); see .ci/packages-card-bridge.txt`;
  if (!existsSync(VPCD_DRIVER)) return `the vpcd driver is not installed (${VPCD_DRIVER}); package vsmartcard-vpcd`;
  if (existsSync(PCSCD_SOCKET)) {
    const alive = await new Promise<boolean>((resolve) => {
      const probe = connect({ path: PCSCD_SOCKET });
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (alive) return `another pcscd is running (${PCSCD_SOCKET}); only one per machine`;
    unlinkSync(PCSCD_SOCKET);
  }
  const port = await freePortPair();
  const dir = tempDir('gatehouse-pcscd-');
  const conf = join(dir, 'reader.conf.d');
  mkdirSync(conf);
  const channel = `0x${port.toString(16).toUpperCase()}`;
  writeFileSync(join(conf, 'vpcd'), `FRIENDLYNAME "${VPCD_NAME}"\nDEVICENAME /dev/null:${channel}\nLIBPATH ${VPCD_DRIVER}\nCHANNELID ${channel}\n`);
  let output = '';
  const child: ChildProcess = spawn(PCSCD_BIN, ['-f', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  child.stderr?.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  let exited = false;
  // Never leave a pcscd behind, even when the test process is ended early.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => {
    exited = true;
    process.off('exit', reap);
  });
  const deadline = Date.now() + 15000;
  while (!(existsSync(PCSCD_SOCKET) && listening(port) && listening(port + 1))) {
    if (exited) return `pcscd exited at start: ${output.trim().slice(-500)}`;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      return `pcscd did not get ready within 15 s: ${output.trim().slice(-500)}`;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    readers: [`${VPCD_NAME} 00 00`, `${VPCD_NAME} 00 01`],
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited) {
          resolve();
          return;
        }
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}
