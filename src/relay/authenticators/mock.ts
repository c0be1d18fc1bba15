/**
 * The test authenticator, reproducing nymea's test mock: a token `mock:<delayMs>:<AuthenticationError>`
 * answers with that error after that delay (e.g. `mock:100:AuthenticationErrorNoError`). Any other token
 * is accepted at once, as nymea's mock does with its default result. Only enabled by an explicit
 * `kind = "mock"` config (never a default); it logs a warning at start like the dev authenticator.
 */
import { isAuthenticationError, type AuthenticationError } from '../protocol/api.ts';
import type { Authenticator } from './types.ts';

/** Largest delay a mock token may ask for, so a test token cannot park a connection for hours. */
export const MOCK_MAX_DELAY_MS = 60_000;

export function parseMockToken(token: string): { delayMs: number; error: AuthenticationError } | null {
  const m = /^mock:(\d{1,9}):([A-Za-z]+)$/.exec(token);
  if (m === null) return null;
  const delayMs = Number(m[1]);
  const error = m[2]!;
  if (!isAuthenticationError(error) || delayMs > MOCK_MAX_DELAY_MS) return null;
  return { delayMs, error };
}

export function createMockAuthenticator(): Authenticator {
  return {
    kind: 'mock',
    authenticate(request, signal) {
      const parsed = parseMockToken(request.token);
      if (parsed === null) return Promise.resolve({ error: 'AuthenticationErrorNoError', user: 'mock' });
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ error: parsed.error, user: 'mock' }), parsed.delayMs);
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve({ error: 'AuthenticationErrorAborted' });
        }, { once: true });
      });
    },
  };
}
