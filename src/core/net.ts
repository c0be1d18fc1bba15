/**
 * Listener plumbing shared by the front ends: binding with clear errors (including stale unix sockets),
 * loopback checks, and connection admission (total and per-address limits).
 */
import { connect, isIP, type Server } from 'node:net';
import { unlink, stat } from 'node:fs/promises';
import { GatewayError } from './errors.ts';

export type ListenAddress = { readonly host: string; readonly port: number } | { readonly path: string };

/** `tcp 127.0.0.1:1213` or `unix /run/x.sock`, for logs and errors. */
export function describeAddress(addr: ListenAddress): string {
  return 'path' in addr ? `unix ${addr.path}` : `${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}`;
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/** Removes a unix socket file left by a dead process; refuses when a live server still answers on it. */
async function clearStaleSocket(path: string): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isSocket()) throw new GatewayError('CORE_LISTEN_FAILED', `cannot listen on unix ${path}: the path exists and is not a socket`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new GatewayError('CORE_LISTEN_FAILED', `cannot listen on unix ${path}: another process is serving it`);
  await unlink(path);
}

/**
 * Binds `server` to `addr`.
 * @returns the bound port (0 for unix sockets).
 * @throws GatewayError CORE_LISTEN_FAILED naming the address and the system error.
 */
export async function listen(server: Server, addr: ListenAddress, label: string): Promise<number> {
  if ('path' in addr) await clearStaleSocket(addr.path);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
      reject(new GatewayError('CORE_LISTEN_FAILED', `${label}: cannot listen on ${describeAddress(addr)}: ${why} (${err.code ?? 'error'})`, { cause: err }));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if ('path' in addr) server.listen({ path: addr.path });
    else server.listen({ host: addr.host, port: addr.port });
  });
  const bound = server.address();
  return typeof bound === 'object' && bound !== null ? bound.port : 0;
}

/**
 * Stops accepting at once and returns a promise that resolves when every connection the server accepted
 * has closed too (Node's `server.close` semantics); callers that drain connections themselves should
 * not await it before they have closed those connections.
 */
export function stopListening(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}

export interface AdmissionLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
}

/**
 * Counts open connections in total and per remote address. `admit` either takes a slot (returning a
 * release function, idempotent) or names the limit that refused it.
 */
export class Admission {
  #total = 0;
  readonly #perIp = new Map<string, number>();
  constructor(private readonly limits: AdmissionLimits) {}

  get total(): number {
    return this.#total;
  }

  admit(ip: string): { ok: true; release: () => void } | { ok: false; code: 'CORE_LIMIT_CONNECTIONS' | 'CORE_LIMIT_CONNECTIONS_PER_IP' } {
    if (this.#total >= this.limits.maxConnections) return { ok: false, code: 'CORE_LIMIT_CONNECTIONS' };
    const n = this.#perIp.get(ip) ?? 0;
    if (n >= this.limits.maxConnectionsPerIp) return { ok: false, code: 'CORE_LIMIT_CONNECTIONS_PER_IP' };
    this.#total++;
    this.#perIp.set(ip, n + 1);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        const left = (this.#perIp.get(ip) ?? 1) - 1;
        if (left <= 0) this.#perIp.delete(ip);
        else this.#perIp.set(ip, left);
      },
    };
  }
}
