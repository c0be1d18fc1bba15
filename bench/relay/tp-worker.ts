/**
 * Load peer for the tunnel-proxy section of bench:relay (a child of main.ts, IPC-driven): plays one nymea
 * server connection with N clients through the tunnel-proxy listener, or N legacy tunnels (pairs through
 * Hello/Authenticate/TunnelEstablished) through the legacy relay, and moves bytes client → server.
 *
 * Messages: `{cmd:'setup', mode, port, clients}` → ready; `{cmd:'bulk', bytes}` → {seconds};
 * `{cmd:'rtt', count}` → {p50Us, p99Us}; `{cmd:'teardown'}`; `{cmd:'exit'}`.
 */
import { connect, type Socket } from 'node:net';
import { SlipDecoder, encodeFrame } from '../../src/relay/protocol/slip.ts';

type Mode = 'tp' | 'legacy';
interface Setup {
  /** Sending sides (clients / tunnel A sides). */
  senders: Socket[];
  /** Bytes counted at the receiving end(s). */
  received: () => number;
  /** Resolves when the receiver(s) saw `n` bytes in total. */
  waitReceived: (n: number) => Promise<void>;
  /** Echo mode for the round trip: receiver sends back what it gets. */
  echo: (on: boolean) => void;
  all: Socket[];
}

let current: Setup | undefined;
const CHUNK = Buffer.alloc(64 * 1024, 0x5a);

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads until `marker` (a JSON line) arrived; returns the bytes after it. */
function untilLine(s: Socket, marker: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf(marker);
      if (i < 0) return;
      const nl = buf.indexOf('\n', i);
      if (nl < 0) return;
      s.off('data', onData);
      resolve(buf.subarray(nl + 1));
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed before ${marker}`)));
  });
}

function counter(): { add: (n: number) => void; get: () => number; wait: (n: number) => Promise<void> } {
  let total = 0;
  let waiter: { n: number; resolve: () => void } | undefined;
  return {
    add(n) {
      total += n;
      if (waiter !== undefined && total >= waiter.n) {
        const w = waiter;
        waiter = undefined;
        w.resolve();
      }
    },
    get: () => total,
    wait: (n) => (total >= n ? Promise.resolve() : new Promise((resolve) => (waiter = { n, resolve }))),
  };
}

async function setupTp(port: number, n: number): Promise<Setup> {
  const server = await open(port);
  const uuid = crypto.randomUUID();
  server.write(`${JSON.stringify({ id: 1, method: 'TunnelProxy.RegisterServer', params: { serverName: 'bench', serverUuid: uuid } })}\n`);
  const rest = await untilLine(server, '"slipEnabled":true');
  const count = counter();
  let echo = false;
  const dec = new SlipDecoder();
  const sink = {
    payload: (a: number, b: Buffer) => {
      if (a === 0) return;
      count.add(b.length);
      if (echo) server.write(encodeFrame(a, b));
    },
    end: () => undefined,
    invalid: () => undefined,
  };
  server.on('data', (d: Buffer) => dec.push(d, sink));
  if (rest.length > 0) dec.push(rest, sink);
  const clients: Socket[] = [];
  for (let i = 0; i < n; i += 64) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(64, n - i) }, async () => {
        const c = await open(port);
        c.write(`${JSON.stringify({ id: 1, method: 'TunnelProxy.RegisterClient', params: { clientName: 'c', clientUuid: crypto.randomUUID(), serverUuid: uuid } })}\n`);
        await untilLine(c, 'TunnelProxyErrorNoError');
        return c;
      }),
    );
    clients.push(...batch);
  }
  return { senders: clients, received: count.get, waitReceived: count.wait, echo: (on) => (echo = on), all: [server, ...clients] };
}

async function setupLegacy(port: number, n: number): Promise<Setup> {
  const count = counter();
  let echo = false;
  const senders: Socket[] = [];
  const all: Socket[] = [];
  for (let i = 0; i < n; i += 32) {
    await Promise.all(
      Array.from({ length: Math.min(32, n - i) }, async (_, j) => {
        const token = `bench-${process.pid}-${i + j}-${Math.random()}`;
        const a = await open(port);
        const b = await open(port);
        const auth = (name: string) => `${JSON.stringify({ id: 0, method: 'Authentication.Authenticate', params: { name, token, uuid: crypto.randomUUID() } })}\n`;
        const ea = untilLine(a, 'TunnelEstablished');
        const eb = untilLine(b, 'TunnelEstablished');
        a.write(auth('a'));
        await new Promise((r) => setTimeout(r, 1));
        b.write(auth('b'));
        await Promise.all([ea, eb]);
        b.on('data', (d: Buffer) => {
          count.add(d.length);
          if (echo) b.write(d);
        });
        senders.push(a);
        all.push(a, b);
      }),
    );
  }
  return { senders, received: count.get, waitReceived: count.wait, echo: (on) => (echo = on), all };
}

/** Writes `bytes` on `s` in 64 KiB chunks, honouring backpressure. */
async function pump(s: Socket, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, CHUNK.length);
    left -= n;
    if (!s.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) await new Promise((r) => s.once('drain', r));
  }
}

async function handle(msg: { cmd: string; mode?: Mode; port?: number; clients?: number; bytes?: number; count?: number }): Promise<unknown> {
  switch (msg.cmd) {
    case 'setup':
      current = msg.mode === 'tp' ? await setupTp(msg.port!, msg.clients!) : await setupLegacy(msg.port!, msg.clients!);
      return { ok: true };
    case 'bulk': {
      const s = current!;
      const per = Math.floor(msg.bytes! / s.senders.length);
      const target = s.received() + per * s.senders.length;
      const t0 = process.hrtime.bigint();
      await Promise.all([...s.senders.map((c) => pump(c, per)), s.waitReceived(target)]);
      return { seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
    }
    case 'rtt': {
      const s = current!;
      s.echo(true);
      const c = s.senders[0]!;
      const ping = Buffer.alloc(64, 0x70);
      const samples: number[] = [];
      let got = 0;
      let resolveOne: (() => void) | undefined;
      const onData = (d: Buffer) => {
        got += d.length;
        if (got >= 64 && resolveOne !== undefined) {
          got -= 64;
          const r = resolveOne;
          resolveOne = undefined;
          r();
        }
      };
      c.on('data', onData);
      for (let i = 0; i < msg.count! + 100; i++) {
        const t0 = process.hrtime.bigint();
        await new Promise<void>((r) => {
          resolveOne = r;
          c.write(ping);
        });
        if (i >= 100) samples.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      c.off('data', onData);
      s.echo(false);
      samples.sort((a, b) => a - b);
      return { p50Us: samples[Math.floor(samples.length * 0.5)]!, p99Us: samples[Math.floor(samples.length * 0.99)]! };
    }
    case 'teardown':
      for (const s of current?.all ?? []) s.destroy();
      current = undefined;
      await new Promise((r) => setTimeout(r, 300));
      return { ok: true };
    case 'exit':
      setImmediate(() => process.exit(0));
      return { ok: true };
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

process.on('message', (m: { id: number } & Parameters<typeof handle>[0]) => {
  handle(m).then(
    (result) => process.send!({ id: m.id, ok: true, result }),
    (err: unknown) => process.send!({ id: m.id, ok: false, error: (err as Error).stack ?? String(err) }),
  );
});
