/**
 * Managed config files, addressed by logical name only (a client never supplies a path).
 *
 * Every modification runs under the file's writer lock: read current → ETag check (409) → validate the
 * new content for its format (422) → back up the current content (rotated, 0700 folder / 0600 files,
 * outside the managed folder; written like the live file, with its SHA-256 in its name; a backup that
 * cannot be written fails the action before the live file changes) → atomic write (temp, fsync, rename,
 * fsync dir; mode, owner and symlinks kept) → optional post-write command (argv, no shell). A failed post-write command is reported in the
 * result, not as an error: the write has happened and must not look as if it had not.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, stat, unlink, chmod, realpath } from 'node:fs/promises';
import { dirname, join, relative, resolve, isAbsolute, sep } from 'node:path';
import { z } from 'zod';
import { GatewayError, isGatewayError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { ManagedFileConfig } from '../config.ts';
import { formatOf, FormatError } from '../formats/index.ts';
import { wireGuardHooks } from '../formats/wireguard.ts';
import {
  KeyedMutex,
  removeStrayTemps,
  removeTempsIn,
  resolveTarget,
  writeFileAtomic,
  writeNewFileDurably,
} from '../atomic.ts';
import { FileLockedError, withFileLock } from '../file-lock.ts';
import { defineAction, type Action } from './types.ts';

export const ABSENT_ETAG = '"absent"';
const BACKUP_ID = /^\d{8}T\d{9}Z-\d{6}$/;
const BACKUP_FILE = /^(\d{8}T\d{9}Z-\d{6})(?:\.([A-Za-z0-9_-]{43}))?\.bak$/;

export function etagOf(content: string): string {
  return `"${createHash('sha256').update(content).digest('base64url')}"`;
}

interface Managed {
  readonly name: string;
  readonly config: ManagedFileConfig;
  readonly path: string;
  readonly backupDir: string;
}

export interface FileManagerOptions {
  /** Managed files by logical name. */
  readonly files: ReadonlyMap<string, ManagedFileConfig>;
  readonly baseDir: string;
  readonly backupDir: string;
  readonly maxFileBytes: number;
  /** How long a write waits for another process's lock on the same file. */
  readonly lockWaitMs: number;
  readonly log: Logger;
}

export interface WriteResult {
  readonly etag: string;
  readonly backup: string | null;
  readonly postWrite: { readonly ok: boolean; readonly exitCode: number | null } | null;
}

