/**
 * Test harness for the relay: starts a real relay server on 127.0.0.1 port 0 with config overrides, and
 * gives raw clients (net, tls, ws) that read what the server writes byte for byte.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { execFileSync } from 'node:child_process';
import { relayConfigSchema, type RelayConfig } from '../../src/relay/config.ts';
import { createRelayServer, type RelayDeps, type RelayServer } from '../../src/relay/server.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger, createLogger, type Logger } from '../../src/core/log.ts';

export interface StartedRelay {
  readonly server: RelayServer;
  readonly config: RelayConfig;
  readonly dir: string;
  url(kind: string): string;
  port(kind: string): number;
  close(graceMs?: number): Promise<void>;
}

/** Every raw client opened by this process; `destroyAllClients` ends them so a test file can exit. */
const openClients = new Set<RawClient>();

export function destroyAllClients(): void {
  for (const c of openClients) c.destroy();
  openClients.clear();
}

/** A fresh temp dir for sockets and files. */
export function tempDir(prefix = 'gatehouse-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * Starts a relay. `overrides` is raw config (as in the TOML file); by default: tcp + ws listeners on
 * port 0, the mock authenticator, the monitor in a temp dir.
 */
export async function startRelay(overrides: Record<string, unknown> = {}, opts: { log?: Logger } & Pick<RelayDeps, 'authenticator' | 'rendezvous' | 'forward' | 'shared'> = {}): Promise<StartedRelay> {
  const dir = tempDir();
  const raw = {
    listeners: [
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { kind: 'ws', host: '127.0.0.1', port: 0 },
    ],
    authenticator: { kind: 'mock' },
    monitor: { path: join(dir, 'monitor.sock') },
    ...overrides,
  };
  const config = validateConfig(relayConfigSchema, raw);
  const log = opts.log ?? (process.env.GATEHOUSE_TEST_LOG !== undefined ? createLogger({ level: 'debug' }) : silentLogger());
  const server = createRelayServer(config, {
    log,
    baseDir: dir,
    ...(opts.authenticator === undefined ? {} : { authenticator: opts.authenticator }),
    ...(opts.rendezvous === undefined ? {} : { rendezvous: opts.rendezvous }),
    ...(opts.forward === undefined ? {} : { forward: opts.forward }),
    ...(opts.shared === undefined ? {} : { shared: opts.shared }),
  });
  await server.start();
  const find = (kind: string) => {
    const l = server.listeners.find((x) => x.kind === kind);
    if (l === undefined) throw new Error(`no ${kind} listener`);
    return l;
  };
  return {
    server,
    config,
    dir,
    url: (kind) => find(kind).url,
    port: (kind) => find(kind).port,
    close: async (graceMs = 0) => {
      destroyAllClients();
      await server.close({ graceMs });
    },
  };
}

/** A logger whose JSON lines are kept in memory (to prove what is, and is not, logged). */
export function captureLog(level: 'debug' | 'trace' = 'debug'): { log: Logger; text: () => string; records: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const log = createLogger({ level }, { write: (line: string) => void out.push(line) });
  return {
    log,
    text: () => out.join(''),
    records: () =>
      out
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** What a raw client saw: bytes (stream) or frames (ws), and how it ended. */
export interface RawClient {
  readonly kind: 'tcp' | 'tls' | 'unix' | 'ws' | 'wss';
  send(data: string | Buffer, opts?: { binary?: boolean }): void;
  /** Everything received so far, concatenated. */
  received(): Buffer;
  /** Received WebSocket frames (ws only). */
  frames(): { data: Buffer; binary: boolean }[];
  /** Resolves when the received bytes contain `needle` `count` times (rejects after timeoutMs). */
  waitFor(needle: string | Buffer, timeoutMs?: number, count?: number): Promise<Buffer>;
  /** Resolves once at least `n` bytes have arrived. */
  waitForBytes(n: number, timeoutMs?: number): Promise<Buffer>;
  /** Resolves with how the connection ended: stream end, or ws close code and reason. */
  closed(timeoutMs?: number): Promise<{ code?: number; reason?: string }>;
  readonly isClosed: boolean;
  end(): void;
  destroy(): void;
  pause(): void;
  resume(): void;
  readonly socket: Socket | undefined;
  readonly ws: WebSocket | undefined;
}

export function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Opens a raw client to `url` (tcp://, tls://, ws://, wss://, unix:PATH). */
export async function rawClient(url: string): Promise<RawClient> {
  const chunks: Buffer[] = [];
  const frames: { data: Buffer; binary: boolean }[] = [];
  let total = 0;
  const waiters = new Set<() => void>();
  let ended: { code?: number; reason?: string } | undefined;
  const endWaiters = new Set<() => void>();
  const push = (b: Buffer) => {
    chunks.push(b);
    total += b.length;
    for (const w of waiters) w();
  };
  const finish = (info: { code?: number; reason?: string }) => {
    if (ended !== undefined) return;
    ended = info;
    for (const w of endWaiters) w();
    for (const w of waiters) w();
  };
  let socket: Socket | undefined;
  let ws: WebSocket | undefined;
  let kind: RawClient['kind'];
  if (url.startsWith('ws://') || url.startsWith('wss://')) {
    kind = url.startsWith('wss') ? 'wss' : 'ws';
    const w = new WebSocket(url, { rejectUnauthorized: false, perMessageDeflate: false });
    ws = w;
    w.on('message', (data: Buffer, binary: boolean) => {
      frames.push({ data, binary });
      push(data);
    });
    w.on('close', (code: number, reason: Buffer) => finish({ code, reason: reason.toString() }));
    w.on('error', () => undefined);
    await deadline(new Promise<void>((resolve, reject) => {
      w.once('open', () => resolve());
      w.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      w.once('error', reject);
    }), 5000, 'ws open');
  } else {
    let s: Socket;
    if (url.startsWith('unix:')) {
      kind = 'unix';
      s = netConnect({ path: url.slice(5), allowHalfOpen: true });
    } else {
      const u = new URL(url);
      const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
      if (u.protocol === 'tls:') {
        kind = 'tls';
        s = tlsConnect({ host, port: Number(u.port), rejectUnauthorized: false, ...{ allowHalfOpen: true } });
      } else {
        kind = 'tcp';
        s = netConnect({ host, port: Number(u.port), allowHalfOpen: true });
      }
    }
    socket = s;
    s.setNoDelay(true);
    s.on('data', push);
    s.on('end', () => finish({}));
    s.on('close', () => finish({}));
    s.on('error', () => undefined);
    await deadline(new Promise<void>((resolve, reject) => {
      s.once(kind === 'tls' ? 'secureConnect' : 'connect', () => resolve());
      s.once('error', reject);
    }), 5000, `${kind} connect`);
  }
  const all = () => Buffer.concat(chunks);
  const client: RawClient = {
    kind,
    socket,
    ws,
    send(data, opts = {}) {
      if (ws !== undefined) ws.send(data, { binary: opts.binary ?? typeof data !== 'string' });
      else socket!.write(data);
    },
    received: all,
    frames: () => frames,
    get isClosed() {
      return ended !== undefined;
    },
    waitFor(needle, timeoutMs = 5000, count = 1) {
      const n = typeof needle === 'string' ? Buffer.from(needle) : needle;
      const occurrences = (b: Buffer) => {
        let c = 0;
        for (let i = b.indexOf(n); i >= 0; i = b.indexOf(n, i + Math.max(1, n.length))) c++;
        return c;
      };
      return deadline(new Promise<Buffer>((resolve, reject) => {
        const check = () => {
          const b = all();
          if (occurrences(b) >= count) {
            waiters.delete(check);
            resolve(b);
          } else if (ended !== undefined) {
            waiters.delete(check);
            reject(new Error(`connection ended before ${JSON.stringify(n.toString())} arrived; got ${JSON.stringify(b.toString())}`));
          }
        };
        waiters.add(check);
        check();
      }), timeoutMs, `${JSON.stringify(n.toString().slice(0, 80))}; got ${JSON.stringify(all().toString().slice(0, 300))}`);
    },
    waitForBytes(n, timeoutMs = 5000) {
      return deadline(new Promise<Buffer>((resolve, reject) => {
        const check = () => {
          if (total >= n) {
            waiters.delete(check);
            resolve(all());
          } else if (ended !== undefined) {
            waiters.delete(check);
            reject(new Error(`connection ended after ${total} of ${n} bytes`));
          }
        };
        waiters.add(check);
        check();
      }), timeoutMs, `${n} bytes (have ${total})`);
    },
    closed(timeoutMs = 5000) {
      return deadline(new Promise((resolve) => {
        if (ended !== undefined) return resolve(ended);
        endWaiters.add(() => resolve(ended!));
      }), timeoutMs, 'close');
    },
    end() {
      if (ws !== undefined) ws.close(1000);
      else socket!.end();
    },
    destroy() {
      if (ws !== undefined) ws.terminate();
      else socket!.destroy();
    },
    pause() {
      if (ws !== undefined) ws.pause();
      else socket!.pause();
    },
    resume() {
      if (ws !== undefined) ws.resume();
      else socket!.resume();
    },
  };
  openClients.add(client);
  return client;
}

/** `{"id":…,"method":…,"params":…}\n` */
export function request(id: unknown, method: string, params?: Record<string, unknown>): string {
  const obj: Record<string, unknown> = { id, method };
  if (params !== undefined) obj.params = params;
  return `${JSON.stringify(obj)}\n`;
}

export function authenticate(token: string, opts: { id?: unknown; uuid?: string; name?: string; nonce?: string } = {}): string {
  const params: Record<string, unknown> = { name: opts.name ?? 'client', token, uuid: opts.uuid ?? crypto.randomUUID() };
  if (opts.nonce !== undefined) params.nonce = opts.nonce;
  return request(opts.id ?? 0, 'Authentication.Authenticate', params);
}

export const NO_ERROR = '"authenticationError":"AuthenticationErrorNoError"';
export const TUNNEL_ESTABLISHED = '"notification":"RemoteProxy.TunnelEstablished"';

/**
 * Pairs two clients on the given URLs with a fresh token; resolves once both saw TunnelEstablished.
 * Returns the clients with their received buffers cleared of the handshake (offsets to slice from).
 */
export async function pair(urlA: string, urlB: string, opts: { token?: string; nonce?: string; nameA?: string; nameB?: string } = {}) {
  const token = opts.token ?? `token-${crypto.randomUUID()}`;
  const a = await rawClient(urlA);
  a.send(authenticate(token, { name: opts.nameA ?? 'alpha', ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }) }));
  await a.waitFor(NO_ERROR);
  const b = await rawClient(urlB);
  b.send(authenticate(token, { name: opts.nameB ?? 'beta', ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }) }));
  await a.waitFor(TUNNEL_ESTABLISHED);
  await b.waitFor(TUNNEL_ESTABLISHED);
  return { a, b, aOffset: a.received().length, bOffset: b.received().length, token };
}

