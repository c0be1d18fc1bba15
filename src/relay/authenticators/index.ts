/** Builds the configured authenticator. */
import type { Logger } from '../../core/log.ts';
import type { AuthenticatorConfig } from '../config.ts';
import type { Authenticator } from './types.ts';
import { createDevAuthenticator } from './dev.ts';
import { createMockAuthenticator } from './mock.ts';
import { createStaticAuthenticator } from './static.ts';
import { createHttpAuthenticator } from './http.ts';
import { createLambdaAuthenticator } from './lambda.ts';

export interface AuthenticatorDeps {
  readonly log: Logger;
  readonly baseDir: string;
}

export async function createAuthenticator(config: AuthenticatorConfig, deps: AuthenticatorDeps): Promise<Authenticator> {
  switch (config.kind) {
    case 'dev':
      deps.log.warn(
        'DEV AUTHENTICATOR: every token is accepted. Anyone who can reach the listeners can open tunnels. Configure [relay.authenticator] before exposing this gateway.',
      );
      return createDevAuthenticator();
    case 'mock':
      deps.log.warn('TEST AUTHENTICATOR: tokens of the form mock:<delayMs>:<AuthenticationError> decide the answer. For test suites only.');
      return createMockAuthenticator();
    case 'static':
      return createStaticAuthenticator(config, deps);
    case 'http':
      return createHttpAuthenticator(config, deps);
    case 'lambda':
      return createLambdaAuthenticator(config, deps);
  }
}
