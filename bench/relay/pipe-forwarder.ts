/**
 * A reference peer for the TCP table: the least a Node relay can do per byte. Listens on argv[2] and, for
 * each connection, connects to argv[3] on 127.0.0.1 and `pipe()`s both ways (default stream buffers,
 * no protocol, no counters). The gap between it and socat is what pure JavaScript costs; the gap
 * between it and the Gatehouse tunnel is what the relay's own data path adds.
 * `pipe-forwarder.ts LISTEN:TARGET [LISTEN:TARGET …]` serves several such pairs in one process (the
 * many-tunnel section: busy and ping listeners in the same event loop).
 */
import { createServer, connect } from 'node:net';

const args = process.argv.slice(2);
const pairs: [number, number][] = args.every((a) => a.includes(':'))
  ? args.map((a) => a.split(':').map(Number) as [number, number])
  : [[Number(args[0]), Number(args[1])]];

for (const [listenPort, targetPort] of pairs) {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (a) => {
    const b = connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true, noDelay: true });
    a.on('error', () => b.destroy());
    b.on('error', () => a.destroy());
    a.pipe(b);
    b.pipe(a);
  });
  server.listen({ host: '127.0.0.1', port: listenPort, backlog: 1024 });
}
process.on('SIGTERM', () => process.exit(0));
