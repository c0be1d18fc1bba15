/**
 * The static authenticator: a file of hashed tokens, reloaded when it changes.
 *
 * File format (UTF-8, one entry per line):
 *
 *     # comment lines and blank lines are ignored
 *     sha256:<64 hex digits of SHA-256(token)> [user]   # a trailing comment is allowed too
 *
 * The user is one word (no spaces, not starting with `#`, at most 256 characters); it is what the monitor
 * shows. `gatehouse tokens hash <token> [--user NAME]` prints a line to append. The same hash twice is an
 * error. At start a bad file fails the start with RELAY_TOKEN_FILE_INVALID naming every bad line; at a
 * reload a bad or missing file is logged as a warning and the previous table stays in force.
 *
 * A lookup hashes the presented token and finds the digest in a map: O(1) whatever the file's size. The
 * map is keyed by SHA-256 digests, which a client cannot steer, so lookup timing tells it nothing about
 * stored tokens; the final comparison is constant-time all the same.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { GatewayError } from '../../core/errors.ts';
import type { AuthenticatorConfig } from '../config.ts';
import type { Authenticator, AuthResult } from './types.ts';
import type { AuthenticatorDeps } from './index.ts';

/** Largest token file we read, bytes (one byte more is RELAY_TOKEN_FILE_TOO_LARGE). */
export const TOKEN_FILE_MAX_BYTES = 8 * 1024 * 1024;
/** Longest user name on a token line. */
export const TOKEN_USER_MAX_CHARS = 256;
/** Coalesces the burst of fs.watch events one save produces, ms. */
const WATCH_DEBOUNCE_MS = 50;

export interface TokenEntry {
  /** SHA-256 of the token, 32 bytes. */
  readonly digest: Buffer;
  readonly user?: string;
  /** 1-based line number in the file (for messages). */
  readonly line: number;
}

const HASH_RE = /^sha256:([0-9a-fA-F]{64})$/;

