/**
 * Test harness for the tunnel-proxy mode: a relay with `[relay.tunnelProxy]` enabled on port 0, and raw
 * clients playing a nymea server (SLIP frames decoded with our codec) or a nymea app.
 */
import { join } from 'node:path';
import { startRelay, rawClient, request, tempDir, deadline, selfSignedCert, type RawClient, type StartedRelay } from '../../helpers/relay.ts';
import { SlipDecoder, encodeFrame } from '../../../src/relay/protocol/slip.ts';
import type { Logger } from '../../../src/core/log.ts';

export interface StartedTp extends StartedRelay {
  tpUrl(kind: string): string;
}

/** A relay with the tunnel-proxy mode on tcp, ws (and more with `kinds`), plus `overrides` for `[relay.tunnelProxy]`. */
export async function startTp(tp: Record<string, unknown> = {}, opts: { kinds?: readonly string[]; relay?: Record<string, unknown>; log?: Logger } = {}): Promise<StartedTp> {
  const dir = tempDir();
  const kinds = opts.kinds ?? ['tcp', 'ws'];
  const needsTls = kinds.includes('tls') || kinds.includes('wss');
  const listeners = kinds.map((k) => (k === 'unix' ? { kind: 'unix', path: join(dir, 'tp.sock') } : { kind: k, host: '127.0.0.1', port: 0 }));
  const relay = await startRelay(
    {
      listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0 }],
      ...(needsTls ? { tls: selfSignedCert(dir) } : {}),
      ...opts.relay,
      tunnelProxy: { enabled: true, listeners, ...tp },
    },
    opts.log === undefined ? {} : { log: opts.log },
  );
  return {
    ...relay,
    tpUrl(kind: string) {
      const l = relay.server.tunnelProxyListeners.find((x) => x.kind === kind);
      if (l === undefined) throw new Error(`no tunnel-proxy ${kind} listener`);
      return l.url;
    },
  };
}

export interface Frame {
  readonly address: number;
  readonly payload: Buffer;
}

/** A raw connection registered as a nymea server: decodes the SLIP frames it receives after registration. */
export interface TpServer {
  readonly raw: RawClient;
  /** Frames received so far (after the RegisterServer answer). */
  frames(): Frame[];
  /** JSON messages received on address 0. */
  control(): Record<string, unknown>[];
  send(address: number, payload: string | Buffer): void;
  /** Sends bytes as they are (already framed). */
  sendRaw(bytes: Buffer): void;
  waitControl(pred: (m: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with everything received for `address` once it holds at least `n` bytes. */
  waitData(address: number, n: number, timeoutMs?: number): Promise<Buffer>;
  /** The socket address of the client named `name` (from ClientConnected). */
  waitClient(name: string, timeoutMs?: number): Promise<number>;
}

export const registerServerRequest = (uuid: string, name = 'nymea', id = 1) => request(id, 'TunnelProxy.RegisterServer', { serverName: name, serverUuid: uuid });
export const registerClientRequest = (serverUuid: string, opts: { name?: string; uuid?: string; id?: number } = {}) =>
  request(opts.id ?? 1, 'TunnelProxy.RegisterClient', { clientName: opts.name ?? 'app', clientUuid: opts.uuid ?? `{${crypto.randomUUID()}}`, serverUuid });

const REGISTERED_SERVER = '{"id":1,"params":{"slipEnabled":true,"tunnelProxyError":"TunnelProxyErrorNoError"},"status":"success"}\n';
const REGISTERED_CLIENT = '"tunnelProxyError":"TunnelProxyErrorNoError"},"status":"success"}\n';

/** Connects to `url` and registers as server `uuid`. */
export async function tpServer(url: string, uuid: string, name = 'nymea'): Promise<TpServer> {
  const raw = await rawClient(url);
  raw.send(registerServerRequest(uuid, name));
  const got = await raw.waitFor(REGISTERED_SERVER);
  const offset = got.indexOf(REGISTERED_SERVER) + REGISTERED_SERVER.length;
  const frames: Frame[] = [];
  const decoder = new SlipDecoder();
  let consumed = offset;
  let parts: Buffer[] = [];
  const update = () => {
    const all = raw.received();
    if (all.length > consumed) {
      decoder.push(all.subarray(consumed), {
        payload: (_a, b) => parts.push(Buffer.from(b)),
        end: (address) => {
          frames.push({ address, payload: Buffer.concat(parts) });
          parts = [];
        },
        invalid: () => {
          parts = [];
        },
      });
      consumed = all.length;
    }
    return frames;
  };
  const poll = <T>(fn: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    deadline(
      new Promise<T>((resolve, reject) => {
        const tick = () => {
          const v = fn();
          if (v !== undefined) return resolve(v);
          if (raw.isClosed && fn() === undefined) return reject(new Error(`connection closed while waiting for ${what}`));
          setTimeout(tick, 5);
        };
        tick();
      }),
      timeoutMs,
      what,
    );
  const control = () => update().filter((f) => f.address === 0).map((f) => JSON.parse(f.payload.toString()) as Record<string, unknown>);
  const dataFor = (address: number) => Buffer.concat(update().filter((f) => f.address === address).map((f) => f.payload));
  return {
    raw,
    frames: update,
    control,
    send: (address, payload) => raw.send(encodeFrame(address, typeof payload === 'string' ? Buffer.from(payload) : payload), { binary: true }),
    sendRaw: (bytes) => raw.send(bytes, { binary: true }),
    waitControl: (pred, timeoutMs = 5000) => poll(() => control().find(pred), timeoutMs, 'a control message'),
    waitData: (address, n, timeoutMs = 5000) =>
      poll(
        () => {
          const d = dataFor(address);
          return d.length >= n ? d : undefined;
        },
        timeoutMs,
        `${n} bytes for address ${address}`,
      ),
    waitClient: (name, timeoutMs = 5000) =>
      poll(
        () => {
          const m = control().find((c) => c.notification === 'TunnelProxy.ClientConnected' && (c.params as { clientName: string }).clientName === name);
          return m === undefined ? undefined : (m.params as { socketAddress: number }).socketAddress;
        },
        timeoutMs,
        `ClientConnected for ${name}`,
      ),
  };
}

/** Connects to `url` and registers as a client of `serverUuid`; resolves once the answer arrived (bytes after it are data). */
export async function tpClient(url: string, serverUuid: string, name = 'app'): Promise<{ raw: RawClient; offset: number }> {
  const raw = await rawClient(url);
  raw.send(registerClientRequest(serverUuid, { name }));
  const got = await raw.waitFor(REGISTERED_CLIENT);
  return { raw, offset: got.indexOf(REGISTERED_CLIENT) + REGISTERED_CLIENT.length };
}

/** The first JSON line a raw client received, parsed. */
export async function firstAnswer(c: RawClient): Promise<Record<string, unknown>> {
  const b = await c.waitFor('\n');
  return JSON.parse(b.toString().split('\n')[0]!) as Record<string, unknown>;
}
