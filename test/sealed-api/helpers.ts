import { after } from 'node:test';
import assert from 'node:assert/strict';
/**
 * Test harness for the sealed API: a real server on 127.0.0.1 port 0 in a temp dir, real clients
 * (the client library over node:http), clients registered through the same admin code the CLI uses.
 */
import { selfSignedCert } from '../helpers/relay.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { spawn, type ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger, createLogger, type Logger } from '../../src/core/log.ts';
import { sealedApiConfigSchema, type SealedApiConfig } from '../../src/sealed-api/config.ts';
import {
  createSealedApiServer,
  type SealedApiServer,
  type SealedApiDeps,
} from '../../src/sealed-api/server.ts';
import { addClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { generateClientKey, importPublic, writeClientKeyFile } from '../../src/sealed-api/keys.ts';
import { SealedClient, type SealedClientOptions } from '../../src/sealed-api/client.ts';
import { importJWK, CompactEncrypt, CompactSign, base64url, type CryptoKey } from 'jose';
import { KeyObject, randomBytes, sign as cryptoSign } from 'node:crypto';

export function tempDir(prefix = 'gatehouse-sealed-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A logger whose JSON lines are collected in `lines` (for "reason is logged" assertions). */
export function captureLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n'))
        if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

export interface StartedSealed {
  readonly server: SealedApiServer;
  readonly config: SealedApiConfig;
  readonly dir: string;
  readonly lines: Record<string, unknown>[];
  /** Registers a client and returns a library client for it. */
  client(
    name: string,
    opts?: {
      allow?: string[];
      files?: string[];
      expires?: string;
      extra?: Partial<SealedClientOptions>;
      requireSigned?: boolean;
    },
  ): Promise<TestClient>;
  close(): Promise<void>;
}

export interface TestClient extends SealedClient {
  readonly kid: string;
  readonly key: CryptoKey;
  readonly name: string;
}

const openClients = new Set<SealedClient>();

/**
 * Starts a sealed API server. `raw` is config as in the TOML file (port 0 and a temp stateDir are set).
 * `dir` reuses a state dir (restart tests).
 */
export async function startSealed(
  raw: Record<string, unknown> = {},
  o: { dir?: string; deps?: Partial<SealedApiDeps> } = {},
): Promise<StartedSealed> {
  const dir = o.dir ?? tempDir();
  const config = validateConfig(sealedApiConfigSchema, {
    port: 0,
    stateDir: 'state',
    reloadCheckMs: 100,
    ...raw,
  });
  const captured = captureLogger();
  const log = process.env.GATEHOUSE_TEST_LOG !== undefined ? createLogger({ level: 'debug' }) : captured.log;
  const server = createSealedApiServer(config, { log, baseDir: dir, ...o.deps });
  await server.start();
  const paths = sealedPaths(config, dir);
  const mine = new Set<SealedClient>();
  return {
    server,
    config,
    dir,
    lines: captured.lines,
    async client(name, c = {}) {
      const key = await generateClientKey(name);
      await addClient(paths, {
        name,
        jwk: key.publicJwk,
        allow: c.allow ?? ['*'],
        files: c.files ?? ['*'],
        ...(c.expires === undefined ? {} : { expires: c.expires }),
      });
      await server.reload();
      const priv = (await importJWK(key.privateJwk, 'EdDSA')) as CryptoKey;
      const info = server.serverInfo();
      const client = new SealedClient({
        url: server.url,
        clientKid: key.kid,
        clientKey: priv,
        serverKid: info.kid,
        serverKey: await importPublic(info.jwk, 'ECDH-ES'),
        ...(c.requireSigned === true
          ? { serverSigningKey: await importPublic(info.signing.jwk, 'EdDSA') }
          : {}),
        ...c.extra,
      });
      mine.add(client);
      openClients.add(client);
      return Object.assign(client, { kid: key.kid, key: priv, name });
    },
    async close() {
      for (const c of mine) c.close();
      await server.close({ graceMs: 0 });
    },
  };
}

/** Plain HTTP request helper (for malformed input: wrong method, type, size). */
export async function rawPost(
  url: string,
  body: string | Buffer,
  headers: Record<string, string> = {},
  method = 'POST',
): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(url, {
    method,
    body: method === 'GET' || method === 'HEAD' ? null : body,
    headers: { 'content-type': 'application/jose', ...headers },
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

/** Self-signed certificate for 127.0.0.1 (the shared test generator). */
export const selfSigned = selfSignedCert;

/** A WireGuard key (random 32 bytes, base64). */
export function wgKey(seed: number): string {
  const b = Buffer.alloc(32);
  b.writeUInt32BE(seed >>> 0, 0);
  b[31] = seed & 0xff;
  return b.toString('base64');
}

export function write(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

export { silentLogger };

/**
 * `start` for a test file: each server it starts is closed after the file's tests (registers the hook).
 */
export function trackedStart(): (raw?: Record<string, unknown>, o?: Parameters<typeof startSealed>[1]) => Promise<StartedSealed> {
  const started: StartedSealed[] = [];
  after(async () => {
    for (const s of started) await s.close();
  });
  return async (raw = {}, o = {}) => {
    const s = await startSealed(raw, o);
    started.push(s);
    return s;
  };
}

/** The one answer every authentication failure gets. */
export const UNAUTHORIZED = '{"error":"unauthorized"}';

/** Posts `body`, asserts the uniform 401 (body and media type) and returns the request id. */
export async function expect401(s: StartedSealed, body: string, why: string): Promise<string> {
  const res = await rawPost(s.server.url, body);
  assert.equal(res.status, 401, why);
  assert.equal(res.body, UNAUTHORIZED, why);
  assert.equal(res.headers.get('content-type'), 'application/json', why);
  return res.headers.get('x-request-id')!;
}

export interface SpawnedSealed {
  readonly child: ChildProcess;
  readonly url: string;
  readonly dir: string;
  /** A client registered before the start (allow and files `*`). */
  readonly client: SealedClient;
  /** JSON log lines the server wrote on stderr so far. */
  readonly lines: Record<string, unknown>[];
  /** Resolves with the exit code (or signal) once the process has ended. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it has exited. */
  stop(): Promise<void>;
}

/**
 * Starts a sealed API server in a child process (fixtures/server.ts) with one registered client.
 * `shell` prefixes the command in `sh -c` (e.g. `ulimit -f 1024`), so limits apply to the server only.
 */
export async function spawnSealed(
  raw: Record<string, unknown>,
  o: { dir?: string; shell?: string } = {},
): Promise<SpawnedSealed> {
  const dir = o.dir ?? tempDir();
  const json = JSON.stringify({ port: 0, stateDir: 'state', reloadCheckMs: 100, ...raw });
  const config = validateConfig(sealedApiConfigSchema, JSON.parse(json) as unknown);
  const paths = sealedPaths(config, dir);
  const key = await generateClientKey('spawned');
  const keyFile = join(dir, 'client-key.json');
  await writeClientKeyFile(keyFile, key);
  await addClient(paths, { name: 'spawned', jwk: key.publicJwk, allow: ['*'], files: ['*'] });
  const argv = [process.execPath, '--import', 'tsx', new URL('./fixtures/server.ts', import.meta.url).pathname, dir, json];
  const child =
    o.shell === undefined
      ? spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('sh', ['-c', `${o.shell} && exec "$0" "$@"`, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  let pending = '';
  child.stderr.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const parts = pending.split('\n');
    pending = parts.pop()!;
    for (const l of parts) {
      try {
        lines.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        lines.push({ raw: l });
      }
    }
  });
  const exited = new Promise<number | string>((done) =>
    child.once('exit', (code, signal) => done(code ?? signal ?? 'unknown')),
  );
  const url = await new Promise<string>((resolve, reject) => {
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`spawned server did not start: ${JSON.stringify(lines)}`));
    }, 30000);
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(deadline);
        resolve((JSON.parse(out.slice(0, nl)) as { url: string }).url);
      }
    });
    void exited.then((how) => {
      clearTimeout(deadline);
      reject(new Error(`spawned server exited (${how}): ${JSON.stringify(lines)}`));
    });
  });
  const client = await SealedClient.fromFiles(url, keyFile, paths.publicFile);
  return {
    child,
    url,
    dir,
    client,
    lines,
    exited,
    async stop() {
      client.close();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

// ---- hand-built requests (every header and claim chosen by the test) ----------------------------

const enc = new TextEncoder();

export function reasonOf(s: StartedSealed, id: string): string {
  return String(s.lines.find((l) => l.requestId === id)?.reason);
}

export interface Craft {
  readonly outer?: Record<string, unknown>;
  readonly inner?: Record<string, unknown>;
  readonly claims?: Record<string, unknown>;
  /** Signs with this key instead of the client's. */
  readonly signKey?: CryptoKey;
  /** Raw JWS text instead of signing claims. */
  readonly jws?: string;
  readonly b64False?: boolean;
}

/** Builds a request by hand so every header and claim can be chosen. */

export async function craft(s: StartedSealed, c: TestClient, o: Craft = {}): Promise<string> {
  const info = s.server.serverInfo();
  const serverKey = await importPublic(info.jwk, 'ECDH-ES');
  const iat = Date.now() / 1000;
  const claims = {
    v: 1,
    aud: info.kid,
    iat,
    exp: iat + 60,
    jti: base64url.encode(randomBytes(16)),
    htm: 'POST',
    htu: new URL(s.server.url).pathname,
    act: 'ping',
    args: {},
    rk: base64url.encode(randomBytes(32)),
    ...o.claims,
  };
  let jws = o.jws;
  if (jws === undefined) {
    const payload = enc.encode(JSON.stringify(claims));
    jws = await new CompactSign(payload)
      .setProtectedHeader({
        alg: 'EdDSA',
        kid: c.kid,
        ...(o.b64False === true ? { b64: false, crit: ['b64'] } : {}),
        ...o.inner,
      })
      .sign(o.signKey ?? c.key);
  }
  return new CompactEncrypt(enc.encode(jws))
    .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM', kid: info.kid, skid: c.kid, ...o.outer })
    .encrypt(serverKey);
}

/** Signs a compact JWS by hand (jose refuses to build some of the forms probed here). */

export function signRaw(header: Record<string, unknown>, payloadSegment: string, key: CryptoKey): string {
  const input = `${base64url.encode(JSON.stringify(header))}.${payloadSegment}`;
  const sig = cryptoSign(null, Buffer.from(input), KeyObject.from(key));
  return `${input}.${base64url.encode(sig)}`;
}

export function claimsFor(s: StartedSealed, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const info = s.server.serverInfo();
  // Whole seconds (no dot in the text), rounded up: not before the server started.
  const iat = Math.ceil(Date.now() / 1000);
  return {
    v: 1,
    aud: info.kid,
    iat,
    exp: iat + 60,
    jti: base64url.encode(randomBytes(16)),
    htm: 'POST',
    htu: '/v1/rpc',
    act: 'ping',
    args: {},
    rk: base64url.encode(randomBytes(32)),
    ...extra,
  };
}
