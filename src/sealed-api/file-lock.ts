/**
 * The cross-process writer lock of a managed file: a lock file `.<base>.gh-lock` next to the target.
 *
 * The lock file names its owner so that a lock left by a dead process can be told apart from a live one,
 * also after pid reuse: `{v:1, pid, start, boot, host, nonce}` where `start` is the process start time
 * from /proc/<pid>/stat (clock ticks since boot) and `boot` the kernel's boot id. The owner is alive only
 * when it is on this host, this boot, and the process with that pid started at that tick (and is not a
 * zombie). A lock is created whole (written to a temp file, then hard-linked into place, which fails when
 * the lock exists), so a lock file is never seen empty or half-written by us; an empty, unreadable or
 * old-format (bare pid) lock is taken over once it is older than `LEGACY_GRACE_MS`. Where the owner cannot
 * be checked (another host, no /proc) a lock older than `staleMs` is taken over.
 *
 * Not a kernel lock: it is released by the holder (or taken over as above), not by the kernel. Within one
 * process, serialise with KeyedMutex (atomic.ts) first.
 */
import { constants } from 'node:fs';
import { link, lstat, open, readFile, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { resolveTarget, TEMP_MARK } from './atomic.ts';

const LOCK_MARK = '.gh-lock';
/** How long a lock file that is not in our format (empty, torn, a bare pid) is respected. */
export const LEGACY_GRACE_MS = 1000;

interface Owner {
  readonly v: 1;
  readonly pid: number;
  readonly start: string | null;
  readonly boot: string | null;
  readonly host: string;
  readonly nonce: string;
}

let bootId: Promise<string | null> | undefined;

function readBootId(): Promise<string | null> {
  bootId ??= readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(
    (t) => t.trim(),
    () => null,
  );
  return bootId;
}

/**
 * Start time (field 22) and state (field 3) of a process from /proc/<pid>/stat; null when it does not
 * exist, undefined when /proc cannot tell (not Linux).
 */
async function procStat(pid: number): Promise<{ start: string; state: string } | null | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      try {
        await lstat('/proc/self/stat');
        return null;
      } catch {
        return undefined;
      }
    }
    return undefined;
  }
  // The command name (field 2) is in parentheses and may contain spaces and ')': split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const start = fields[19];
  if (state === undefined || start === undefined) return undefined;
  return { start, state };
}

async function ownerOf(pid: number): Promise<Owner> {
  const st = await procStat(pid);
  return {
    v: 1,
    pid,
    start: st?.start ?? null,
    boot: await readBootId(),
    host: hostname(),
    nonce: randomBytes(9).toString('base64url'),
  };
}

