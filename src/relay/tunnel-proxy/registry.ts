/**
 * The tunnel proxy's registry: which server connection serves which uuid, which client uuids are taken,
 * and the counters the monitor shows. One per tunnel-proxy service; it holds no sockets itself.
 *
 * Uuids are keys as `parseUuid` gives them (lower case, no braces), in Maps, so no client-chosen string is
 * ever looked up on an object with a prototype.
 */
import type { ServerLeg } from './server-leg.ts';
import type { ClientLeg } from './client-leg.ts';
import type { RemoteClientLeg } from './remote-client-leg.ts';

export class Registry {
  /** Registered server connections by server uuid. */
  readonly servers = new Map<string, ServerLeg>();
  /** Registered client connections by client uuid (a RemoteClientLeg: its server is on another node). */
  readonly clients = new Map<string, ClientLeg | RemoteClientLeg>();
  /** Uuids whose registration waits for the cluster (directory, forward claim): taken all the same. */
  readonly pendingServers = new Set<string>();
  readonly pendingClients = new Set<string>();
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

  /** True when `uuid` is a server here, registered or registering. */
  hasServer(uuid: string): boolean {
    return this.servers.has(uuid) || this.pendingServers.has(uuid);
  }

  /** True when `uuid` is a client here, registered or registering. */
  hasClient(uuid: string): boolean {
    return this.clients.has(uuid) || this.pendingClients.has(uuid);
  }

  addClient(leg: ClientLeg | RemoteClientLeg): void {
    this.clients.set(leg.uuid, leg);
    this.totals.clients++;
  }

  removeClient(leg: ClientLeg | RemoteClientLeg): void {
    if (this.clients.get(leg.uuid) === leg) this.clients.delete(leg.uuid);
  }
}
