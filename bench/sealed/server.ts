/**
 * The benchmark's server process (forked by main.ts so its CPU time is measured on its own): a sealed API
 * with one registered bench client and a managed WireGuard file, plus the unsealed comparison: a plain
 * HTTP server built here from the same parts (the sealed server's action registry, the action runner,
 * the body reader) that takes JSON `{act, args}` without sealing or authentication. Production code has
 * no such path. Answers `{cmd:'cpu'}` over IPC with process.cpuUsage(). argv: <dir> <port>.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { validateConfig } from '../../src/core/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { listen } from '../../src/core/net.ts';
import { sealedApiConfigSchema } from '../../src/sealed-api/config.ts';
import { createSealedApiServer } from '../../src/sealed-api/server.ts';
import { addClient, sealedPaths } from '../../src/sealed-api/admin.ts';
import { generateClientKey, writeClientKeyFile } from '../../src/sealed-api/keys.ts';
import { createActionRunner } from '../../src/sealed-api/run-action.ts';
import { readBody } from '../../src/sealed-api/body.ts';
import { fail, sendPlain } from '../../src/sealed-api/respond.ts';

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
  limits: { maxReplayEntries: 1000000, maxConcurrentRequests: 1024, maxConnectionsPerIp: 1024 },
});
const client = await generateClientKey('bench');
await writeClientKeyFile(join(dir, 'client.json'), client);
await addClient(sealedPaths(config, dir), {
  name: 'bench',
  jwk: client.publicJwk,
  allow: ['*'],
  files: ['*'],
});
const log = silentLogger();
const server = createSealedApiServer(config, { log, baseDir: dir });
await server.start();
writeFileSync(join(dir, 'server.json'), JSON.stringify(server.serverInfo()));

// The unsealed baseline: same actions, same runner and body limits, no envelope, no authentication.
const runner = createActionRunner({ log, actionMs: config.timeouts.actionMs });
let seq = 0;
const plain = createServer({ keepAliveTimeout: config.timeouts.keepAliveMs }, (req, res) => {
  const requestId = `bench-${++seq}`;
  (async () => {
    const body = await readBody(req, res, requestId, {
      maxBodyBytes: config.limits.maxBodyBytes,
      bodyMs: config.timeouts.bodyMs,
    });
    if (body === undefined) return;
    let msg: { act?: unknown; args?: unknown };
    try {
      msg = JSON.parse(body) as typeof msg;
    } catch {
      sendPlain(res, 'SEALED_BAD_REQUEST', requestId);
      return;
    }
    const action = typeof msg.act === 'string' ? server.actions.get(msg.act) : undefined;
    const { status, ...out } =
      action === undefined
        ? fail('SEALED_UNKNOWN_ACTION', 'no such action')
        : await runner.run(action, msg.args ?? {}, undefined, {
            client: { kid: 'bench', name: 'bench' },
            requestId,
            remoteAddress: req.socket.remoteAddress ?? 'unknown',
          });
    const text = JSON.stringify(out);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  })().catch((err: unknown) => {
    console.error(err);
    res.destroy();
  });
});
const plainPort = await listen(plain, { host: config.host, port: 0 }, 'bench plain baseline');

process.on('message', (m: { cmd: string }) => {
  if (m.cmd === 'cpu') process.send!({ cpu: process.cpuUsage() });
  if (m.cmd === 'stop') {
    plain.close();
    plain.closeAllConnections();
    server.close({ graceMs: 0 }).then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  }
});
process.send!({ ready: { url: server.url, plain: `http://${config.host}:${plainPort}/v1/plain` } });