/** Splits received bytes into JSON lines. */
export function lines(buf: Buffer): string[] {
  return buf.toString().split('\n').filter((l) => l !== '');
}

/** Generates a self-signed certificate for 127.0.0.1/localhost with the openssl CLI (EC P-256). */
/** A listener of every kind: tcp, tls, ws and wss on 127.0.0.1 port 0, and unix at `dir`/relay.sock (tls needs a certificate). */
export function everyListener(dir: string): Record<string, unknown>[] {
  return [
    { kind: 'tcp', host: '127.0.0.1', port: 0 },
    { kind: 'tls', host: '127.0.0.1', port: 0 },
    { kind: 'ws', host: '127.0.0.1', port: 0 },
    { kind: 'wss', host: '127.0.0.1', port: 0 },
    { kind: 'unix', path: join(dir, 'relay.sock') },
  ];
}

/** The SHA-256 fingerprint of the certificate a fresh TLS handshake on `port` (127.0.0.1) presents. */
export function peerFingerprint(port: number): Promise<string> {
  return deadline(
    new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
        const fp = s.getPeerCertificate().fingerprint256;
        s.destroy();
        resolve(fp);
      });
      s.once('error', reject);
    }),
    5000,
    `TLS handshake on ${port}`,
  );
}

export function selfSignedCert(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', keyFile, '-out', certFile,
  ], { stdio: 'ignore' });
  return { certFile, keyFile };
}
