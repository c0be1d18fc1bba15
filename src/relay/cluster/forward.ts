/**
 * Node-to-node forwarding: how a tunnel whose two clients landed on different gateway nodes (processes
 * or machines) is carried between them. One plain stream per forwarded tunnel, so each node relays its
 * client ↔ that stream exactly as it relays two local clients (the kernel relay applies on both nodes).
 *
 * The node where the partner WAITS listens (`ForwardListener`); the node where the second client arrives
 * and finds it (through the shared rendezvous table) connects (`forwardConnect`) and claims it. The
 * handshake, ASCII lines of at most `MAX_LINE` bytes, bounded by a deadline:
 *
 *   listener  → connector   GATEHOUSE-FWD 1 <cw>                       cw, cp: 16 random bytes, hex
 *   connector → listener    CLAIM <cp> <kind> <ref> <info> <mac>        info: base64url JSON (PartyInfo)
 *   listener  → connector   OK <info> <mac>   or   NO <code> <mac>
 *
 * Both directions are authenticated with HMAC-SHA256 under a key derived from the cluster secret (`mac`
 * covers both challenges and every field, so nothing can be replayed or spliced from another handshake);
 * a peer that fails a check is dropped without an answer. After `OK` the stream carries the tunnel's raw
 * bytes and nothing else; the connector sends nothing before it reads `OK`.
 *
 * Without `[cluster] forwardTls` the stream is not encrypted: run node-to-node links on a private network
 * or loopback (docs/operations.md). With it, the stream is TLS with certificates checked both ways
 * against the cluster's CA (mutual TLS; host names are not checked: the CA is the cluster's own), and the
 * HMAC handshake runs inside it; such tunnels stay on the JavaScript data path.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { connect, createServer, Socket, type Server } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { TlsServerOptions } from '../../core/tls.ts';
import { RateLimitedWarnings, type Logger } from '../../core/log.ts';
import { asError } from '../../core/fault.ts';
import { listen, stopListening, type ListenAddress } from '../../core/net.ts';

/** The longest handshake line, bytes. */
export const MAX_LINE = 4096;
/**
 * TCP keepalive on forward streams: a machine that vanishes without a FIN or reset (power, network) is
 * noticed by the kernel's probes after this idle time plus its probe count × interval (Linux defaults
 * 9 × 75 s), and both halves of its tunnels close then; streams that carry data notice at once.
 */
const KEEPALIVE_MS = 15_000;
/** Handshakes under way at once on one listener; more are dropped at accept. */
const MAX_PENDING = 1024;
/**
 * Handshakes under way at once from one address: a peer that opens connections and says nothing cannot
 * take more than a quarter of the slots. A node of ours has one handshake per client of its own that is
 * authenticating and whose partner waits here, and they all come from its address: while this listener is
 * busy they pile up (a two-node pairing run at full rate reached 64 and was refused: the claimer's client
 * got ProxyError and its partner here waited, unfindable, until its alone timeout).
 */
const MAX_PENDING_PER_ADDRESS = 256;
/**
 * How long a claim answered `gone` is asked again (5 ms, doubling; at most half the handshake deadline).
 * A party's entry reaches the shared table before the table's answer reaches its own node, and a claim can
 * overtake that answer: told `gone` then, the claimer offered again and waited, and so did the party here,
 * each where the other could not find it, until their alone timeouts (seen at full pairing rate).
 */
const RECLAIM_MS = 640;

/** Who a claimed or claiming client is: what the other node needs for its notification and its monitor. */
export interface PartyInfo {
  readonly name: string;
  readonly uuid: string;
  readonly connectionId: string;
  /** The client's own address (for logs and the monitor), not the node's. */
  readonly remote: string;
  readonly user: string;
  /** The node the client sits on (its `[cluster] nodeId`, or `worker-N`). */
  readonly node: string;
}

/** What a connector asks for: `kind` says which table `ref` points into (`rv`: a waiting relay client). */
export interface ForwardClaim {
  readonly kind: string;
  readonly ref: string;
  readonly party: PartyInfo;
}

