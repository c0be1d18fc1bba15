/**
 * Plays simulated cards into vpcd from a worker thread. The card must not share the event loop of the
 * process that calls PC/SC: some PC/SC calls are synchronous (SCardReleaseContext, SCardDisconnect) and
 * make pcscd talk to the card through vpcd before they return, which would deadlock an in-process card.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { SimCardConfig } from '../../src/card-bridge/config.ts';
import type { VpcdCardBehaviour } from '../../src/card-bridge/backends/vpcd-card.ts';

interface Init {
  readonly cards: readonly SimCardConfig[];
  readonly pkiCacheDir: string | undefined;
  readonly port: number;
  readonly behaviours: readonly VpcdCardBehaviour[];
}

type Command = { op: 'remove' | 'insert'; slot: number; seq: number };

export interface VpcdCards {
  remove(slot: number): Promise<void>;
  insert(slot: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a worker that connects card i to vpcd slot i (port + i), played with `behaviours[i]` (slow or
 * silent; default: answers at once). Resolves once every card is connected.
 */
export function startVpcdCards(
  cards: readonly SimCardConfig[],
  port: number,
  pkiCacheDir: string | undefined,
  behaviours: readonly VpcdCardBehaviour[] = [],
): Promise<VpcdCards> {
  // A TypeScript worker entry needs tsx registered inside the worker first (Node 20).
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); });`;
  const worker = new Worker(boot, {
    eval: true,
    workerData: { cards, pkiCacheDir, port, behaviours } satisfies Init,
  });
  let seq = 0;
  const pending = new Map<number, () => void>();
  worker.on('message', (m: { seq: number }) => pending.get(m.seq)?.());
  const call = (op: Command['op'], slot: number) =>
    new Promise<void>((resolve) => {
      const s = ++seq;
      pending.set(s, () => {
        pending.delete(s);
        resolve();
      });
      worker.postMessage({ op, slot, seq: s } satisfies Command);
    });
  return new Promise((resolve, reject) => {
    worker.once('error', reject);
    pending.set(0, () => {
      pending.delete(0);
      resolve({
        remove: (slot) => call('remove', slot),
        insert: (slot) => call('insert', slot),
        close: async () => {
          for (let i = 0; i < cards.length; i++) await call('remove', i);
          await worker.terminate();
        },
      });
    });
  });
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  const init = workerData as Init;
  const { buildVirtualCard } = await import('../../src/card-bridge/backends/simulator.ts');
  const { connectVpcdCard } = await import('../../src/card-bridge/backends/vpcd-card.ts');
  const cards = init.cards.map((c) => buildVirtualCard(c, init.pkiCacheDir));
  const conns = await Promise.all(
    cards.map((c, i) => connectVpcdCard(c, init.port + i, '127.0.0.1', init.behaviours[i])),
  );
  port.on('message', (m: Command) => {
    void (async () => {
      const card = cards[m.slot]!;
      if (m.op === 'remove') await conns[m.slot]!.remove();
      else
        conns[m.slot] = await connectVpcdCard(card, init.port + m.slot, '127.0.0.1', init.behaviours[m.slot]);
      port.postMessage({ seq: m.seq });
    })();
  });
  port.postMessage({ seq: 0 });
}
