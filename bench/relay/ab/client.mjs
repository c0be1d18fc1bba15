// A/B rig client: sender and receiver in this one process (the one-process topology). `relay`: both ends
// connect to RPORT (relay.mjs pairs them); `socat`: A connects to 21901 (socat -b 262144), B is accepted
// on 21902 behind it. Sends MiB (argv[3]) in 256 KiB writes, then 2,000 64-byte round trips; prints
// throughput, RTT p50/p99 and this process's CPU seconds.
import net from 'node:net';

const mode = process.argv[2];
const mib = Number(process.argv[3] ?? 1024);
const rport = Number(process.env.RPORT ?? 21900);
const connect = (port) =>
  new Promise((res, rej) => {
    const s = net.connect(port, '127.0.0.1', () => res(s));
    s.setNoDelay(true);
    s.once('error', rej);
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function pair() {
  if (mode === 'relay') {
    const a = await connect(rport);
    await sleep(20);
    return [a, await connect(rport)];
  }
  const accepted = new Promise((res) => {
    const srv = net.createServer((s) => {
      s.setNoDelay(true);
      srv.close();
      res(s);
    });
    srv.listen(21902, '127.0.0.1');
  });
  await sleep(20);
  return [await connect(21901), await accepted];
}

const [a, b] = await pair();
const chunk = Buffer.alloc(256 * 1024, 7);
const total = mib * 2 ** 20;
let got = 0;
const t0 = process.hrtime.bigint();
const done = new Promise((res) => b.on('data', (d) => { got += d.length; if (got >= total) res(); }));
let sent = 0;
const pump = () => {
  while (sent < total) {
    sent += chunk.length;
    if (!a.write(chunk)) return void a.once('drain', pump);
  }
};
pump();
await done;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
b.removeAllListeners('data');
const ping = Buffer.alloc(64, 1);
const lat = [];
await new Promise((res) => {
  let n = 0;
  let acc = 0;
  let t = process.hrtime.bigint();
  b.on('data', (d) => b.write(d));
  a.on('data', (d) => {
    acc += d.length;
    if (acc < 64) return;
    acc -= 64;
    lat.push(Number(process.hrtime.bigint() - t) / 1000);
    if (++n >= 2000) return res();
    t = process.hrtime.bigint();
    a.write(ping);
  });
  a.write(ping);
});
lat.sort((x, y) => x - y);
const cpu = process.cpuUsage();
console.log(`${mode} ${((total * 8) / seconds / 1e9).toFixed(2)} Gbit/s p50 ${lat[lat.length >> 1].toFixed(1)} us p99 ${lat[Math.floor(lat.length * 0.99)].toFixed(1)} us client cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s`);
a.destroy();
b.destroy();
