/**
 * Plays a virtual card into a real PC/SC stack: connects to the vpcd reader driver (which listens on a
 * TCP port) and answers as the card, so pcscd and any PC/SC client (our PC/SC backend included) see a card
 * in a real reader. Connected = inserted; `remove()` closes the socket = card removed. Loopback only.
 *
 * A card can be made slow (some APDUs answered after `delayMs`) or stuck (after some APDU it answers
 * nothing more until it is taken out), so tests and the benchmark can play the cards that stall a reader.
 * Answers always leave in the order the requests came: pcscd polls a slot's presence (vpcd asks for the
 * ATR) while an APDU is running, and Debian's vpcd 3.3 reads both answers from the one socket without a
 * lock, so an ATR sent ahead of a pending APDU's answer would be taken as that answer. For the same reason
 * a stuck card answers no ATR request either (it would be read as the stuck APDU's answer).
 */
import { connect, type Socket } from 'node:net';
import { VpcdDecoder, vpcdFrame, VPCD_GET_ATR, VPCD_RESET, VPCD_POWER_ON } from '../protocol/vpcd.ts';
import type { VirtualCard } from './virtual-card.ts';

export interface VpcdCardConnection {
  /** Takes the card out (closes the connection). */
  remove(): Promise<void>;
  readonly socket: Socket;
}

/** How the played card times its answers. Prefixes are upper-case hex of the command APDU. */
export interface VpcdCardBehaviour {
  /** APDUs answered `delayMs` late (default 0). */
  readonly delayMs?: number;
  /** Which APDUs are late ('' = all; default: all, when `delayMs` is set). */
  readonly delayPrefixes?: readonly string[];
  /** An APDU starting with one of these is never answered, nor anything after it (the card is stuck). */
  readonly stallPrefixes?: readonly string[];
  /**
   * An APDU starting with `prefix` is answered with exactly `response` (hex, any length, even none or one
   * byte), in place of the card's own answer: a card that breaks ISO 7816-4 (no status word, huge answers).
   */
  readonly rawAnswers?: readonly { readonly prefix: string; readonly response: string }[];
  /** An APDU starting with one of these is answered one byte every `dripMs` (default 20), length included. */
  readonly dripPrefixes?: readonly string[];
  readonly dripMs?: number;
}

/** After a late answer, the gap before the answers queued behind it (so vpcd's reader takes them one by one). */
const QUEUED_ANSWER_GAP_MS = 30;

/** Connects `card` to vpcd at 127.0.0.1:`port`. Resolves once connected. */
export function connectVpcdCard(
  card: VirtualCard,
  port: number,
  host = '127.0.0.1',
  behaviour: VpcdCardBehaviour = {},
): Promise<VpcdCardConnection> {
  const delayMs = behaviour.delayMs ?? 0;
  const delayPrefixes = behaviour.delayPrefixes ?? [''];
  const stall = behaviour.stallPrefixes ?? [];
  const raw = behaviour.rawAnswers ?? [];
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const decoder = new VpcdDecoder();
    const queue: { frame: Buffer; delayMs: number; drip?: boolean }[] = [];
    let timer: NodeJS.Timeout | undefined;
    let stuck = false;
    // Writes queued answers in order; a late one waits its delay, the ones behind it a short gap.
    const pump = (): void => {
      while (timer === undefined && queue.length > 0) {
        const next = queue[0]!;
        if (next.drip === true) {
          const step = (i: number): void => {
            if (socket.destroyed) return;
            if (i >= next.frame.length) {
              timer = undefined;
              queue.shift();
              pump();
              return;
            }
            socket.write(next.frame.subarray(i, i + 1));
            timer = setTimeout(() => step(i + 1), behaviour.dripMs ?? 20);
          };
          timer = setTimeout(() => step(0), 0);
          return;
        }
        if (next.delayMs > 0) {
          timer = setTimeout(() => {
            timer = undefined;
            queue.shift();
            if (!socket.destroyed) socket.write(next.frame);
            for (const q of queue) q.delayMs = Math.max(q.delayMs, QUEUED_ANSWER_GAP_MS);
            pump();
          }, next.delayMs);
          return;
        }
        queue.shift();
        socket.write(next.frame);
      }
    };
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const m of decoder.push(chunk)) {
        if (stuck) continue;
        if (m.kind === 'control') {
          if (m.code === VPCD_GET_ATR) queue.push({ frame: vpcdFrame(card.atr), delayMs: 0 });
          else if (m.code === VPCD_RESET || m.code === VPCD_POWER_ON) card.reset();
          continue;
        }
        const hex = m.apdu.toString('hex').toUpperCase();
        if (stall.some((p) => hex.startsWith(p))) {
          stuck = true;
          continue;
        }
        const late = delayMs > 0 && delayPrefixes.some((p) => hex.startsWith(p));
        const rawAnswer = raw.find((r) => hex.startsWith(r.prefix));
        const answer = rawAnswer === undefined ? card.process(m.apdu) : Buffer.from(rawAnswer.response, 'hex');
        const drip = (behaviour.dripPrefixes ?? []).some((p) => hex.startsWith(p));
        queue.push({ frame: vpcdFrame(answer), delayMs: late ? delayMs : 0, drip });
      }
      pump();
    });
    socket.once('close', () => {
      clearTimeout(timer);
      queue.length = 0;
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
