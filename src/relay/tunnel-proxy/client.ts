/**
 * Tunnel-proxy clients (the library behind `gatehouse tunnel --tp-server/--tp-client`), for quick tests and
 * scripts; nymea's own daemons and apps speak the same bytes.
 *
 * - `registerTpClient`: an app. Registers with `TunnelProxy.RegisterClient`; once answered NoError the
 *   connection carries raw bytes to and from the server (the same `OpenTunnel` shape as a legacy tunnel).
 * - `registerTpServer`: a nymea daemon. Registers with `TunnelProxy.RegisterServer`; from then on the
 *   connection carries SLIP frames: address 0 is JSON-RPC (ClientConnected / ClientDisconnected
 *   notifications, our DisconnectClient requests), every other address is one client's bytes.
 * Everything the relay sends is parsed defensively: a malformed answer rejects, never throws in a handler.
 */
import { MessageSplitter } from '../protocol/framing.ts';
import { toCompactJson } from '../protocol/json.ts';
import { CONTROL_ADDRESS, encodeFrame, SlipDecoder } from '../protocol/slip.ts';
import { openTransport, TunnelOpenError, type OpenTunnel, type RawTransport } from '../client.ts';

export interface TpCommonOptions {
  readonly url: string;
  readonly insecure?: boolean;
  /** Give up when registration is not answered within this many ms. */
  readonly timeoutMs?: number;
  /** Called with each JSON-RPC line sent and received (`--verbose`). */
  readonly trace?: (direction: 'send' | 'recv', line: string) => void;
}

export interface TpClientOptions extends TpCommonOptions {
  readonly serverUuid: string;
  readonly name?: string;
  readonly uuid?: string;
}

export interface TpServerOptions extends TpCommonOptions {
  readonly serverUuid: string;
  readonly name?: string;
}

export interface TpClientInfo {
  readonly address: number;
  readonly name: string;
  readonly uuid: string;
  readonly peer: string;
}

/** A registered server connection. */
export interface TpServerSession {
  onClientConnected(cb: (c: TpClientInfo) => void): void;
  onClientDisconnected(cb: (address: number) => void): void;
  /** Bytes from the client at `address` (one call per received frame). Set it last: frames flow from then on. */
  onData(cb: (address: number, bytes: Buffer) => void): void;
  /** Fires once when the relay ends the server connection. */
  onEnd(cb: (reason: string) => void): void;
  send(address: number, bytes: Buffer): boolean;
  /** Asks the relay to close one client (TunnelProxy.DisconnectClient). */
  disconnectClient(address: number): void;
  end(): void;
  destroy(): void;
}

/** A successful registration answer line, parsed (`undefined` while none came). */
interface Answer {
  readonly status?: unknown;
  readonly error?: unknown;
  readonly params?: { readonly tunnelProxyError?: unknown };
}

/**
 * Sends one request on a fresh connection and reads JSON lines until the answer; resolves with the
 * transport and whatever bytes followed the answer in the same read.
 */
async function register(opts: TpCommonOptions, method: string, params: Record<string, unknown>): Promise<{ t: RawTransport; rest: Buffer }> {
  const t = await openTransport(opts);
  const trace = opts.trace ?? (() => undefined);
  const splitter = new MessageSplitter();
  const timeoutMs = opts.timeoutMs ?? 30000;
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err: Error | undefined, rest?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err !== undefined) {
        t.destroy();
        reject(err);
      } else resolve({ t, rest: rest ?? Buffer.alloc(0) });
    };
    const timer = setTimeout(() => finish(new TunnelOpenError(`no answer to ${method} within ${timeoutMs} ms (--timeout)`, 'timeout')), timeoutMs);
    t.on('data', (chunk) => {
      if (done) return;
      // The answer is one line; bytes after it already belong to the registered connection.
      const nl = chunk.indexOf(0x0a);
      const head = nl < 0 ? chunk : chunk.subarray(0, nl + 1);
      let lines: string[];
      try {
        lines = splitter.push(head);
      } catch (err) {
        return finish(err instanceof Error ? err : new Error(String(err)));
      }
      for (const line of lines) {
        trace('recv', line.trimEnd());
        let msg: Answer;
        try {
          msg = JSON.parse(line) as Answer;
          if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new TypeError('not an object');
        } catch {
          return finish(new Error('the server is not a nymea tunnel proxy: it answered with something that is not JSON-RPC'));
        }
        if (msg.status === 'error') return finish(new Error(`relay error: ${typeof msg.error === 'string' ? msg.error : ''}`));
        const code = msg.params?.tunnelProxyError;
        if (code !== 'TunnelProxyErrorNoError') return finish(new Error(`${method} refused: ${typeof code === 'string' ? code : 'no tunnelProxyError in the answer'}`));
        return finish(undefined, Buffer.from(chunk.subarray(head.length)));
      }
    });
    t.on('end', (reason) => finish(new TunnelOpenError(`relay closed the connection before answering ${method} (${reason})`, 'closed')));
    const line = `${toCompactJson({ id: 1, method, params })}\n`;
    trace('send', line.trimEnd());
    t.send(line);
  });
}