/** The listener's decision on a claim: accept (the socket is handed to `adopt` right after `OK`) or refuse. */
export type ClaimVerdict =
  | { readonly ok: true; readonly party: PartyInfo; readonly adopt: (socket: Socket) => void }
  | { readonly ok: false; readonly code: string };

export type ForwardResult =
  | { readonly ok: true; readonly socket: Socket; readonly party: PartyInfo }
  | { readonly ok: false; readonly code: string };

/** What a relay needs to take part in forwarding (built by the composition root from `[cluster]`). */
export interface ForwardSetup {
  /** Where this node's forward listener binds (port 0: any free port). */
  readonly listen: ListenAddress;
  /** The address other nodes reach it at, from the bound address (the port filled in). */
  readonly advertise: (bound: ListenAddress) => string;
  /** The handshake's HMAC key (`forwardKey(secret)`, or a per-machine random key for workers). */
  readonly key: Buffer;
  readonly handshakeMs: number;
  /** This node's name, given to the other node for its monitor and logs. */
  readonly node: string;
  /** Mutual TLS on the forward streams (`[cluster] forwardTls`): this node's certificate and the cluster CA. */
  readonly tls?: TlsServerOptions | undefined;
}

/** The transport a forward stream is, for the tunnel's link (the kernel relay takes tcp and unix only). */
export function forwardLinkKind(setup: ForwardSetup | undefined, address: string): 'tcp' | 'tls' | 'unix' {
  if (setup?.tls !== undefined) return 'tls';
  return address.startsWith('/') ? 'unix' : 'tcp';
}

/**
 * The forward setup of a node joined through Redis, from `[cluster]`: the listen address (worker `slot`
 * k of a machine: port + k, or the path with `.k`), the advertised address, the key from the secret.
 */
export function clusterForwardSetup(
  cluster: { readonly forwardListen: string; readonly forwardAdvertise?: string | undefined; readonly forwardHandshakeMs: number },
  secret: string,
  node: string,
  slot?: number,
  tls?: TlsServerOptions,
): ForwardSetup {
  const base = parseForwardAddress(cluster.forwardListen);
  const listenAt: ListenAddress =
    slot === undefined ? base : 'path' in base ? { path: `${base.path}.${slot}` } : { host: base.host, port: base.port === 0 ? 0 : base.port + slot };
  return {
    listen: listenAt,
    advertise: (bound) => {
      if ('path' in bound) return bound.path;
      const host = cluster.forwardAdvertise ?? bound.host;
      return `${host.includes(':') ? `[${host}]` : host}:${bound.port}`;
    },
    key: forwardKey(secret),
    handshakeMs: cluster.forwardHandshakeMs,
    node,
    ...(tls === undefined ? {} : { tls }),
  };
}

/** The HMAC key of the forwarding handshake, derived from the cluster secret (never the secret itself). */
export function forwardKey(clusterSecret: string): Buffer {
  return createHmac('sha256', clusterSecret).update('gatehouse/forward/v1').digest();
}

/** `host:port`, `[v6]:port` or an absolute unix socket path → a connect/listen address. */
export function parseForwardAddress(text: string): ListenAddress {
  if (text.startsWith('/')) return { path: text };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) throw new Error(`not a forward address (host:port, [v6]:port or /path): ${text}`);
  return { host: m[1] ?? m[2] ?? '', port };
}

const REF = /^[A-Za-z0-9._:-]{1,200}$/;
const KIND = /^[a-z]{1,16}$/;
const CODE = /^[A-Za-z0-9_]{1,64}$/;
const HEX32 = /^[0-9a-f]{32}$/;

function mac(key: Buffer, ...parts: string[]): string {
  const h = createHmac('sha256', key);
  for (const p of parts) h.update(`${p.length}:${p}`);
  return h.digest('hex');
}

function macOk(key: Buffer, got: string, ...parts: string[]): boolean {
  const want = Buffer.from(mac(key, ...parts), 'hex');
  const have = Buffer.from(/^[0-9a-f]{64}$/.test(got) ? got : '', 'hex');
  return have.length === want.length && timingSafeEqual(have, want);
}

function encodeInfo(p: PartyInfo): string {
  return Buffer.from(JSON.stringify({ name: p.name, uuid: p.uuid, connectionId: p.connectionId, remote: p.remote, user: p.user, node: p.node })).toString('base64url');
}

