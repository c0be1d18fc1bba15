// A/B rig for the kernel relay addon (docs/benchmarks.md, "One tunnel against socat"): accepts pairs of
// connections on PORT and hands each pair to the addon built at ADDON (a path to a .node file, so two
// builds can run side by side on two ports). Loopback only; no relay protocol, no JavaScript data path.
import net from 'node:net';
import { createRequire } from 'node:module';

const addon = createRequire(import.meta.url)(process.env.ADDON);
addon.init(() => undefined, 0, process.env.COPY !== "0");
// SPIN=N: LIGHT's spin window in microseconds (relay.splice.spinMicros); builds without spin() ignore it.
if (process.env.SPIN !== undefined && typeof addon.spin === 'function') addon.spin(Number(process.env.SPIN));
addon.ref(true);
let pending;
let id = 1;
const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (s) => {
  s.on('error', () => undefined);
  if (pending === undefined) {
    pending = s;
    return;
  }
  const a = pending;
  pending = undefined;
  addon.start(id++, a._handle.fd, s._handle.fd, new BigUint64Array(2));
});
server.listen(Number(process.env.PORT), '127.0.0.1');