/** Registers as an app of `serverUuid`; resolves with the raw byte tunnel to that server. */
export async function registerTpClient(opts: TpClientOptions): Promise<OpenTunnel> {
  const { t, rest } = await register(opts, 'TunnelProxy.RegisterClient', {
    clientName: opts.name ?? 'gatehouse-tunnel',
    clientUuid: opts.uuid ?? `{${crypto.randomUUID()}}`,
    serverUuid: opts.serverUuid,
  });
  let endCb: (reason: string) => void = () => undefined;
  t.on('end', (reason) => endCb(reason));
  return {
    partner: { name: 'tunnel-proxy server', uuid: opts.serverUuid },
    write: (b) => t.send(b),
    end: () => t.end(),
    destroy: () => t.destroy(),
    onData: (cb) => {
      if (rest.length > 0) cb(rest);
      t.on('data', cb);
    },
    onDrain: (cb) => t.on('drain', cb),
    onEnd: (cb) => {
      endCb = cb;
    },
    pause: () => t.pause(),
    resume: () => t.resume(),
  };
}

/** Registers as the server `serverUuid`; resolves with the multiplexed session. */
export async function registerTpServer(opts: TpServerOptions): Promise<TpServerSession> {
  const { t, rest } = await register(opts, 'TunnelProxy.RegisterServer', { serverName: opts.name ?? 'gatehouse-tunnel', serverUuid: opts.serverUuid });
  const trace = opts.trace ?? (() => undefined);
  let connected: (c: TpClientInfo) => void = () => undefined;
  let disconnected: (address: number) => void = () => undefined;
  let data: (address: number, bytes: Buffer) => void = () => undefined;
  let endCb: (reason: string) => void = () => undefined;
  let nextId = 2;
  const decoder = new SlipDecoder();
  let parts: Buffer[] = [];
  const onControl = (text: string) => {
    trace('recv', text.trimEnd());
    let msg: { notification?: unknown; params?: Record<string, unknown> };
    try {
      msg = JSON.parse(text) as typeof msg;
    } catch {
      return; // Not ours to judge: the relay only sends JSON here; anything else is ignored.
    }
    if (msg === null || typeof msg !== 'object') return;
    const p = msg.params ?? {};
    const str = (v: unknown) => (typeof v === 'string' ? v : '');
    const address = typeof p.socketAddress === 'number' ? p.socketAddress : -1;
    if (msg.notification === 'TunnelProxy.ClientConnected' && address > 0)
      connected({ address, name: str(p.clientName), uuid: str(p.clientUuid), peer: str(p.clientPeerAddress) });
    else if (msg.notification === 'TunnelProxy.ClientDisconnected' && address > 0) disconnected(address);
  };
  const sink = {
    payload: (_address: number, bytes: Buffer) => parts.push(Buffer.from(bytes)),
    end: (address: number) => {
      const payload = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      parts = [];
      if (address === CONTROL_ADDRESS) onControl(payload.toString('utf8'));
      else data(address, payload);
    },
    invalid: () => {
      parts = [];
    },
  };
  // Frames wait until the caller has set its handlers (onData last): the first read may already carry some.
  let ready = false;
  const pending: Buffer[] = [];
  const feed = (chunk: Buffer) => {
    if (ready) decoder.push(chunk, sink);
    else pending.push(chunk);
  };
  if (rest.length > 0) feed(rest);
  t.on('data', feed);
  t.on('end', (reason) => endCb(reason));
  return {
    onClientConnected: (cb) => {
      connected = cb;
    },
    onClientDisconnected: (cb) => {
      disconnected = cb;
    },
    onData: (cb) => {
      data = cb;
      ready = true;
      for (const c of pending.splice(0)) decoder.push(c, sink);
    },
    onEnd: (cb) => {
      endCb = cb;
    },
    send: (address, bytes) => t.send(encodeFrame(address, bytes)),
    disconnectClient: (address) => {
      const line = `${toCompactJson({ id: nextId++, method: 'TunnelProxy.DisconnectClient', params: { socketAddress: address } })}\n`;
      trace('send', line.trimEnd());
      t.send(encodeFrame(CONTROL_ADDRESS, Buffer.from(line)));
    },
    end: () => t.end(),
    destroy: () => t.destroy(),
  };
}
