/**
 * The client registry: who may call, with which key, until when, and what.
 *
 * Stored as JSON `{version:1, clients:[{kid, name, jwk, created, expires?, revoked?, allow, files}]}`
 * (0600, written atomically). The server reloads it on change (fs.watch on the folder, since atomic
 * writes replace the file, plus a poll) without a restart; a broken file is logged and the previous
 * registry stays in force. Lookups are by `kid` only and need no crypto: an unknown, revoked or expired
 * client costs a map lookup.
 */
import { readFile, stat, mkdir, chmod } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { importJWK, calculateJwkThumbprint, type CryptoKey, type JWK } from 'jose';
import { z } from 'zod';
import { GatewayError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { writeFileAtomic } from './atomic.ts';

const entrySchema = z.strictObject({
  kid: z.string().min(1).max(128),
  name: z.string().min(1).max(128),
  jwk: z.looseObject({
    kty: z.literal('OKP'),
    crv: z.literal('Ed25519'),
    x: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  }),
  created: z.iso.datetime({ offset: true }),
  expires: z.iso.datetime({ offset: true }).optional(),
  revoked: z.iso.datetime({ offset: true }).optional(),
  /** Actions: exact names, `prefix.*`, or `*`. */
  allow: z.array(z.string().min(1)).default([]),
  /** Logical file names, or `*`. */
  files: z.array(z.string().min(1)).default([]),
});
export type ClientEntry = z.output<typeof entrySchema>;

const fileSchema = z.strictObject({ version: z.literal(1), clients: z.array(entrySchema) });
export type RegistryFile = z.output<typeof fileSchema>;

/** A registered client as the server holds it. */
export interface Client {
  readonly entry: ClientEntry;
  readonly expiresMs: number;
  readonly revoked: boolean;
  /** Imported on first use and cached (only for clients that passed the cheap checks). */
  key(): Promise<CryptoKey>;
}

export function matchesAllow(patterns: readonly string[], name: string): boolean {
  for (const p of patterns) {
    if (p === '*' || p === name) return true;
    if (p.endsWith('.*') && name.startsWith(p.slice(0, -1))) return true;
  }
  return false;
}

/** Parses and checks a registry document (kids are thumbprints, kids and names unique). */
export async function parseRegistry(text: string, source: string): Promise<RegistryFile> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new GatewayError('SEALED_REGISTRY_INVALID', `${source}: not JSON`, { cause: err });
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new GatewayError(
      'SEALED_REGISTRY_INVALID',
      `${source}: ${first?.path.join('.') ?? ''}: ${first?.message ?? 'invalid'}`,
    );
  }
  const kids = new Set<string>();
  const names = new Set<string>();
  for (const c of parsed.data.clients) {
    if (kids.has(c.kid))
      throw new GatewayError('SEALED_REGISTRY_INVALID', `${source}: duplicate kid ${c.kid}`);
    if (names.has(c.name))
      throw new GatewayError('SEALED_REGISTRY_INVALID', `${source}: duplicate name ${c.name}`);
    kids.add(c.kid);
    names.add(c.name);
    if ((await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: c.jwk.x })) !== c.kid) {
      throw new GatewayError(
        'SEALED_REGISTRY_INVALID',
        `${source}: client ${c.name}: kid is not the thumbprint of its key`,
      );
    }
  }
  return parsed.data;
}

