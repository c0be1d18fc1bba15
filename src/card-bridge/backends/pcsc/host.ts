/**
 * A PC/SC host: a child process of the gateway that makes every PC/SC call of one job, so no PC/SC call
 * ever runs on the gateway's event loop and a call that never returns blocks only its own process, which
 * the gateway can kill. pcsc-lite serves one call at a time per context, so each host holds its own.
 * - `monitor`: one context; follows readers and cards (the binding's ReaderMonitor plus a slow poll) and
 *   sends the whole reader list whenever it changes; while pcscd does not answer it says why and retries.
 *   It sends a heartbeat every poll interval, so the parent can tell a monitor stuck in a call.
 * - `reader`: one context and one card connection for one reader; runs `transmit`/`reset` one at a time;
 *   `cancel` calls SCardCancel on its context (the parent kills the host when that does not free it).
 * A host exits when its parent goes away. It is started by host-process.ts, never imported by the gateway.
 */
import { loadPcsc, type PcscCard, type PcscContext, type PcscModule, type PcscMonitor } from './binding.ts';
import type { HostMessage, MonitorInit, ReaderEntry, ReaderRequest } from './messages.ts';

const send = (m: HostMessage): void => {
  if (process.connected) process.send?.(m);
};

/** pcsc-lite's answers that mean the context itself is gone (pcscd stopped or restarted). */
const CONTEXT_GONE = /service|context|invalid handle|communication error|internal error/i;

function listEntries(pcsc: PcscModule, ctx: PcscContext): ReaderEntry[] {
  return ctx.listReaders().map((r) => ({
    name: r.name,
    atr:
      (r.state & pcsc.SCARD_STATE_PRESENT) !== 0 && r.atr !== null && r.atr.length > 0
        ? Buffer.from(r.atr).toString('hex').toUpperCase()
        : '',
  }));
}

function runMonitor(pcsc: PcscModule, init: MonitorInit): void {
  let ctx: PcscContext | undefined;
  let mon: PcscMonitor | undefined;
  let poll: NodeJS.Timeout | undefined;
  let last = '';
  let lastReason = '';

  const unavailable = (reason: string) => {
    if (reason !== lastReason) send({ t: 'unavailable', reason });
    lastReason = reason;
    last = '';
  };
  const teardown = () => {
    if (poll !== undefined) clearInterval(poll);
    poll = undefined;
    try {
      mon?.stop();
    } catch {
      // already stopped
    }
    mon = undefined;
    try {
      ctx?.close();
    } catch {
      // already closed
    }
    ctx = undefined;
  };
  const lost = (reason: string) => {
    teardown();
    unavailable(`PC/SC service lost: ${reason}`);
    setTimeout(connect, init.reconnectMs);
  };
  const publish = () => {
    if (ctx === undefined) return;
    let list: ReaderEntry[];
    try {
      list = listEntries(pcsc, ctx);
    } catch (err) {
      const msg = (err as Error).message;
      if (CONTEXT_GONE.test(msg)) lost(msg);
      return;
    }
    const json = JSON.stringify(list);
    if (json === last) return;
    last = json;
    lastReason = '';
    send({ t: 'readers', readers: list });
  };
  const connect = () => {
    try {
      ctx = new pcsc.Context();
    } catch (err) {
      unavailable(`cannot establish a PC/SC context (is pcscd running?): ${(err as Error).message}`);
      setTimeout(connect, init.reconnectMs);
      return;
    }
    publish();
    try {
      const m = new pcsc.ReaderMonitor();
      m.start((ev) => (ev.type === 'error' ? lost(ev.reader) : publish()));
      mon = m;
    } catch {
      // The poll below still follows changes, only later.
    }
    poll = setInterval(publish, init.pollMs);
  };
  connect();
  // The heartbeat runs on the same event loop as every PC/SC call here: a call that blocks stops it.
  setInterval(() => send({ t: 'alive' }), init.pollMs);
}

