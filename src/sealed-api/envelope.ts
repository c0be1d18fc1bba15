/**
 * The sealed envelope (pure: no sockets, no files): building and opening requests and responses with jose.
 *
 * Request  = compact JWE {alg: ECDH-ES, enc: A256GCM, kid: server key id, skid: client key id}
 *            whose plaintext is a compact JWS {alg: EdDSA, kid: client key id} over the claims
 *            {v:1, aud, iat, exp, jti, htm, htu, act, args, rk}.
 * Response = compact JWE {alg: dir, enc: A256GCM, rid: jti} under `rk` (one-time response key); plaintext
 *            `{ok:true, result}` / `{ok:false, error:{code, message}}`, or (signed responses, `cty: "JOSE"`) a
 *            compact JWS by the server's Ed25519 key over `{rid, ...that}`.
 * Every failure here is reported as a short reason string for the log, never to the peer.
 */
import { CompactEncrypt, CompactSign, compactDecrypt, compactVerify, base64url, type CryptoKey } from 'jose';

export const PROTOCOL_VERSION = 1;
export const REQUEST_ALG = 'ECDH-ES';
export const RESPONSE_ALG = 'dir';
export const CONTENT_ENC = 'A256GCM';
export const SIGN_ALG = 'EdDSA';
export const MEDIA_TYPE = 'application/jose';
const JTI_BYTES = 16;
const RK_BYTES = 32;
const B64URL = /^[A-Za-z0-9_-]*$/;

export interface Claims {
  readonly v: 1;
  readonly aud: string;
  /** Seconds since the epoch (fractions allowed, as NumericDate permits). */
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
  readonly htm: 'POST';
  readonly htu: string;
  readonly act: string;
  readonly args: Record<string, unknown>;
  readonly rk: string;
}

export interface ProtectedHeader {
  readonly alg?: unknown;
  readonly enc?: unknown;
  readonly kid?: unknown;
  readonly skid?: unknown;
  readonly zip?: unknown;
  readonly crit?: unknown;
  readonly [k: string]: unknown;
}

/** Thrown (and caught by the server) for any failure in opening a request; `reason` is for the log only. */
export class EnvelopeError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'EnvelopeError';
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/**
 * Step 1 of the server's checks, without any crypto: exactly 5 base64url segments and a JSON object as the
 * protected header. Returns undefined when the body is malformed (→ 400).
 */
export function parseCompactJwe(
  body: string,
): { header: ProtectedHeader; segments: readonly string[] } | undefined {
  const segments = body.split('.');
  if (segments.length !== 5) return undefined;
  for (const s of segments) if (!B64URL.test(s)) return undefined;
  const first = segments[0]!;
  if (first.length === 0 || first.length > 4096) return undefined;
  try {
    const header: unknown = JSON.parse(dec.decode(base64url.decode(first)));
    if (header === null || typeof header !== 'object' || Array.isArray(header)) return undefined;
    return { header: header as ProtectedHeader, segments };
  } catch {
    return undefined;
  }
}

/**
 * Step 3: decrypts with only ECDH-ES/A256GCM and no compression, then verifies the inner JWS with only EdDSA;
 * the inner `kid` must equal the outer `skid`. Returns the claims object (not yet checked).
 * @throws EnvelopeError
 */
export async function openRequest(
  jwe: string,
  serverKey: CryptoKey,
  clientKey: CryptoKey,
  clientKid: string,
): Promise<Record<string, unknown>> {
  let plaintext: Uint8Array;
  try {
    const out = await compactDecrypt(jwe, serverKey, {
      keyManagementAlgorithms: [REQUEST_ALG],
      contentEncryptionAlgorithms: [CONTENT_ENC],
    });
    plaintext = out.plaintext;
  } catch (err) {
    throw new EnvelopeError(`decrypt failed (${(err as { code?: string }).code ?? 'error'})`);
  }
  let jws: string;
  try {
    jws = dec.decode(plaintext);
  } catch {
    throw new EnvelopeError('plaintext is not UTF-8');
  }
  let payload: Uint8Array;
  try {
    const out = await compactVerify(jws, clientKey, { algorithms: [SIGN_ALG] });
    if (out.protectedHeader.kid !== clientKid) throw new EnvelopeError('inner kid differs from outer skid');
    // jose honours `b64: false` (RFC 7797) listed in `crit`; we take only the plain form of the spec.
    if (out.protectedHeader.crit !== undefined || out.protectedHeader.b64 !== undefined)
      throw new EnvelopeError('inner header crit/b64 present');
    payload = out.payload;
  } catch (err) {
    if (err instanceof EnvelopeError) throw err;
    throw new EnvelopeError(`signature invalid (${(err as { code?: string }).code ?? 'error'})`);
  }
  let claims: unknown;
  try {
    claims = JSON.parse(dec.decode(payload));
  } catch {
    throw new EnvelopeError('claims are not JSON');
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims))
    throw new EnvelopeError('claims are not an object');
  return claims as Record<string, unknown>;
}

