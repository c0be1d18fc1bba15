/**
 * A relay client (the library behind `gatehouse tunnel`): connects over tcp://, tls:// (or ssl://),
 * ws://, wss:// or unix:PATH, authenticates, waits for RemoteProxy.TunnelEstablished, and then hands
 * over the raw tunnel: `write()` sends bytes, `onData` receives them, `end()` half-closes.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { WebSocket } from 'ws';
import { MessageSplitter } from './protocol/framing.ts';
import { toCompactJson } from './protocol/json.ts';

export interface TunnelClientOptions {
  readonly url: string;
  readonly token: string;
  readonly nonce?: string;
  readonly name?: string;
  readonly uuid?: string;
  /** Accept self-signed server certificates (development). */
  readonly insecure?: boolean;
  /** Give up if no tunnel is established within this many ms. */
  readonly timeoutMs?: number;
  /** Called with each JSON-RPC line sent and received (`--verbose`). */
  readonly trace?: (direction: 'send' | 'recv', line: string) => void;
  /** Called once the relay accepted the token and the client waits for its partner. */
  readonly onWaiting?: () => void;
}

/** Why openTunnel gave up: `alone` when the relay stopped waiting for a partner (its alone timeout). */
export class TunnelOpenError extends Error {
  constructor(
    message: string,
    readonly reason: 'alone' | 'timeout' | 'closed',
  ) {
    super(message);
  }
}

/** The relay's close reason for its alone timeout (WebSocket); streams just end. */
const ALONE_REASON = 'The tunnel partner did not show up';

export interface TunnelPartner {
  readonly name: string;
  readonly uuid: string;
}

export interface OpenTunnel {
  readonly partner: TunnelPartner;
  write(chunk: Buffer): boolean;
  end(): void;
  destroy(): void;
  onData(cb: (chunk: Buffer) => void): void;
  onDrain(cb: () => void): void;
  /** Fires once when the relay ends the tunnel (partner gone). */
  onEnd(cb: (reason: string) => void): void;
  pause(): void;
  resume(): void;
}

/** A connected transport before any protocol: bytes in and out (used by the tunnel-proxy client too). */
export interface RawTransport {
  send(data: Buffer | string): boolean;
  on(event: 'data', cb: (b: Buffer) => void): void;
  on(event: 'end', cb: (reason: string) => void): void;
  on(event: 'drain', cb: () => void): void;
  end(): void;
  destroy(): void;
  pause(): void;
  resume(): void;
}

function streamTransport(socket: Socket): RawTransport {
  socket.setNoDelay(true);
  let ended = false;
  const endOnce = (cb: (r: string) => void, r: string) => {
    if (!ended) {
      ended = true;
      cb(r);
    }
  };
  return {
    send: (d) => socket.write(d),
    on(event: string, cb: (arg: never) => void) {
      if (event === 'data') socket.on('data', cb as (b: Buffer) => void);
      else if (event === 'drain') socket.on('drain', cb as () => void);
      else {
        // A reset after the tunnel ran is an end too (with a reason), never an unhandled 'error'.
        socket.on('error', (err: NodeJS.ErrnoException) => endOnce(cb as (r: string) => void, `connection error (${err.code ?? err.message})`));
        socket.on('end', () => endOnce(cb as (r: string) => void, 'end of stream'));
        socket.on('close', () => endOnce(cb as (r: string) => void, 'connection closed'));
      }
    },
    end: () => socket.end(),
    destroy: () => socket.destroy(),
    pause: () => socket.pause(),
    resume: () => socket.resume(),
  };
}

function wsTransport(ws: WebSocket): RawTransport {
  const drainCbs: (() => void)[] = [];
  return {
    send(d) {
      ws.send(d, { binary: typeof d !== 'string' }, () => {
        if (ws.bufferedAmount === 0) for (const cb of drainCbs) cb();
      });
      return ws.bufferedAmount < 1024 * 1024;
    },
    on(event: string, cb: (arg: never) => void) {
      if (event === 'data') ws.on('message', (data: Buffer) => (cb as (b: Buffer) => void)(data));
      else if (event === 'drain') drainCbs.push(cb as () => void);
      else ws.on('close', (code: number, reason: Buffer) => (cb as (r: string) => void)(`websocket closed ${code} ${reason.toString()}`));
    },
    end: () => ws.close(1000),
    destroy: () => ws.terminate(),
    pause: () => ws.pause(),
    resume: () => ws.resume(),
  };
}

