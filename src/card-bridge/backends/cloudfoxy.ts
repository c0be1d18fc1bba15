/**
 * The CloudFoxy REST upstream backend (foxyproxy's only backend): cards behind a CloudFoxy REST server, or
 * behind another Gatehouse serving that API.
 *
 * - `GET /api/v1/basic?reset=&terminal=&apdu=` with `X-Auth-Token`; the first result line is the answer.
 *   A first line with SW1 `C0` is a hardware error: retried `hardwareRetries` times, then
 *   CARD_UPSTREAM_FAILED. Non-200 → the body's C08x result when it is one we know, else CARD_UPSTREAM_FAILED.
 * - Every request has its own deadline (`requestTimeoutMs`, and the caller's signal) and a bounded body;
 *   redirects are refused (the token would follow them). A failure is logged at warn, without the APDU.
 *   At most `maxConcurrentRequests` are open at once; the others wait for a slot within their deadline.
 * - `/hello` and `/inventory` are polled every `pollIntervalMs`; a restart (a smaller uptime than before, or
 *   another `started` line 3 from a Gatehouse upstream) or a changed inventory fires a change, which makes
 *   the bridge rebuild its caches.
 */
import { GatewayError, isGatewayError, type ErrorCode } from '../../core/errors.ts';
import { describeFetchError } from '../../core/fault.ts';
import { RateLimitedWarnings, type Logger } from '../../core/log.ts';
import type { CardBackendConfig } from '../config.ts';
import { statusWord, toHex } from '../protocol/apdu.ts';
import { ChangeListeners, type CardBackend, type ReaderState } from './types.ts';

type CloudFoxyConfig = Extract<CardBackendConfig, { kind: 'cloudfoxy' }>;

/** Upstream error results we map to our own codes (a Map: the key is text the upstream chose). */
const KNOWN_RESULTS: ReadonlyMap<string, ErrorCode> = new Map<string, ErrorCode>([
  ['C080', 'CARD_NO_CARD'],
  ['C083', 'CARD_READER_NOT_FOUND'],
  ['C086', 'CARD_BAD_RESPONSE'],
  ['C087', 'CARD_BAD_APDU'],
  ['C089', 'CARD_COMMAND_TIMEOUT'],
]);

export class CloudFoxyBackend implements CardBackend {
  readonly kind = 'cloudfoxy';
  #readers: ReaderState[] = [];
  #uptime: number | undefined;
  /** Line 3 of /hello (`started <time>` from a Gatehouse upstream); a different one = a restart. */
  #started: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  #closed = false;
  readonly #changes = new ChangeListeners();
  readonly #log: Logger;
  /** Request failures: one line per kind every 10 s (a failing upstream fails every request). */
  readonly #failures: RateLimitedWarnings;
  readonly #base: string;
  /** Request slots not taken (at most `maxConcurrentRequests` requests, hence sockets, open at once). */
  #freeSlots: number;
  /**
   * Requests waiting for a slot, FIFO. Bounded without a limit of its own: a card runs one operation at a
   * time (its lock), so at most one per reader of the inventory, plus the poll; each leaves by its deadline.
   */
  readonly #slotWaiters: (() => void)[] = [];
  /** Polls done (tests wait on this). */
  polls = 0;

  constructor(
    private readonly cfg: CloudFoxyConfig,
    log: Logger,
  ) {
    this.#log = log.child({ backend: 'cloudfoxy', upstream: cfg.url });
    this.#failures = new RateLimitedWarnings(this.#log);
    this.#base = cfg.url.replace(/\/+$/, '');
    this.#freeSlots = cfg.maxConcurrentRequests;
  }

  async start(): Promise<void> {
    await this.poll();
    this.#schedule();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#polling;
  }

  readers(): readonly ReaderState[] {
    return this.#readers;
  }

  onChange(listener: () => void): () => void {
    return this.#changes.add(listener);
  }

  reset(terminal: string, signal: AbortSignal): Promise<Buffer> {
    return this.#basic(terminal, true, undefined, signal);
  }