/** Reads a PartyInfo from an authenticated peer: still only own string fields, each bounded. */
function decodeInfo(text: string): PartyInfo | undefined {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const field = (k: string): string | undefined => {
    const x = Object.hasOwn(o, k) ? o[k] : undefined;
    return typeof x === 'string' && x.length <= 1024 ? x : undefined;
  };
  const name = field('name');
  const uuid = field('uuid');
  const connectionId = field('connectionId');
  const remote = field('remote');
  const user = field('user');
  const node = field('node');
  if (name === undefined || uuid === undefined || connectionId === undefined || remote === undefined || user === undefined || node === undefined) return undefined;
  return { name, uuid, connectionId, remote, user, node };
}

/**
 * Reads one `\n`-terminated line from `socket` within `ms`; what followed it in the same read is put back
 * (`unshift`) for whoever reads next, and the socket is left paused. Rejects on a longer line, the
 * deadline, or the socket ending first.
 */
function readLine(socket: Socket, ms: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err: Error | undefined, line?: string) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
      if (err !== undefined) reject(err);
      else resolve(line ?? '');
    };
    const onData = (chunk: Buffer) => {
      const nl = chunk.indexOf(0x0a);
      if (nl < 0) {
        size += chunk.length;
        if (size > MAX_LINE) return done(new Error('handshake line too long'));
        chunks.push(chunk);
        return;
      }
      if (size + nl > MAX_LINE) return done(new Error('handshake line too long'));
      chunks.push(chunk.subarray(0, nl));
      socket.pause();
      if (nl + 1 < chunk.length) socket.unshift(chunk.subarray(nl + 1));
      done(undefined, Buffer.concat(chunks).toString('latin1'));
    };
    const onEnd = () => done(new Error('the other node closed the forward stream during the handshake'));
    const onError = (err: Error) => done(err);
    const timer = setTimeout(() => done(new Error(`forward handshake took longer than ${ms} ms`)), ms);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onError);
    socket.resume();
  });
}

export interface ForwardListenerOptions {
  readonly key: Buffer;
  readonly handshakeMs: number;
  readonly log: Logger;
  /** Mutual TLS (see the file header). */
  readonly tls?: TlsServerOptions | undefined;
  /** Decides a claim (synchronously: the waiting party is in this process's own table). */
  readonly onClaim: (claim: ForwardClaim) => ClaimVerdict;
}

/** Where this node accepts forwarded tunnels. */
export class ForwardListener {
  readonly #server: Server;
  readonly #opts: ForwardListenerOptions;
  readonly #pending = new Set<Socket>();
  readonly #pendingPerAddress = new Map<string, number>();
  /** TLS mode: a raw connection's slot, until its TLS socket takes it over (or it closes). */
  readonly #tlsSlots = new Map<Socket, () => void>();
  /** Refusals are peer-caused: one line per reason every 10 s (a flood must not flood the log). */
  readonly #refusals: RateLimitedWarnings;
  #address: ListenAddress | undefined;