export interface ClaimChecks {
  readonly aud: string;
  readonly htu: string;
  readonly nowMs: number;
  readonly skewMs: number;
  readonly maxLifetimeMs: number;
  /** Requests issued before this instant (the process start) are refused. */
  readonly notBeforeMs: number;
}

/** Step 4: validates the claims. @throws EnvelopeError */
export function checkClaims(raw: Record<string, unknown>, c: ClaimChecks): Claims {
  // Own properties only: a claim is never read from Object.prototype.
  const own = (k: string): unknown => (Object.hasOwn(raw, k) ? raw[k] : undefined);
  const [v, aud, iat, exp, jti, htm, htu, act, args, rk] = [
    'v', 'aud', 'iat', 'exp', 'jti', 'htm', 'htu', 'act', 'args', 'rk',
  ].map(own);
  if (v !== PROTOCOL_VERSION) throw new EnvelopeError('bad v');
  if (aud !== c.aud) throw new EnvelopeError('wrong aud');
  if (htm !== 'POST') throw new EnvelopeError('wrong htm');
  if (htu !== c.htu) throw new EnvelopeError('wrong htu');
  if (typeof iat !== 'number' || typeof exp !== 'number' || !Number.isFinite(iat) || !Number.isFinite(exp))
    throw new EnvelopeError('bad iat/exp');
  const iatMs = iat * 1000;
  const expMs = exp * 1000;
  if (expMs <= iatMs) throw new EnvelopeError('exp not after iat');
  if (expMs - iatMs > c.maxLifetimeMs) throw new EnvelopeError('lifetime too long');
  if (iatMs > c.nowMs + c.skewMs) throw new EnvelopeError('iat in the future');
  if (expMs < c.nowMs - c.skewMs) throw new EnvelopeError('expired');
  if (iatMs < c.notBeforeMs) throw new EnvelopeError('issued before the server started');
  if (typeof jti !== 'string' || jti.length < 22 || jti.length > 64 || !B64URL.test(jti))
    throw new EnvelopeError('bad jti');
  if (typeof act !== 'string' || act.length === 0 || act.length > 128) throw new EnvelopeError('bad act');
  if (args === null || typeof args !== 'object' || Array.isArray(args)) throw new EnvelopeError('bad args');
  if (typeof rk !== 'string' || rk.length !== 43 || !B64URL.test(rk)) throw new EnvelopeError('bad rk');
  return { v: 1, aud, iat, exp, jti, htm, htu, act, args: args as Record<string, unknown>, rk };
}

/** The sealed answer's plaintext. */
export type ResponseBody =
  | { readonly ok: true; readonly result: unknown }
  | { readonly ok: false; readonly error: { readonly code: string; readonly message: string } };

export interface ResponseSigner {
  readonly kid: string;
  readonly key: CryptoKey;
}

/** Step 7: seals `body` under the one-time response key, bound to the request by `rid`. */
export async function sealResponse(
  rk: string,
  rid: string,
  body: ResponseBody,
  signer?: ResponseSigner,
): Promise<string> {
  const key = base64url.decode(rk);
  let plaintext: Uint8Array;
  const header: { alg: string; enc: string; rid: string; cty?: string } = {
    alg: RESPONSE_ALG,
    enc: CONTENT_ENC,
    rid,
  };
  if (signer === undefined) {
    plaintext = enc.encode(JSON.stringify(body));
  } else {
    header.cty = 'JOSE';
    const jws = await new CompactSign(enc.encode(JSON.stringify({ rid, ...body })))
      .setProtectedHeader({ alg: SIGN_ALG, kid: signer.kid })
      .sign(signer.key);
    plaintext = enc.encode(jws);
  }
  return new CompactEncrypt(plaintext).setProtectedHeader(header).encrypt(key);
}

