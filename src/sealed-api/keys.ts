/**
 * Server and client key material on disk.
 *
 * The server key file (`<stateDir>/server-keys.json`, 0600, in a 0700 folder) holds the X25519 encryption
 * keys (newest first; the first is the one clients should use; older ones stay valid until `retiresAt`
 * for a rotation overlap) and the Ed25519 response-signing key. It is created on first start, refused
 * when group- or world-accessible, and written atomically. A client key file holds one Ed25519 private
 * JWK and its id (the RFC 7638 thumbprint of the public key).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, chmod, link, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type CryptoKey,
  type JWK,
} from 'jose';
import { GatewayError } from '../core/errors.ts';
import { fsyncDir, writeFileAtomic } from './atomic.ts';

export interface StoredKey {
  readonly kid: string;
  readonly created: string;
  /** ISO time after which the key is no longer accepted (set by rotation); absent = no end. */
  readonly retiresAt?: string;
  readonly jwk: JWK;
}

export interface ServerKeyFile {
  readonly version: 1;
  readonly encryption: readonly StoredKey[];
  readonly signing: StoredKey;
}

export interface LoadedKey {
  readonly kid: string;
  readonly key: CryptoKey;
  readonly publicJwk: JWK;
  readonly retiresAtMs: number;
}

/** The server's keys in memory. */
export interface ServerKeyRing {
  /** The key clients should encrypt to (newest). */
  readonly current: LoadedKey;
  readonly encryption: ReadonlyMap<string, LoadedKey>;
  readonly signing: LoadedKey;
}

/** The public part of the server's keys: what clients pin. */
export interface ServerPublicInfo {
  readonly kid: string;
  readonly jwk: JWK;
  readonly signing: { readonly kid: string; readonly jwk: JWK };
}

export function publicJwkOf(jwk: JWK): JWK {
  const { kty, crv, x } = jwk;
  const out: JWK = {};
  if (kty !== undefined) out.kty = kty;
  if (crv !== undefined) out.crv = crv;
  if (x !== undefined) out.x = x;
  return out;
}

async function newKey(kind: 'enc' | 'sig'): Promise<StoredKey> {
  const pair = await generateKeyPair(kind === 'enc' ? 'ECDH-ES' : 'EdDSA', {
    crv: kind === 'enc' ? 'X25519' : 'Ed25519',
    extractable: true,
  });
  const jwk = await exportJWK(pair.privateKey);
  return { kid: await calculateJwkThumbprint(publicJwkOf(jwk)), created: new Date().toISOString(), jwk };
}

function keysError(path: string, why: string, cause?: unknown): GatewayError {
  return new GatewayError('SEALED_KEYS_INVALID', `${path}: ${why}`, cause === undefined ? {} : { cause });
}

/** Refuses key files readable by group or others (the private key must not be world-readable). */
async function checkPrivate(path: string): Promise<void> {
  const st = await stat(path);
  if ((st.mode & 0o077) !== 0)
    throw keysError(path, `permissions ${(st.mode & 0o777).toString(8)} are too open (chmod 600)`);
}

async function importPrivate(k: StoredKey, alg: string, path: string): Promise<LoadedKey> {
  try {
    const key = await importJWK(k.jwk, alg);
    if (key instanceof Uint8Array) throw new Error('not an asymmetric key');
    const publicJwk = publicJwkOf(k.jwk);
    if ((await calculateJwkThumbprint(publicJwk)) !== k.kid)
      throw new Error(`kid ${k.kid} is not the key's thumbprint`);
    return {
      kid: k.kid,
      key,
      publicJwk,
      retiresAtMs: k.retiresAt === undefined ? Infinity : Date.parse(k.retiresAt),
    };
  } catch (err) {
    throw keysError(path, `key ${k.kid}: ${(err as Error).message}`, err);
  }
}

function parseKeyFile(text: string, path: string): ServerKeyFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw keysError(path, 'not JSON', err);
  }
  const f = raw as Partial<ServerKeyFile> | null;
  if (
    f?.version !== 1 ||
    !Array.isArray(f.encryption) ||
    f.encryption.length === 0 ||
    typeof f.signing !== 'object'
  ) {
    throw keysError(path, 'expected {version:1, encryption:[...], signing:{...}}');
  }
  return f as ServerKeyFile;
}

async function writeKeyFile(path: string, file: ServerKeyFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
}

