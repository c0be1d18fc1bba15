/**
 * The tunnel proxy's registry: which server connection serves which uuid, which client uuids are taken,
 * and the counters the monitor shows. One per tunnel-proxy service; it holds no sockets itself.
 *
 * Uuids are keys as `parseUuid` gives them (lower case, no braces), in Maps, so no client-chosen string is
 * ever looked up on an object with a prototype.
 */
import type { ServerLeg } from './server-leg.ts';
import type { ClientLeg } from './client-leg.ts';

export class Registry {
  /** Registered server connections by server uuid. */
  readonly servers = new Map<string, ServerLeg>();
  /** Registered client connections by client uuid. */
  readonly clients = new Map<string, ClientLeg>();
  readonly #serversPerIp = new Map<string, number>();
  /** Since start: connections accepted, servers and clients registered, bytes relayed (both directions). */
  readonly totals = { connections: 0, servers: 0, clients: 0, traffic: 0 };
  #notificationId = 0;

  /** nymea numbers notifications with one counter per server process, from 0. */
  nextNotificationId(): number {
    return this.#notificationId++;
  }

  serversFrom(ip: string): number {
    return this.#serversPerIp.get(ip) ?? 0;
  }

  addServer(leg: ServerLeg): void {
    this.servers.set(leg.uuid, leg);
    this.#serversPerIp.set(leg.remoteAddress, this.serversFrom(leg.remoteAddress) + 1);
    this.totals.servers++;
  }

  removeServer(leg: ServerLeg): void {
    if (this.servers.get(leg.uuid) !== leg) return;
    this.servers.delete(leg.uuid);
    const left = this.serversFrom(leg.remoteAddress) - 1;
    if (left <= 0) this.#serversPerIp.delete(leg.remoteAddress);
    else this.#serversPerIp.set(leg.remoteAddress, left);
  }

  addClient(leg: ClientLeg): void {
    this.clients.set(leg.uuid, leg);
    this.totals.clients++;
  }

  removeClient(leg: ClientLeg): void {
    if (this.clients.get(leg.uuid) === leg) this.clients.delete(leg.uuid);
  }
}