function parseOwner(text: string): Owner | undefined {
  try {
    const o = JSON.parse(text) as Partial<Owner> | null;
    if (
      o === null ||
      typeof o !== 'object' ||
      o.v !== 1 ||
      typeof o.pid !== 'number' ||
      !Number.isSafeInteger(o.pid) ||
      o.pid <= 0 ||
      typeof o.host !== 'string' ||
      typeof o.nonce !== 'string' ||
      (o.start !== null && typeof o.start !== 'string') ||
      (o.boot !== null && typeof o.boot !== 'string')
    )
      return undefined;
    return o as Owner;
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** 'dead' (take over), 'alive' (wait) or 'unknown' (wait up to staleMs). */
async function ownerState(o: Owner): Promise<'dead' | 'alive' | 'unknown'> {
  if (o.host !== hostname()) return 'unknown';
  const boot = await readBootId();
  if (boot !== null && o.boot !== null && boot !== o.boot) return 'dead';
  const st = await procStat(o.pid);
  if (st === null) return 'dead';
  if (st === undefined || o.start === null) return pidAlive(o.pid) ? 'unknown' : 'dead';
  if (st.start !== o.start || st.state === 'Z' || st.state === 'X') return 'dead';
  return 'alive';
}

/** What was found at the lock path: its text and identity (to be sure we break the lock we judged). */
interface Seen {
  readonly text: string;
  readonly ino: number;
  readonly mtimeMs: number;
}

/**
 * Reads what is at the lock path; undefined when nothing is. Anything we never write there (a symlink,
 * a FIFO, a directory, a device) is seen with empty text, so it is taken over like a torn lock: it is
 * never followed nor opened in a way that blocks (a FIFO without writer would hold a pool thread for ever).
 */
async function look(lock: string): Promise<Seen | undefined> {
  let fh;
  try {
    fh = await open(
      lock,
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY,
    );
  } catch {
    return foreign(lock);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { text: '', ino: st.ino, mtimeMs: st.mtimeMs };
    // A lock file is tiny; anything large is not ours (read only a bounded prefix).
    const buf = Buffer.alloc(Math.min(st.size, 4096));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return { text: buf.subarray(0, bytesRead).toString('utf8'), ino: st.ino, mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
  }
}

/** A lock path that cannot be opened as a file (a symlink, or unreadable): seen by its own metadata. */
async function foreign(lock: string): Promise<Seen | undefined> {
  try {
    const st = await lstat(lock);
    return { text: '', ino: st.ino, mtimeMs: st.mtimeMs };
  } catch {
    return undefined;
  }
}

/** True when the lock we saw may be taken over now. */
async function isStale(seen: Seen, staleMs: number): Promise<boolean> {
  const ageMs = Date.now() - seen.mtimeMs;
  const owner = parseOwner(seen.text);
  if (owner === undefined) return ageMs > LEGACY_GRACE_MS;
  const state = await ownerState(owner);
  if (state === 'dead') return true;
  if (state === 'unknown') return ageMs > staleMs;
  return false;
}

/**
 * Removes the lock we judged stale, and only that one: it is renamed aside first, and put back if what
 * we moved is not what we judged (another process broke it and took the lock in between).
 */
async function breakLock(lock: string, seen: Seen): Promise<void> {
  const aside = `${lock}${TEMP_MARK}stale-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    await rename(lock, aside);
  } catch {
    return; // gone already
  }
  const moved = await look(aside);
  if (moved !== undefined && (moved.ino !== seen.ino || moved.text !== seen.text)) {
    await link(aside, lock).catch(() => undefined);
  }
  await unlink(aside).catch(() => undefined);
}

/** Creates the lock whole; false when it exists. */
async function tryCreate(lock: string, text: string): Promise<boolean> {
  const temp = `${lock}${TEMP_MARK}${process.pid}-${randomBytes(6).toString('hex')}`;
  const fh = await open(temp, 'wx', 0o600);
  try {
    await fh.writeFile(text);
  } finally {
    await fh.close();
  }
  try {
    await link(temp, lock);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/** Error of withFileLock when the wait ran out (`code` 'ELOCKED'). */
export class FileLockedError extends Error {
  readonly code = 'ELOCKED';
}

/**
 * Runs `fn` holding the cross-process writer lock of `path`. Waits up to `waitMs` for a live holder,
 * then throws FileLockedError. Takes over locks of dead owners at once, locks not in our format after
 * LEGACY_GRACE_MS, and locks of owners that cannot be checked after `staleMs` (default 10 min).
 */
export async function withFileLock<T>(
  path: string,
  fn: () => Promise<T>,
  o: { waitMs: number; staleMs?: number },
): Promise<T> {
  const target = await resolveTarget(path);
  const lock = join(dirname(target), `.${basename(target)}${LOCK_MARK}`);
  const me = await ownerOf(process.pid);
  const text = JSON.stringify(me);
  const deadline = Date.now() + o.waitMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (await tryCreate(lock, text)) break;
    const seen = await look(lock);
    if (seen === undefined) continue; // released between our attempts
    const stale = await isStale(seen, o.staleMs ?? 600000);
    if (stale) await breakLock(lock, seen);
    if (Date.now() >= deadline) {
      const holder = parseOwner(seen.text);
      throw new FileLockedError(
        `${target} is locked by ${holder === undefined ? 'an unknown process' : `process ${holder.pid} on ${holder.host}`}`,
      );
    }
    if (!stale) await new Promise((r) => setTimeout(r, delay));
  }
  try {
    return await fn();
  } finally {
    // Release only our own lock (never one that replaced it).
    const now = await look(lock);
    if (now !== undefined && now.text === text) await unlink(lock).catch(() => undefined);
  }
}
