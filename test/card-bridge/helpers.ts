import assert from 'node:assert/strict';
/**
 * Test harness for the card bridge: a real bridge on 127.0.0.1 port 0 over simulated cards, and a raw line
 * client that records every byte the server writes.
 */
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../src/core/config/load.ts';
import { createLogger, silentLogger, type Logger } from '../../src/core/log.ts';
import { cardBridgeConfigSchema, type CardBridgeConfig, type SimCardConfig } from '../../src/card-bridge/config.ts';
import { createCardBridgeServer, type CardBridgeServer } from '../../src/card-bridge/server.ts';
import { SimulatorBackend } from '../../src/card-bridge/backends/simulator.ts';
import type { CardBackend } from '../../src/card-bridge/backends/types.ts';
import type { LineSession } from '../../src/card-bridge/session.ts';

/** Generated test PKI is cached here across test runs (development material only). */
export const TEST_PKI_DIR = join(tmpdir(), 'gatehouse-card-sim-test-pki');

/** Raw simulated-card config, as in the TOML file. */
export type RawCard = Partial<Omit<SimCardConfig, 'signing' | 'script'>> & {
  name: string;
  signing?: Record<string, unknown>;
  script?: { command: string; response: string; mode?: 'plain' | 'chain' | 'le' }[];
};

export function simCards(cards: readonly RawCard[]): SimCardConfig[] {
  const cfg = validateConfig(cardBridgeConfigSchema, { backends: [{ kind: 'simulator', cards }] });
  const b = cfg.backends[0];
  if (b?.kind !== 'simulator') throw new Error('unreachable');
  return b.cards;
}

export interface StartedBridge {
  readonly server: CardBridgeServer;
  readonly config: CardBridgeConfig;
  readonly sim: SimulatorBackend | undefined;
  readonly port: number;
  url(kind: string): string;
  close(graceMs?: number): Promise<void>;
}

export function testLogger(): Logger {
  return process.env.GATEHOUSE_TEST_LOG !== undefined ? createLogger({ level: 'debug' }) : silentLogger();
}

/** Starts a bridge with simulated `cards` (or the given backends) and raw config overrides. */
export async function startBridge(
  opts: { cards?: readonly RawCard[]; backends?: readonly CardBackend[]; config?: Record<string, unknown>; log?: Logger } = {},
): Promise<StartedBridge> {
  const config = validateConfig(cardBridgeConfigSchema, {
    listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }],
    ...opts.config,
  });
  const sim = opts.backends === undefined ? new SimulatorBackend(simCards(opts.cards ?? []), { pkiCacheDir: TEST_PKI_DIR }) : undefined;
  const server = createCardBridgeServer(config, { log: opts.log ?? testLogger(), baseDir: tmpdir(), backends: opts.backends ?? [sim!] });
  await server.start();
  const find = (kind: string) => {
    const l = server.listeners.find((x) => x.kind === kind);
    if (l === undefined) throw new Error(`no ${kind} listener`);
    return l;
  };
  return {
    server,
    config,
    sim,
    port: server.listeners[0]?.port ?? 0,
    url: (kind) => find(kind).url,
    close: async (graceMs = 0) => {
      destroyAllClients();
      await server.close({ graceMs });
    },
  };
}

const open = new Set<LineClient>();

export function destroyAllClients(): void {
  for (const c of open) c.destroy();
  open.clear();
}

/** A raw TCP client: writes bytes, records everything it receives, knows when the server closed. */
export class LineClient {
  #received = Buffer.alloc(0);
  #closed = false;
  readonly #waiters = new Set<() => void>();

  constructor(readonly socket: Socket) {
    open.add(this);
    socket.on('data', (c: Buffer) => {
      this.#received = Buffer.concat([this.#received, c]);
      this.#notify();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
  }

  static connect(port: number, socket?: Socket): Promise<LineClient> {
    const s = socket ?? connect({ host: '127.0.0.1', port });
    const c = new LineClient(s);
    return new Promise((resolve, reject) => {
      s.once('connect', () => resolve(c));
      s.once('secureConnect', () => resolve(c));
      s.once('error', reject);
    });
  }

  #notify(): void {
    for (const w of this.#waiters) w();
  }

  get text(): string {
    return this.#received.toString('utf8');
  }

  /** Every byte received so far. */
  get received(): Buffer {
    return this.#received;
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Waits until `pred(text)` holds (or the socket closed, then checks once more). */
  async until(pred: (text: string) => boolean, timeoutMs = 10000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.text)) {
      if (this.#closed) throw new Error(`closed before condition; received ${JSON.stringify(this.text)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout; received ${JSON.stringify(this.text)}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          this.#waiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, left);
        this.#waiters.add(done);
      });
    }
    return this.text;
  }

  /** Waits for `n` end marks (`@@\n`) in total. */
  answers(n = 1, timeoutMs = 10000): Promise<string> {
    return this.until((t) => t.split('@@\n').length - 1 >= n, timeoutMs);
  }

  /** Sends a request and resolves with the answer text it produced (up to and including its `@@\n`). */
  async request(text: string, timeoutMs = 10000): Promise<string> {
    const before = this.text.length;
    const n = this.text.split('@@\n').length - 1;
    this.send(text);
    const all = await this.answers(n + 1, timeoutMs);
    return all.slice(before);
  }

  closed(timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.#closed) resolve();
        else if (Date.now() > deadline) reject(new Error(`not closed; received ${JSON.stringify(this.text)}`));
        else setTimeout(check, 10);
      };
      check();
    });
  }
}

/** One request over a fresh connection; returns the answer text. */
export async function oneShot(port: number, text: string): Promise<string> {
  const c = await LineClient.connect(port);
  try {
    return await c.request(text);
  } finally {
    c.destroy();
  }
}

/** One single-command request over a fresh connection; returns that command's result (asserts the framing). */
export async function oneResult(port: number, text: string): Promise<string> {
  const ans = await oneShot(port, text);
  const m = /^>[^:]*:(.*)\n@@\n$/s.exec(ans);
  assert.ok(m !== null, ans);
  return m[1]!;
}

/** Decodes a `|`-joined base64 listing. */
export function decodeListing(result: string): string[] {
  return result === '' ? [] : result.split('|').map((x) => Buffer.from(x, 'base64').toString('utf8'));
}

/** The bridge's session for a client connection (the server may accept it a moment after `connect`). */
export async function serverSessionOf(bridge: StartedBridge, client: LineClient, timeoutMs = 5000): Promise<LineSession> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const s of bridge.server.sessions) if (s.socket.remotePort === client.socket.localPort) return s;
    if (Date.now() > deadline) throw new Error('the bridge has no session for this client');
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Waits until the bridge has read `bytes` bytes of this connection, so the next write arrives in a read of its
 * own (request ends depend on read boundaries; see protocol/lines.ts).
 */
export async function untilServerRead(session: LineSession, bytes: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (session.socket.bytesRead < bytes) {
    if (Date.now() > deadline) throw new Error(`the bridge read ${session.socket.bytesRead} of ${bytes} bytes`);
    await new Promise((r) => setImmediate(r));
  }
}

/** Polls `pred` every 25 ms until it holds; throws (naming `what`) after `ms`. */
export async function pollUntil(pred: () => boolean, what: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
