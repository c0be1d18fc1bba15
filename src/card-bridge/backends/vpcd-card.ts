/**
 * Plays a virtual card into a real PC/SC stack: connects to the vpcd reader driver (which listens on a
 * TCP port) and answers as the card, so pcscd and any PC/SC client (our PC/SC backend included) see a card
 * in a real reader. Connected = inserted; `remove()` closes the socket = card removed. Loopback only.
 */
import { connect, type Socket } from 'node:net';
import { VpcdDecoder, vpcdFrame, VPCD_GET_ATR, VPCD_RESET, VPCD_POWER_ON } from '../protocol/vpcd.ts';
import type { VirtualCard } from './virtual-card.ts';

export interface VpcdCardConnection {
  /** Takes the card out (closes the connection). */
  remove(): Promise<void>;
  readonly socket: Socket;
}

/** Connects `card` to vpcd at 127.0.0.1:`port`. Resolves once connected. */
export function connectVpcdCard(card: VirtualCard, port: number, host = '127.0.0.1'): Promise<VpcdCardConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const decoder = new VpcdDecoder();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const m of decoder.push(chunk)) {
        if (m.kind === 'control') {
          if (m.code === VPCD_GET_ATR) socket.write(vpcdFrame(card.atr));
          else if (m.code === VPCD_RESET || m.code === VPCD_POWER_ON) card.reset();
        } else {
          socket.write(vpcdFrame(card.process(m.apdu)));
        }
      }
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
