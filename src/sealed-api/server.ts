/**
 * The sealed API front end: one HTTP(S) listener, one endpoint (`POST <path>`, default /v1/rpc).
 *
 * Checks run in the spec's order, cheapest first, and no crypto happens for malformed bodies or unknown,
 * revoked or expired clients: (1) size limits, 5 compact segments, protected header; (2) server `kid`
 * active, client `skid` registered and valid; (3) decrypt (ECDH-ES/A256GCM only) and verify (EdDSA only),
 * inner kid = skid; (4) claims; (5) replay cache; (6) allow-list; (7) run the action and seal the result.
 * Every authentication failure is the same `401 {"error":"unauthorized"}`; the reason is logged with the
 * request id. After authentication, errors travel sealed with the matching HTTP status.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { randomBytes } from 'node:crypto';
import { mkdir, chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from '../core/log.ts';
import type { CloseOptions, Service, ServiceState } from '../core/lifecycle.ts';
import { listen, stopListening } from '../core/net.ts';
import { loadTlsFiles } from '../core/tls.ts';
import { errorSpec, GatewayError, isGatewayError, type ErrorCode } from '../core/errors.ts';
import type { SealedApiConfig, ManagedFileConfig } from './config.ts';
import {
  checkClaims,
  EnvelopeError,
  MEDIA_TYPE,
  openRequest,
  parseCompactJwe,
  sealResponse,
  type ResponseBody,
} from './envelope.ts';
import {
  loadKeyRing,
  loadOrCreateServerKeyFile,
  publicInfo,
  type ServerKeyRing,
  type ServerPublicInfo,
} from './keys.ts';
import { ClientRegistry, matchesAllow, type Client } from './registry.ts';
import { DirectoryReplayStore, MemoryReplayStore, type ReplayStore } from './replay.ts';
import { ActionRegistry, loadModule, pingAction, timeAction } from './actions/index.ts';
import { FileManager, fileActions } from './actions/files.ts';
import type { Action, ActionContext } from './actions/types.ts';
import { clientAddress, FailureBackoff, AddressBook } from './proxy.ts';
import { writeFileAtomic } from './atomic.ts';
import { sealedPaths } from './admin.ts';

export interface SealedApiDeps {
  readonly log: Logger;
  readonly baseDir: string;
  /** A replay store shared by several gateway processes (default: in memory). */
  readonly replayStore?: ReplayStore;
  /** Clock (tests). */
  readonly now?: () => number;
  /**
   * Benchmarks only: also serve this path WITHOUT any sealing or authentication (JSON `{act, args}` in and
   * out), so the cost of the protocol can be measured against the same server. Never set from config.
   */
  readonly unsealedPathForBenchmarks?: string;
}

export interface SealedApiServer extends Service {
  /** `http://127.0.0.1:1214/v1/rpc` once started. */
  readonly url: string;
  readonly port: number;
  readonly keyFile: string;
  readonly registryFile: string;
  /** The public keys clients pin (after start). */
  serverInfo(): ServerPublicInfo;
  readonly registry: ClientRegistry;
  readonly actions: ActionRegistry;
  /** Reloads server keys and registry now (tests; the watchers do it by themselves). */
  reload(): Promise<void>;
}

const PLAIN_BODIES: Partial<Record<ErrorCode, string>> = {
  SEALED_UNAUTHORIZED: '{"error":"unauthorized"}',
};

/** Granularity of the replay horizon on disk (see createSealedApiServer). */
const HORIZON_STEP_MS = 10000;

function plainBody(code: ErrorCode): string {
  return PLAIN_BODIES[code] ?? JSON.stringify({ error: code.replace(/^(SEALED|CORE)_/, '').toLowerCase() });
}

/** Demo content for the embedded defaults: a valid wg0.conf with random (not real) keys. */
function demoWireGuard(): string {
  const key = () => {
    const b = randomBytes(32);
    return b.toString('base64');
  };
  return `# Demo file managed by the Gatehouse sealed API (embedded defaults).\n[Interface]\nPrivateKey = ${key()}\nAddress = 10.0.0.1/24\nListenPort = 51820\n\n[Peer]\n# first peer\nPublicKey = ${key()}\nAllowedIPs = 10.0.0.2/32\n`;
}