  constructor(opts: ForwardListenerOptions) {
    this.#opts = opts;
    this.#refusals = new RateLimitedWarnings(opts.log);
    if (opts.tls === undefined) {
      this.#server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (s) => {
        const release = this.#admit(s);
        if (release !== undefined) this.#accept(s, release);
      });
    } else {
      const tlsServer = createTlsServer({ ...opts.tls, requestCert: true, rejectUnauthorized: true, allowHalfOpen: true, handshakeTimeout: opts.handshakeMs }, (s: TLSSocket) => {
        // The slot was taken by the raw connection (below): the TLS handshake and the claim share it.
        const raw = this.#rawOf(s);
        const release = raw === undefined ? undefined : this.#tlsSlots.get(raw);
        if (raw !== undefined) this.#tlsSlots.delete(raw);
        this.#accept(s, release ?? (() => undefined));
      });
      // The limits count from the TCP accept: a stranger that never starts (or never finishes) TLS holds a
      // slot like one that never sends its claim, else it could hold any number of connections for the
      // whole TLS handshake timeout.
      tlsServer.on('connection', (raw: Socket) => {
        const release = this.#admit(raw);
        if (release === undefined) return;
        this.#tlsSlots.set(raw, release);
        raw.once('close', () => this.#tlsSlots.delete(raw));
      });
      // A listener here means Node no longer drops a failed handshake itself.
      tlsServer.on('tlsClientError', (err: Error, socket: TLSSocket) => {
        socket.destroy();
        this.#refusals.warn('tls', { err: err.message, code: 'RELAY_FORWARD_FAILED', remote: socket.remoteAddress }, 'forward TLS handshake refused');
      });
      this.#server = tlsServer;
    }
  }

  /** The listening server (for the relay's connection tracker). */
  get server(): Server {
    return this.#server;
  }

  /** Binds; returns the bound address (the port filled in when 0 was asked). */
  async listen(addr: ListenAddress): Promise<ListenAddress> {
    const port = await listen(this.#server, addr, 'cluster forward listener');
    this.#address = 'path' in addr ? addr : { host: addr.host, port };
    return this.#address;
  }

  /** Stops accepting and drops handshakes under way (forwarded tunnels are the relay's to close). */
  async close(): Promise<void> {
    for (const s of this.#pending) s.destroy();
    this.#pending.clear();
    if (this.#address !== undefined) await Promise.race([stopListening(this.#server), new Promise((r) => setTimeout(r, 50))]);
  }

  /**
   * The raw connection under a TLS socket: Node's `_parent` (set on every server-side TLSSocket), else the
   * connection in its TLS handshake with the same peer address and port.
   */
  #rawOf(s: TLSSocket): Socket | undefined {
    const parent = (s as unknown as { _parent?: unknown })._parent;
    if (parent instanceof Socket && this.#tlsSlots.has(parent)) return parent;
    if (s.remotePort === undefined) return undefined;
    for (const raw of this.#tlsSlots.keys()) if (raw.remotePort === s.remotePort && raw.remoteAddress === s.remoteAddress) return raw;
    return undefined;
  }

  /**
   * Takes a handshake slot for a connection just accepted (its raw socket), or refuses it at once
   * (`RELAY_FORWARD_BUSY`). The slot is given back by the returned function, or when the socket closes.
   */
  #admit(raw: Socket): (() => void) | undefined {
    const from = raw.remoteAddress ?? 'unix';
    const fromCount = this.#pendingPerAddress.get(from) ?? 0;
    if (this.#pending.size >= MAX_PENDING || fromCount >= MAX_PENDING_PER_ADDRESS) {
      this.#refusals.warn('busy', { code: 'RELAY_FORWARD_BUSY', remote: from, pending: this.#pending.size }, 'forward handshake refused: too many under way');
      raw.on('error', () => undefined);
      raw.destroy();
      return undefined;
    }
    this.#pending.add(raw);
    this.#pendingPerAddress.set(from, fromCount + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      raw.off('close', release);
      this.#pending.delete(raw);
      const left = (this.#pendingPerAddress.get(from) ?? 1) - 1;
      if (left <= 0) this.#pendingPerAddress.delete(from);
      else this.#pendingPerAddress.set(from, left);
    };
    raw.once('close', release);
    return release;
  }

  #accept(socket: Socket, release: () => void): void {
    socket.on('error', () => undefined);
    this.#handshake(socket).then(release, (err: unknown) => {
      release();
      // Keyed by our own reason texts (and system error texts), never by anything the peer sent.
      const reason = asError(err).message;
      this.#refusals.warn(`handshake:${reason}`, { err: reason, code: 'RELAY_FORWARD_FAILED', remote: socket.remoteAddress }, 'forward handshake refused');
      socket.destroy();
    });
  }

  async #handshake(socket: Socket): Promise<void> {
    const { key, handshakeMs } = this.#opts;
    const cw = randomBytes(16).toString('hex');
    socket.write(`GATEHOUSE-FWD 1 ${cw}\n`);
    const line = await readLine(socket, handshakeMs);
    const f = line.split(' ');
    if (f.length !== 6 || f[0] !== 'CLAIM') throw new Error('not a claim');
    const [, cp = '', kind = '', ref = '', info = '', m = ''] = f;
    if (!HEX32.test(cp) || !KIND.test(kind) || !REF.test(ref)) throw new Error('malformed claim');
    if (!macOk(key, m, 'claim', cw, cp, kind, ref, info)) throw new Error('claim not signed with the cluster key');
    const party = decodeInfo(info);
    if (party === undefined) throw new Error('malformed claim');
    // The connector sends nothing before our answer: anything more is not a node of ours.
    if (socket.readableLength > 0) throw new Error('data before the answer');
    let verdict = this.#opts.onClaim({ kind, ref, party });
    const reclaimMs = Math.min(RECLAIM_MS, handshakeMs / 2);
    for (let waitMs = 5, waited = 0; !verdict.ok && verdict.code === 'gone' && waited + waitMs <= reclaimMs; waited += waitMs, waitMs *= 2) {
      await new Promise((r) => setTimeout(r, waitMs).unref());
      if (socket.destroyed) return;
      verdict = this.#opts.onClaim({ kind, ref, party });
    }
    if (!verdict.ok) {
      const code = CODE.test(verdict.code) ? verdict.code : 'refused';
      socket.end(`NO ${code} ${mac(key, 'no', cp, cw, code)}\n`);
      setTimeout(() => socket.destroy(), handshakeMs).unref();
      return;
    }
    const out = encodeInfo(verdict.party);
    socket.write(`OK ${out} ${mac(key, 'ok', cp, cw, out)}\n`);
    socket.removeAllListeners('error');
    socket.setKeepAlive(true, KEEPALIVE_MS);
    verdict.adopt(socket);
  }
}