function runReader(pcsc: PcscModule, terminal: string): void {
  let ctx: PcscContext | undefined;
  let card: Promise<PcscCard> | undefined;

  const dropCard = () => {
    const c = card;
    card = undefined;
    c?.then(
      (k) => {
        try {
          k.disconnect(pcsc.SCARD_LEAVE_CARD);
        } catch {
          // the card is gone already
        }
      },
      () => undefined,
    );
  };
  const dropContext = () => {
    dropCard();
    try {
      ctx?.close();
    } catch {
      // already closed
    }
    ctx = undefined;
  };
  const getCard = (): Promise<PcscCard> => {
    if (card !== undefined) return card;
    ctx ??= new pcsc.Context();
    const reader = ctx.listReaders().find((r) => r.name === terminal);
    if (reader === undefined) throw new Error(`no PC/SC reader ${terminal}`);
    const connecting = reader.connect(
      pcsc.SCARD_SHARE_SHARED,
      pcsc.SCARD_PROTOCOL_T0 | pcsc.SCARD_PROTOCOL_T1,
    );
    card = connecting;
    connecting.catch(() => {
      if (card === connecting) card = undefined;
    });
    return connecting;
  };
  const run = (id: number, op: () => Promise<Buffer>) => {
    // op may throw before its first await (a synchronous PC/SC call): same path as a rejection.
    Promise.resolve()
      .then(op)
      .then(
        (data) => send({ t: 'result', id, ok: true, data }),
        (err: unknown) => {
          const message = err instanceof Error ? err.message : String(err);
          if (CONTEXT_GONE.test(message)) dropContext();
          else dropCard();
          send({ t: 'result', id, ok: false, message });
        },
      );
  };

  process.on('message', (m: ReaderRequest) => {
    switch (m.t) {
      case 'transmit':
        run(m.id, async () =>
          (await getCard()).transmit(Buffer.from(m.apdu), { maxRecvLength: 65538, autoGetResponse: false }),
        );
        break;
      case 'reset':
        run(m.id, async () => {
          const c = await getCard();
          await c.reconnect(
            pcsc.SCARD_SHARE_SHARED,
            pcsc.SCARD_PROTOCOL_T0 | pcsc.SCARD_PROTOCOL_T1,
            pcsc.SCARD_RESET_CARD,
          );
          return Buffer.from(c.getStatus().atr);
        });
        break;
      case 'cancel':
        try {
          ctx?.cancel();
        } catch {
          // nothing to cancel
        }
        break;
      case 'drop':
        dropCard();
        break;
      case 'close': {
        // Disconnect the card before releasing the context that owns it.
        const c = card;
        card = undefined;
        const finish = () => {
          dropContext();
          send({ t: 'closed' });
          process.disconnect();
        };
        if (c === undefined) finish();
        else
          c.then(
            (k) => {
              try {
                k.disconnect(pcsc.SCARD_LEAVE_CARD);
              } catch {
                // the card is gone already
              }
            },
            () => undefined,
          ).finally(finish);
        break;
      }
      case 'init':
        break;
    }
  });
}

async function main(): Promise<void> {
  // The parent going away (or closing the channel) ends the host, whatever it was doing.
  process.on('disconnect', () => process.exit(0));
  const role = process.argv[2];
  const loaded = await loadPcsc();
  if ('error' in loaded) {
    send({ t: 'unavailable', reason: `the optional 'smartcard' binding is not available (${loaded.error})` });
    process.disconnect();
    return;
  }
  const pcsc = loaded.module;
  process.once('message', (m: MonitorInit | ReaderRequest) => {
    if (m.t !== 'init') return;
    if (role === 'monitor' && 'reconnectMs' in m) runMonitor(pcsc, m);
    else if (role === 'reader' && 'terminal' in m) runReader(pcsc, m.terminal);
  });
  send({ t: 'ready' });
}

if (process.send !== undefined) await main();
