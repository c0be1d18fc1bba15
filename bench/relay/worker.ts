/**
 * A benchmark peer, run as a child process (`fork` with `--import tsx`) so that load generators and
 * sinks never share the gateway's event loop. Driven over IPC by main.ts, one command at a time:
 *
 *   listen      start a sink over a transport (the direct baseline's server side)
 *   connect     open a named connection straight to a port (direct baseline, socat)
 *   tunnel      open a named connection through the relay: Authenticate, wait for TunnelEstablished
 *   rtt         ping-pong 64-byte messages on a named connection; returns the percentiles
 *   bulk        send N bytes on a named connection; returns the time until the peer's 1-byte ack
 *   expect      the receiving side: count the next N bytes, then ack with one byte (echo otherwise)
 *   many        open N tunnels through the relay (K in flight), keep or close each once established
 *   open        open a group of N connections (one side of N tunnels, or N straight to a port) for the
 *               many-tunnel section; a counting sink (`listen` with count) groups what it accepts by port
 *   blast       write as fast as backpressure allows on every connection of a group for N ms
 *   countStart  zero the byte counters of a group (the receiving side: counting never echoes)
 *   countStop   the bytes each connection of a group received since countStart
 *   rttFor      ping-pong on a named connection for N ms; percentiles and count
 *   drop        close every named connection, every kept tunnel and every group
 *
 * Every connection echoes what it receives unless an `expect` is running, so one process can be the
 * receiving end of the round-trip test and of the bulk test.
 */
