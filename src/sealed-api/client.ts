/**
 * The TypeScript client library of the sealed API. A client holds its own Ed25519 key and the server's
 * pinned public keys (X25519 encryption key, optionally the Ed25519 response-signing key); each call
 * builds a fresh sealed request and accepts only the answer sealed under its own one-time key and bound
 * to its `jti`.
 *
 * ```ts
 * const client = await SealedClient.fromFiles('http://127.0.0.1:1214/v1/rpc', 'client.json', 'server.json');
 * const { content, etag } = await client.call('files.read', { file: 'wg0' });
 * ```
 */
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { CryptoKey } from 'jose';
import { GatewayError } from '../core/errors.ts';
import { buildRequest, EnvelopeError, MEDIA_TYPE, openResponse } from './envelope.ts';
import { importPublic, readClientKeyFile, type ServerPublicInfo } from './keys.ts';

/** The server answered with an error: plain (before authentication) or sealed (after). */
export class SealedCallError extends Error {
  constructor(
    readonly status: number,
    /** `unauthorized`, `bad_request`… for plain answers; a SEALED_* code for sealed ones. */
    readonly code: string,
    message: string,
    readonly sealed: boolean,
  ) {
    super(message);
    this.name = 'SealedCallError';
  }
}

export interface SealedClientOptions {
  /** Full endpoint URL, e.g. http://127.0.0.1:1214/v1/rpc. */
  readonly url: string;
  readonly clientKid: string;
  readonly clientKey: CryptoKey;
  readonly serverKid: string;
  readonly serverKey: CryptoKey;
  /** When set, every answer must be signed by this key. */
  readonly serverSigningKey?: CryptoKey;
  /** Request lifetime (exp − iat), default 60 s. */
  readonly lifetimeMs?: number;
  readonly timeoutMs?: number;
  /** Largest answer accepted, bytes (default 16 MiB). */
  readonly maxResponseBytes?: number;
  /** Extra CA certificates for https (e.g. a self-signed test certificate). */
  readonly ca?: string | Buffer;
  /** Keep-alive sockets (default 32). */
  readonly maxSockets?: number;
  /** Extra HTTP headers on every request. */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface Prepared {
  readonly jwe: string;
  readonly jti: string;
  readonly rk: string;
}

export interface RawAnswer {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

export class SealedClient {
  readonly #o: SealedClientOptions;
  readonly #url: URL;
  readonly #agent: HttpAgent | HttpsAgent;

  constructor(options: SealedClientOptions) {
    this.#o = options;
    this.#url = new URL(options.url);
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 32 };
    this.#agent =
      this.#url.protocol === 'https:'
        ? new HttpsAgent({ ...agentOptions, ...(options.ca === undefined ? {} : { ca: options.ca }) })
        : new HttpAgent(agentOptions);
  }

  /** Builds a client from a client key file (0600) and a server public info file (`gatehouse clients server-key`). */
  static async fromFiles(
    url: string,
    clientKeyFile: string,
    serverInfoFile: string,
    extra: Partial<SealedClientOptions> & { requireSigned?: boolean } = {},
  ): Promise<SealedClient> {
    const client = await readClientKeyFile(clientKeyFile);
    let info: ServerPublicInfo;
    try {
      info = JSON.parse(await readFile(serverInfoFile, 'utf8')) as ServerPublicInfo;
    } catch (err) {
      throw new GatewayError(
        'SEALED_KEYS_INVALID',
        `${serverInfoFile}: not a server key file (${(err as Error).message})`,
        { cause: err },
      );
    }
    return SealedClient.fromInfo(url, client.kid, client.key, info, extra);
  }

  static async fromInfo(
    url: string,
    clientKid: string,
    clientKey: CryptoKey,
    info: ServerPublicInfo,
    extra: Partial<SealedClientOptions> & { requireSigned?: boolean } = {},
  ): Promise<SealedClient> {
    const { requireSigned, ...rest } = extra;
    return new SealedClient({
      url,
      clientKid,
      clientKey,
      serverKid: info.kid,
      serverKey: await importPublic(info.jwk, 'ECDH-ES'),
      ...(requireSigned === true ? { serverSigningKey: await importPublic(info.signing.jwk, 'EdDSA') } : {}),
      ...rest,
    });
  }

  /** Builds a sealed request (not sent). */
  prepare(
    action: string,
    args: Record<string, unknown> = {},
    claimOverrides?: Record<string, unknown>,
  ): Promise<Prepared> {
    return buildRequest({
      serverKid: this.#o.serverKid,
      serverKey: this.#o.serverKey,
      clientKid: this.#o.clientKid,
      clientKey: this.#o.clientKey,
      htu: this.#url.pathname,
      act: action,
      args,
      nowMs: Date.now(),
      ...(this.#o.lifetimeMs === undefined ? {} : { lifetimeMs: this.#o.lifetimeMs }),
      ...(claimOverrides === undefined ? {} : { claimOverrides }),
      randomBytes: (n) => randomBytes(n),
    });
  }

  /** POSTs a body as it is (tests send tampered or replayed bodies with this). */
  send(body: string, contentType = MEDIA_TYPE): Promise<RawAnswer> {
    const limit = this.#o.maxResponseBytes ?? 16 * 1024 * 1024;
    const request = this.#url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(
        this.#url,
        {
          method: 'POST',
          agent: this.#agent,
          headers: {
            ...this.#o.headers,
            'content-type': contentType,
            'content-length': Buffer.byteLength(body),
            accept: MEDIA_TYPE,
          },
          timeout: this.#o.timeoutMs ?? 30000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > limit) {
              res.destroy();
              reject(new GatewayError('SEALED_RESPONSE_INVALID', 'answer larger than maxResponseBytes'));
              return;
            }
            chunks.push(c);
          });
          res.once('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              contentType: res.headers['content-type'] ?? '',
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          res.once('error', reject);
        },
      );
      req.once('timeout', () => req.destroy(new Error('sealed API request timed out')));
      req.once('error', reject);
      req.end(body);
    });
  }

  /** Opens an answer to `prepared`. @throws SealedCallError for error answers, GatewayError SEALED_RESPONSE_INVALID for forged ones. */
  async open(prepared: Prepared, answer: RawAnswer): Promise<unknown> {
    if (!answer.contentType.startsWith(MEDIA_TYPE)) {
      let code = 'error';
      try {
        const e = (JSON.parse(answer.body) as { error?: unknown }).error;
        if (typeof e === 'string') code = e;
      } catch {
        // not JSON
      }
      throw new SealedCallError(answer.status, code, `server answered ${answer.status} ${code}`, false);
    }
    let body;
    try {
      body = await openResponse(answer.body, prepared.rk, prepared.jti, this.#o.serverSigningKey);
    } catch (err) {
      throw new GatewayError(
        'SEALED_RESPONSE_INVALID',
        err instanceof EnvelopeError ? err.reason : String(err),
        { cause: err },
      );
    }
    if (!body.ok) throw new SealedCallError(answer.status, body.error.code, body.error.message, true);
    return body.result;
  }

  /** Calls an action and returns its result. */
  async call<T = unknown>(action: string, args: Record<string, unknown> = {}): Promise<T> {
    const prepared = await this.prepare(action, args);
    return (await this.open(prepared, await this.send(prepared.jwe))) as T;
  }

  close(): void {
    this.#agent.destroy();
  }
}