/** Reads the server key file, creating it (0600, folder 0700) on first start. */
export async function loadOrCreateServerKeyFile(
  path: string,
): Promise<{ file: ServerKeyFile; created: boolean }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw keysError(path, `unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
    const file: ServerKeyFile = {
      version: 1,
      encryption: [await newKey('enc')],
      signing: await newKey('sig'),
    };
    // Workers of one gateway start at once: exactly one creates the file (link fails on an existing
    // name), the others use its keys instead of replacing them with their own.
    const temp = `${path}.creating-${process.pid}-${randomBytes(6).toString('hex')}`;
    try {
      await writeKeyFile(temp, file);
      try {
        await link(temp, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        await checkPrivate(path);
        return { file: parseKeyFile(await readFile(path, 'utf8'), path), created: false };
      }
    } finally {
      await unlink(temp).catch(() => undefined);
    }
    await fsyncDir(dirname(path));
    return { file, created: true };
  }
  await checkPrivate(path);
  return { file: parseKeyFile(text, path), created: false };
}

/** Imports a key file into CryptoKeys. */
export async function loadKeyRing(file: ServerKeyFile, path: string): Promise<ServerKeyRing> {
  const encryption = new Map<string, LoadedKey>();
  for (const k of file.encryption) encryption.set(k.kid, await importPrivate(k, 'ECDH-ES', path));
  const current = encryption.get(file.encryption[0]!.kid)!;
  return { current, encryption, signing: await importPrivate(file.signing, 'EdDSA', path) };
}

/** Reads (or creates) and imports the server keys. */
export async function openServerKeys(path: string): Promise<{ ring: ServerKeyRing; created: boolean }> {
  const { file, created } = await loadOrCreateServerKeyFile(path);
  return { ring: await loadKeyRing(file, path), created };
}

/**
 * Adds a new current encryption key; every older key stays valid for `overlapMs` more (keys already past
 * their end are dropped). Returns the new public info.
 */
export async function rotateServerKey(
  path: string,
  overlapMs: number,
  nowMs = Date.now(),
): Promise<ServerPublicInfo> {
  const { file } = await loadOrCreateServerKeyFile(path);
  const retiresAt = new Date(nowMs + overlapMs).toISOString();
  const older = file.encryption
    .filter((k) => k.retiresAt === undefined || Date.parse(k.retiresAt) > nowMs)
    .map((k) => ({
      ...k,
      retiresAt:
        k.retiresAt !== undefined && Date.parse(k.retiresAt) < nowMs + overlapMs ? k.retiresAt : retiresAt,
    }));
  const next: ServerKeyFile = {
    version: 1,
    encryption: [await newKey('enc'), ...older],
    signing: file.signing,
  };
  await writeKeyFile(path, next);
  return publicInfo(next);
}

export function publicInfo(file: ServerKeyFile): ServerPublicInfo {
  const cur = file.encryption[0]!;
  return {
    kid: cur.kid,
    jwk: publicJwkOf(cur.jwk),
    signing: { kid: file.signing.kid, jwk: publicJwkOf(file.signing.jwk) },
  };
}

// ---- client keys -----------------------------------------------------------------------------------

export interface ClientKeyFile {
  readonly kid: string;
  readonly name?: string;
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
}

/** Generates a client Ed25519 key pair (on the client). */
export async function generateClientKey(name?: string): Promise<ClientKeyFile> {
  const k = await newKey('sig');
  return {
    kid: k.kid,
    ...(name === undefined ? {} : { name }),
    privateJwk: k.jwk,
    publicJwk: publicJwkOf(k.jwk),
  };
}

/** Writes a client key file 0600 (atomically). */
export async function writeClientKeyFile(path: string, key: ClientKeyFile): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(key, null, 2)}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
}

/** Reads a client key file (refused unless 0600 or stricter) and imports the private key. */
export async function readClientKeyFile(
  path: string,
): Promise<{ kid: string; key: CryptoKey; file: ClientKeyFile }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw keysError(path, `unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
  }
  await checkPrivate(path);
  let file: ClientKeyFile;
  try {
    file = JSON.parse(text) as ClientKeyFile;
  } catch (err) {
    throw keysError(path, 'not JSON', err);
  }
  const loaded = await importPrivate({ kid: file.kid, created: '', jwk: file.privateJwk }, 'EdDSA', path);
  return { kid: loaded.kid, key: loaded.key, file };
}

/** Imports a public JWK (server X25519 or Ed25519) for a client. */
export async function importPublic(jwk: JWK, alg: 'ECDH-ES' | 'EdDSA'): Promise<CryptoKey> {
  const key = await importJWK(publicJwkOf(jwk), alg);
  if (key instanceof Uint8Array) throw new GatewayError('SEALED_KEYS_INVALID', 'expected a public OKP key');
  return key;
}

export { calculateJwkThumbprint };
