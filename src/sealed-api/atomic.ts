/**
 * Crash-safe file replacement, and the in-process writer queue (the cross-process lock is file-lock.ts).
 *
 * `writeFileAtomic` writes a temp file next to the target (same filesystem), fsyncs it, renames it over
 * the target and fsyncs the directory, so a crash at any instant leaves either the old or the new content.
 * A symlinked target is resolved and the link kept; mode and owner of an existing target are kept.
 * Temp files are named `.<base>.gh-tmp-<pid>-<random>`; `removeStrayTemps` deletes those of dead writers at start.
 */
import { open, rename, realpath, stat, unlink, readdir, chown, lstat, readlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';

/** Marks our temp files (`.<base>.gh-tmp-…`): removeStrayTemps deletes them. */
export const TEMP_MARK = '.gh-tmp-';

/** Resolves symlinks of `path` (the target may not exist yet: its folder is resolved instead). */
export async function resolveTarget(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    // A dangling symlink: follow it one level so the link stays a link.
    try {
      const st = await lstat(path);
      if (st.isSymbolicLink()) {
        return resolve(dirname(path), await readlink(path));
      }
    } catch {
      // not there at all
    }
    return join(await realpath(dirname(path)), basename(path));
  }
}

export interface AtomicWriteOptions {
  /** Mode for a new file (an existing file keeps its mode). */
  readonly mode?: number;
  /** Called after the temp file is complete and synced, before the rename (tests use it to crash there). */
  readonly beforeRename?: () => void | Promise<void>;
}

/** Replaces `path` with `data` atomically and durably. Returns the real path written. */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<string> {
  const target = await resolveTarget(path);
  const dir = dirname(target);
  let mode = options.mode ?? 0o600;
  let owner: { uid: number; gid: number } | undefined;
  try {
    const st = await stat(target);
    mode = st.mode & 0o7777;
    owner = { uid: st.uid, gid: st.gid };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const temp = join(dir, `.${basename(target)}${TEMP_MARK}${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await open(temp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // the umask may have narrowed it
    if (owner !== undefined && (owner.uid !== process.getuid?.() || owner.gid !== process.getgid?.())) {
      try {
        await fh.chown(owner.uid, owner.gid);
      } catch {
        // Not permitted (not root): the file gets our owner; mode is still kept.
      }
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await options.beforeRename?.();
    await rename(temp, target);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
  return target;
}

/**
 * Creates `dir/name` with `data` durably, never following a symlink and never showing a partial file
 * under `name`: a temp file `.<name>.gh-tmp-…` in `dir` (O_EXCL, `mode`), written, fsynced, renamed to
 * `name`, then `dir` fsynced. On failure the temp file is removed and the error thrown.
 */
export async function writeNewFileDurably(
  dir: string,
  name: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  const temp = join(dir, `.${name}${TEMP_MARK}${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await open(temp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  try {
    await fh.close();
    await rename(temp, join(dir, name));
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
}

/**
 * True when the temp file `name` (`….gh-tmp-<pid>-…`) may belong to a write in progress: its writer is
 * alive. Another gateway process (or a `serve --workers` sibling) managing the same file writes such
 * files; removing one at our start made its write fail. A temp file of a reused pid waits for a later start.
 */
function writerAlive(name: string): boolean {
  const m = /\.gh-tmp-(\d+)-/.exec(name);
  if (m === null) return false;
  const pid = Number(m[1]);
  // Our own pid at start is a previous process's (pid 1 in a container restarted after a crash).
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Deletes our temp files (`.<x>.gh-tmp-…`) of dead writers directly in `dir`. Returns how many were removed. */
export async function removeTempsIn(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!name.startsWith('.') || !name.includes(TEMP_MARK) || writerAlive(name)) continue;
    try {
      await unlink(join(dir, name));
      removed++;
    } catch {
      // raced with someone else's cleanup
    }
  }
  return removed;
}

/** fsync of a directory makes a rename in it durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Deletes temp files a dead writer left next to `path` (after a crash). Returns how many were removed. */
export async function removeStrayTemps(path: string): Promise<number> {
  let target: string;
  try {
    target = await resolveTarget(path);
  } catch {
    return 0;
  }
  const prefix = `.${basename(target)}${TEMP_MARK}`;
  let removed = 0;
  let names: string[];
  try {
    names = await readdir(dirname(target));
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || writerAlive(name)) continue;
    try {
      await unlink(join(dirname(target), name));
      removed++;
    } catch {
      // raced with someone else's cleanup
    }
  }
  return removed;
}

/** Keeps the owner of a copied file when we can (root); otherwise a no-op. */
export async function tryChown(path: string, uid: number, gid: number): Promise<void> {
  try {
    await chown(path, uid, gid);
  } catch {
    // not permitted
  }
}

/** One writer at a time per key (a promise chain per key; the map holds only keys with work queued). */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}