  transmit(terminal: string, apdu: Buffer, signal: AbortSignal): Promise<Buffer> {
    return this.#basic(terminal, false, apdu, signal);
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#polling = this.poll().finally(() => {
        this.#polling = undefined;
        this.#schedule();
      });
    }, this.cfg.pollIntervalMs);
    this.#timer.unref();
  }

  /** One /hello + /inventory round; never throws (an unreachable upstream keeps the last inventory). */
  async poll(): Promise<void> {
    this.polls++;
    let changed = false;
    let restarted = false;
    try {
      const hello = await this.#get('/api/v1/hello', AbortSignal.timeout(this.cfg.requestTimeoutMs));
      if (hello.status === 200) {
        const lines = hello.text.split(/\r?\n/);
        const uptime = Number((lines[1] ?? '').trim().split(/\s+/)[1] ?? 'x');
        const started = /^started\s+(\S+)\s*$/.exec(lines[2] ?? '')?.[1];
        if (Number.isFinite(uptime)) {
          if (this.#uptime !== undefined && uptime < this.#uptime) restarted = true;
          if (started !== undefined && this.#started !== undefined && started !== this.#started) restarted = true;
          if (restarted) this.#log.info({ uptime, before: this.#uptime }, 'upstream restarted; rebuilding caches');
          this.#uptime = uptime;
          this.#started = started;
        }
      }
      const inv = await this.#get('/api/v1/inventory', AbortSignal.timeout(this.cfg.requestTimeoutMs));
      if (inv.status === 200) {
        const readers: ReaderState[] = [];
        for (const line of inv.text.split(/\r?\n/)) {
          const t = line.trim();
          if (t === '') continue;
          const sp = t.lastIndexOf(' ');
          const name = sp < 0 ? t : t.slice(0, sp).trim();
          const atr = sp < 0 ? '' : t.slice(sp + 1);
          readers.push({ terminal: name, atr: /^([0-9A-Fa-f]{2})+$/.test(atr) ? Buffer.from(atr, 'hex') : undefined });
        }
        const key = (rs: readonly ReaderState[]) => rs.map((r) => `${r.terminal}=${r.atr === undefined ? '' : toHex(r.atr)}`).join('\n');
        if (key(readers) !== key(this.#readers)) changed = true;
        this.#readers = readers;
      } else {
        this.#log.warn({ status: inv.status }, 'upstream inventory failed');
      }
    } catch (err) {
      this.#log.warn({ code: 'CARD_UPSTREAM_FAILED' satisfies ErrorCode, reason: describeFetchError(err) }, 'upstream poll failed');
    }
    if (restarted) {
      // Listeners forget what belongs to readers that changed: show every reader gone for one event, so a
      // restart (cards may have been swapped while it was down) forgets them all, whatever the inventory says.
      const now = this.#readers;
      this.#readers = [];
      this.#changes.emit();
      this.#readers = now;
      changed = true;
    }
    if (changed) this.#changes.emit();
  }

  /**
   * `idempotent`: may the request be sent twice? An APDU may not (a VERIFY would cost a PIN try, and the
   * failed-PIN memory would be bypassed): it is retried only when the connection was refused, i.e. the
   * upstream cannot have seen it.
   */
  async #get(path: string, signal: AbortSignal, idempotent = true): Promise<{ status: number; text: string }> {
    await this.#takeSlot(signal);
    try {
      return await this.#request(path, signal, idempotent);
    } finally {
      this.#giveSlot();
    }
  }

  /** Waits for a request slot until `signal` aborts. @throws GatewayError CARD_UPSTREAM_FAILED */
  #takeSlot(signal: AbortSignal): Promise<void> {
    if (this.#freeSlots > 0) {
      this.#freeSlots--;
      return Promise.resolve();
    }
    if (signal.aborted) return Promise.reject(noSlot());
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.#slotWaiters.indexOf(grant);
        if (i >= 0) this.#slotWaiters.splice(i, 1);
        reject(noSlot());
      };
      this.#slotWaiters.push(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** A finished request's slot goes to the first waiter, else back to the pool. */
  #giveSlot(): void {
    const next = this.#slotWaiters.shift();
    if (next !== undefined) next();
    else this.#freeSlots++;
  }

  async #request(path: string, signal: AbortSignal, idempotent: boolean): Promise<{ status: number; text: string }> {
    const url = `${this.#base}${path}`;
    // No redirects: fetch would follow one to any origin with our X-Auth-Token (it strips only Authorization
    // and cookies), and a CloudFoxy server never redirects.
    const init = { headers: { 'X-Auth-Token': this.cfg.token.reveal() }, signal, redirect: 'error' } as const;
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch (err) {
      // A kept-alive connection the upstream closed (e.g. it restarted) fails once; a fresh one decides.
      if (signal.aborted) throw err;
      const cause = (err as { cause?: { code?: unknown } }).cause;
      if (isRedirect(err) || (!idempotent && cause?.code !== 'ECONNREFUSED')) throw err;
      res = await fetch(url, init);
    }
    const reader = res.body?.getReader();
    const parts: Uint8Array[] = [];
    let n = 0;
    if (reader !== undefined) {
      for (;;) {
        const { done, value } = (await reader.read()) as { done: boolean; value: Uint8Array | undefined };
        if (done || value === undefined) break;
        n += value.length;
        if (n > this.cfg.maxResponseBytes) {
          await reader.cancel();
          throw new GatewayError('CARD_UPSTREAM_FAILED', `upstream answer over ${this.cfg.maxResponseBytes} bytes`);
        }
        parts.push(value);
      }
    }
    return { status: res.status, text: Buffer.concat(parts).toString('utf8') };
  }

  /** One exchange; an upstream failure is logged at warn here (the card layer only answers C083). */
  async #basic(terminal: string, reset: boolean, apdu: Buffer | undefined, signal: AbortSignal): Promise<Buffer> {
    try {
      return await this.#exchange(terminal, reset, apdu, signal);
    } catch (err) {
      // Never the APDU: a VERIFY carries the PIN.
      if (isGatewayError(err, 'CARD_UPSTREAM_FAILED') && !signal.aborted) {
        this.#failures.warn(failureKind(err.message), { code: err.code, terminal, reason: err.message }, 'upstream request failed');
      }
      throw err;
    }
  }

  async #exchange(terminal: string, reset: boolean, apdu: Buffer | undefined, signal: AbortSignal): Promise<Buffer> {
    const q = new URLSearchParams({ reset: reset ? '1' : '0', terminal });
    if (apdu !== undefined) q.set('apdu', toHex(apdu));
    for (let attempt = 0; ; attempt++) {
      let res: { status: number; text: string };
      try {
        res = await this.#get(`/api/v1/basic?${q.toString()}`, AbortSignal.any([signal, AbortSignal.timeout(this.cfg.requestTimeoutMs)]), apdu === undefined);
      } catch (err) {
        if (signal.aborted) throw signal.reason as Error;
        if (err instanceof GatewayError) throw err;
        throw new GatewayError('CARD_UPSTREAM_FAILED', `upstream request failed: ${describeFetchError(err)}`, { cause: err });
      }
      const first = (res.text.split(/\r?\n/)[0] ?? '').trim();
      if (res.status !== 200) {
        const code = KNOWN_RESULTS.get(first.toUpperCase());
        throw new GatewayError(code ?? 'CARD_UPSTREAM_FAILED', `upstream answered HTTP ${res.status}`);
      }
      // An empty first line is the card answering nothing: the card layer turns it (and 1 byte) into C086.
      if (!/^([0-9A-Fa-f]{2})*$/.test(first)) throw new GatewayError('CARD_UPSTREAM_FAILED', 'upstream answer is not hex');
      const out = Buffer.from(first, 'hex');
      if (statusWord(out) >> 8 === 0xc0 && (apdu !== undefined || out.length === 2)) {
        if (attempt < this.cfg.hardwareRetries) {
          this.#failures.warn('hardware', { terminal, sw: first, attempt: attempt + 1 }, 'upstream hardware error; retrying');
          continue;
        }
        throw new GatewayError('CARD_UPSTREAM_FAILED', `upstream hardware error ${first} after ${attempt + 1} attempts`);
      }
      return out;
    }
  }
}

/** undici answers a redirect under `redirect: 'error'` with `fetch failed` caused by `unexpected redirect`. */
function isRedirect(err: unknown): boolean {
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error && /redirect/i.test(cause.message);
}

/** The kind of an upstream failure, from our own message texts: a small fixed set of rate-limit keys. */
function failureKind(message: string): string {
  return FAILURE_KINDS.find((k) => message.includes(k)) ?? 'other';
}
const FAILURE_KINDS = ['request failed', 'answer over', 'not hex', 'hardware error', 'answered HTTP', 'deadline passed'];

function noSlot(): GatewayError {
  return new GatewayError('CARD_UPSTREAM_FAILED', 'deadline passed waiting for a free upstream connection (maxConcurrentRequests)');
}