/**
 * Connects to a relay URL (tcp://, tls://, ssl://, ws://, wss://, unix:PATH). The connect, TLS handshake and
 * WebSocket upgrade together have `timeoutMs` (30000): a server that accepts and then says nothing would
 * otherwise hold the caller forever. @throws TunnelOpenError `timeout` past it.
 */
export function openTransport(opts: Pick<TunnelClientOptions, 'url' | 'insecure' | 'timeoutMs'>): Promise<RawTransport> {
  const url = opts.url;
  const timeoutMs = opts.timeoutMs ?? 30000;
  return new Promise((res, rej) => {
    let abandon = (): void => undefined;
    const timer = setTimeout(() => {
      abandon();
      rej(new TunnelOpenError(`no connection to the relay within ${timeoutMs} ms (--timeout)`, 'timeout'));
    }, timeoutMs);
    const resolve = (t: RawTransport) => {
      clearTimeout(timer);
      res(t);
    };
    const reject = (err: unknown) => {
      clearTimeout(timer);
      rej(err instanceof Error ? err : new Error(String(err)));
    };
    if (url.startsWith('ws://') || url.startsWith('wss://')) {
      const ws = new WebSocket(url, { rejectUnauthorized: opts.insecure !== true, perMessageDeflate: false });
      abandon = () => ws.terminate();
      ws.once('open', () => resolve(wsTransport(ws)));
      ws.once('error', reject);
      return;
    }
    let socket: Socket;
    if (url.startsWith('unix:')) socket = netConnect({ path: url.slice(5).replace(/^\/\/(?=\/)/, '') });
    else {
      const u = new URL(url);
      const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
      const port = Number(u.port);
      if (u.protocol === 'tcp:') socket = netConnect({ host, port });
      else if (u.protocol === 'tls:' || u.protocol === 'ssl:') socket = tlsConnect({ host, port, servername: host, rejectUnauthorized: opts.insecure !== true });
      else return reject(new Error(`unsupported URL scheme ${u.protocol} (use tcp, tls, ssl, ws, wss or unix:PATH)`));
    }
    abandon = () => socket.destroy();
    socket.once(url.startsWith('tls:') || url.startsWith('ssl:') ? 'secureConnect' : 'connect', () => resolve(streamTransport(socket)));
    socket.once('error', reject);
  });
}

