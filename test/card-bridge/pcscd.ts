/**
 * Starts a private pcscd with a vpcd reader (two slots) for the PC/SC tests and the benchmark, and
 * stops it again. pcscd is one per machine (socket /run/pcscd/pcscd.comm, which Debian's pcscd does not let
 * us move), and test files run in parallel: a process first takes a machine-wide lock file (held until it
 * exits; a lock whose process is gone is taken over), so PC/SC test files and benchmarks take turns. When a
 * pcscd we did not start is running, or the binaries are missing, `startPcscd` returns the reason instead.
 * `pcscRequired()`: on CI (GATEHOUSE_REQUIRE_PCSC=1) such a reason is a failure, not a skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '../helpers/relay.ts';
import { loadPcsc } from '../../src/card-bridge/backends/pcsc.ts';

export const PCSCD_BIN = '/usr/sbin/pcscd';
export const VPCD_DRIVER = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so';
export const PCSCD_SOCKET = '/run/pcscd/pcscd.comm';
export const VPCD_NAME = 'Gatehouse VPCD';
export const PCSCD_LOCK = join(tmpdir(), 'gatehouse-pcscd.lock');
/** How long a process waits for another one's PC/SC tests to finish. */
export const PCSCD_LOCK_WAIT_MS = 150_000;

/** True on CI: a missing binding or pcscd must fail the PC/SC tests instead of skipping them. */
export function pcscRequired(): boolean {
  return process.env.GATEHOUSE_REQUIRE_PCSC === '1';
}

/**
 * For a test file's setup: the PC/SC binding loaded and pcscd started with the vpcd driver, or why not (a
 * reason to skip). Under GATEHOUSE_REQUIRE_PCSC=1 that reason throws instead.
 */
export async function pcscdOrSkip(): Promise<RunningPcscd | string> {
  const loaded = await loadPcsc();
  const started = 'error' in loaded ? `the optional 'smartcard' binding is not available: ${loaded.error}` : await startPcscd();
  if (typeof started === 'string' && pcscRequired()) throw new Error(`GATEHOUSE_REQUIRE_PCSC=1 but ${started}`);
  return started;
}

let lockHeld = false;

function lockOwnerAlive(): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(PCSCD_LOCK, 'utf8').trim());
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A pcscd left behind by a test process that was killed before it could stop it (its command line names
 * one of our private configurations). We hold the lock, so no test is using it: stop it. True when one was.
 */
async function reapOrphan(): Promise<boolean> {
  let pid: number;
  try {
    pid = Number(readFileSync('/run/pcscd/pcscd.pid', 'utf8').trim());
    if (
      !Number.isInteger(pid) ||
      pid <= 0 ||
      !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('gatehouse-pcscd-')
    )
      return false;
    process.kill(pid, 'SIGKILL');
  } catch {
    return false;
  }
  for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 20));
  return true;
}

/** Takes the machine-wide pcscd lock for this process (until it exits); the reason when it cannot. */
async function takePcscdLock(): Promise<string | undefined> {
  if (lockHeld) return undefined;
  const deadline = Date.now() + PCSCD_LOCK_WAIT_MS;
  for (;;) {
    try {
      writeFileSync(PCSCD_LOCK, `${process.pid}\n`, { flag: 'wx' });
      lockHeld = true;
      process.once('exit', () => {
        try {
          if (readFileSync(PCSCD_LOCK, 'utf8').trim() === String(process.pid)) unlinkSync(PCSCD_LOCK);
        } catch {
          // already gone
        }
      });
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        return `cannot create ${PCSCD_LOCK}: ${(err as Error).message}`;
    }
    if (!lockOwnerAlive()) {
      try {
        unlinkSync(PCSCD_LOCK);
      } catch {
        // another waiter took it over first
      }
      continue;
    }
    if (Date.now() > deadline)
      return `another process held ${PCSCD_LOCK} (PC/SC tests) for over ${PCSCD_LOCK_WAIT_MS} ms`;
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface RunningPcscd {
  /** vpcd's port for slot 0 (slot 1 is port + 1). */
  readonly port: number;
  /** PC/SC reader names of the two slots. */
  readonly readers: readonly [string, string];
  stop(): Promise<void>;
}

function freePort(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = createServer();
    t.once('error', () => resolve(false));
    t.listen({ host: '127.0.0.1', port }, () => t.close(() => resolve(true)));
  });
}

/** A run of `n` consecutive free loopback ports (bounded tries). */
async function freePortRun(n: number): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen({ host: '127.0.0.1', port: 0 }, () => {
        const a = s.address();
        const port = typeof a === 'object' && a !== null ? a.port : 0;
        s.close(() => resolve(port));
      });
    });
    if (first === 0 || first + n > 65535) continue;
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await freePort(first + i);
    if (ok) return first;
  }
  throw new Error(`no run of ${n} free ports`);
}

function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      if (
        readFileSync(f, 'utf8')
          .split('\n')
          .some((l) => l.includes(`:${hex} `) && / 0A /.test(l))
      )
        return true;
    } catch {
      // no such table
    }
  }
  return false;
}

/**
 * Starts pcscd with one vpcd reader (two slots); resolves with the running daemon, or a string saying why
 * it cannot run here. One reader only: Debian's vpcd 3.3 keeps its slots in driver-global state, so a
 * second vpcd reader in the same pcscd takes over the first one's slots.
 */
export async function startPcscd(
  /** The reader's FRIENDLYNAME as raw bytes (default VPCD_NAME); pcscd appends ` 00 00` / ` 00 01`. */
  name: Buffer = Buffer.from(VPCD_NAME),
): Promise<RunningPcscd | string> {
  if (!existsSync(PCSCD_BIN))
    return `pcscd is not installed (${PCSCD_BIN}); see .ci/packages-card-bridge.txt`;
  if (!existsSync(VPCD_DRIVER))
    return `the vpcd driver is not installed (${VPCD_DRIVER}); package vsmartcard-vpcd`;
  const notLocked = await takePcscdLock();
  if (notLocked !== undefined) return notLocked;
  if (existsSync(PCSCD_SOCKET)) {
    const alive = await new Promise<boolean>((resolve) => {
      const probe = connect({ path: PCSCD_SOCKET });
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (alive && !(await reapOrphan()))
      return `another pcscd is running (${PCSCD_SOCKET}); only one per machine`;
    if (existsSync(PCSCD_SOCKET)) unlinkSync(PCSCD_SOCKET);
  }
  const slots = 2;
  const port = await freePortRun(slots);
  const dir = tempDir('gatehouse-pcscd-');
  const conf = join(dir, 'reader.conf.d');
  mkdirSync(conf);
  // vpcd listens on CHANNELID for slot 0 and CHANNELID + 1 for slot 1.
  const channel = `0x${port.toString(16).toUpperCase()}`;
  writeFileSync(
    join(conf, 'vpcd'),
    Buffer.concat([
      Buffer.from('FRIENDLYNAME "'),
      name,
      Buffer.from(`"\nDEVICENAME /dev/null:${channel}\nLIBPATH ${VPCD_DRIVER}\nCHANNELID ${channel}\n`),
    ]),
  );
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
  while (!(existsSync(PCSCD_SOCKET) && Array.from({ length: slots }, (_, i) => port + i).every(listening))) {
    if (exited) return `pcscd exited at start: ${output.trim().slice(-500)}`;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      return `pcscd did not get ready within 15 s: ${output.trim().slice(-500)}`;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    readers: [`${name.toString('utf8')} 00 00`, `${name.toString('utf8')} 00 01`],
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
