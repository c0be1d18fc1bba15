/**
 * The client registry across machines (with `[cluster] redisUrl`): when this node's registry changes (a
 * `gatehouse clients` command ran here, or the file was edited), it publishes the new document to Redis;
 * every other node applies it: writes its own registry file atomically (so it survives a restart) and
 * reloads. Last version wins; a node that starts later reads the current version. Workers of one machine
 * share one file and need nothing of this.
 *
 * In Redis (prefix `keyPrefix`):
 *   reg:doc     "gh1 <version> <mac>\n<registry JSON>": version = ms since the epoch (above every version
 *               seen), mac = HMAC-SHA256 under `[cluster] secret` of (version, JSON). A document whose mac
 *               does not verify is ignored with a warning (SEALED_REGISTRY_FORGED): a Redis write without
 *               the secret cannot add a client. Written by a script only when its version is newer, so an
 *               older version found there was written back (a rollback): a node that knows a newer one
 *               publishes its current registry again (same code).
 *   reg:notice  pub/sub channel: "<version>" after each write. A poll every `pollMs` catches notices
 *               missed while the subscriber reconnected.
 * At start: Redis has no document → this node publishes its own; Redis has one → it replaces this node's
 * file (a file edited while its node was down is overwritten: edit on a running node). Redis restarted
 * empty → the next poll republishes this node's registry.
 * Operations run one at a time; a failure is logged and retried by the next poll.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../../core/log.ts';
import type { RedisAccess } from '../../core/cluster/shared-state.ts';
import { parseRegistry, writeRegistryFile, type ClientRegistry, type RegistryFile } from '../registry.ts';

/** A registry document in Redis larger than this is ignored (logged; its length is read, not the value) and replaced by the next publish. */
export const MAX_REGISTRY_DOC_BYTES = 8 * 1024 * 1024;

const PUBLISH = `
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] and string.len(cur) <= tonumber(ARGV[4]) then
  local v = tonumber(string.match(cur, '^gh1 (%d+) '))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
`;

type Scripts = RedisAccess['client'] & {
  regPublish(doc: string, channel: string, version: number, value: string, replaceIfEquals: string, maxBytes: number): Promise<number>;
};

export interface RegistrySyncOptions {
  readonly shared: RedisAccess;
  readonly registry: ClientRegistry;
  readonly log: Logger;
  /** How often Redis is asked for a newer document besides the notices, ms. */
  readonly pollMs: number;
}

const canonical = (file: RegistryFile): string => JSON.stringify(file);
const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

export class RegistrySync {
  readonly #o: RegistrySyncOptions;
  readonly #redis: Scripts;
  readonly #docKey: string;
  readonly #channel: string;
  /** The newest valid version seen in Redis (or published), and its document's hash. */
  #version = 0;
  #docSha = '';
  /** A value found in Redis whose mac failed (replaced by our next publish; logged once). */
  #forged = '';
  /** The header of a value found too large to read (logged once; not downloaded at every poll). */
  #oversized = '';
  #queue: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  readonly #offs: (() => void)[] = [];
  #stopped = false;

  constructor(o: RegistrySyncOptions) {
    this.#o = o;
    this.#redis = o.shared.client as Scripts;
    this.#redis.defineCommand('regPublish', { numberOfKeys: 2, lua: PUBLISH });
    this.#docKey = `${o.shared.prefix}reg:doc`;
    this.#channel = `${o.shared.prefix}reg:notice`;
  }

  /** Reconciles with Redis once (a Redis that is down is retried by the poll), then follows both ways. */
  async start(): Promise<void> {
    this.#offs.push(this.#o.registry.onChange((file) => this.#run(() => this.#localChanged(file))));
    this.#offs.push(this.#o.shared.subscribe('reg:notice', () => this.#run(() => this.#pull())));
    this.#timer = setInterval(() => this.#run(() => this.#pull()), this.#o.pollMs);
    this.#timer.unref();
    await this.#run(() => this.#pull());
  }

