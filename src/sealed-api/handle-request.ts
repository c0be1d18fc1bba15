/**
 * One request through the checks, in the spec's order, cheapest first: state, back-off (429), path (404),
 * method (405), media type (415), declared size (413), concurrency (503), body (413/408), compact JWE
 * shape (400), authentication (401, authenticate.ts), replay (401 / sealed 503), replay horizon (sealed
 * 503), allow-list (sealed 403), action (run-action.ts), sealed answer. This module decides; respond.ts
 * writes, body.ts reads.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorSpec } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { SealedApiConfig } from './config.ts';
import { MEDIA_TYPE, parseCompactJwe, sealResponse } from './envelope.ts';
import { readBody } from './body.ts';
import { AuthFailure, type Authenticate } from './authenticate.ts';
import type { ReplayHorizon } from './horizon.ts';
import type { ServerKeyRing } from './keys.ts';
import { matchesAllow } from './registry.ts';
import type { ReplayStore, ReplayVerdict } from './replay.ts';
import type { ActionRegistry } from './actions/index.ts';
import type { ActionRunner } from './run-action.ts';
import type { FailureBackoff } from '../core/backoff.ts';
import { clientAddress, type AddressBook } from './proxy.ts';
import { fail, publishRefusal, sendPlain, sendPlainAndClose, sendSealed, type Answer } from './respond.ts';
import { sealedRequestChannel, type SealedRequestEvent } from '../core/events.ts';

export interface RequestHandlerDeps {
  readonly config: SealedApiConfig;
  readonly log: Logger;
  readonly now: () => number;
  readonly running: () => boolean;
  readonly backoff: FailureBackoff;
  readonly addresses: AddressBook;
  readonly authenticate: Authenticate;
  readonly replay: ReplayStore;
  readonly horizon: ReplayHorizon;
  readonly actions: ActionRegistry;
  readonly runner: ActionRunner;
  readonly ring: () => ServerKeyRing;
}

export interface RequestHandler {
  /** Handles one request. Rejects only on our own faults (the caller answers 500 and logs). */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Requests past the cheap checks and not yet answered. */
  readonly inFlight: number;
  /** Calls `cb` whenever the last in-flight request finishes; returns the unsubscribe function. */
  onIdle(cb: () => void): () => void;
}

