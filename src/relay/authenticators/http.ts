/**
 * The HTTP authorizer: asks a web service of the operator whether a token is valid.
 *
 * Request: `POST <url>` with `Content-Type: application/json`, the body `{"token","uuid","name","nonce"}`
 * and, when configured, `Authorization: Bearer <bearer>`. Answer: status 2xx with a JSON object
 * `{"isValid": boolean, "user"?: string}`. `isValid: false` is AuthenticationFailed; anything else going
 * wrong (unreachable, non-2xx, not JSON, no boolean `isValid`, a body over 64 KiB) is ProxyError with a
 * warning that names the reason and never the token or the bearer. The call ends when the session's
 * signal aborts (the authentication timeout). At most `maxInFlight` requests are open at a time; past it a
 * client gets ProxyError at once (RELAY_AUTHORIZER_BUSY).
 */
import type { AuthenticatorConfig } from '../config.ts';
import type { Authenticator, AuthResult } from './types.ts';
import type { AuthenticatorDeps } from './index.ts';
import { InFlightLimit, postJson } from './post-json.ts';
import { GatewayError } from '../../core/errors.ts';
import { RateLimitedWarnings } from '../../core/log.ts';

/** Longest user name taken from an authorizer's answer; longer names are cut (the monitor shows them). */
export const AUTHORIZER_MAX_USER_CHARS = 256;

export function createHttpAuthenticator(
  config: Extract<AuthenticatorConfig, { kind: 'http' }>,
  deps: AuthenticatorDeps,
): Promise<Authenticator> {
  const log = deps.log.child({ authenticator: 'http' });
  const url = new URL(config.url);
  if (url.username !== '' || url.password !== '') {
    // fetch refuses such URLs; say so at start rather than on every client.
    return Promise.reject(
      new GatewayError(
        'CORE_CONFIG_INVALID',
        'relay.authenticator.url must not contain user:password@; use bearer',
      ),
    );
  }
  const target = url.href;
  const inFlight = new InFlightLimit(config.maxInFlight, log, 'HTTP authorizer busy; clients refused');
  // One line per kind of failure every 10 s (with the count left out): a failing authorizer fails every
  // client, and a flood of clients must not flood the log. Keyed by our own codes, never by its answers.
  const failures = new RateLimitedWarnings(log);
  log.info({ origin: url.origin, maxInFlight: config.maxInFlight }, 'HTTP authorizer configured');

  return Promise.resolve({
    kind: 'http',
    async authenticate(request, signal): Promise<AuthResult> {
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        accept: 'application/json',
      };
      if (config.bearer !== undefined) headers.authorization = `Bearer ${config.bearer.reveal()}`;
      const body = JSON.stringify({
        token: request.token,
        uuid: request.uuid,
        name: request.name,
        nonce: request.nonce,
      });
      if (!inFlight.tryEnter()) return { error: 'AuthenticationErrorProxyError' };
      let outcome;
      try {
        outcome = await postJson(target, headers, body, signal);
      } finally {
        inFlight.leave();
      }
      if (outcome.kind === 'aborted') return { error: 'AuthenticationErrorAborted' };
      if (outcome.kind === 'failed') {
        failures.warn(
          outcome.code,
          { code: outcome.code, status: outcome.status, reason: outcome.reason, uuid: request.uuid },
          'HTTP authorizer failed',
        );
        return { error: 'AuthenticationErrorProxyError' };
      }
      const answer = outcome.json;
      if (
        typeof answer !== 'object' ||
        answer === null ||
        Array.isArray(answer) ||
        typeof (answer as { isValid?: unknown }).isValid !== 'boolean'
      ) {
        failures.warn(
          'no-isValid',
          {
            code: 'RELAY_AUTHENTICATOR_ERROR',
            status: outcome.status,
            reason: 'answer has no boolean isValid',
          },
          'HTTP authorizer failed',
        );
        return { error: 'AuthenticationErrorProxyError' };
      }
      const { isValid, user } = answer as { isValid: boolean; user?: unknown };
      if (!isValid) return { error: 'AuthenticationErrorAuthenticationFailed' };
      return typeof user === 'string' && user !== ''
        ? { error: 'AuthenticationErrorNoError', user: user.slice(0, AUTHORIZER_MAX_USER_CHARS) }
        : { error: 'AuthenticationErrorNoError' };
    },
  });
}