  /** Stops following; an operation in flight finishes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const off of this.#offs) off();
    await this.#queue;
  }

  /** Runs `op` after the previous one; never rejects (failures are logged). */
  #run(op: () => Promise<void>): Promise<void> {
    this.#queue = this.#queue.then(async () => {
      if (this.#stopped || !this.#o.shared.ready) return;
      try {
        await op();
      } catch (err) {
        this.#o.log.warn({ err: (err as Error).message, code: 'CORE_CLUSTER_STATE_UNAVAILABLE' }, 'registry sync with redis failed; retried on the next poll');
      }
    });
    return this.#queue;
  }

  async #localChanged(file: RegistryFile): Promise<void> {
    const text = canonical(file);
    // The document we applied from Redis (or already published) comes back through the file watcher.
    if (sha(text) === this.#docSha) return;
    await this.#publish(text);
  }

  async #publish(text: string, retry = true): Promise<void> {
    const version = Math.max(Date.now(), this.#version + 1);
    const value = `gh1 ${version} ${this.#mac(version, text)}\n${text}`;
    // A value larger than any registry is never ours: replaced like a forged one (the script compares its length).
    const ok = await this.#redis.regPublish(this.#docKey, this.#channel, version, value, this.#forged, MAX_REGISTRY_DOC_BYTES);
    if (ok === 1) {
      this.#version = version;
      this.#docSha = sha(text);
      this.#forged = '';
      this.#o.log.info({ version, clients: (JSON.parse(text) as RegistryFile).clients.length }, 'client registry published to the cluster');
      return;
    }
    // Redis holds a newer version: a valid one wins (taken here); a forged one is replaced once.
    await this.#pull();
    if (retry && this.#forged !== '' && sha(text) !== this.#docSha) await this.#publish(text, false);
  }

  #mac(version: number, text: string): string {
    return this.#o.shared.hash('registry', String(version), text);
  }

  async #pull(): Promise<void> {
    // The header first: a poll that finds nothing newer costs ~100 bytes, whatever the registry's size.
    const header = await this.#redis.getrange(this.#docKey, 0, 99);
    const seen = /^gh1 (\d{1,16}) /.exec(header);
    if (seen !== null && Number(seen[1]) < this.#version) {
      // The publish script only moves forward: an older version means an old (validly signed) document
      // was written back, e.g. to undo a revocation on nodes that start later. Put the current one back.
      this.#o.log.warn({ code: 'SEALED_REGISTRY_FORGED', found: Number(seen[1]), current: this.#version }, 'client registry document in redis is older than this node\'s; the current one is published again');
      await this.#publish(canonical(this.#o.registry.current));
      return;
    }
    if (seen !== null && Number(seen[1]) <= this.#version) return;
    if (header !== '') {
      const bytes = await this.#redis.strlen(this.#docKey);
      if (bytes > MAX_REGISTRY_DOC_BYTES) {
        if (header !== this.#oversized) this.#o.log.warn({ code: 'SEALED_REGISTRY_FORGED', bytes }, 'client registry document in redis is larger than any registry; ignored');
        this.#oversized = header;
        return;
      }
    }
    const value = header === '' ? null : await this.#redis.get(this.#docKey);
    const local = this.#o.registry.current;
    if (value === null) {
      // First node, or Redis restarted empty: this node's registry becomes the cluster's.
      this.#version = 0;
      await this.#publish(canonical(local));
      return;
    }
    if (value === this.#forged) return;
    const parsed = this.#verify(value);
    if (parsed === undefined) {
      this.#forged = value;
      this.#o.log.warn({ code: 'SEALED_REGISTRY_FORGED', bytes: value.length }, 'client registry document in redis fails its HMAC (or is malformed); ignored');
      return;
    }
    const { version, text } = parsed;
    if (version <= this.#version) return;
    const localText = canonical(local);
    if (sha(text) === sha(localText)) {
      this.#version = version;
      this.#docSha = sha(text);
      return;
    }
    let file: RegistryFile;
    try {
      file = await parseRegistry(text, 'the cluster registry document');
    } catch (err) {
      this.#forged = value;
      this.#o.log.warn({ err: (err as Error).message, code: 'SEALED_REGISTRY_INVALID' }, 'client registry document in redis is invalid; ignored');
      return;
    }
    this.#version = version;
    this.#docSha = sha(text);
    await writeRegistryFile(this.#o.registry.path, file);
    await this.#o.registry.reload();
    this.#o.log.info({ version, clients: file.clients.length }, 'client registry applied from the cluster');
  }

  /** The (version, JSON) of a stored value whose mac verifies, else undefined. */
  #verify(value: string): { version: number; text: string } | undefined {
    if (value.length > MAX_REGISTRY_DOC_BYTES) return undefined;
    const nl = value.indexOf('\n');
    const m = /^gh1 (\d{1,16}) ([0-9a-f]{64})$/.exec(nl < 0 ? '' : value.slice(0, nl));
    if (m === null) return undefined;
    const version = Number(m[1]);
    const text = value.slice(nl + 1);
    const want = Buffer.from(this.#mac(version, text), 'hex');
    const got = Buffer.from(m[2]!, 'hex');
    if (!Number.isSafeInteger(version) || got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    return { version, text };
  }
}
