/**
 * Which files the API manages: the configured ones plus, with `demo = true` (embedded defaults), a demo
 * WireGuard file `<stateDir>/demo/wg0.conf` created with random (not real) keys on first start.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ManagedFileConfig, SealedApiConfig } from './config.ts';

/** The managed files by logical name (a Map: names come from clients). */
export function managedFiles(config: SealedApiConfig, stateDir: string): Map<string, ManagedFileConfig> {
  const files = new Map(Object.entries(config.files));
  if (config.demo && !files.has('demo'))
    files.set('demo', {
      path: demoPath(stateDir),
      format: 'wireguard',
      backup: true,
      backupsKept: 10,
      postWriteTimeoutMs: 10000,
      allowHooks: false,
    });
  return files;
}

function demoPath(stateDir: string): string {
  return join(stateDir, 'demo', 'wg0.conf');
}

/** Demo content: a valid wg0.conf with random (not real) keys. */
function demoWireGuard(): string {
  const key = () => randomBytes(32).toString('base64');
  return `# Demo file managed by the Gatehouse sealed API (embedded defaults).\n[Interface]\nPrivateKey = ${key()}\nAddress = 10.0.0.1/24\nListenPort = 51820\n\n[Peer]\n# first peer\nPublicKey = ${key()}\nAllowedIPs = 10.0.0.2/32\n`;
}

/** Creates the demo file unless it exists (only when the demo replaces no configured `demo` file). */
export async function ensureDemoFile(config: SealedApiConfig, stateDir: string): Promise<void> {
  if (!config.demo || Object.hasOwn(config.files, 'demo')) return;
  await mkdir(join(stateDir, 'demo'), { recursive: true, mode: 0o700 });
  await writeFile(demoPath(stateDir), demoWireGuard(), { mode: 0o600, flag: 'wx' }).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  });
}
