/**
 * Plays a virtual card into a real PC/SC stack: connects to the vpcd reader driver (which listens on a
 * TCP port) and answers as the card, so pcscd and any PC/SC client (our PC/SC backend included) see a card
 * in a real reader. Connected = inserted; `remove()` closes the socket = card removed. Loopback only.
 * A card can be made slow (every APDU answered after `delayMs`) or silent (APDUs never answered, the ATR
 * still is), so tests and the benchmark can play the cards that stall a reader.
 */
import { connect, type Socket } from 'node:net';
import { VpcdDecoder, vpcdFrame, VPCD_GET_ATR, VPCD_RESET, VPCD_POWER_ON } from '../protocol/vpcd.ts';
import type { VirtualCard } from './virtual-card.ts';

export interface VpcdCardConnection {
  /** Takes the card out (closes the connection). */
  remove(): Promise<void>;
  readonly socket: Socket;
}

/** How the played card times its answers. */
export interface VpcdCardBehaviour {
  /** Every APDU is answered this many ms after it arrived (vpcd sends one at a time). Default 0. */
  readonly delayMs?: number;
  /** APDUs whose hex starts with one of these (upper case; '' = every APDU) are never answered. */
  readonly silentPrefixes?: readonly string[];
}

/** Connects `card` to vpcd at 127.0.0.1:`port`. Resolves once connected. */
export function connectVpcdCard(
  card: VirtualCard,
  port: number,
  host = '127.0.0.1',
  behaviour: VpcdCardBehaviour = {},
): Promise<VpcdCardConnection> {
  const delayMs = behaviour.delayMs ?? 0;
  const silent = behaviour.silentPrefixes ?? [];
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const decoder = new VpcdDecoder();
    const timers = new Set<NodeJS.Timeout>();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const m of decoder.push(chunk)) {
        if (m.kind === 'control') {
          if (m.code === VPCD_GET_ATR) socket.write(vpcdFrame(card.atr));
          else if (m.code === VPCD_RESET || m.code === VPCD_POWER_ON) card.reset();
          continue;
        }
        const hex = m.apdu.toString('hex').toUpperCase();
        if (silent.some((p) => hex.startsWith(p))) continue;
        const answer = vpcdFrame(card.process(m.apdu));
        if (delayMs === 0) {
          socket.write(answer);
          continue;
        }
        const t = setTimeout(() => {
          timers.delete(t);
          if (!socket.destroyed) socket.write(answer);
        }, delayMs);
        timers.add(t);
      }
    });
    socket.once('close', () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
    });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => undefined);
      resolve({
        socket,
        remove: () =>
          new Promise<void>((done) => {
            if (socket.destroyed) {
              done();
              return;
            }
            socket.once('close', () => done());
            socket.end();
            setTimeout(() => socket.destroy(), 1000).unref();
          }),
      });
    });
  });
}