export function createSealedApiServer(config: SealedApiConfig, deps: SealedApiDeps): SealedApiServer {
  const log = deps.log.child({ frontEnd: 'sealed-api' });
  const now = deps.now ?? Date.now;
  const { stateDir, keyFile, publicFile, registryFile, backupDir } = sealedPaths(config, deps.baseDir);
  const registry = new ClientRegistry(registryFile, log, config.reloadCheckMs);
  const dirStore =
    deps.replayStore === undefined && config.replayDir !== undefined
      ? new DirectoryReplayStore(resolve(deps.baseDir, config.replayDir), config.limits.maxReplayEntries, config.timeouts.replaySweepMs, log)
      : undefined;
  const replay = deps.replayStore ?? dirStore ?? new MemoryReplayStore(config.limits.maxReplayEntries);
  const backoff = new FailureBackoff(config.limits.maxAuthFailuresPerIp, config.limits.authFailureWindowMs);
  const addresses = new AddressBook(config.limits.maxKnownAddresses, config.timeouts.addressTtlMs);
  const actions = new ActionRegistry();
  const files: Record<string, ManagedFileConfig> = { ...config.files };
  if (config.demo && files.demo === undefined)
    files.demo = {
      path: join(stateDir, 'demo', 'wg0.conf'),
      format: 'wireguard',
      backup: true,
      backupsKept: 10,
      postWriteTimeoutMs: 10000,
      allowHooks: false,
    };
  const fileManager = new FileManager({
    files,
    baseDir: deps.baseDir,
    backupDir,
    maxFileBytes: config.limits.maxFileBytes,
    lockWaitMs: config.timeouts.fileLockMs,
    log,
  });
  let ring: ServerKeyRing | undefined;
  let info: ServerPublicInfo | undefined;
  let keySig = '';
  let keyPoll: NodeJS.Timeout | undefined;
  let server: Server | undefined;
  let state: ServiceState = 'idle';
  let closing: Promise<void> | undefined;
  let startedAtMs = 0;
  let port = 0;
  let inFlight = 0;
  const idle = new Set<() => void>();
  const aborts = new Set<AbortController>();
  /*
   * The replay horizon (in-memory replay cache only; the directory store survives restarts by itself).
   * A request is refused when its iat is before the process started, but the previous process accepted
   * iat up to its own clock + skew. A request dated ahead of our clock is therefore recorded, rounded up
   * to HORIZON_STEP_MS, in <stateDir>/replay-horizon before its action runs, and the next process refuses
   * every iat before that mark. At most one fsynced write per step, and only for clients whose clock runs ahead.
   */
  const horizonFile = join(stateDir, 'replay-horizon');
  const useHorizon = deps.replayStore === undefined && dirStore === undefined;
  let horizonDurableMs = 0;
  let horizonPendingMs = 0;
  let horizonWrite: Promise<void> = Promise.resolve();
  const scheme = config.tls === undefined ? 'http' : 'https';

  async function loadKeys(first: boolean): Promise<void> {
    const st = await stat(keyFile).catch(() => undefined);
    if (!first && st !== undefined && `${st.ino}:${st.size}:${st.mtimeMs}` === keySig) return;
    const { file, created } = await loadOrCreateServerKeyFile(keyFile);
    const nextRing = await loadKeyRing(file, keyFile);
    const nextInfo = publicInfo(file);
    // The public half, for local clients and `gatehouse call` (pinning it is the client's job); written
    // before the new keys are announced, so serverInfo() never runs ahead of the file.
    await writeFileAtomic(publicFile, `${JSON.stringify(nextInfo, null, 2)}\n`, { mode: 0o644 });
    ring = nextRing;
    info = nextInfo;
    const now2 = await stat(keyFile);
    keySig = `${now2.ino}:${now2.size}:${now2.mtimeMs}`;
    if (created) log.info({ kid: ring.current.kid, file: keyFile }, 'server key pair created');
    else
      log.info(
        { kid: ring.current.kid, keys: ring.encryption.size },
        first ? 'server keys loaded' : 'server keys reloaded',
      );
  }

  async function readHorizon(): Promise<number> {
    try {
      const n = Number((await readFile(horizonFile, 'utf8')).trim());
      return Number.isFinite(n) && n > 0 ? n : 0;
    } catch {
      return 0;
    }
  }

  /** True once a restart is guaranteed to refuse this request (see the replay horizon above). */
  async function guardAgainstRestart(iatMs: number, nowMs: number): Promise<boolean> {
    if (!useHorizon || iatMs <= nowMs) return true;
    if (iatMs > horizonPendingMs) {
      const target = Math.ceil(iatMs / HORIZON_STEP_MS) * HORIZON_STEP_MS;
      horizonPendingMs = target;
      horizonWrite = horizonWrite.then(async () => {
        if (target <= horizonDurableMs) return;
        try {
          await writeFileAtomic(horizonFile, `${target}\n`, { mode: 0o600 });
          horizonDurableMs = Math.max(horizonDurableMs, target);
        } catch (err) {
          log.error({ err, file: horizonFile }, 'replay horizon not written');
          if (horizonPendingMs === target) horizonPendingMs = horizonDurableMs;
        }
      });
    }
    await horizonWrite;
    return iatMs <= horizonDurableMs;
  }

  function sendPlain(
    res: ServerResponse,
    code: ErrorCode,
    requestId: string,
    extra: Record<string, string> = {},
  ): void {
    const body = plainBody(code);
    res.writeHead(errorSpec(code).httpStatus, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-request-id': requestId,
      ...extra,
    });
    res.end(body);
  }

  function sendSealed(res: ServerResponse, status: number, jwe: string, requestId: string): void {
    res.writeHead(status, {
      'content-type': MEDIA_TYPE,
      'content-length': Buffer.byteLength(jwe),
      'cache-control': 'no-store',
      'x-request-id': requestId,
    });
    res.end(jwe);
  }

  /** Reads the body up to the limit. Resolves undefined after answering (413/408) itself. */
  function readBody(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
  ): Promise<string | undefined> {
    return new Promise((done) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let finished = false;
      const finish = (value: string | undefined, code?: ErrorCode) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        if (code !== undefined) {
          sendPlain(res, code, requestId, { connection: 'close' });
          res.once('finish', () => req.socket.destroySoon());
          req.removeAllListeners('data');
          req.resume();
        }
        done(value);
      };
      const timer = setTimeout(() => finish(undefined, 'SEALED_BODY_TIMEOUT'), config.timeouts.bodyMs);
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > config.limits.maxBodyBytes) {
          finish(undefined, 'SEALED_LIMIT_BODY');
          return;
        }
        chunks.push(chunk);
      });
      req.once('end', () => finish(Buffer.concat(chunks).toString('latin1')));
      req.once('error', () => finish(undefined));
      req.once('aborted', () => finish(undefined));
    });
  }

  class AuthFailure extends Error {}
  const deny = (reason: string): never => {
    throw new AuthFailure(reason);
  };

  async function authenticate(body: string, header: Record<string, unknown>, t: number) {
    if (header.alg !== 'ECDH-ES' || header.enc !== 'A256GCM')
      deny(`header alg/enc ${String(header.alg)}/${String(header.enc)}`);
    if (header.zip !== undefined || header.crit !== undefined) deny('header zip/crit present');
    const kid = header.kid;
    const skid = header.skid;
    if (typeof kid !== 'string' || typeof skid !== 'string') deny('header kid/skid missing');
    const serverKey = ring!.encryption.get(kid as string);
    if (serverKey === undefined || t >= serverKey.retiresAtMs) deny('unknown or retired server key');
    const found = registry.lookup(skid as string, t);
    if (!found.ok) return deny(found.reason);
    const client = found.client;
    let raw: Record<string, unknown>;
    try {
      raw = await openRequest(body, serverKey!.key, await client.key(), skid as string);
    } catch (err) {
      return deny(err instanceof EnvelopeError ? err.reason : 'open failed');
    }
    try {
      const claims = checkClaims(raw, {
        aud: kid as string,
        htu: config.path,
        nowMs: now(),
        skewMs: config.clock.skewMs,
        maxLifetimeMs: config.clock.maxLifetimeMs,
        notBeforeMs: startedAtMs,
      });
      return { client, claims };
    } catch (err) {
      return deny(
        err instanceof EnvelopeError ? `${err.reason} (client ${client.entry.name})` : 'claims failed',
      );
    }
  }

  async function runAction(
    action: Action,
    rawArgs: unknown,
    client: Client | undefined,
    ctxBase: Omit<ActionContext, 'signal' | 'log'>,
  ): Promise<ResponseBody & { status: number }> {
    const parsed = action.args.safeParse(rawArgs);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      const where = i === undefined ? '' : `${i.path.map(String).join('.') || '(args)'}: `;
      return fail('SEALED_INVALID_ARGS', `${where}${i?.message ?? 'invalid arguments'}`);
    }
    const file = action.file?.(parsed.data);
    if (client !== undefined && file !== undefined && !matchesAllow(client.entry.files, file))
      return fail('SEALED_FORBIDDEN', `file ${file} is not allowed for this client`);
    const ac = new AbortController();
    aborts.add(ac);
    const alog = log.child({
      requestId: ctxBase.requestId,
      client: ctxBase.client.name,
      action: action.name,
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        action.run(parsed.data, { ...ctxBase, log: alog, signal: ac.signal }),
        new Promise<never>((_r, reject) => {
          timer = setTimeout(() => {
            ac.abort();
            reject(new GatewayError('SEALED_ACTION_TIMEOUT'));
          }, config.timeouts.actionMs);
        }),
      ]);
      return { ok: true, result: result === undefined ? null : result, status: 200 };
    } catch (err) {
      if (isGatewayError(err) && err.code.startsWith('SEALED_')) {
        // Messages about content or arguments may quote them (JSON.parse echoes its input): code only.
        // (`detail`, not `msg`: pino's message argument would overwrite a `msg` key.)
        const quotes = err.code === 'SEALED_INVALID_CONTENT' || err.code === 'SEALED_INVALID_ARGS';
        alog.info(quotes ? { code: err.code } : { code: err.code, detail: err.message }, 'action refused');
        return fail(err.code, err.message);
      }
      alog.error({ err }, 'action failed');
      return fail('SEALED_ACTION_FAILED', errorSpec('SEALED_ACTION_FAILED').summary);
    } finally {
      clearTimeout(timer);
      aborts.delete(ac);
    }
  }

  function fail(code: ErrorCode, message: string): ResponseBody & { status: number } {
    return { ok: false, error: { code, message }, status: errorSpec(code).httpStatus };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomBytes(6).toString('hex');
    const ip = clientAddress(req, config.proxy.trustedHops, config.proxy.header);
    if (state !== 'running') {
      sendPlain(res, 'CORE_SHUTTING_DOWN', requestId, { connection: 'close' });
      return;
    }
    const t = now();
    if (backoff.blocked(ip, t)) {
      sendPlain(res, 'SEALED_TOO_MANY_FAILURES', requestId, {
        'retry-after': String(Math.ceil(config.limits.authFailureWindowMs / 1000)),
      });
      return;
    }
    const path = (req.url ?? '').split('?')[0];
    const plain = deps.unsealedPathForBenchmarks !== undefined && path === deps.unsealedPathForBenchmarks;
    if (path !== config.path && !plain) return sendPlain(res, 'SEALED_NOT_FOUND', requestId);
    if (req.method !== 'POST')
      return sendPlain(res, 'SEALED_METHOD_NOT_ALLOWED', requestId, { allow: 'POST' });
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== (plain ? 'application/json' : MEDIA_TYPE))
      return sendPlain(res, 'SEALED_UNSUPPORTED_MEDIA_TYPE', requestId);
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > config.limits.maxBodyBytes) {
      sendPlain(res, 'SEALED_LIMIT_BODY', requestId, { connection: 'close' });
      res.once('finish', () => req.socket.destroySoon());
      return;
    }
    if (inFlight >= config.limits.maxConcurrentRequests)
      return sendPlain(res, 'SEALED_LIMIT_CONCURRENT', requestId);
    inFlight++;
    try {
      const body = await readBody(req, res, requestId);
      if (body === undefined) return;
      if (plain) return await handlePlain(body, res, requestId, ip);
      const parsed = parseCompactJwe(body);
      if (parsed === undefined) return sendPlain(res, 'SEALED_BAD_REQUEST', requestId);
      let auth: Awaited<ReturnType<typeof authenticate>>;
      try {
        auth = await authenticate(body, parsed.header, t);
      } catch (err) {
        if (!(err instanceof AuthFailure)) throw err;
        backoff.fail(ip, t);
        log.warn({ requestId, ip, reason: err.message }, 'unauthorized');
        return sendPlain(res, 'SEALED_UNAUTHORIZED', requestId);
      }
      const { client, claims } = auth;
      let verdict: Awaited<ReturnType<ReplayStore['remember']>> | 'failed';
      try {
        verdict = await replay.remember(`${client.entry.kid}:${claims.jti}`, claims.exp * 1000 + config.clock.skewMs, now());
      } catch (err) {
        // The client is authenticated, so the refusal is sealed; without a verdict the action never runs.
        log.error({ requestId, err }, 'replay store failed');
        verdict = 'failed';
      }
      if (verdict === 'duplicate') {
        backoff.fail(ip, t);
        log.warn({ requestId, ip, reason: `replayed jti (client ${client.entry.name})` }, 'unauthorized');
        return sendPlain(res, 'SEALED_UNAUTHORIZED', requestId);
      }
      if (addresses.seen(`${client.entry.kid}|${ip}`, now()))
        log.info({ client: client.entry.name, kid: client.entry.kid, ip }, 'new client address');
      let answer: ResponseBody & { status: number };
      const action = actions.get(claims.act);
      if (verdict === 'full')
        answer = fail('SEALED_REPLAY_CACHE_FULL', 'the server is too busy; retry later');
      else if (verdict === 'failed') answer = fail('SEALED_REPLAY_STORE_FAILED', 'the server cannot check for replays; retry later');
      else if (!(await guardAgainstRestart(claims.iat * 1000, now())))
        answer = fail('SEALED_REPLAY_HORIZON_FAILED', 'the server cannot record the request; retry later');
      else if (!matchesAllow(client.entry.allow, claims.act))
        answer = fail('SEALED_FORBIDDEN', `action ${claims.act} is not allowed for this client`);
      else if (action === undefined) answer = fail('SEALED_UNKNOWN_ACTION', `no action named ${claims.act}`);
      else
        answer = await runAction(action, claims.args, client, {
          client: { kid: client.entry.kid, name: client.entry.name },
          requestId,
          remoteAddress: ip,
        });
      const { status, ...sealedBody } = answer;
      const jwe = await sealResponse(
        claims.rk,
        claims.jti,
        sealedBody,
        config.signResponses ? { kid: ring!.signing.kid, key: ring!.signing.key } : undefined,
      );
      log.debug({ requestId, client: client.entry.name, action: claims.act, status }, 'request done');
      sendSealed(res, status, jwe, requestId);
    } finally {
      inFlight--;
      if (inFlight === 0) for (const cb of idle) cb();
    }
  }

  async function handlePlain(
    body: string,
    res: ServerResponse,
    requestId: string,
    ip: string,
  ): Promise<void> {
    let msg: { act?: unknown; args?: unknown };
    try {
      msg = JSON.parse(body) as typeof msg;
    } catch {
      return sendPlain(res, 'SEALED_BAD_REQUEST', requestId);
    }
    const action = typeof msg.act === 'string' ? actions.get(msg.act) : undefined;
    const { status, ...out } =
      action === undefined
        ? fail('SEALED_UNKNOWN_ACTION', 'no such action')
        : await runAction(action, msg.args ?? {}, undefined, {
            client: { kid: 'bench', name: 'bench' },
            requestId,
            remoteAddress: ip,
          });
    const text = JSON.stringify(out);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-request-id': requestId,
    });
    res.end(text);
  }

  return {
    name: 'sealed-api',
    get url() {
      return `${scheme}://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}${config.path}`;
    },
    get port() {
      return port;
    },
    keyFile,
    registryFile,
    registry,
    actions,
    serverInfo() {
      if (info === undefined) throw new Error('sealed API not started');
      return info;
    },
    async reload() {
      await loadKeys(false);
      await registry.reload();
    },
    async start() {
      if (state !== 'idle') throw new Error(`sealed API cannot start from state ${state}`);
      state = 'starting';
      try {
        await mkdir(stateDir, { recursive: true, mode: 0o700 });
        await chmod(stateDir, 0o700);
        await loadKeys(true);
        await registry.start();
        await dirStore?.start();
        if (config.demo && config.files.demo === undefined) {
          const demoPath = files.demo!.path;
          await mkdir(join(stateDir, 'demo'), { recursive: true, mode: 0o700 });
          await writeFile(demoPath, demoWireGuard(), { mode: 0o600, flag: 'wx' }).catch((err: unknown) => {
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          });
        }
        await fileManager.start();
        actions.add(pingAction);
        actions.add(timeAction);
        for (const a of fileActions(fileManager)) actions.add(a);
        for (const [name, m] of Object.entries(config.modules))
          actions.add(await loadModule(name, m.file, deps.baseDir));
        const options = {
          maxHeaderSize: config.limits.maxHeaderBytes,
          headersTimeout: config.timeouts.headersMs,
          requestTimeout: config.timeouts.headersMs + config.timeouts.bodyMs + config.timeouts.actionMs,
          keepAliveTimeout: config.timeouts.keepAliveMs,
          // Node checks headersTimeout/requestTimeout only this often (default 30 s, which let a client
          // dribbling header bytes hold a connection for 30 s whatever headersMs said).
          connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.timeouts.headersMs / 2))),
        };
        const onRequest = (req: IncomingMessage, res: ServerResponse) => {
          handle(req, res).catch((err: unknown) => {
            log.error({ err }, 'sealed API request failed');
            if (!res.headersSent) sendPlain(res, 'CORE_INTERNAL', 'internal');
            else res.destroy();
          });
        };
        if (config.tls === undefined) server = createHttpServer(options, onRequest);
        else
          server = createHttpsServer(
            {
              ...options,
              ...(await loadTlsFiles(config.tls, deps.baseDir)),
            },
            onRequest,
          );
        server.maxConnections = config.limits.maxConnections;
        let dropsLoggedAtMs = -Infinity;
        let drops = 0;
        server.on('drop', () => {
          drops++;
          const t = now();
          if (t - dropsLoggedAtMs < 10000) return;
          dropsLoggedAtMs = t;
          log.warn(
            { code: 'SEALED_LIMIT_CONNECTIONS', dropped: drops },
            'connections closed at limits.maxConnections',
          );
          drops = 0;
        });
        port = await listen(server, { host: config.host, port: config.port }, 'sealed API');
        // Requests issued before this process started, or before the previous one's replay horizon, are
        // refused: the previous process may have accepted them and its replay cache is gone.
        const horizon = useHorizon ? await readHorizon() : 0;
        horizonDurableMs = horizonPendingMs = horizon;
        startedAtMs = Math.max(now(), horizon);
        keyPoll = setInterval(() => {
          loadKeys(false).catch((err: unknown) =>
            log.error({ err }, 'server keys not reloaded; the previous ones stay in force'),
          );
        }, config.reloadCheckMs);
        keyPoll.unref();
        state = 'running';
        log.info({ url: this.url, kid: ring!.current.kid, actions: actions.names() }, 'sealed API listening');
      } catch (err) {
        registry.stop();
        dirStore?.stop();
        if (server !== undefined) await stopListening(server);
        state = 'closed';
        throw err;
      }
    },
    close(options: CloseOptions = {}) {
      closing ??= (async () => {
        if (state === 'idle' || state === 'closed') {
          state = 'closed';
          return;
        }
        state = 'closing';
        registry.stop();
        dirStore?.stop();
        if (keyPoll !== undefined) clearInterval(keyPoll);
        if (server !== undefined) {
          const stopped = stopListening(server);
          server.closeIdleConnections();
          if (inFlight > 0) {
            await new Promise<void>((done) => {
              const timer = setTimeout(done, options.graceMs ?? 0);
              idle.add(() => {
                clearTimeout(timer);
                done();
              });
            });
          }
          for (const ac of aborts) ac.abort();
          server.closeAllConnections();
          await stopped;
        }
        state = 'closed';
        log.info('sealed API closed');
      })();
      return closing;
    },
  };
}
