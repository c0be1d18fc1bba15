/**
 * Key and client administration used by `gatehouse clients …` (and usable as a library): where the files
 * are, adding, listing, revoking clients, rotating the server key. Every change is an atomic rewrite of
 * the registry or key file; a running server picks it up by itself (watch + poll), no restart.
 */
import { join, resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import type { JWK } from 'jose';
import { GatewayError } from '../core/errors.ts';
import type { SealedApiConfig } from './config.ts';
import { loadOrCreateServerKeyFile, publicInfo, rotateServerKey, type ServerPublicInfo } from './keys.ts';
import {
  newEntry,
  readRegistryFile,
  updateRegistryFile,
  type ClientEntry,
  type NewClient,
} from './registry.ts';

export const SERVER_PUBLIC_FILE = 'server-public.json';

export interface SealedPaths {
  readonly stateDir: string;
  readonly keyFile: string;
  readonly publicFile: string;
  readonly registryFile: string;
  readonly backupDir: string;
}

export function sealedPaths(config: SealedApiConfig, baseDir: string): SealedPaths {
  const stateDir = resolve(baseDir, config.stateDir);
  return {
    stateDir,
    keyFile: join(stateDir, 'server-keys.json'),
    publicFile: join(stateDir, SERVER_PUBLIC_FILE),
    registryFile: resolve(baseDir, config.registryFile ?? join(stateDir, 'clients.json')),
    backupDir: resolve(baseDir, config.backupDir ?? join(stateDir, 'backups')),
  };
}

/** The server's public keys (creating the key pair if this is the first use). */
export async function serverPublicInfo(paths: SealedPaths): Promise<ServerPublicInfo> {
  return publicInfo((await loadOrCreateServerKeyFile(paths.keyFile)).file);
}

/** Reads a public JWK from a file: a bare JWK, a client key file (`publicJwk`) or a registry entry (`jwk`). */
export async function readPublicJwk(path: string): Promise<JWK> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new GatewayError('SEALED_KEYS_INVALID', `${path}: not a JSON key file`, { cause: err });
  }
  const o = raw as { publicJwk?: JWK; jwk?: JWK } & JWK;
  return o.publicJwk ?? o.jwk ?? o;
}

/** Adds a client; names and keys must be new (nothing is ever overwritten). */
export async function addClient(paths: SealedPaths, c: NewClient): Promise<ClientEntry> {
  const entry = await newEntry(c);
  await updateRegistryFile(paths.registryFile, (file) => {
    if (file.clients.some((x) => x.name === entry.name))
      throw new GatewayError('SEALED_REGISTRY_INVALID', `a client named ${entry.name} already exists`);
    if (file.clients.some((x) => x.kid === entry.kid))
      throw new GatewayError('SEALED_REGISTRY_INVALID', `this key is already registered (kid ${entry.kid})`);
    return { ...file, clients: [...file.clients, entry] };
  });
  return entry;
}

export async function listClients(paths: SealedPaths): Promise<ClientEntry[]> {
  return (await readRegistryFile(paths.registryFile)).clients;
}

function pick(clients: readonly ClientEntry[], nameOrKid: string): ClientEntry {
  const c = clients.find((x) => x.name === nameOrKid || x.kid === nameOrKid);
  if (c === undefined) throw new GatewayError('SEALED_REGISTRY_INVALID', `no client named ${nameOrKid}`);
  return c;
}

export async function showClient(paths: SealedPaths, nameOrKid: string): Promise<ClientEntry> {
  return pick(await listClients(paths), nameOrKid);
}

/** Marks one client revoked (effective on the server's next reload, within reloadCheckMs). */
export async function revokeClient(
  paths: SealedPaths,
  nameOrKid: string,
  now = new Date(),
): Promise<ClientEntry> {
  let revoked: ClientEntry | undefined;
  await updateRegistryFile(paths.registryFile, (file) => {
    const target = pick(file.clients, nameOrKid);
    revoked = { ...target, revoked: target.revoked ?? now.toISOString() };
    return { ...file, clients: file.clients.map((x) => (x.kid === target.kid ? revoked! : x)) };
  });
  return revoked!;
}

export function clientStatus(c: ClientEntry, nowMs = Date.now()): 'active' | 'revoked' | 'expired' {
  if (c.revoked !== undefined) return 'revoked';
  if (c.expires !== undefined && Date.parse(c.expires) <= nowMs) return 'expired';
  return 'active';
}

export { rotateServerKey };
