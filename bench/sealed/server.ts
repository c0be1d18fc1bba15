/**
 * The benchmark's server process (forked by main.ts so its CPU time is measured on its own): a sealed API
 * with one registered bench client, a managed WireGuard file, and the unsealed comparison path
 * `/v1/plain` on the same HTTP server. Answers `{cmd:'cpu'}` over IPC with process.cpuUsage().
 * argv: <dir> <port>.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { sealedApiConfigSchema } from '../../src/sealed-api/config.ts';
import { createSealedApiServer } from '../../src/sealed-api/server.ts';
import { addClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { generateClientKey, writeClientKeyFile } from '../../src/sealed-api/keys.ts';

const [dir, port] = process.argv.slice(2) as [string, string];
mkdirSync(join(dir, 'etc'), { recursive: true });
const key = () => randomBytes(32).toString('base64');
let wg = `[Interface]\nPrivateKey = ${key()}\nAddress = 10.0.0.1/24\nListenPort = 51820\n`;
for (let i = 2; i < 12; i++)
  wg += `\n# peer ${i}\n[Peer]\nPublicKey = ${key()}\nAllowedIPs = 10.0.0.${i}/32\n`;
writeFileSync(join(dir, 'etc', 'wg0.conf'), wg);

const config = validateConfig(sealedApiConfigSchema, {
  port: Number(port),
  stateDir: 'state',
  files: { wg0: { path: 'etc/wg0.conf', format: 'wireguard' } },
  limits: { maxReplayEntries: 1000000, maxConcurrentRequests: 1024 },
});
const client = await generateClientKey('bench');
await writeClientKeyFile(join(dir, 'client.json'), client);
await addClient(sealedPaths(config, dir), {
  name: 'bench',
  jwk: client.publicJwk,
  allow: ['*'],
  files: ['*'],
});
const server = createSealedApiServer(config, {
  log: silentLogger(),
  baseDir: dir,
  unsealedPathForBenchmarks: '/v1/plain',
});
await server.start();
writeFileSync(join(dir, 'server.json'), JSON.stringify(server.serverInfo()));
process.on('message', (m: { cmd: string }) => {
  if (m.cmd === 'cpu') process.send!({ cpu: process.cpuUsage() });
  if (m.cmd === 'stop') void server.close({ graceMs: 0 }).then(() => process.exit(0));
});
process.send!({ ready: server.url });