export function createRequestHandler(d: RequestHandlerDeps): RequestHandler {
  const { config, log, now } = d;
  let inFlight = 0;
  const idle = new Set<() => void>();

  async function authenticated(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    ip: string,
    t: number,
    seen: { action: string },
  ): Promise<void> {
    const body = await readBody(req, res, requestId, {
      maxBodyBytes: config.limits.maxBodyBytes,
      bodyMs: config.timeouts.bodyMs,
    });
    if (body === undefined) return;
    const parsed = parseCompactJwe(body);
    if (parsed === undefined) return sendPlain(res, 'SEALED_BAD_REQUEST', requestId);
    let auth: Awaited<ReturnType<Authenticate>>;
    try {
      auth = await d.authenticate(body, parsed.header, t);
    } catch (err) {
      if (!(err instanceof AuthFailure)) throw err;
      d.backoff.fail(ip, t);
      log.warn({ requestId, ip, reason: err.message }, 'unauthorized');
      return sendPlain(res, 'SEALED_UNAUTHORIZED', requestId);
    }
    const { client, claims } = auth;
    let verdict: ReplayVerdict | 'failed';
    try {
      verdict = await d.replay.remember(
        `${client.entry.kid}:${claims.jti}`,
        claims.exp * 1000 + config.clock.skewMs,
        now(),
      );
    } catch (err) {
      // The client is authenticated, so the refusal is sealed; without a verdict the action never runs.
      log.error({ requestId, err }, 'replay store failed');
      verdict = 'failed';
    }
    if (verdict === 'duplicate') {
      d.backoff.fail(ip, t);
      log.warn({ requestId, ip, reason: `replayed jti (client ${client.entry.name})` }, 'unauthorized');
      return sendPlain(res, 'SEALED_UNAUTHORIZED', requestId);
    }
    if (d.addresses.seen(`${client.entry.kid}|${ip}`, now()))
      log.info({ client: client.entry.name, kid: client.entry.kid, ip }, 'new client address');
    let refusal: Answer | undefined;
    const action = d.actions.get(claims.act);
    // A metric label: only names the server registered (a client's string never becomes one).
    seen.action = action === undefined ? 'unregistered' : action.name;
    if (verdict === 'full') refusal = fail('SEALED_REPLAY_CACHE_FULL', 'the server is too busy; retry later');
    else if (verdict === 'failed')
      refusal = fail('SEALED_REPLAY_STORE_FAILED', 'the server cannot check for replays; retry later');
    else if (!(await d.horizon.guard(claims.iat * 1000, now())))
      refusal = fail('SEALED_REPLAY_HORIZON_FAILED', 'the server cannot record the request; retry later');
    else if (!matchesAllow(client.entry.allow, claims.act))
      refusal = fail('SEALED_FORBIDDEN', `action ${claims.act} is not allowed for this client`);
    else if (action === undefined) refusal = fail('SEALED_UNKNOWN_ACTION', `no action named ${claims.act}`);
    let answer: Answer;
    if (refusal !== undefined || action === undefined) {
      answer = refusal ?? fail('SEALED_UNKNOWN_ACTION', `no action named ${claims.act}`);
      if (!answer.ok) publishRefusal(answer.error.code);
    } else
      answer = await d.runner.run(action, claims.args, client, {
        client: { kid: client.entry.kid, name: client.entry.name },
        requestId,
        remoteAddress: ip,
      });
    const ring = d.ring();
    const signer = config.signResponses ? { kid: ring.signing.kid, key: ring.signing.key } : undefined;
    let { status, ...sealedBody } = answer;
    let jwe: string;
    try {
      jwe = await sealResponse(claims.rk, claims.jti, sealedBody, signer);
    } catch (err) {
      // A result JSON cannot carry (a module's BigInt, a cycle, a throwing toJSON): the action has run, so
      // the client gets that as a sealed failure, not an unsealed 500 it cannot tell from a transport fault.
      log.error({ requestId, err, code: 'SEALED_ACTION_FAILED', action: seen.action }, 'action result cannot be sealed');
      ({ status, ...sealedBody } = fail('SEALED_ACTION_FAILED', errorSpec('SEALED_ACTION_FAILED').summary));
      publishRefusal('SEALED_ACTION_FAILED');
      jwe = await sealResponse(claims.rk, claims.jti, sealedBody, signer);
    }
    log.debug({ requestId, client: client.entry.name, action: claims.act, status }, 'request done');
    sendSealed(res, status, jwe, requestId);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomBytes(6).toString('hex');
    const seen = { action: 'none' };
    if (sealedRequestChannel.hasSubscribers) {
      res.once('close', () => {
        const event: SealedRequestEvent = { action: seen.action, status: res.headersSent ? res.statusCode : 0 };
        sealedRequestChannel.publish(event);
      });
    }
    const ip = clientAddress(req, config.proxy.trustedHops, config.proxy.header);
    if (!d.running()) return sendPlain(res, 'CORE_SHUTTING_DOWN', requestId, { connection: 'close' });
    const t = now();
    if (d.backoff.blocked(ip, t))
      return sendPlain(res, 'SEALED_TOO_MANY_FAILURES', requestId, {
        'retry-after': String(Math.ceil(config.limits.authFailureWindowMs / 1000)),
      });
    const path = (req.url ?? '').split('?')[0];
    if (path !== config.path) return sendPlain(res, 'SEALED_NOT_FOUND', requestId);
    if (req.method !== 'POST') return sendPlain(res, 'SEALED_METHOD_NOT_ALLOWED', requestId, { allow: 'POST' });
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== MEDIA_TYPE) return sendPlain(res, 'SEALED_UNSUPPORTED_MEDIA_TYPE', requestId);
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > config.limits.maxBodyBytes) return sendPlainAndClose(res, 'SEALED_LIMIT_BODY', requestId);
    if (inFlight >= config.limits.maxConcurrentRequests)
      return sendPlain(res, 'SEALED_LIMIT_CONCURRENT', requestId);
    inFlight++;
    try {
      await authenticated(req, res, requestId, ip, t, seen);
    } finally {
      inFlight--;
      if (inFlight === 0) for (const cb of idle) cb();
    }
  }

  return {
    handle,
    get inFlight() {
      return inFlight;
    },
    onIdle(cb) {
      idle.add(cb);
      return () => idle.delete(cb);
    },
  };
}
