/**
 * The development authenticator: accepts every token (nymea's `-m` dummy). Refused by config validation on
 * non-loopback listeners unless `allowNonLoopback` is set; the gateway logs a loud warning at start.
 */
import type { Authenticator } from './types.ts';

export function createDevAuthenticator(): Authenticator {
  return {
    kind: 'dev',
    // nymea's dummy authenticator reports this user name; monitors show it.
    authenticate: () => Promise.resolve({ error: 'AuthenticationErrorNoError', user: 'dummy@example.com' }),
  };
}