export interface BuildRequestOptions {
  readonly serverKid: string;
  readonly serverKey: CryptoKey;
  readonly clientKid: string;
  readonly clientKey: CryptoKey;
  readonly htu: string;
  readonly act: string;
  readonly args: Record<string, unknown>;
  readonly nowMs: number;
  /** Lifetime of the request (exp − iat), default 60 s. */
  readonly lifetimeMs?: number;
  /** Overrides for tests (e.g. a wrong `aud`). */
  readonly claimOverrides?: Record<string, unknown>;
  readonly randomBytes: (n: number) => Uint8Array;
}

/** Client side: builds a sealed request. Returns the compact JWE plus what is needed to open the answer. */
export async function buildRequest(
  o: BuildRequestOptions,
): Promise<{ jwe: string; jti: string; rk: string }> {
  const jti = base64url.encode(o.randomBytes(JTI_BYTES));
  const rk = base64url.encode(o.randomBytes(RK_BYTES));
  const iat = o.nowMs / 1000;
  const claims = {
    v: PROTOCOL_VERSION,
    aud: o.serverKid,
    iat,
    exp: iat + (o.lifetimeMs ?? 60000) / 1000,
    jti,
    htm: 'POST',
    htu: o.htu,
    act: o.act,
    args: o.args,
    rk,
    ...o.claimOverrides,
  };
  const jws = await new CompactSign(enc.encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: SIGN_ALG, kid: o.clientKid })
    .sign(o.clientKey);
  const jwe = await new CompactEncrypt(enc.encode(jws))
    .setProtectedHeader({ alg: REQUEST_ALG, enc: CONTENT_ENC, kid: o.serverKid, skid: o.clientKid })
    .encrypt(o.serverKey);
  return { jwe, jti, rk };
}

/**
 * Client side: opens a sealed response. Only `dir`/A256GCM under `rk` is accepted and `rid` must equal
 * `jti` (a reflected request or another request's answer fails). With `serverSigningKey`, the answer must
 * be signed by it.
 * @throws EnvelopeError
 */
export async function openResponse(
  jwe: string,
  rk: string,
  jti: string,
  serverSigningKey?: CryptoKey,
): Promise<ResponseBody> {
  const parsed = parseCompactJwe(jwe);
  if (parsed === undefined) throw new EnvelopeError('response is not a compact JWE');
  if (parsed.header.alg !== RESPONSE_ALG || parsed.header.enc !== CONTENT_ENC)
    throw new EnvelopeError('response alg/enc not dir/A256GCM');
  if (parsed.header.rid !== jti) throw new EnvelopeError('response rid does not match the request jti');
  let plaintext: Uint8Array;
  try {
    const out = await compactDecrypt(jwe, base64url.decode(rk), {
      keyManagementAlgorithms: [RESPONSE_ALG],
      contentEncryptionAlgorithms: [CONTENT_ENC],
    });
    plaintext = out.plaintext;
  } catch {
    throw new EnvelopeError('response decrypt failed');
  }
  let text: string;
  try {
    text = dec.decode(plaintext);
  } catch {
    throw new EnvelopeError('response is not UTF-8');
  }
  if (parsed.header.cty === 'JOSE') {
    try {
      // Without a pinned signing key the signature is not checked (the answer is still authenticated by rk).
      text =
        serverSigningKey === undefined
          ? dec.decode(base64url.decode(text.split('.')[1] ?? ''))
          : dec.decode((await compactVerify(text, serverSigningKey, { algorithms: [SIGN_ALG] })).payload);
    } catch {
      throw new EnvelopeError('response signature invalid');
    }
  } else if (serverSigningKey !== undefined) {
    throw new EnvelopeError('response is not signed');
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new EnvelopeError('response body is not JSON');
  }
  if (body === null || typeof body !== 'object') throw new EnvelopeError('response body is not an object');
  if (parsed.header.cty === 'JOSE' && body.rid !== jti) throw new EnvelopeError('signed rid does not match');
  if (body.ok === true) return { ok: true, result: body.result };
  const error = body.error as { code?: unknown; message?: unknown } | undefined;
  if (body.ok === false && typeof error?.code === 'string' && typeof error.message === 'string') {
    return { ok: false, error: { code: error.code, message: error.message } };
  }
  throw new EnvelopeError('response body malformed');
}