function isInside(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

export class FileManager {
  readonly #files = new Map<string, Managed>();
  readonly #lock = new KeyedMutex();
  #seq = 0;

  constructor(private readonly o: FileManagerOptions) {
    for (const [name, config] of o.files) {
      this.#files.set(name, {
        name,
        config,
        path: resolve(o.baseDir, config.path),
        backupDir: join(o.backupDir, name),
      });
    }
  }

  names(): string[] {
    return [...this.#files.keys()];
  }

  /** Checks safety (backups outside managed folders), prepares the backup folders, removes stray temp files. */
  async start(): Promise<void> {
    await mkdir(this.o.backupDir, { recursive: true, mode: 0o700 });
    await chmod(this.o.backupDir, 0o700);
    const realBackups = await realpath(this.o.backupDir);
    for (const f of this.#files.values()) {
      const folder = dirname(await resolveTarget(f.path).catch(() => f.path));
      if (isInside(realBackups, folder)) {
        throw new GatewayError(
          'SEALED_CONFIG_UNSAFE',
          `sealedApi: backups (${realBackups}) must be outside the folder of file ${f.name} (${folder})`,
        );
      }
      const removed = (await removeStrayTemps(f.path)) + (await removeTempsIn(f.backupDir));
      if (removed > 0)
        this.o.log.warn({ file: f.name, removed }, 'removed temp files left by an interrupted write');
    }
  }

  #get(name: string): Managed {
    const f = this.#files.get(name);
    if (f === undefined) throw new GatewayError('SEALED_UNKNOWN_FILE', `no managed file named ${name}`);
    return f;
  }

  /**
   * The current content, or undefined when the file does not exist. Only a regular file is read, and at
   * most maxFileBytes + 1 bytes of it: a directory, FIFO or device at the path (or behind its symlink)
   * would fail, block a pool thread for ever (a FIFO without writer) or never end (/dev/zero).
   * @throws GatewayError SEALED_FILE_IO_FAILED, SEALED_LIMIT_FILE
   */
  async #readCurrent(f: Managed): Promise<string | undefined> {
    return (await this.#readCurrentBytes(f))?.toString('utf8');
  }

  /** The current bytes (see #readCurrent). */
  async #readCurrentBytes(f: Managed): Promise<Buffer | undefined> {
    const notRegular = () =>
      new GatewayError(
        'SEALED_FILE_IO_FAILED',
        `file ${f.name} is not a regular file (a directory, FIFO or device); nothing was read or written`,
      );
    const tooLarge = () => new GatewayError('SEALED_LIMIT_FILE', `file ${f.name} is larger than maxFileBytes`);
    let fh;
    try {
      // stat before open: opening a device or a FIFO can block or have effects of its own.
      const st = await stat(f.path);
      if (!st.isFile()) throw notRegular();
      if (st.size > this.o.maxFileBytes) throw tooLarge();
      fh = await open(f.path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
      // The path may have been swapped between stat and open: check what was opened.
      if (!(await fh.stat()).isFile()) throw notRegular();
      const chunks: Buffer[] = [];
      let length = 0;
      for (;;) {
        const chunk = Buffer.allocUnsafe(65536);
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
        if (bytesRead === 0) break;
        chunks.push(chunk.subarray(0, bytesRead));
        length += bytesRead;
        // The file may grow after the stat: never read more than the limit allows.
        if (length > this.o.maxFileBytes) throw tooLarge();
      }
      return Buffer.concat(chunks, length);
    } catch (err) {
      if (isGatewayError(err)) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      this.o.log.error({ err, code: 'SEALED_FILE_IO_FAILED', file: f.name }, 'managed file not readable');
      throw new GatewayError('SEALED_FILE_IO_FAILED', `file ${f.name} could not be read (${code ?? 'error'})`, {
        cause: err,
      });
    } finally {
      await fh?.close();
    }
  }

  async read(name: string): Promise<{ content: string; etag: string; format: string; exists: boolean }> {
    const f = this.#get(name);
    const content = await this.#readCurrent(f);
    return {
      content: content ?? '',
      etag: content === undefined ? ABSENT_ETAG : etagOf(content),
      format: f.config.format,
      exists: content !== undefined,
    };
  }

  /** Runs `produce(current)` under the writer lock and writes its result (validate → backup → write → hook). */
  async #modify(
    name: string,
    ifMatch: string,
    produce: (
      current: string | undefined,
      f: Managed,
      bytes: Buffer | undefined,
    ) => Promise<string | Buffer> | string | Buffer,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<WriteResult> {
    const f = this.#get(name);
    // The runner answers 504 when actionMs runs out (and aborts on shutdown) while the action may still be
    // queued for the locks: a write the client was told did not finish must not happen later.
    const cancelled = () => {
      if (signal?.aborted === true)
        throw new GatewayError('SEALED_ACTION_TIMEOUT', `file ${name}: cancelled before anything was changed`);
    };
    return this.#lock.run(f.name, () =>
      this.#locked(f, async () => {
        cancelled();
        const bytes = await this.#readCurrentBytes(f);
        const current = bytes?.toString('utf8');
        const etag = current === undefined ? ABSENT_ETAG : etagOf(current);
        if (ifMatch !== etag)
          throw new GatewayError('SEALED_ETAG_MISMATCH', `file ${name} changed (if_match is stale)`);
        let next: string;
        let data: string | Buffer;
        try {
          data = await produce(current, f, bytes);
          // A restored backup is written as its exact bytes; the format checks read them as text.
          next = typeof data === 'string' ? data : data.toString('utf8');
          if (Buffer.byteLength(data) > this.o.maxFileBytes)
            throw new GatewayError('SEALED_LIMIT_FILE', `new content of ${name} is larger than maxFileBytes`);
          formatOf(f.config.format).validate(next);
          if (
            f.config.format === 'wireguard' &&
            !f.config.allowHooks &&
            wireGuardHooks(current ?? '').join('\n') !== wireGuardHooks(next).join('\n')
          )
            throw new GatewayError(
              'SEALED_FORBIDDEN',
              `${name}: PreUp/PostUp/PreDown/PostDown/SaveConfig lines may only be changed on the server (files.${name}.allowHooks)`,
            );
        } catch (err) {
          if (err instanceof FormatError)
            throw new GatewayError('SEALED_INVALID_CONTENT', `${name}: ${err.message}`);
          throw err;
        }
        // The backup holds the bytes on disk, not their UTF-8 decoding (which replaces invalid bytes).
        cancelled();
        const backup = f.config.backup && bytes !== undefined ? await this.#backup(f, bytes) : null;
        cancelled();
        try {
          await writeFileAtomic(f.path, data, { mode: 0o600 });
        } catch (err) {
          // Only the folder's fsync comes after the rename: then the new content is in place (not durable).
          const now = await this.#readCurrent(f).catch(() => undefined);
          throw this.#writeFailed(f, err, now === next && now !== current);
        }
        log.info({ file: name, backup }, 'managed file written');
        const postWrite = f.config.postWrite === undefined ? null : await this.#hook(f, log);
        return { etag: etagOf(next), backup, postWrite };
      }),
    );
  }

  /**
   * A write that the disk refused (read-only folder or file system, permissions, full disk, I/O error).
   * Logged at error: the operator has to act; the peer learns the file and the errno code, not the path.
   */
  #writeFailed(f: Managed, err: unknown, replaced = false): GatewayError {
    if (isGatewayError(err)) return err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const outcome = replaced ? 'the new content is in place but may not survive a crash' : 'it is unchanged';
    this.o.log.error({ err, code: 'SEALED_FILE_IO_FAILED', file: f.name }, `managed file not written; ${outcome}`);
    return new GatewayError('SEALED_FILE_IO_FAILED', `file ${f.name} could not be written (${code}); ${outcome}`, {
      cause: err,
    });
  }

  /** The cross-process lock (another gateway process managing the same file waits its turn). */
  async #locked<T>(f: Managed, fn: () => Promise<T>): Promise<T> {
    let inside = false;
    try {
      return await withFileLock(
        f.path,
        () => {
          inside = true;
          return fn();
        },
        { waitMs: this.o.lockWaitMs },
      );
    } catch (err) {
      if (err instanceof FileLockedError)
        throw new GatewayError('SEALED_FILE_LOCKED', `file ${f.name} is being written by another process`);
      // Taking the lock writes next to the file: a read-only folder fails here, before anything changed.
      if (!inside) throw this.#writeFailed(f, err);
      throw err;
    }
  }

  /** `signal` aborted (timeout, shutdown) before the write starts → nothing is changed. */
  write(name: string, content: string, ifMatch: string, log: Logger, signal?: AbortSignal): Promise<WriteResult> {
    return this.#modify(name, ifMatch, () => content, log, signal);
  }

  update(name: string, ops: unknown, ifMatch: string, log: Logger, signal?: AbortSignal): Promise<WriteResult> {
    return this.#modify(
      name,
      ifMatch,
      (current, f, bytes) => {
        if (current === undefined)
          throw new GatewayError('SEALED_INVALID_CONTENT', `${name} does not exist yet: use files.write`);
        // Decoding replaced invalid bytes with U+FFFD: writing the edit back would change bytes it does not edit.
        if (bytes !== undefined && !isUtf8(bytes))
          throw new GatewayError(
            'SEALED_INVALID_CONTENT',
            `${name} is not valid UTF-8: an update would change bytes it does not edit (use files.write)`,
          );
        return formatOf(f.config.format).apply(current, ops);
      },
      log,
      signal,
    );
  }

  async backups(name: string): Promise<{ id: string; size: number; created: string; etag: string }[]> {
    const f = this.#get(name);
    const out = [];
    for (const b of (await this.#backupFiles(f)).reverse()) {
      if (b.digest === undefined) continue;
      const read = await this.#readBackup(f, b.id);
      if (read !== undefined)
        out.push({ id: b.id, size: read.size, created: read.mtime.toISOString(), etag: etagOf(read.content) });
    }
    return out;
  }

  /**
   * Reads one backup: a regular file of at most maxFileBytes directly in the file's own backup folder
   * (neither the folder nor the file may be a symlink, so nothing planted there can point outside), whose
   * bytes hash to the digest in its name (a backup cut short, or one without a digest, is not a backup).
   * Undefined when there is no such backup.
   */
  async #readBackup(
    f: Managed,
    id: string,
  ): Promise<{ content: string; bytes: Buffer; size: number; mtime: Date } | undefined> {
    if (!BACKUP_ID.test(id)) return undefined;
    const entry = (await this.#backupFiles(f)).find((b) => b.id === id && b.digest !== undefined);
    if (entry === undefined) return undefined;
    let fh;
    try {
      fh = await open(join(f.backupDir, entry.file), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size > this.o.maxFileBytes) return undefined;
      const bytes = await fh.readFile();
      if (createHash('sha256').update(bytes).digest('base64url') !== entry.digest) {
        this.o.log.warn({ file: f.name, backup: id }, 'backup does not match its digest (cut short?); ignored');
        return undefined;
      }
      return { content: bytes.toString('utf8'), bytes, size: st.size, mtime: st.mtime };
    } finally {
      await fh.close();
    }
  }

  /** True when the file's backup folder exists and is a directory, not a symlink to one. */
  async #backupDirIsReal(f: Managed): Promise<boolean> {
    const st = await lstat(f.backupDir).catch(() => undefined);
    return st !== undefined && st.isDirectory();
  }

  restore(name: string, backup: string, ifMatch: string, log: Logger, signal?: AbortSignal): Promise<WriteResult> {
    return this.#modify(
      name,
      ifMatch,
      async (_current, f) => {
        const b = await this.#readBackup(f, backup);
        if (b === undefined) throw new GatewayError('SEALED_UNKNOWN_BACKUP', `no backup ${backup} of ${name}`);
        return b.bytes;
      },
      log,
      signal,
    );
  }

  /**
   * The backup files of `f`, oldest first: `<id>.<digest>.bak` (digest = base64url SHA-256 of the bytes),
   * and `<id>.bak` written by older versions (no digest: rotated away, never listed or restored).
   */
  async #backupFiles(f: Managed): Promise<{ id: string; digest: string | undefined; file: string }[]> {
    if (!(await this.#backupDirIsReal(f))) return [];
    let names: string[];
    try {
      names = await readdir(f.backupDir);
    } catch {
      return [];
    }
    const out = [];
    for (const file of names) {
      const m = BACKUP_FILE.exec(file);
      if (m !== null) out.push({ id: m[1]!, digest: m[2], file });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Backs up `content` durably before the live file changes (temp file, fsync, rename, fsync of the
   * folder). @throws GatewayError SEALED_BACKUP_FAILED (the caller then leaves the live file alone)
   */
  async #backup(f: Managed, bytes: Buffer): Promise<string> {
    const stamp = new Date().toISOString().replace(/[-:.]/g, '');
    const id = `${stamp}-${String(++this.#seq % 1000000).padStart(6, '0')}`;
    const digest = createHash('sha256').update(bytes).digest('base64url');
    try {
      await mkdir(f.backupDir, { recursive: true, mode: 0o700 });
      if (!(await this.#backupDirIsReal(f)))
        throw new Error(`backup folder ${f.backupDir} is not a directory (a symlink?); refusing to write there`);
      await chmod(f.backupDir, 0o700);
      await writeNewFileDurably(f.backupDir, `${id}.${digest}.bak`, bytes, 0o600);
    } catch (err) {
      this.o.log.error({ err, code: 'SEALED_BACKUP_FAILED', file: f.name }, 'backup not written; the file is left unchanged');
      throw new GatewayError(
        'SEALED_BACKUP_FAILED',
        `file ${f.name}: the backup of the current content could not be written (${(err as NodeJS.ErrnoException).code ?? 'error'}); nothing was changed`,
        { cause: err },
      );
    }
    const all = await this.#backupFiles(f);
    for (const old of all.slice(0, Math.max(0, all.length - f.config.backupsKept)))
      await unlink(join(f.backupDir, old.file)).catch(() => undefined);
    return id;
  }

  #hook(f: Managed, log: Logger): Promise<{ ok: boolean; exitCode: number | null }> {
    const argv = f.config.postWrite!;
    return new Promise((done) => {
      execFile(
        argv[0]!,
        argv.slice(1),
        { shell: false, timeout: f.config.postWriteTimeoutMs, maxBuffer: 65536 },
        (err, _stdout, stderr) => {
          if (err === null) {
            done({ ok: true, exitCode: 0 });
            return;
          }
          const exitCode = typeof err.code === 'number' ? err.code : null;
          log.warn(
            { file: f.name, command: argv[0], exitCode, signal: err.signal, stderr: stderr.slice(0, 2000) },
            'post-write command failed',
          );
          done({ ok: false, exitCode });
        },
      );
    });
  }
}

const fileArg = z.string().min(1).max(64);
const etagArg = z.string().min(1).max(128);

/** The five `files.*` actions over one FileManager. */
export function fileActions(files: FileManager): Action[] {
  const byFile = (a: { file: string }) => a.file;
  const readArgs = z.strictObject({ file: fileArg });
  const writeArgs = z.strictObject({ file: fileArg, content: z.string(), if_match: etagArg });
  const updateArgs = z.strictObject({ file: fileArg, ops: z.unknown(), if_match: etagArg });
  const restoreArgs = z.strictObject({ file: fileArg, backup: z.string().min(1).max(64), if_match: etagArg });
  return [
    defineAction({
      name: 'files.read',
      description: 'Read a managed file: {content, etag, format, exists}.',
      args: readArgs,
      file: byFile,
      run: (a) => files.read(a.file),
    }),
    defineAction({
      name: 'files.write',
      description: 'Replace a managed file (if_match = current etag, "absent" for a new file).',
      args: writeArgs,
      file: byFile,
      run: (a, ctx) => files.write(a.file, a.content, a.if_match, ctx.log, ctx.signal),
    }),
    defineAction({
      name: 'files.update',
      description: 'Apply format-aware operations to a managed file.',
      args: updateArgs,
      file: byFile,
      run: (a, ctx) => files.update(a.file, a.ops, a.if_match, ctx.log, ctx.signal),
    }),
    defineAction({
      name: 'files.backups',
      description: 'List the backups of a managed file, newest first.',
      args: readArgs,
      file: byFile,
      run: (a) => files.backups(a.file),
    }),
    defineAction({
      name: 'files.restore',
      description: 'Restore a backup (the current content is backed up first).',
      args: restoreArgs,
      file: byFile,
      run: (a, ctx) => files.restore(a.file, a.backup, a.if_match, ctx.log, ctx.signal),
    }),
  ];
}