import {
  connect as netConnect,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { WebSocket, WebSocketServer } from 'ws';
import type { Transport, WorkerReply, WorkerRequest } from './types.ts';

/** A connection over any transport, after any relay handshake: raw bytes both ways. */
interface Conn {
  send(chunk: Buffer): boolean;
  /** Calls back once the transport can take more (after `send` returned false). */
  onceWritable(cb: () => void): void;
  setData(cb: (chunk: Buffer) => void): void;
  onClose(cb: () => void): void;
  destroy(): void;
}

const tlsFiles: { cert?: Buffer; key?: Buffer } = {};
function tlsMaterial(): { cert: Buffer; key: Buffer } {
  const certFile = process.env.BENCH_CERT;
  const keyFile = process.env.BENCH_KEY;
  if (certFile === undefined || keyFile === undefined) throw new Error('BENCH_CERT/BENCH_KEY not set');
  tlsFiles.cert ??= readFileSync(certFile);
  tlsFiles.key ??= readFileSync(keyFile);
  return { cert: tlsFiles.cert, key: tlsFiles.key };
}

/** At most this many bytes queued in `ws` before a WebSocket sender waits (streams use their own HWM). */
const WS_QUEUE_BYTES = 1024 * 1024;

function streamConn(socket: Socket, head?: Buffer): Conn {
  socket.setNoDelay(true);
  let dataCb: (chunk: Buffer) => void = () => undefined;
  let pending: Buffer | undefined = head !== undefined && head.length > 0 ? head : undefined;
  socket.removeAllListeners('data');
  socket.on('data', (chunk: Buffer) => dataCb(chunk));
  socket.on('error', () => undefined);
  return {
    send: (chunk) => socket.write(chunk),
    onceWritable: (cb) => socket.once('drain', cb),
    setData(cb) {
      dataCb = cb;
      if (pending !== undefined) {
        const p = pending;
        pending = undefined;
        cb(p);
      }
    },
    onClose: (cb) => socket.once('close', cb),
    destroy: () => socket.destroy(),
  };
}

function wsConn(ws: WebSocket): Conn {
  let dataCb: (chunk: Buffer) => void = () => undefined;
  let waiter: (() => void) | undefined;
  ws.removeAllListeners('message');
  ws.on('message', (data: Buffer) => dataCb(data));
  ws.on('error', () => undefined);
  const sent = () => {
    if (waiter !== undefined && ws.bufferedAmount < WS_QUEUE_BYTES / 2) {
      const w = waiter;
      waiter = undefined;
      w();
    }
  };
  return {
    send(chunk) {
      ws.send(chunk, { binary: true }, sent);
      return ws.bufferedAmount < WS_QUEUE_BYTES;
    },
    onceWritable(cb) {
      waiter = cb;
    },
    setData(cb) {
      dataCb = cb;
    },
    onClose: (cb) => ws.once('close', cb),
    destroy: () => ws.terminate(),
  };
}

// ---- the receiving side: echo, or count an expected transfer and ack it ----

let expecting: { remaining: number } | undefined;
const ACK = Buffer.from([0x06]);

function serve(conn: Conn): void {
  conn.setData((chunk) => {
    if (expecting === undefined) {
      conn.send(chunk);
      return;
    }
    expecting.remaining -= chunk.length;
    if (expecting.remaining <= 0) {
      expecting = undefined;
      conn.send(ACK);
    }
  });
}

// ---- groups (the many-tunnel section): connections that only count what they receive ----

interface Counted {
  conn: Conn;
  bytes: number;
}
const groups = new Map<string, Counted[]>();

function countInto(group: string, conn: Conn): void {
  const entry: Counted = { conn, bytes: 0 };
  conn.setData((chunk) => {
    entry.bytes += chunk.length;
  });
  let list = groups.get(group);
  if (list === undefined) groups.set(group, (list = []));
  list.push(entry);
  // A connection that is gone leaves its group (e.g. the driver's port probe through a forwarder).
  conn.onClose(() => {
    const l = groups.get(group);
    const i = l?.indexOf(entry) ?? -1;
    if (l !== undefined && i >= 0) l.splice(i, 1);
  });
}

function group(name: string): Counted[] {
  return groups.get(name) ?? [];
}

function blast(name: string, ms: number, chunkSize: number): Promise<{ bytes: number }> {
  const chunk = randomBytes(chunkSize);
  const until = Date.now() + ms;
  let written = 0;
  return new Promise((resolve) => {
    const list = group(name);
    if (list.length === 0) return resolve({ bytes: 0 });
    let done = 0;
    for (const { conn } of list) {
      const pump = () => {
        while (Date.now() < until) {
          written += chunk.length;
          if (!conn.send(chunk)) return conn.onceWritable(pump);
        }
        if (++done === list.length) resolve({ bytes: written });
      };
      pump();
    }
  });
}

// ---- opening connections ----

const HOST = '127.0.0.1';

function rawConnect(transport: Transport, port: number): Promise<Socket | WebSocket> {
  return new Promise((resolve, reject) => {
    if (transport === 'ws' || transport === 'wss') {
      const opts =
        transport === 'wss'
          ? { perMessageDeflate: false, ca: tlsMaterial().cert }
          : { perMessageDeflate: false };
      const ws = new WebSocket(`${transport}://${HOST}:${port}/`, opts);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
      return;
    }
    const socket =
      transport === 'tcp'
        ? netConnect({ host: HOST, port })
        : tlsConnect({ host: HOST, port, ca: tlsMaterial().cert, servername: 'localhost' });
    socket.once(transport === 'tls' ? 'secureConnect' : 'connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

async function connectDirect(transport: Transport, port: number): Promise<Conn> {
  const raw = await rawConnect(transport, port);
  return raw instanceof WebSocket ? wsConn(raw) : streamConn(raw);
}

const TUNNEL_TIMEOUT_MS = 60_000;

/** Connects to the relay, authenticates with `token`, resolves once TunnelEstablished has arrived. */
async function connectTunnel(transport: Transport, port: number, token: string): Promise<Conn> {
  const raw = await rawConnect(transport, port);
  const request = `${JSON.stringify({ id: 1, method: 'Authentication.Authenticate', params: { name: 'bench', token, uuid: randomUUID() } })}\n`;
  return new Promise<Conn>((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new Error(`no tunnel within ${TUNNEL_TIMEOUT_MS} ms`)),
      TUNNEL_TIMEOUT_MS,
    );
    const fail = (err: Error) => {
      clearTimeout(timer);
      if (raw instanceof WebSocket) raw.terminate();
      else raw.destroy();
      reject(err);
    };
    // A reset during the handshake fails this tunnel only (never an unhandled 'error' in the peer).
    if (raw instanceof WebSocket) raw.on('error', (err: Error) => fail(err));
    else raw.on('error', (err: Error) => fail(err));
    const check = (line: string): boolean => {
      const msg = JSON.parse(line) as {
        status?: string;
        error?: string;
        notification?: string;
        params?: { authenticationError?: string };
      };
      if (msg.status === 'error') throw new Error(`relay error: ${msg.error ?? ''}`);
      const authErr = msg.params?.authenticationError;
      if (authErr !== undefined && authErr !== 'AuthenticationErrorNoError')
        throw new Error(`authentication failed: ${authErr}`);
      return msg.notification === 'RemoteProxy.TunnelEstablished';
    };
    if (raw instanceof WebSocket) {
      raw.on('message', (data: Buffer) => {
        try {
          if (check(data.toString())) {
            clearTimeout(timer);
            resolve(wsConn(raw));
          }
        } catch (err) {
          fail(err as Error);
        }
      });
      raw.once('close', () => fail(new Error('relay closed before the tunnel was established')));
      raw.send(request);
      return;
    }
    let text = '';
    const onClose = () => fail(new Error('relay closed before the tunnel was established'));
    raw.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      let nl: number;
      try {
        while ((nl = text.indexOf('\n')) >= 0) {
          const line = text.slice(0, nl);
          text = text.slice(nl + 1);
          if (check(line)) {
            clearTimeout(timer);
            raw.off('close', onClose);
            resolve(streamConn(raw, Buffer.from(text, 'latin1')));
            return;
          }
        }
      } catch (err) {
        fail(err as Error);
      }
    });
    raw.once('close', onClose);
    raw.write(request);
  });
}

// ---- sinks (direct baseline) ----

const servers: (NetServer | HttpServer)[] = [];

async function listen(transport: Transport, port: number, count = false): Promise<void> {
  let server: NetServer | HttpServer;
  // A counting sink puts what it accepts into the group `sink:<port>` (it never echoes).
  const take = (c: Conn) => (count ? countInto(`sink:${port}`, c) : serve(c));
  if (transport === 'tcp') server = createNetServer((s) => take(streamConn(s)));
  else if (transport === 'tls') server = createTlsServer(tlsMaterial(), (s) => take(streamConn(s)));
  else {
    const http = transport === 'ws' ? createHttpServer() : createHttpsServer(tlsMaterial());
    server = http;
    const wss = new WebSocketServer({ server: http, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    wss.on('connection', (ws) => take(wsConn(ws)));
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: HOST, port }, () => resolve());
  });
  servers.push(server);
}

