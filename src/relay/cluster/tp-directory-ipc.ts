/**
 * The tunnel-proxy directory for `serve --workers N` on one machine without Redis: the primary process
 * holds the table (`PrimaryTpTable`, pure bookkeeping), each worker reaches it over the cluster IPC
 * channel (`IpcTpDirectory`, a `TpDirectory`, see tp-directory.ts). What crosses the channel: the
 * SHA-256 of a server uuid (never the uuid), the worker's forward socket path, and the answer. Messages
 * carry `gh: 'tp'`.
 *
 *   worker → primary  {gh, id, op: 'register' | 'unregister' | 'lookup', key, address}
 *   primary → worker  {gh, id, ok, node?, address?}
 *
 * A worker that exits loses its entries at once (the primary drops them), so a server whose worker died
 * can register again on the next connection. Entries never expire otherwise: the primary sees every exit.
 */
import { createHash } from 'node:crypto';
import { IpcQuestions, type IpcChannel } from '../../core/cluster/ipc-questions.ts';
import type { TpDirectory, TpRegisterResult, TpServerLocation } from './tp-directory.ts';

export interface TpRequest {
  readonly gh: 'tp';
  readonly id: number;
  readonly op: 'register' | 'unregister' | 'lookup';
  readonly key: string;
  readonly address: string;
}

export interface TpAnswer {
  readonly gh: 'tp';
  readonly id: number;
  /** register: taken or not; lookup: found or not; unregister: always true. */
  readonly ok: boolean;
  /** The holder (register refused, lookup found). */
  readonly node?: string;
  readonly address?: string;
}

/** Keys the primary holds at most (each a registered server); past it registrations are refused. */
const MAX_ENTRIES = 1_000_000;

export function isTpRequest(m: unknown): m is TpRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return r.gh === 'tp' && typeof r.id === 'number' && (r.op === 'register' || r.op === 'unregister' || r.op === 'lookup') && typeof r.key === 'string' && r.key.length <= 128 && typeof r.address === 'string' && r.address.length <= 1024;
}

/** The table in the primary: `handle` answers one request from `worker`. */
export class PrimaryTpTable {
  readonly #entries = new Map<string, { worker: number; address: string }>();

  handle(worker: number, req: TpRequest): TpAnswer {
    const { id, key } = req;
    const e = this.#entries.get(key);
    switch (req.op) {
      case 'register':
        if (e !== undefined && e.worker !== worker) return { gh: 'tp', id, ok: false, node: `worker-${e.worker}` };
        if (e === undefined && this.#entries.size >= MAX_ENTRIES) return { gh: 'tp', id, ok: false, node: 'primary (table full)' };
        this.#entries.set(key, { worker, address: req.address });
        return { gh: 'tp', id, ok: true };
      case 'unregister':
        if (e?.worker === worker) this.#entries.delete(key);
        return { gh: 'tp', id, ok: true };
      case 'lookup':
        return e === undefined ? { gh: 'tp', id, ok: false } : { gh: 'tp', id, ok: true, node: `worker-${e.worker}`, address: e.address };
    }
  }

  /** A worker exited: its servers are gone. */
  dropWorker(worker: number): void {
    for (const [key, e] of this.#entries) if (e.worker === worker) this.#entries.delete(key);
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** A worker's view of the primary's table. */
export class IpcTpDirectory implements TpDirectory {
  readonly #questions: IpcQuestions<TpAnswer>;

  constructor(
    private readonly channel: IpcChannel,
    /** Bounds one request to the primary, ms. */
    requestTimeoutMs: number,
    /** Requests in flight at most; past it requests fail at once. */
    maxPending = 10000,
  ) {
    this.#questions = new IpcQuestions<TpAnswer>(channel, 'tp', 'tunnel-proxy directory', requestTimeoutMs, maxPending);
    channel.on('message', this.#onMessage);
  }

  readonly #onMessage = (m: unknown): void => {
    this.#questions.answer(m);
  };

  keyOf(uuid: string): string {
    return createHash('sha256').update('gatehouse/tp-server/v1').update(uuid).digest('hex');
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.channel.off('message', this.#onMessage);
    this.#questions.failAll();
    return Promise.resolve();
  }

  onLost(): void {
    // The primary never gives an entry away while its worker lives.
  }

  async register(key: string, address: string): Promise<TpRegisterResult> {
    const a = await this.#ask('register', key, address);
    return a.ok ? { ok: true } : { ok: false, node: a.node ?? '' };
  }

  async unregister(key: string): Promise<void> {
    try {
      await this.#ask('unregister', key, '');
    } catch {
      // The primary drops a worker's entries when it exits; nothing else to do.
    }
  }

  async lookup(key: string): Promise<TpServerLocation | undefined> {
    const a = await this.#ask('lookup', key, '');
    return a.ok && typeof a.node === 'string' && typeof a.address === 'string' ? { node: a.node, address: a.address } : undefined;
  }

  #ask(op: TpRequest['op'], key: string, address: string): Promise<TpAnswer> {
    return this.#questions.ask({ op, key, address });
  }
}
