/**
 * Allow-lists of client networks for listeners: `allowFrom = ["127.0.0.0/8", "10.1.0.0/16", "::1/128"]`.
 * Checked on the raw connection, before any byte is read or a TLS handshake starts; a connection from
 * elsewhere is destroyed at once (no answer: nothing for a stranger to learn) and logged at warn.
 * IPv4-mapped IPv6 peers (`::ffff:10.1.2.3`) are checked as the IPv4 address they are.
 */
import { BlockList, isIP, type Server, type Socket } from 'node:net';
import { z } from 'zod';

/** One network in CIDR form (or a single address). */
export const cidrSchema = z.string().refine((s) => parseCidr(s) !== undefined, 'not an IPv4/IPv6 network in CIDR form (10.0.0.0/8, ::1/128) or an address');

/** The `allowFrom` key of a listener: absent (or empty) means every address. */
export const allowFromSchema = z.array(cidrSchema).default([]);

function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const v = isIP(address);
  if (v === 0) return undefined;
  const max = v === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined;
  return { address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

/** The networks of an `allowFrom` list; `allows(address)` is true for every address when the list is empty. */
export class AllowList {
  readonly #list = new BlockList();
  readonly #any: boolean;

  constructor(cidrs: readonly string[]) {
    this.#any = cidrs.length === 0;
    for (const c of cidrs) {
      const n = parseCidr(c);
      if (n === undefined) throw new Error(`not a network: ${c}`);
      this.#list.addSubnet(n.address, n.prefix, n.family);
    }
  }

  /** True when the list is empty: every address is allowed. */
  get everyone(): boolean {
    return this.#any;
  }

  allows(address: string | undefined): boolean {
    if (this.#any) return true;
    if (address === undefined) return false;
    const v4 = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    const family = isIP(v4);
    if (family === 0) return false;
    return this.#list.check(v4, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/**
 * Destroys every connection `server` accepts from outside `list` before anything else sees it (the
 * listener runs first because it is added before the server's own connection handling in TLS/HTTP).
 */
export function enforceAllowList(server: Server, list: AllowList, onRefused: (remote: string) => void): void {
  if (list.everyone) return;
  server.prependListener('connection', (socket: Socket) => {
    if (list.allows(socket.remoteAddress)) return;
    socket.destroy();
    onRefused(socket.remoteAddress ?? 'unknown');
  });
}