// ---- measurements on named connections ----

const named = new Map<string, Conn>();
function conn(name: string): Conn {
  const c = named.get(name);
  if (c === undefined) throw new Error(`no connection ${name}`);
  return c;
}
const kept: Conn[] = [];

function rtt(
  conn: Conn,
  count: number,
  warmup: number,
  size: number,
): Promise<{ p50Us: number; p99Us: number; meanUs: number }> {
  const ping = randomBytes(size);
  const samples = new Float64Array(count);
  return new Promise((resolve) => {
    let i = -warmup;
    let got = 0;
    let t0 = 0n;
    const next = () => {
      t0 = process.hrtime.bigint();
      conn.send(ping);
    };
    conn.setData((chunk) => {
      got += chunk.length;
      if (got < size) return;
      got -= size;
      if (i >= 0) samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
      i++;
      if (i < count) next();
      else {
        samples.sort();
        let sum = 0;
        for (const s of samples) sum += s;
        resolve({
          p50Us: samples[Math.floor(count * 0.5)]!,
          p99Us: samples[Math.floor(count * 0.99)]!,
          meanUs: sum / count,
        });
      }
    });
    next();
  });
}

/**
 * Pings for `ms` milliseconds (however few fit: a starved path shows as a low count): back to back, or with
 * `gapMs` between an answer and the next ping (a quiet tunnel, not one more busy one: back-to-back pings
 * through a fast path take CPU from the busy tunnels on a small machine).
 */
function rttFor(conn: Conn, ms: number, size: number, gapMs = 0): Promise<{ p50Us: number; p99Us: number; maxUs: number; count: number }> {
  const ping = randomBytes(size);
  const samples: number[] = [];
  const until = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
  return new Promise((resolve) => {
    let got = 0;
    let t0 = 0n;
    const next = () => {
      t0 = process.hrtime.bigint();
      conn.send(ping);
    };
    conn.setData((chunk) => {
      got += chunk.length;
      if (got < size) return;
      got -= size;
      const now = process.hrtime.bigint();
      samples.push(Number(now - t0) / 1000);
      if (now < until) {
        if (gapMs > 0) setTimeout(next, gapMs);
        else next();
        return;
      }
      samples.sort((a, b) => a - b);
      const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(samples.length * q))]!;
      resolve({ p50Us: at(0.5), p99Us: at(0.99), maxUs: samples[samples.length - 1]!, count: samples.length });
    });
    next();
  });
}