/**
 * Claims `claim` on the node listening at `address`. Resolves with the stream (paused; after `OK` it
 * carries only the tunnel's bytes) and the claimed party, or with the listener's refusal code. Rejects on
 * a network error, the deadline, or an answer not signed with the cluster key (the socket is destroyed).
 */
export async function forwardConnect(
  address: string,
  key: Buffer,
  claim: ForwardClaim,
  handshakeMs: number,
  tls?: TlsServerOptions,
  /** Told the socket as soon as it exists (the relay's connection tracker: shutdown ends claims in flight). */
  track?: (socket: Socket) => void,
): Promise<ForwardResult> {
  const addr = parseForwardAddress(address);
  const where = 'path' in addr ? { path: addr.path } : { host: addr.host, port: addr.port };
  const socket: Socket =
    tls === undefined
      ? connect({ ...where, allowHalfOpen: true })
      : // allowHalfOpen reaches the TLSSocket (Node's tls.connect passes it on) though its type omits it.
        tlsConnect({ ...where, cert: tls.cert, key: tls.key, ...(tls.ca === undefined ? {} : { ca: tls.ca }), minVersion: tls.minVersion, checkServerIdentity: () => undefined, ...({ allowHalfOpen: true } as object) });
  track?.(socket);
  try {
    const hello = await readLine(socket, handshakeMs);
    const h = hello.split(' ');
    const cw = h[2] ?? '';
    if (h.length !== 3 || h[0] !== 'GATEHOUSE-FWD' || h[1] !== '1' || !HEX32.test(cw)) throw new Error('not a Gatehouse forward listener');
    const cp = randomBytes(16).toString('hex');
    const info = encodeInfo(claim.party);
    socket.write(`CLAIM ${cp} ${claim.kind} ${claim.ref} ${info} ${mac(key, 'claim', cw, cp, claim.kind, claim.ref, info)}\n`);
    const answer = await readLine(socket, handshakeMs);
    const a = answer.split(' ');
    if (a.length === 3 && a[0] === 'NO' && CODE.test(a[1] ?? '') && macOk(key, a[2] ?? '', 'no', cp, cw, a[1] ?? '')) {
      socket.destroy();
      return { ok: false, code: a[1] ?? '' };
    }
    if (a.length !== 3 || a[0] !== 'OK' || !macOk(key, a[2] ?? '', 'ok', cp, cw, a[1] ?? '')) throw new Error('forward answer not signed with the cluster key');
    const party = decodeInfo(a[1] ?? '');
    if (party === undefined) throw new Error('malformed forward answer');
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    return { ok: true, socket, party };
  } catch (err) {
    socket.destroy();
    throw asError(err);
  }
}
