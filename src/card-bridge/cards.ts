/**
 * The card layer between the commands and the backends: one reader list over every backend, reader-name
 * resolution, one lock per card (a request holds it across its commands), a deadline on every backend call,
 * opt-in GET RESPONSE / 6Cxx handling, the certificate cache (rebuilt when the card set changes), the key id
 * learnt per card, and the failed-PIN memory that keeps a wrong PIN from ever reaching that card again.
 */
import { createHash } from 'node:crypto';
import { GatewayError, isGatewayError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { CardBackend } from './backends/types.ts';
import { CardLock } from './lock.ts';
import { cardApduChannel, type CardApduEvent } from '../core/events.ts';
import { statusWord, toHex } from './protocol/apdu.ts';
import { certificateInfo, type CertificateInfo } from './protocol/der.ts';
import { readCertificates, signHash, type SignOutcome } from './protocol/ica.ts';
import { displayReaderName, isNetTerminal, maxReaderTextChars, readerCandidates, type ReaderNameStyle } from './protocol/readers.ts';

export interface CardServiceOptions {
  readonly commandMs: number;
  readonly lockWaitMs: number;
  readonly maxQueuedPerCard: number;
  readonly autoGetResponse: readonly string[];
  readonly readerNameStyle: ReaderNameStyle;
  readonly log: Logger;
}

export interface Reader {
  readonly terminal: string;
  readonly atr: Buffer | undefined;
  readonly display: string;
  readonly backend: CardBackend;
}

export interface Certificate {
  readonly der: Buffer;
  readonly info: CertificateInfo;
}

/** What a card holds for ALIASES / ENUM / CHAIN. */
export interface CardCertificates {
  readonly reader: Reader;
  readonly endUser: Certificate | undefined;
  /** CAs ordered from the end-user certificate's issuer upward (then any unlinked ones). */
  readonly chain: readonly Certificate[];
}

/** A locked card: every call has the command deadline; `release()` frees the lock once the card is idle. */
export interface CardHandle {
  readonly reader: Reader;
  readonly reset: () => Promise<Buffer>;
  readonly transmit: (apdu: Buffer) => Promise<Buffer>;
  readonly release: () => void;
}

/** terminal → ATR hex ('' = no card) of a backend's readers. */
const stateOf = (b: CardBackend): Map<string, string> => new Map(b.readers().map((r) => [r.terminal, r.atr === undefined ? '' : toHex(r.atr)]));
const cardKey = (r: Reader): string => `${r.terminal}|${r.atr === undefined ? '-' : toHex(r.atr)}`;
const pinDigest = (key: string, pin: string): string => createHash('sha256').update(key).update('\0').update(pin).digest('hex');

export class CardService {
  readonly #locks = new Map<string, CardLock>();
  readonly #certs = new Map<string, { readonly terminal: string; readonly p: Promise<CardCertificates> }>();
  readonly #kids = new Map<string, number>();
  readonly #failedPins = new Set<string>();
  readonly #unsubscribe: (() => void)[] = [];
  readonly #log: Logger;
  /** Bumped on every change event; tests and the REST server read it. */
  generation = 0;

  constructor(
    readonly backends: readonly CardBackend[],
    private readonly opts: CardServiceOptions,
  ) {
    this.#log = opts.log;
  }

  async start(): Promise<void> {
    for (const b of this.backends) {
      await b.start();
      let before = stateOf(b);
      this.#unsubscribe.push(
        b.onChange(() => {
          this.generation++;
          // Forget only what belongs to readers whose card changed, so a re-read of one card never waits on
          // the others (a slow or busy card would hold every ALIASES / CHAIN / SIGN up). A change with no
          // visible difference (an upstream restart) forgets everything of that backend.
          const now = stateOf(b);
          const changed = [...new Set([...before.keys(), ...now.keys()])].filter((t) => before.get(t) !== now.get(t));
          for (const t of changed.length > 0 ? changed : [...before.keys()]) this.#forget(t);
          before = now;
        }),
      );
    }
  }

  #forget(terminal: string): void {
    for (const [key, entry] of this.#certs) if (entry.terminal === terminal) this.#certs.delete(key);
    for (const key of [...this.#kids.keys()]) if (key.startsWith(`${terminal}|`)) this.#kids.delete(key);
  }

  async close(): Promise<void> {
    for (const u of this.#unsubscribe.splice(0)) u();
    await Promise.allSettled(this.backends.map((b) => b.close()));
  }

  /** Every reader of every backend, in backend order. */
  readers(): Reader[] {
    const out: Reader[] = [];
    const seen = new Set<string>();
    for (const backend of this.backends) {
      for (const r of backend.readers()) {
        if (seen.has(r.terminal)) continue;
        seen.add(r.terminal);
        out.push({ terminal: r.terminal, atr: r.atr, display: displayReaderName(r.terminal, this.opts.readerNameStyle), backend });
      }
    }
    return out;
  }

  /**
   * Resolves a reader line to one reader: an exact name in any accepted form (or base64 of it), else a
   * unique case-insensitive substring of the terminal id or listed name.
   * @throws GatewayError CARD_READER_NOT_FOUND, CARD_ALIAS_AMBIGUOUS
   */
  resolve(text: string): Reader {
    const readers = this.readers();
    // A text longer than any reader's name could be, even as base64, names nothing: answered without work.
    const longest = readers.reduce((n, r) => Math.max(n, r.terminal.length, r.display.length), 0);
    if (text.trim().length > maxReaderTextChars(longest)) throw new GatewayError('CARD_READER_NOT_FOUND', 'the reader line is longer than any reader name');
    const candidates = readerCandidates(text);
    for (const c of candidates) {
      const exact = readers.find((r) => r.terminal === c || r.display === c);
      if (exact !== undefined) return exact;
    }
    for (const c of candidates) {
      const needle = c.toLowerCase();
      if (needle === '' || isNetTerminal(c)) continue;
      const hits = readers.filter((r) => r.terminal.toLowerCase().includes(needle) || r.display.toLowerCase().includes(needle));
      if (hits.length === 1) return hits[0]!;
      if (hits.length > 1) throw new GatewayError('CARD_ALIAS_AMBIGUOUS', `the reader line matches ${hits.length} readers`);
    }
    // The reader line may carry a PIN: never put it in a message.
    throw new GatewayError('CARD_READER_NOT_FOUND', 'no reader matches the reader line');
  }

  #lock(terminal: string): CardLock {
    let l = this.#locks.get(terminal);
    if (l === undefined) {
      l = new CardLock(this.opts.maxQueuedPerCard);
      this.#locks.set(terminal, l);
    }
    return l;
  }

  /** A card lock's state: held, and how many requests wait for it (tests and monitoring read it). */
  lockQueue(terminal: string): { readonly held: boolean; readonly queued: number } {
    const l = this.#locks.get(terminal);
    return { held: l?.held ?? false, queued: l?.queued ?? 0 };
  }

  /**
   * Locks a reader's card. `signal` aborts the wait (the client went away): its place in the queue is given
   * back at once. @throws GatewayError CARD_QUEUE_FULL, CARD_LOCK_TIMEOUT, CARD_NO_CARD; the signal's reason
   */
  async lock(reader: Reader, signal?: AbortSignal): Promise<CardHandle> {
    const unlock = await this.#lock(reader.terminal).acquire(this.opts.lockWaitMs, signal);
    let busy: Promise<unknown> = Promise.resolve();
    let released = false;
    const auto = this.opts.autoGetResponse.includes('*') || this.opts.autoGetResponse.includes(reader.terminal);
    const call = <T>(op: (signal: AbortSignal) => Promise<T>): Promise<T> => {
      if (released) return Promise.reject(new GatewayError('CARD_INTERNAL', 'card handle used after release'));
      const ac = new AbortController();
      const work = busy.then(() => op(ac.signal));
      busy = work.catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new GatewayError('CARD_COMMAND_TIMEOUT', `${reader.terminal} did not answer within ${this.opts.commandMs} ms`);
          ac.abort(err);
          reject(err);
        }, this.opts.commandMs);
      });
      return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
    };
    const rawTransmit = (apdu: Buffer) =>
      call((signal) => {
        if (!cardApduChannel.hasSubscribers) return reader.backend.transmit(reader.terminal, apdu, signal).then(atLeastStatusWord);
        // The card's own time (from when the backend gets the APDU), not the wait for the lock.
        const started = performance.now();
        return reader.backend
          .transmit(reader.terminal, apdu, signal)
          .then(atLeastStatusWord)
          .finally(() => {
            const event: CardApduEvent = { reader: reader.terminal, seconds: (performance.now() - started) / 1000 };
            cardApduChannel.publish(event);
          });
      });
    return {
      reader,
      reset: () => call((signal) => reader.backend.reset(reader.terminal, signal).then(atLeastStatusWord)),
      transmit: auto ? (apdu) => followResponses(rawTransmit, apdu) : rawTransmit,
      release: () => {
        if (released) return;
        released = true;
        // The lock stays held until the backend is idle, even when a deadline already answered the client.
        // `busy` never rejects (see call); unlock failing would be a bug, logged, never a crash.
        busy.then(unlock).catch((err: unknown) => this.#log.error({ err }, 'card unlock failed'));
      },
    };
  }

  /** Runs `fn` with the reader's card locked; `signal` aborts the wait for the lock (see lock). */
  async withCard<T>(reader: Reader, fn: (h: CardHandle) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const h = await this.lock(reader, signal);
    try {
      return await fn(h);
    } finally {
      h.release();
    }
  }

  /** Certificates of every present card (cached per card until the card set changes). Cards that fail are skipped. */
  async certificates(): Promise<CardCertificates[]> {
    const readers = this.readers().filter((r) => r.atr !== undefined);
    const all = await Promise.all(
      readers.map(async (r) => {
        const key = cardKey(r);
        let p = this.#certs.get(key)?.p;
        if (p === undefined) {
          const read = this.withCard(r, async (h) => orderChain(r, await readCertificates(h.transmit)));
          p = read;
          this.#certs.set(key, { terminal: r.terminal, p: read });
          read.catch((err: unknown) => {
            if (this.#certs.get(key)?.p === read) this.#certs.delete(key);
            this.#log.warn({ terminal: r.terminal, code: isGatewayError(err) ? err.code : undefined }, 'reading certificates failed');
          });
        }
        try {
          return await p;
        } catch {
          return undefined;
        }
      }),
    );
    return all.filter((c): c is CardCertificates => c !== undefined);
  }

  /**
   * Signs `hash` on a locked card. A PIN that already failed on this card is refused without being sent.
   * @throws GatewayError CARD_PIN_ALREADY_FAILED, CARD_WRONG_PIN, CARD_BAD_SIGN_DATA, CARD_SIGN_NO_ANSWER
   */
  async sign(h: CardHandle, hash: Buffer, pin: string | undefined): Promise<SignOutcome> {
    const key = cardKey(h.reader);
    // The card gets the PIN's bytes: only printable ASCII maps one character to one byte (latin1 would fold
    // other characters onto ASCII ones, so a different-looking PIN could re-send one that already failed).
    // The message never contains the PIN.
    if (pin !== undefined && (pin.length > 255 || !/^[\x20-\x7e]+$/.test(pin))) {
      throw new GatewayError('CARD_BAD_SIGN_DATA', 'the PIN must be 1 to 255 printable ASCII characters');
    }
    if (pin !== undefined && this.#failedPins.has(pinDigest(key, pin))) throw new GatewayError('CARD_PIN_ALREADY_FAILED');
    try {
      const out = await signHash(h.transmit, { hash, pin, kid: this.#kids.get(key), reset: () => h.reset() });
      if (out.ok) this.#kids.set(key, out.kid);
      return out;
    } catch (err) {
      if (isGatewayError(err, 'CARD_WRONG_PIN') && pin !== undefined) {
        if (this.#failedPins.size >= 10000) this.#failedPins.clear();
        this.#failedPins.add(pinDigest(key, pin));
        this.#log.warn({ terminal: h.reader.terminal }, 'wrong PIN; it will not be sent to this card again');
      }
      throw err;
    }
  }
}

/**
 * A response APDU (and an ATR: TS and T0) has at least 2 bytes; anything shorter is no answer.
 * @throws GatewayError CARD_BAD_RESPONSE
 */
function atLeastStatusWord(resp: Buffer): Buffer {
  if (resp.length < 2) throw new GatewayError('CARD_BAD_RESPONSE', `the card answered ${resp.length} byte(s), under a status word`);
  return resp;
}

/** Follows 61xx with GET RESPONSE and re-sends on 6Cxx with the right Le (bounded). */
async function followResponses(tx: (apdu: Buffer) => Promise<Buffer>, apdu: Buffer): Promise<Buffer> {
  let resp = await tx(apdu);
  if (statusWord(resp) >> 8 === 0x6c) {
    const le = statusWord(resp) & 0xff;
    const hasLe = apdu.length === 5 || (apdu.length > 5 && apdu.length === 6 + apdu[4]!);
    if (apdu.length === 4) resp = await tx(Buffer.concat([apdu, Buffer.from([le])]));
    else if (hasLe) resp = await tx(Buffer.concat([apdu.subarray(0, apdu.length - 1), Buffer.from([le])]));
  }
  const parts: Buffer[] = [];
  let total = 0;
  for (let i = 0; i < 256 && statusWord(resp) >> 8 === 0x61; i++) {
    const d = resp.subarray(0, resp.length - 2);
    parts.push(d);
    total += d.length;
    if (total > 65536) throw new GatewayError('CARD_BAD_APDU', 'GET RESPONSE chain over 65536 bytes');
    resp = await tx(Buffer.from([apdu[0]! & 0x03, 0xc0, 0x00, 0x00, statusWord(resp) & 0xff]));
  }
  return parts.length === 0 ? resp : Buffer.concat([...parts, resp]);
}

function orderChain(reader: Reader, raw: { endUser: Buffer | undefined; cas: readonly Buffer[] }): CardCertificates {
  const parse = (der: Buffer): Certificate | undefined => {
    const info = certificateInfo(der);
    return info === undefined ? undefined : { der, info };
  };
  const endUser = raw.endUser === undefined ? undefined : parse(raw.endUser);
  const pool = raw.cas.map(parse).filter((c): c is Certificate => c !== undefined);
  const chain: Certificate[] = [];
  let cur = endUser;
  while (cur !== undefined && pool.length > 0) {
    const issuerDer = cur.info.issuerDer;
    const i = pool.findIndex((c) => c.info.subjectDer.equals(issuerDer));
    if (i < 0 || cur.info.subjectDer.equals(issuerDer)) break;
    cur = pool.splice(i, 1)[0];
    if (cur !== undefined) chain.push(cur);
  }
  chain.push(...pool);
  return { reader, endUser, chain };
}