/** Reads a registry file; a missing file is an empty registry. */
export async function readRegistryFile(path: string): Promise<RegistryFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, clients: [] };
    throw new GatewayError(
      'SEALED_REGISTRY_INVALID',
      `${path}: unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      { cause: err },
    );
  }
  // Whoever can write the registry can register a key with allow ["*"]: refuse group/world-writable files.
  const st = await stat(path);
  if ((st.mode & 0o022) !== 0)
    throw new GatewayError(
      'SEALED_REGISTRY_INVALID',
      `${path}: permissions ${(st.mode & 0o777).toString(8)} let others write it (chmod 600)`,
    );
  return parseRegistry(text, path);
}

/** Writes the registry atomically with mode 0600. */
export async function writeRegistryFile(path: string, file: RegistryFile): Promise<void> {
  await parseRegistry(JSON.stringify(file), path);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
}

/** Edits the registry file: read → change → validate → atomic write. */
export async function updateRegistryFile(
  path: string,
  change: (file: RegistryFile) => RegistryFile,
): Promise<RegistryFile> {
  const next = change(await readRegistryFile(path));
  await writeRegistryFile(path, next);
  return next;
}

export interface NewClient {
  readonly name: string;
  readonly jwk: JWK;
  readonly allow: readonly string[];
  readonly files: readonly string[];
  readonly expires?: string;
}

/** Builds a registry entry for a public key (kid = thumbprint). */
export async function newEntry(c: NewClient, now = new Date()): Promise<ClientEntry> {
  if (c.jwk.kty !== 'OKP' || c.jwk.crv !== 'Ed25519' || typeof c.jwk.x !== 'string') {
    throw new GatewayError(
      'SEALED_KEYS_INVALID',
      'a client key must be an Ed25519 public JWK (kty OKP, crv Ed25519)',
    );
  }
  if (c.jwk.d !== undefined)
    throw new GatewayError('SEALED_KEYS_INVALID', 'refusing a private key: give the public JWK');
  const jwk = { kty: 'OKP' as const, crv: 'Ed25519' as const, x: c.jwk.x };
  const entry: ClientEntry = {
    kid: await calculateJwkThumbprint(jwk),
    name: c.name,
    jwk,
    created: now.toISOString(),
    allow: [...c.allow],
    files: [...c.files],
    ...(c.expires === undefined ? {} : { expires: new Date(c.expires).toISOString() }),
  };
  return entry;
}

async function importClientKey(jwk: JWK): Promise<CryptoKey> {
  const key = await importJWK(jwk, 'EdDSA');
  if (key instanceof Uint8Array)
    throw new GatewayError('SEALED_REGISTRY_INVALID', 'client key is not an OKP key');
  return key;
}

export type Lookup = { ok: true; client: Client } | { ok: false; reason: string };

/** The live registry of the server. */
export class ClientRegistry {
  #byKid = new Map<string, Client>();
  #sig = '';
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #reloading: Promise<void> | undefined;
  #again = false;
  /** The document in force. */
  #current: RegistryFile = { version: 1, clients: [] };
  readonly #listeners = new Set<(file: RegistryFile) => void>();

  constructor(
    readonly path: string,
    private readonly log: Logger,
    private readonly reloadCheckMs: number,
  ) {}

  get size(): number {
    return this.#byKid.size;
  }

  /** The registry document in force (registry sync across nodes). */
  get current(): RegistryFile {
    return this.#current;
  }

  /** Calls `listener` after every load that changed the registry (not the first). @returns unsubscribe */
  onChange(listener: (file: RegistryFile) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Loads the file (creating an empty 0600 one if missing) and starts watching it. */
  async start(): Promise<void> {
    try {
      await stat(this.path);
    } catch {
      await writeRegistryFile(this.path, { version: 1, clients: [] });
    }
    await this.#load(true);
    // reload() logs its own failures and never rejects; the catch is the last resort if that changes.
    const reloadLater = () => {
      this.reload().catch((err: unknown) => this.log.error({ err, file: this.path }, 'client registry reload failed'));
    };
    try {
      this.#watcher = watch(dirname(this.path), { persistent: false }, (_e, name) => {
        if (name === null || name === basename(this.path)) reloadLater();
      });
      this.#watcher.on('error', () => undefined);
    } catch {
      // fs.watch unavailable: the poll still works
    }
    this.#poll = setInterval(reloadLater, this.reloadCheckMs);
    this.#poll.unref();
  }

  stop(): void {
    this.#watcher?.close();
    if (this.#poll !== undefined) clearInterval(this.#poll);
  }

  /** Re-reads the file if it changed (coalesced); resolves when the registry is current. */
  reload(): Promise<void> {
    if (this.#reloading !== undefined) {
      this.#again = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      do {
        this.#again = false;
        try {
          await this.#load(false);
        } catch (err) {
          this.log.error(
            { err, code: (err as GatewayError).code, file: this.path },
            'client registry not reloaded; the previous one stays in force',
          );
        }
      } while (this.#again);
    })().finally(() => (this.#reloading = undefined));
    return this.#reloading;
  }

  async #load(first: boolean): Promise<void> {
    let sig: string;
    try {
      const st = await stat(this.path);
      sig = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch {
      sig = 'missing';
    }
    if (!first && sig === this.#sig) return;
    const file = await readRegistryFile(this.path);
    const next = new Map<string, Client>();
    for (const entry of file.clients) {
      const old = this.#byKid.get(entry.kid);
      let cached: Promise<CryptoKey> | undefined =
        old !== undefined && old.entry.jwk.x === entry.jwk.x ? old.key() : undefined;
      next.set(entry.kid, {
        entry,
        expiresMs: entry.expires === undefined ? Infinity : Date.parse(entry.expires),
        revoked: entry.revoked !== undefined,
        key: () => (cached ??= importClientKey(entry.jwk)),
      });
    }
    this.#byKid = next;
    this.#sig = sig;
    this.#current = file;
    this.log.info(
      { file: this.path, clients: next.size },
      first ? 'client registry loaded' : 'client registry reloaded',
    );
    if (!first) for (const fn of this.#listeners) fn(file);
  }

  /** Step 2 of the checks: a registered client that is neither revoked nor expired (no crypto). */
  lookup(kid: string, nowMs: number): Lookup {
    const c = this.#byKid.get(kid);
    if (c === undefined) return { ok: false, reason: 'unknown client' };
    if (c.revoked) return { ok: false, reason: `client ${c.entry.name} revoked` };
    if (nowMs >= c.expiresMs) return { ok: false, reason: `client ${c.entry.name} expired` };
    return { ok: true, client: c };
  }
}
