/**
 * The authentication pipeline, steps 2–4 of the spec (step 1, the shape of the body, is parseCompactJwe):
 * header algorithms, server `kid` active, client `skid` registered and valid (no crypto until here), then
 * decrypt and verify, then the claims. Every failure is an AuthFailure whose message is the reason for the
 * log only; the peer always gets the same 401. Replay and allow-lists come after, in handle-request.ts.
 */
import type { SealedApiConfig } from './config.ts';
import { checkClaims, EnvelopeError, openRequest, type Claims } from './envelope.ts';
import type { ServerKeyRing } from './keys.ts';
import type { Client, ClientRegistry } from './registry.ts';

/** An authentication failure; `message` is the reason (logged, never sent). */
export class AuthFailure extends Error {}

const deny = (reason: string): never => {
  throw new AuthFailure(reason);
};

/** An own property of a parsed JSON object (never one inherited from Object.prototype). */
function own(o: Readonly<Record<string, unknown>>, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

export interface AuthenticatorDeps {
  readonly config: Pick<SealedApiConfig, 'path' | 'clock'>;
  readonly registry: ClientRegistry;
  /** The current key ring (after start). */
  readonly ring: () => ServerKeyRing;
  /** Requests issued before this instant are refused (process start or the replay horizon). */
  readonly notBeforeMs: () => number;
  readonly now: () => number;
}

export type Authenticate = (
  body: string,
  header: Readonly<Record<string, unknown>>,
  receivedAtMs: number,
) => Promise<{ client: Client; claims: Claims }>;

/** Builds the authenticator. The returned function throws AuthFailure (and nothing else expected). */
export function createAuthenticator(d: AuthenticatorDeps): Authenticate {
  return async (body, header, t) => {
    const alg = own(header, 'alg');
    const enc = own(header, 'enc');
    if (alg !== 'ECDH-ES' || enc !== 'A256GCM') deny(`header alg/enc ${String(alg)}/${String(enc)}`);
    if (own(header, 'zip') !== undefined || own(header, 'crit') !== undefined) deny('header zip/crit present');
    const kid = own(header, 'kid');
    const skid = own(header, 'skid');
    if (typeof kid !== 'string' || typeof skid !== 'string') return deny('header kid/skid missing');
    const serverKey = d.ring().encryption.get(kid);
    if (serverKey === undefined || t >= serverKey.retiresAtMs) return deny('unknown or retired server key');
    const found = d.registry.lookup(skid, t);
    if (!found.ok) return deny(found.reason);
    const client = found.client;
    let raw: Record<string, unknown>;
    try {
      raw = await openRequest(body, serverKey.key, await client.key(), skid);
    } catch (err) {
      return deny(err instanceof EnvelopeError ? err.reason : 'open failed');
    }
    try {
      const claims = checkClaims(raw, {
        aud: kid,
        htu: d.config.path,
        nowMs: d.now(),
        skewMs: d.config.clock.skewMs,
        maxLifetimeMs: d.config.clock.maxLifetimeMs,
        notBeforeMs: d.notBeforeMs(),
      });
      return { client, claims };
    } catch (err) {
      return deny(err instanceof EnvelopeError ? `${err.reason} (client ${client.entry.name})` : 'claims failed');
    }
  };
}
