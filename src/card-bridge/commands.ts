/**
 * Runs one decoded request against the card layer and returns its answers, one `{id, result}` per command
 * in order (EMPTYLINE gives none). Card commands (RESET, APDU, SIGN) hold their card's lock across
 * consecutive commands on the same card, so a multi-command request is atomic on its card; listing commands
 * release it first (they lock cards themselves). Errors become their catalogue's C08x result; nothing throws.
 */
import { errorSpec, GatewayError, isGatewayError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { CardCertificates, CardHandle, CardService, Certificate, Reader } from './cards.ts';
import { fromHex, parseApdu, toHex } from './protocol/apdu.ts';
import { EMPTYLINE, type ReaderSpec, type Request } from './protocol/lines.ts';
import { decodeBase64Name, encodeName, maxReaderTextChars, readerCandidates } from './protocol/readers.ts';
import { cardCommandChannel, type CardCommandEvent } from '../core/events.ts';

export interface Answer {
  readonly id: string;
  readonly result: string;
}

export interface ExecuteContext {
  readonly cards: CardService;
  readonly log: Logger;
  /** Terminal ids to list first in ENUM / LIST (foxyproxy's `/select`). */
  readonly preferred?: () => readonly string[];
  /** Aborted when nobody waits for the answers any more (the client went away): no further command runs. */
  readonly signal?: AbortSignal;
}

export const COMMANDS = ['RESET', 'APDU', 'ENUM', 'LIST', 'READERS', 'ALIASES', 'CHAIN', 'SIGN', 'PERSONALIZE'] as const;
const KNOWN_COMMANDS: ReadonlySet<string> = new Set(COMMANDS);

/** Tells observers (metrics) how a command ended; a command name a client made up is `unknown`. */
function publishCommand(cmd: string, code: string): void {
  if (!cardCommandChannel.hasSubscribers) return;
  const event: CardCommandEvent = { command: KNOWN_COMMANDS.has(cmd) ? cmd : 'unknown', code };
  cardCommandChannel.publish(event);
}

function resultOf(err: unknown, log: Logger): string {
  if (isGatewayError(err)) return errorSpec(err.code).lineResult ?? 'C090';
  log.error({ err }, 'card command failed unexpectedly');
  return 'C090';
}

/** Is `filter` empty or `*` (= everything)? */
const isAll = (filter: string): boolean => filter === '' || filter === '*';

function order(readers: Reader[], preferred: readonly string[]): Reader[] {
  if (preferred.length === 0) return readers;
  const first = preferred.map((t) => readers.find((r) => r.terminal === t)).filter((r): r is Reader => r !== undefined);
  return [...first, ...readers.filter((r) => !first.includes(r))];
}

/** Longest PIN we consider when splitting a reader line (a VERIFY APDU carries at most 255 bytes). */
export const MAX_PIN_CHARS = 255;

/**
 * The ways a reader line's text splits into a name (reader or alias) and a PIN: first the whole text with no
 * PIN (subjects contain `: `), then at each `:` from the last to the first, so the name is as long as
 * possible and a PIN may itself contain `:`. An empty PIN part means no PIN. Only splits that leave a PIN of
 * at most MAX_PIN_CHARS are offered (bounds the work on hostile lines).
 */
export function pinSplits(text: string): { name: string; pin: string | undefined }[] {
  const out: { name: string; pin: string | undefined }[] = [{ name: text, pin: undefined }];
  for (let i = text.lastIndexOf(':'); i >= 0 && text.length - i - 1 <= MAX_PIN_CHARS + 2; i = i === 0 ? -1 : text.lastIndexOf(':', i - 1)) {
    const pin = text.slice(i + 1).trim();
    out.push({ name: text.slice(0, i).trim(), pin: pin === '' ? undefined : pin });
  }
  return out;
}

/** Texts an alias may be written as: itself and its base64 decoding. */
function aliasForms(text: string): string[] {
  const decoded = decodeBase64Name(text);
  return decoded === undefined ? [text] : [text, decoded];
}

export async function executeRequest(request: Request, ctx: ExecuteContext): Promise<Answer[]> {
  const answers: Answer[] = [];
  let reader: ReaderSpec = request.reader ?? { text: '', name: '', pin: undefined };
  let held: CardHandle | undefined;
  const release = () => {
    held?.release();
    held = undefined;
  };
  /**
   * The reader line's card: its whole text, else the text before a `:` that starts a PIN part. Resolved once
   * per reader line and request (a request is atomic on its card; a hostile line with many `:` must not
   * cost its splits once per command).
   */
  const resolved = new Map<ReaderSpec, Reader | GatewayError>();
  const readerOf = (spec: ReaderSpec): Reader => {
    let r = resolved.get(spec);
    if (r === undefined) {
      r = resolveReaderLine(ctx, spec.text);
      resolved.set(spec, r);
    }
    if (r instanceof GatewayError) throw r;
    return r;
  };
  const cardFor = async (r: Reader): Promise<CardHandle> => {
    if (held !== undefined && held.reader.terminal === r.terminal) return held;
    release();
    if (r.atr === undefined) throw new GatewayError('CARD_NO_CARD');
    const h = await ctx.cards.lock(r, ctx.signal).catch((err: unknown) => {
      // A client that went away while waiting gave its place back; its answer goes nowhere.
      if (ctx.signal?.aborted === true) throw new GatewayError('CARD_INTERNAL', 'the client went away');
      throw err;
    });
    if (ctx.signal?.aborted === true) {
      h.release();
      throw new GatewayError('CARD_INTERNAL', 'the client went away');
    }
    held = h;
    return h;
  };
  try {
    for (const item of request.items) {
      if (ctx.signal?.aborted === true) break;
      if (item.kind === 'reader') {
        reader = item.reader;
        continue;
      }
      if (item.command === EMPTYLINE) continue;
      const cmd = item.command.toUpperCase();
      let result: string;
      let code = 'ok';
      try {
        switch (cmd) {
          case 'RESET': {
            const h = await cardFor(readerOf(reader));
            result = toHex(await h.reset());
            break;
          }
          case 'APDU': {
            const apdu = parseApdu(item.data);
            const h = await cardFor(readerOf(reader));
            result = toHex(await h.transmit(apdu));
            break;
          }
          case 'LIST':
          case 'READERS':
            release();
            result = order(ctx.cards.readers(), ctx.preferred?.() ?? [])
              .map((r) => encodeName(r.display))
              .join('|');
            break;
          case 'ENUM':
            release();
            result = await enumerate(ctx, reader.text, item.data);
            break;
          case 'ALIASES':
            release();
            result = (await ctx.cards.certificates())
              .filter((c) => c.endUser !== undefined)
              .map((c) => encodeName(c.endUser!.info.subject))
              .join('|');
            break;
          case 'CHAIN': {
            release();
            const card = await byAlias(ctx, reader.text);
            result = [card.endUser, ...card.chain].map((c) => c.der.toString('base64')).join(':');
            break;
          }
          case 'SIGN':
            result = await sign(ctx, reader, item.data, cardFor);
            break;
          case 'PERSONALIZE':
            result = 'OK';
            break;
          default:
            code = 'CARD_UNKNOWN_COMMAND';
            result = errorSpec('CARD_UNKNOWN_COMMAND').lineResult!;
        }
      } catch (err) {
        code = isGatewayError(err) ? err.code : 'CORE_INTERNAL';
        result = resultOf(err, ctx.log);
        if (isGatewayError(err)) ctx.log.debug({ id: item.id, command: cmd, code: err.code, reason: err.message }, 'command failed');
      }
      publishCommand(cmd, code);
      answers.push({ id: item.id, result });
    }
  } finally {
    release();
  }
  return answers;
}

/** The reader a reader line names (see executeRequest's readerOf), or why none. */
function resolveReaderLine(ctx: ExecuteContext, text: string): Reader | GatewayError {
  for (const { name } of pinSplits(text)) {
    try {
      return ctx.cards.resolve(name);
    } catch (err) {
      if (isGatewayError(err, 'CARD_READER_NOT_FOUND')) continue;
      if (isGatewayError(err)) return err;
      throw err;
    }
  }
  return new GatewayError('CARD_READER_NOT_FOUND', 'no reader matches the reader line');
}

async function enumerate(ctx: ExecuteContext, filter: string, max: string): Promise<string> {
  const certs = await ctx.cards.certificates();
  const needle = filter.toLowerCase();
  const candidates = readerCandidates(filter);
  const usable = certs.filter((c) => c.endUser !== undefined);
  const matching = order(
    usable.map((c) => c.reader),
    ctx.preferred?.() ?? [],
  ).filter((r) => {
    if (isAll(filter)) return true;
    const c = usable.find((x) => x.reader === r)!;
    return (
      r.display.toLowerCase().includes(needle) ||
      r.terminal.toLowerCase().includes(needle) ||
      candidates.includes(r.terminal) ||
      c.endUser!.info.subject.toLowerCase().includes(needle)
    );
  });
  const n = /^\d+$/.test(max) ? Number(max) : 0;
  return (n > 0 ? matching.slice(0, n) : matching).map((r) => encodeName(r.display)).join('|');
}

/** The one card whose end-user subject contains the alias (or whose reader it names). */
async function byAlias(ctx: ExecuteContext, alias: string): Promise<CardCertificates & { endUser: Certificate }> {
  const certs = (await ctx.cards.certificates()).filter((c) => c.endUser !== undefined);
  // An alias longer than any subject or reader name could be (even as base64) matches nothing: no work.
  const longest = certs.reduce((n, c) => Math.max(n, c.endUser!.info.subject.length, c.reader.terminal.length, c.reader.display.length), 0);
  if (alias.length > maxReaderTextChars(longest)) throw new GatewayError('CARD_READER_NOT_FOUND', 'the alias is longer than any subject or reader name');
  const forms = aliasForms(alias);
  const hits = certs.filter((c) =>
    forms.some((f) => (isAll(f) ? true : c.endUser!.info.subject.includes(f) || readerCandidates(f).includes(c.reader.terminal) || c.reader.display === f)),
  );
  if (hits.length === 0) throw new GatewayError('CARD_READER_NOT_FOUND', 'no certificate matches the alias');
  if (hits.length > 1) throw new GatewayError('CARD_ALIAS_AMBIGUOUS', `alias matches ${hits.length} cards`);
  const c = hits[0]!;
  return { ...c, endUser: c.endUser! };
}

async function sign(ctx: ExecuteContext, reader: ReaderSpec, data: string, cardFor: (r: Reader) => Promise<CardHandle>): Promise<string> {
  const hash = fromHex(data, 32, 'CARD_BAD_SIGN_DATA');
  if (hash.length !== 20 && hash.length !== 32) return errorSpec('CARD_BAD_SIGN_DATA').lineResult!;
  // The whole reader text may itself be the alias (subjects contain `: `); otherwise the longest alias
  // before a `:` that matches wins and the rest is the PIN. An ambiguous alias stops the search (C082).
  for (const { name, pin } of pinSplits(reader.text)) {
    let card: CardCertificates & { endUser: Certificate };
    try {
      card = await byAlias(ctx, name);
    } catch (err) {
      if (isGatewayError(err, 'CARD_READER_NOT_FOUND')) continue;
      throw err;
    }
    const h = await cardFor(card.reader);
    const out = await ctx.cards.sign(h, hash, pin);
    return out.ok ? toHex(out.signature) : out.sw;
  }
  throw new GatewayError('CARD_READER_NOT_FOUND', 'no certificate matches the alias');
}