function digestOf(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * The token-file line for `token` (and optional `user`): `sha256:<hex>[ user]`.
 * @throws Error when `user` would not parse back (spaces, leading `#`, too long) or `token` is empty.
 */
export function hashToken(token: string, user?: string): string {
  if (token === '') throw new Error('the token is empty');
  const hex = digestOf(token).toString('hex');
  if (user === undefined) return `sha256:${hex}`;
  const problem = userProblem(user);
  if (problem !== undefined) throw new Error(`invalid user name: ${problem}`);
  return `sha256:${hex} ${user}`;
}

function userProblem(user: string): string | undefined {
  if (user === '') return 'empty';
  if (/\s/.test(user)) return 'contains whitespace';
  if (user.startsWith('#')) return "starts with '#'";
  if (user.length > TOKEN_USER_MAX_CHARS) return `longer than ${TOKEN_USER_MAX_CHARS} characters`;
  return undefined;
}

/**
 * Parses a token file's text. Every bad line is reported, by number, in one error.
 * @throws GatewayError RELAY_TOKEN_FILE_INVALID
 */
export function parseTokenFile(text: string, source: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  const problems: string[] = [];
  const seen = new Map<string, number>();
  const rows = text.split(/\r?\n/);
  rows.forEach((raw, i) => {
    const line = i + 1;
    // A comment starts at a '#' that begins the line or follows whitespace.
    const content = raw.replace(/(^|\s)#.*$/, '').trim();
    if (content === '') return;
    const fields = content.split(/\s+/);
    const m = HASH_RE.exec(fields[0]!);
    if (m === null) {
      problems.push(`line ${line}: expected sha256:<64 hex digits>`);
      return;
    }
    if (fields.length > 2) {
      problems.push(`line ${line}: expected at most one user name after the hash`);
      return;
    }
    const user = fields[1];
    if (user !== undefined && user.length > TOKEN_USER_MAX_CHARS) {
      problems.push(`line ${line}: user name longer than ${TOKEN_USER_MAX_CHARS} characters`);
      return;
    }
    const hex = m[1]!.toLowerCase();
    const earlier = seen.get(hex);
    if (earlier !== undefined) {
      problems.push(`line ${line}: same token hash as line ${earlier}`);
      return;
    }
    seen.set(hex, line);
    entries.push(
      user === undefined
        ? { digest: Buffer.from(hex, 'hex'), line }
        : { digest: Buffer.from(hex, 'hex'), user, line },
    );
  });
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    if (problems.length > shown.length) shown.push(`… and ${problems.length - shown.length} more`);
    throw new GatewayError(
      'RELAY_TOKEN_FILE_INVALID',
      `${source}: invalid token file:\n  ${shown.join('\n  ')}`,
      {
        details: { file: source, problems: problems.length },
      },
    );
  }
  return entries;
}

/** A token table indexed by the hex SHA-256 digest of each token. */
export type TokenIndex = ReadonlyMap<string, TokenEntry>;

/** Indexes parsed entries for lookup (digests are unique: the parser refuses duplicates). */
export function indexTokens(entries: readonly TokenEntry[]): TokenIndex {
  return new Map(entries.map((e) => [e.digest.toString('hex'), e]));
}

/** Looks `token` up: the entry whose digest matches, or undefined. */
export function lookupToken(index: TokenIndex, token: string): TokenEntry | undefined {
  const digest = digestOf(token);
  const entry = index.get(digest.toString('hex'));
  return entry !== undefined && timingSafeEqual(entry.digest, digest) ? entry : undefined;
}

/**
 * Reads the file with a size bound.
 * @throws GatewayError RELAY_TOKEN_FILE_TOO_LARGE, RELAY_TOKEN_FILE_INVALID (unreadable or not UTF-8)
 */
export async function readTokenFile(path: string): Promise<{ text: string; fingerprint: string }> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new GatewayError(
      'RELAY_TOKEN_FILE_INVALID',
      `${path}: cannot read the token file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      {
        cause: err,
      },
    );
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > TOKEN_FILE_MAX_BYTES) {
        throw new GatewayError(
          'RELAY_TOKEN_FILE_TOO_LARGE',
          `${path}: the token file is larger than ${TOKEN_FILE_MAX_BYTES} bytes`,
        );
      }
      chunks.push(chunk.subarray(0, bytesRead));
    }
    const bytes = Buffer.concat(chunks, total);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new GatewayError('RELAY_TOKEN_FILE_INVALID', `${path}: the token file is not valid UTF-8`);
    }
    return { text, fingerprint: createHash('sha256').update(bytes).digest('hex') };
  } finally {
    await handle.close();
  }
}

export interface StaticAuthenticator extends Authenticator {
  /** Number of entries in force. */
  readonly size: number;
  /**
   * Re-reads the file now (SIGHUP). Resolves true when a new table took effect, false when the file is
   * unchanged; rejects with the file's problem (RELAY_TOKEN_FILE_INVALID, RELAY_TOKEN_FILE_TOO_LARGE)
   * when the file on disk cannot be used, the previous table staying in force.
   */
  reload(): Promise<boolean>;
  /** Stops the watcher and the poll. */
  close(): Promise<void>;
}

/**
 * Loads the token file and starts watching it (fs.watch on its directory plus a stat poll every
 * `reloadCheckMs`; `options.watch: false` leaves only the poll, for file systems without notifications).
 * @throws GatewayError RELAY_TOKEN_FILE_INVALID or RELAY_TOKEN_FILE_TOO_LARGE when the file is bad at start.
 */
export async function createStaticAuthenticator(
  config: Extract<AuthenticatorConfig, { kind: 'static' }>,
  deps: AuthenticatorDeps,
  options: { readonly watch?: boolean } = {},
): Promise<StaticAuthenticator> {
  const path = resolve(deps.baseDir, config.file);
  const log = deps.log.child({ authenticator: 'static', file: path });
  const first = await readTokenFile(path);
  let entries = parseTokenFile(first.text, path);
  let index = indexTokens(entries);
  let fingerprint = first.fingerprint;
  let statKey = await statKeyOf(path);
  log.info({ entries: entries.length }, 'token file loaded');

  let closed = false;
  let running: Promise<boolean> | undefined;
  let again = false;
  let debounce: NodeJS.Timeout | undefined;
  /** Why the file on disk is not the table in force (kept while the file stays bad), else undefined. */
  let problem: Error | undefined;

  async function reloadOnce(): Promise<boolean> {
    statKey = await statKeyOf(path);
    let read;
    try {
      read = await readTokenFile(path);
    } catch (err) {
      if (fingerprint !== 'unreadable')
        log.warn(
          { code: (err as GatewayError).code, reason: (err as Error).message },
          'token file not reloaded; keeping the previous table',
        );
      fingerprint = 'unreadable';
      problem = err as Error;
      return false;
    }
    if (read.fingerprint === fingerprint) return false;
    fingerprint = read.fingerprint;
    try {
      entries = parseTokenFile(read.text, path);
      index = indexTokens(entries);
    } catch (err) {
      log.warn(
        { code: (err as GatewayError).code, reason: (err as Error).message },
        'token file not reloaded; keeping the previous table',
      );
      problem = err as Error;
      return false;
    }
    problem = undefined;
    log.info({ entries: entries.length }, 'token file reloaded');
    return true;
  }

  /** Serializes reloads (the watchers' and SIGHUP's); a change during a reload triggers one more. */
  function refresh(): Promise<boolean> {
    if (closed) return Promise.resolve(false);
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      let changed = false;
      do {
        again = false;
        changed = (await reloadOnce()) || changed;
      } while (again && !closed);
      return changed;
    })().finally(() => {
      running = undefined;
    });
    return running;
  }

  const schedule = () => {
    if (closed) return;
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      refresh().catch((err: unknown) => log.error({ err }, 'token file reload failed; keeping the previous table'));
    }, WATCH_DEBOUNCE_MS);
  };

  // Watch the directory, not the file: editors and `mv` replace the file's inode on save.
  let watcher: FSWatcher | undefined;
  if (options.watch !== false) {
    try {
      const name = basename(path);
      watcher = watch(dirname(path), { persistent: false }, (_event, changed) => {
        if (changed === null || changed === name) schedule();
      });
      watcher.on('error', (err) => {
        log.warn({ reason: err.message }, 'fs.watch on the token file failed; polling only');
        watcher?.close();
        watcher = undefined;
      });
    } catch (err) {
      log.warn({ reason: (err as Error).message }, 'fs.watch unavailable for the token file; polling only');
    }
  }

  // Fallback for file systems where fs.watch says nothing (NFS, some containers).
  const poll = setInterval(() => {
    statKeyOf(path).then(
      (key) => {
        if (key !== statKey) schedule();
      },
      (err: unknown) => log.warn({ reason: (err as Error).message }, 'token file not checked'),
    );
  }, config.reloadCheckMs);
  poll.unref();

  return {
    kind: 'static',
    get size() {
      return entries.length;
    },
    async reload() {
      const changed = await refresh();
      if (problem !== undefined) throw problem;
      return changed;
    },
    async prepareReload() {
      await running?.catch(() => undefined);
      const base = fingerprint;
      const read = await readTokenFile(path);
      if (read.fingerprint === base && problem === undefined) return () => undefined;
      const nextEntries = parseTokenFile(read.text, path);
      const nextIndex = indexTokens(nextEntries);
      return () => {
        // A watcher applied a newer file meanwhile: that one stays.
        if (fingerprint !== base) return;
        entries = nextEntries;
        index = nextIndex;
        fingerprint = read.fingerprint;
        problem = undefined;
        log.info({ entries: entries.length }, 'token file reloaded');
      };
    },
    authenticate(request): Promise<AuthResult> {
      const entry = lookupToken(index, request.token);
      if (entry === undefined) return Promise.resolve({ error: 'AuthenticationErrorAuthenticationFailed' });
      return Promise.resolve(
        entry.user === undefined
          ? { error: 'AuthenticationErrorNoError' }
          : { error: 'AuthenticationErrorNoError', user: entry.user },
      );
    },
    async close() {
      closed = true;
      clearInterval(poll);
      clearTimeout(debounce);
      watcher?.close();
      watcher = undefined;
      await running;
    },
  };
}

/** Changes whenever the file is replaced, resized or touched; 'missing' when it is gone. */
async function statKeyOf(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch {
    return 'missing';
  }
}
