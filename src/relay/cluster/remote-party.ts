/**
 * The far side of a forwarded tunnel, as this node's Tunnel sees it: the stream to the node where the
 * partner client sits (forward.ts), standing in for that client. It carries the partner's name, uuid and
 * monitor id (from the forward handshake) for this node's notification and monitor; it sends no
 * notification of its own (the partner's node sends the partner's), so its "notification" is flushed at
 * once and relaying starts when the local client's notification is written.
 */
import type { Link } from '../links.ts';
import type { SessionState } from '../session.ts';
import type { TunnelParty } from '../tunnel.ts';
import type { PartyInfo } from './forward.ts';

let nextRemoteId = 1;

export class RemoteParty implements TunnelParty {
  /** Negative, so it never collides with a local session's id in logs. */
  readonly id = -nextRemoteId++;
  state: SessionState = 'pairing';
  rxBytes = 0;
  txBytes = 0;
  readonly connectionId: string;
  readonly name: string;
  readonly uuid: string;
  readonly userName: string;
  /** The partner client's own address (its node's view), for logs. */
  readonly clientAddress: string;

  /** The node the partner sits on. */
  readonly node: string;

  constructor(
    readonly link: Link,
    info: PartyInfo,
  ) {
    this.node = info.node;
    this.connectionId = info.connectionId;
    this.name = info.name;
    this.uuid = info.uuid;
    this.userName = info.user;
    this.clientAddress = info.remote;
  }

  enterPairing(): void {
    // Nothing runs on this side before the tunnel.
  }

  sendText(_text: string, onFlushed?: () => void): void {
    onFlushed?.();
  }

  linkClosed(): void {
    this.state = 'closed';
  }
}