/** Connects and authenticates; resolves once the tunnel is established. */
export async function openTunnel(opts: TunnelClientOptions): Promise<OpenTunnel> {
  // One deadline for the whole opening: connect, handshake, authentication, waiting for the partner.
  const timeoutMs = opts.timeoutMs ?? 30000;
  const started = Date.now();
  const t = await openTransport(opts);
  const splitter = new MessageSplitter();
  const trace = opts.trace ?? (() => undefined);
  const send = (obj: Record<string, unknown>) => {
    const line = `${toCompactJson(obj)}\n`;
    trace('send', line.trimEnd());
    t.send(line);
  };
  return new Promise<OpenTunnel>((resolve, reject) => {
    let dataCb: ((b: Buffer) => void) | undefined;
    let endCb: ((r: string) => void) | undefined;
    /** The end that came before the caller asked for it (given to `onEnd` then). */
    let endedEarly: string | undefined;
    let established = false;
    let waiting = false;
    const timer = setTimeout(() => {
      t.destroy();
      reject(new TunnelOpenError(`no tunnel within ${timeoutMs} ms (--timeout)${waiting ? '; the relay was still waiting for a partner' : ''}`, 'timeout'));
    }, Math.max(0, timeoutMs - (Date.now() - started)));
    /**
     * Partner bytes that came before the caller asked for them with `onData`: in the same chunk as
     * TunnelEstablished, or in later chunks (frames) that arrived first. Delivered first by onData.
     */
    const early: Buffer[] = [];
    t.on('data', (chunk) => {
      if (established) {
        if (dataCb !== undefined) return dataCb(chunk);
        early.push(chunk);
        return;
      }
      // A stream may bring TunnelEstablished and the partner's first bytes in one chunk: hand the JSON
      // reader one line at a time, so relayed bytes after the notification never reach it.
      let start = 0;
      while (!established && start < chunk.length) {
        const nl = chunk.indexOf(0x0a, start);
        const end = nl < 0 ? chunk.length : nl + 1;
        onControl(chunk.subarray(start, end));
        start = end;
      }
      if (established && start < chunk.length) early.push(chunk.subarray(start));
    });
    const onControl = (chunk: Buffer): void => {
      let messages: string[];
      try {
        messages = splitter.push(chunk);
      } catch (err) {
        t.destroy();
        return reject(err instanceof Error ? err : new Error(String(err)));
      }
      for (const m of messages) {
        trace('recv', m.trimEnd());
        let msg: { status?: string; error?: string; notification?: string; params?: Record<string, unknown> };
        try {
          msg = JSON.parse(m) as typeof msg;
          if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new TypeError('not an object');
        } catch {
          // Not a relay (or not the protocol we speak): a refusal, never an exception in a data handler.
          clearTimeout(timer);
          t.destroy();
          return reject(new Error('the server is not a nymea relay: it answered with something that is not JSON-RPC'));
        }
        if (msg.status === 'error') {
          clearTimeout(timer);
          t.destroy();
          return reject(new Error(`relay error: ${msg.error ?? ''}`));
        }
        const authErr = msg.params?.authenticationError;
        if (typeof authErr === 'string' && authErr !== 'AuthenticationErrorNoError') {
          clearTimeout(timer);
          t.destroy();
          return reject(new Error(`authentication failed: ${authErr}`));
        }
        if (authErr === 'AuthenticationErrorNoError' && !waiting) {
          waiting = true;
          opts.onWaiting?.();
        }
        if (msg.notification === 'RemoteProxy.TunnelEstablished') {
          established = true;
          clearTimeout(timer);
          const rest = splitter.drain();
          const str = (v: unknown) => (typeof v === 'string' ? v : '');
          const partner = { name: str(msg.params?.name), uuid: str(msg.params?.uuid) };
          resolve({
            partner,
            write: (b) => t.send(b),
            end: () => t.end(),
            destroy: () => t.destroy(),
            onData: (cb) => {
              const first = Buffer.concat([rest, ...early]);
              early.length = 0;
              dataCb = cb;
              if (first.length > 0) cb(first);
            },
            onDrain: (cb) => t.on('drain', cb),
            onEnd: (cb) => {
              endCb = cb;
              if (endedEarly !== undefined) cb(endedEarly);
            },
            pause: () => t.pause(),
            resume: () => t.resume(),
          });
        }
      }
    };
    t.on('end', (reason) => {
      if (established) {
        if (endCb !== undefined) return endCb(reason);
        endedEarly = reason;
        return;
      }
      clearTimeout(timer);
      // Authenticated and then closed without a tunnel: the relay's alone timeout (or its shutdown, which
      // WebSocket clients are told as `Stop server`).
      if (waiting && !reason.includes('Stop server'))
        return reject(new TunnelOpenError(`no partner arrived: the relay gave up waiting (its alone timeout, relay.timeouts.aloneMs)${reason.includes(ALONE_REASON) || !reason.startsWith('websocket') ? '' : ` (${reason})`}`, 'alone'));
      reject(new TunnelOpenError(`relay closed the connection before the tunnel was established (${reason})`, 'closed'));
    });
    const params: Record<string, unknown> = {
      name: opts.name ?? 'gatehouse-tunnel',
      token: opts.token,
      uuid: opts.uuid ?? crypto.randomUUID(),
    };
    if (opts.nonce !== undefined && opts.nonce !== '') params.nonce = opts.nonce;
    send({ id: 1, method: 'Authentication.Authenticate', params });
  });
}
