/**
 * Turns a failed connection (refused, unresolvable, TLS spoken to a plain listener or the reverse, an
 * untrusted certificate) into one sentence that says what to check, with exit 69 (unavailable). Used by
 * `call`, `card` and `tunnel`. Returns undefined for errors that are not about reaching the server.
 */
import { CliError, EXIT } from './exit.ts';

interface Coded {
  readonly code?: unknown;
  readonly message?: unknown;
  readonly cause?: unknown;
  readonly errors?: unknown;
}

/** Every error in `err`'s cause chain and AggregateError members (bounded), outermost first. */
function chain(err: unknown): Coded[] {
  const out: Coded[] = [];
  const queue: unknown[] = [err];
  while (queue.length > 0 && out.length < 16) {
    const e = queue.shift();
    if (e === null || typeof e !== 'object') continue;
    const c = e as Coded;
    out.push(c);
    if (c.cause !== undefined) queue.push(c.cause);
    if (Array.isArray(c.errors)) queue.push(...(c.errors as unknown[]).slice(0, 4));
  }
  return out;
}

const CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * A CliError (exit 69) explaining why `target` (a URL or host:port as the user gave it) could not be
 * reached, or undefined when `err` is not a connection failure. The hints say, in this command's terms,
 * how to switch TLS off (`plain`), on (`tls`) and how to trust a self-signed certificate (`trust`).
 */
export function explainConnectError(
  err: unknown,
  target: string,
  hints: { readonly usingTls: boolean; readonly plain: string; readonly tls: string; readonly trust: string },
): CliError | undefined {
  const errors = chain(err);
  const codes = new Set(errors.map((e) => (typeof e.code === 'string' ? e.code : '')));
  const text = errors.map((e) => (typeof e.message === 'string' ? e.message : '')).join(' ');
  const has = (...c: string[]) => c.some((x) => codes.has(x));
  const unavailable = (m: string) => new CliError(m, EXIT.unavailable);

  if (has('ECONNREFUSED')) return unavailable(`nothing answers at ${target} (connection refused): is the gateway running at ${target}?`);
  if (has('ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME')) return unavailable(`cannot resolve the host of ${target}: check the address`);
  if (has('EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EADDRNOTAVAIL'))
    return unavailable(`cannot reach ${target} (${[...codes].find((c) => c.startsWith('E')) ?? 'unreachable'}): is the gateway running at ${target}?`);
  if (has('ENOENT') && /connect/.test(text)) return unavailable(`no socket at ${target}: is the gateway running?`);
  if (has('EPROTO', 'ERR_SSL_WRONG_VERSION_NUMBER') || /wrong version number|packet length too long|unknown protocol/i.test(text))
    return unavailable(`${target} did not answer with TLS: it looks like a plain listener (${hints.plain})`);
  if ([...codes].some((c) => CERT_CODES.has(c)))
    return unavailable(`the server certificate at ${target} is not trusted (${[...codes].find((c) => CERT_CODES.has(c)) ?? ''}): ${hints.trust}`);
  if (has('ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET') || /socket hang up/i.test(text))
    return unavailable(
      hints.usingTls
        ? `${target} closed the connection at once: is it the right port and does it speak TLS?`
        : `${target} closed the connection without answering: if it is a TLS listener, ${hints.tls}`,
    );
  return undefined;
}
