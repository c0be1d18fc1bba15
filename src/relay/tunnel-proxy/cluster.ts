/**
 * The tunnel-proxy mode across nodes: what a connection asks of the cluster (cluster/tp-directory.ts for
 * where servers are, cluster/forward.ts for the stream to them). Present only when the relay has both a
 * directory and a forward setup; without it the mode is what it is on one node.
 *
 * - `registerServer`: a server registering here claims its uuid in the shared directory first (refused
 *   when another node holds it, as nymea refuses a duplicate server).
 * - `connectClient`: a client naming a server that is not on this node: look it up, claim it on its node
 *   over a forward stream (kind `tp`, ref = the uuid's directory key). Every way this can fail ends as one
 *   refusal code the connection answers with; a directory that cannot be asked and a node that cannot be
 *   reached are answered as an unknown server, with a (rate-limited) log line.
 */
import type { Socket } from 'node:net';
import { RateLimitedWarnings, type Logger } from '../../core/log.ts';
import type { ErrorCode } from '../../core/errors.ts';
import { asError } from '../../core/fault.ts';
import { forwardConnect, type ForwardSetup, type PartyInfo } from '../cluster/forward.ts';
import type { TpDirectory, TpRegisterResult } from '../cluster/tp-directory.ts';

/** The forward claim kind of a tunnel-proxy client (server.ts routes it to the service). */
export const TP_CLAIM_KIND = 'tp';

export type TpConnectOutcome =
  | { readonly ok: true; readonly socket: Socket; readonly streamKind: 'tcp' | 'unix'; readonly server: PartyInfo }
  | { readonly ok: false; readonly code: ErrorCode };

export interface TpCluster {
  /** This node's name (the forward setup's). */
  readonly node: string;
  /** How forward streams accepted here arrive. */
  readonly streamKind: 'tcp' | 'unix';
  readonly directory: TpDirectory;
  /** Claims `uuid` for this node. Rejects when the directory cannot be asked (or this node has no forward address yet). */
  registerServer(uuid: string): Promise<TpRegisterResult>;
  /** A server registered here is gone: its entry is freed. */
  serverGone(uuid: string): void;
  /** The uuid of the server registered here under directory key `ref`. */
  serverOfRef(ref: string): string | undefined;
  /** Reaches the server `serverUuid` on its node for the client `party`. Never rejects. */
  connectClient(serverUuid: string, party: PartyInfo): Promise<TpConnectOutcome>;
}

/** Refusal codes a server node may answer a claim with, as this node answers its client. */
const PASSED_ON = new Set<string>(['RELAY_TP_ALREADY_REGISTERED', 'RELAY_TP_UUID_CROSS_REGISTRATION', 'RELAY_TP_LIMIT_CLIENTS_PER_SERVER']);

export function createTpCluster(opts: { readonly directory: TpDirectory; readonly forward: ForwardSetup; readonly address: () => string | undefined; readonly log: Logger }): TpCluster {
  const { directory, forward, log } = opts;
  /** Servers registered here: directory key → uuid. */
  const refs = new Map<string, string>();
  const warnings = new RateLimitedWarnings(log, 10_000);
  const notFound = { ok: false, code: 'RELAY_TP_SERVER_NOT_FOUND' } as const;

  return {
    node: forward.node,
    streamKind: 'path' in forward.listen ? 'unix' : 'tcp',
    directory,
    async registerServer(uuid) {
      const address = opts.address();
      if (address === undefined) throw new Error('this node has no forward listener yet');
      const key = directory.keyOf(uuid);
      const r = await directory.register(key, address);
      if (r.ok) refs.set(key, uuid);
      return r;
    },
    serverGone(uuid) {
      const key = directory.keyOf(uuid);
      if (refs.get(key) !== uuid) return;
      refs.delete(key);
      directory.unregister(key).catch((err: unknown) => log.debug({ err: asError(err).message }, 'tunnel-proxy directory entry not removed (it expires)'));
    },
    serverOfRef(ref) {
      return refs.get(ref);
    },
    async connectClient(serverUuid, party) {
      const key = directory.keyOf(serverUuid);
      let where;
      try {
        where = await directory.lookup(key);
      } catch (err) {
        warnings.warn('RELAY_TP_DIRECTORY_FAILED', { code: 'RELAY_TP_DIRECTORY_FAILED', err: asError(err).message }, 'tunnel-proxy client refused as for an unknown server: the shared directory cannot be asked');
        return notFound;
      }
      // Our own entry without a server here: it is registering or just left.
      if (where === undefined || where.node === forward.node) return notFound;
      try {
        // With `[cluster] forwardTls` the other node's listener speaks only mutual TLS.
        const r = await forwardConnect(where.address, forward.key, { kind: TP_CLAIM_KIND, ref: key, party }, forward.handshakeMs, forward.tls);
        if (!r.ok) return PASSED_ON.has(r.code) ? { ok: false, code: r.code as ErrorCode } : notFound;
        return { ok: true, socket: r.socket, streamKind: where.address.startsWith('/') ? 'unix' : 'tcp', server: r.party };
      } catch (err) {
        warnings.warn('RELAY_FORWARD_FAILED', { code: 'RELAY_FORWARD_FAILED', err: asError(err).message, node: where.node }, "tunnel-proxy client refused as for an unknown server: its server's node cannot be reached");
        return notFound;
      }
    },
  };
}