function bulk(conn: Conn, bytes: number, chunkSize: number): Promise<{ ns: number }> {
  const chunk = randomBytes(chunkSize);
  return new Promise((resolve) => {
    let left = bytes;
    const t0 = process.hrtime.bigint();
    conn.setData(() => resolve({ ns: Number(process.hrtime.bigint() - t0) }));
    const pump = () => {
      while (left > 0) {
        const piece = left >= chunkSize ? chunk : chunk.subarray(0, left);
        left -= piece.length;
        if (!conn.send(piece)) {
          if (left > 0) conn.onceWritable(pump);
          return;
        }
      }
    };
    pump();
  });
}

/** Opens `count` tunnels with tokens `${prefix}-${i}`, `inflight` at a time. */
async function many(
  transport: Transport,
  port: number,
  prefix: string,
  count: number,
  inflight: number,
  keep: boolean,
): Promise<{ ms: number; failed: number; firstError?: string }> {
  const t0 = process.hrtime.bigint();
  let nextIndex = 0;
  let failed = 0;
  let firstError: string | undefined;
  const lane = async () => {
    while (nextIndex < count) {
      const i = nextIndex++;
      try {
        const conn = await connectTunnel(transport, port, `${prefix}-${i}`);
        if (keep) {
          conn.setData(() => undefined);
          kept.push(conn);
        } else conn.destroy();
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(inflight, count) }, lane));
  const out: { ms: number; failed: number; firstError?: string } = {
    ms: Number(process.hrtime.bigint() - t0) / 1e6,
    failed,
  };
  if (firstError !== undefined) out.firstError = firstError;
  return out;
}

function adopt(name: string, c: Conn): undefined {
  named.get(name)?.destroy();
  named.set(name, c);
  serve(c);
  return undefined;
}

/** Opens `count` connections into `group`, `inflight` at a time: tunnel sides (token `${group}-${i}`) or straight to `port`. */
async function openGroup(name: string, transport: Transport, port: number, count: number, tunnel: boolean, inflight: number): Promise<{ failed: number; firstError?: string }> {
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  const lane = async () => {
    while (next < count) {
      const i = next++;
      try {
        const c = tunnel ? await connectTunnel(transport, port, `${name}-${i}`) : await connectDirect(transport, port);
        countInto(name, c);
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(inflight, count) }, lane));
  return firstError === undefined ? { failed } : { failed, firstError };
}

function drop(): void {
  for (const c of named.values()) c.destroy();
  named.clear();
  for (const c of kept) c.destroy();
  kept.length = 0;
  for (const list of groups.values()) for (const { conn } of list) conn.destroy();
  groups.clear();
}

async function handle(req: WorkerRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'listen':
      return listen(req.transport, req.port, req.count === true);
    case 'connect':
      return adopt(req.name, await connectDirect(req.transport, req.port));
    case 'tunnel':
      return adopt(req.name, await connectTunnel(req.transport, req.port, req.token));
    case 'rtt':
      return rtt(conn(req.name), req.count, req.warmup, req.size);
    case 'bulk':
      return bulk(conn(req.name), req.bytes, req.chunk);
    case 'expect':
      expecting = { remaining: req.bytes };
      return undefined;
    case 'many':
      return many(req.transport, req.port, req.prefix, req.count, req.inflight, req.keep);
    case 'open':
      return openGroup(req.group, req.transport, req.port, req.count, req.tunnel, req.inflight);
    case 'blast':
      return blast(req.group, req.ms, req.chunk);
    case 'countStart':
      for (const e of group(req.group)) e.bytes = 0;
      return undefined;
    case 'countStop':
      return group(req.group).map((e) => e.bytes);
    case 'rttFor':
      return rttFor(conn(req.name), req.ms, req.size, req.gapMs);
    case 'drop':
      drop();
      return undefined;
    case 'exit':
      drop();
      for (const s of servers) s.close();
      setImmediate(() => process.exit(0));
      return undefined;
  }
}

process.on('message', (req: WorkerRequest) => {
  handle(req).then(
    (result) => process.send?.({ id: req.id, ok: true, result } satisfies WorkerReply),
    (err: unknown) =>
      process.send?.({ id: req.id, ok: false, error: (err as Error).message } satisfies WorkerReply),
  );
});
process.on('disconnect', () => process.exit(0));
