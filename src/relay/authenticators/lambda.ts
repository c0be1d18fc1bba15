/**
 * The AWS Lambda authorizer, nymea-remoteproxy's own method: invoke a Lambda function synchronously with
 * `{"token": "..."}` and read `isValid` from its answer.
 *
 * Request: `POST {endpoint}/2015-03-31/functions/{functionName}/invocations` (the endpoint defaults to
 * nymea's `https://lambda.{region}.amazonaws.com`), `X-Amz-Invocation-Type:
 * RequestResponse`, signed with AWS Signature V4 (service `lambda`). Answer, as nymea reads it: a JSON
 * object; `isValid: true` is NoError (the user is `userId`, `user`, or nymea's
 * `verifiedData.verifiedParsedToken.email`); any other non-empty object is AuthenticationFailed; an empty
 * object, non-JSON, a non-2xx status, an `X-Amz-Function-Error` header (the function threw), a transport
 * error or a body over 64 KiB is ProxyError. (nymea 1.8.4 leaves the client hanging until the timeout on a
 * transport error; we answer ProxyError at once.) At most `maxInFlight` invocations are open at a time;
 * past it a client gets ProxyError at once (RELAY_AUTHORIZER_BUSY). Credentials come from the config; none
 * are logged.
 */
import type { AuthenticatorConfig } from '../config.ts';
import type { Authenticator, AuthResult } from './types.ts';
import type { AuthenticatorDeps } from './index.ts';
import { InFlightLimit, postJson } from './post-json.ts';
import { RateLimitedWarnings } from '../../core/log.ts';
import { awsUriEncode, signRequest, type SigV4Credentials } from './sigv4.ts';
import { AUTHORIZER_MAX_USER_CHARS } from './http.ts';

/** The Lambda Invoke API path for a function name (or ARN). */
export function lambdaInvokeUrl(endpoint: string, functionName: string): URL {
  return new URL(
    `${endpoint.replace(/\/+$/, '')}/2015-03-31/functions/${awsUriEncode(functionName)}/invocations`,
  );
}

/** Reads the user from a positive answer, in the order: userId, user, nymea's Cognito email. */
function userOf(answer: Record<string, unknown>): string | undefined {
  const pick = (v: unknown) =>
    typeof v === 'string' && v !== '' ? v.slice(0, AUTHORIZER_MAX_USER_CHARS) : undefined;
  const verified = answer.verifiedData;
  const parsed =
    typeof verified === 'object' && verified !== null
      ? (verified as Record<string, unknown>).verifiedParsedToken
      : undefined;
  const email =
    typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>).email : undefined;
  return pick(answer.userId) ?? pick(answer.user) ?? pick(email);
}

export function createLambdaAuthenticator(
  config: Extract<AuthenticatorConfig, { kind: 'lambda' }>,
  deps: AuthenticatorDeps,
): Promise<Authenticator> {
  const log = deps.log.child({ authenticator: 'lambda' });
  const url = lambdaInvokeUrl(
    config.endpoint ?? `https://lambda.${config.region}.amazonaws.com`,
    config.functionName,
  );
  const credentials = (): SigV4Credentials => ({
    accessKeyId: config.accessKeyId.reveal(),
    secretAccessKey: config.secretAccessKey.reveal(),
    ...(config.sessionToken === undefined ? {} : { sessionToken: config.sessionToken.reveal() }),
  });
  const inFlight = new InFlightLimit(config.maxInFlight, log, 'Lambda authorizer busy; clients refused');
  log.info(
    {
      origin: url.origin,
      functionName: config.functionName,
      region: config.region,
      maxInFlight: config.maxInFlight,
    },
    'Lambda authorizer configured',
  );

  // One line per kind of failure every 10 s (with the count left out): a failing authorizer fails every
  // client, and a flood of clients must not flood the log. Keyed by our own codes and reasons.
  const failures = new RateLimitedWarnings(log);
  const proxyError = (key: string, fields: Record<string, unknown>): AuthResult => {
    failures.warn(key, fields, 'Lambda authorizer failed');
    return { error: 'AuthenticationErrorProxyError' };
  };

  return Promise.resolve({
    kind: 'lambda',
    async authenticate(request, signal): Promise<AuthResult> {
      const body = JSON.stringify({ token: request.token });
      const signed = signRequest(
        {
          method: 'POST',
          url,
          headers: { 'content-type': 'application/json', 'x-amz-invocation-type': 'RequestResponse' },
          body,
        },
        credentials(),
        config.region,
        'lambda',
        new Date(),
      );
      // fetch sets Host itself, from the same URL we signed.
      const { host: _host, ...headers } = signed.headers;
      if (!inFlight.tryEnter()) return { error: 'AuthenticationErrorProxyError' };
      let outcome;
      try {
        outcome = await postJson(url.href, headers, body, signal);
      } finally {
        inFlight.leave();
      }
      if (outcome.kind === 'aborted') return { error: 'AuthenticationErrorAborted' };
      if (outcome.kind === 'failed') {
        return proxyError(outcome.code, {
          code: outcome.code,
          status: outcome.status,
          reason: outcome.reason,
          awsErrorType: outcome.headers?.get('x-amzn-errortype') ?? undefined,
        });
      }
      const functionError = outcome.headers.get('x-amz-function-error');
      if (functionError !== null) {
        return proxyError('function-error', {
          code: 'RELAY_AUTHENTICATOR_ERROR',
          reason: `function error: ${functionError.slice(0, 64)}`,
        });
      }
      const answer = outcome.json;
      if (
        typeof answer !== 'object' ||
        answer === null ||
        Array.isArray(answer) ||
        Object.keys(answer).length === 0
      ) {
        return proxyError('not-an-object', {
          code: 'RELAY_AUTHENTICATOR_ERROR',
          reason: 'answer is not a non-empty JSON object',
        });
      }
      const record = answer as Record<string, unknown>;
      if (record.isValid !== true) return { error: 'AuthenticationErrorAuthenticationFailed' };
      const user = userOf(record);
      return user === undefined
        ? { error: 'AuthenticationErrorNoError' }
        : { error: 'AuthenticationErrorNoError', user };
    },
  });
}
