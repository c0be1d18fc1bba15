// Placeholder: being written (see authenticators helper).
import type { AuthenticatorConfig } from '../config.ts';
import type { Authenticator } from './types.ts';
import type { AuthenticatorDeps } from './index.ts';

export function createHttpAuthenticator(_config: Extract<AuthenticatorConfig, { kind: 'http' }>, _deps: AuthenticatorDeps): Promise<Authenticator> {
  return Promise.reject(new Error('not implemented yet'));
}
