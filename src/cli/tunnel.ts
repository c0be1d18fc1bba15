/**
 * `gatehouse tunnel`: netcat through a relay tunnel (stdin → partner, partner → stdout).
 * stderr says `waiting for partner…` once the token is accepted and `connected to NAME` once paired.
 * Exit codes (exit.ts): 0 the tunnel ended, 1 the relay refused (authentication, no partner in time: the
 * relay's alone timeout or --timeout) or the tunnel closed before stdin (a file or pipe) was sent to its end
 * (a truncated transfer), 64 usage, 69 nothing answers at the URL (or TLS vs plain).
 * Stdin's end half-closes the tunnel (the partner then gets its end) unless --keep-open.
 * Tunnel-proxy mode (nymea 1.9+): `--tp-client SERVER_UUID` is an app (the same stdin/stdout pipe, to that
 * server); `--tp-server UUID` is a nymea daemon: clients' bytes go to stdout, stdin to every client, or with
 * `--echo` each client's bytes back to it; clients coming and going are said on stderr. The mode has no
 * half-close: a client's stdin end closes its connection (use --keep-open to read the server's answers).
 */
import { Command } from 'commander';
import { openTunnel, type OpenTunnel } from '../relay/client.ts';
import { registerTpClient, registerTpServer, type TpServerSession } from '../relay/tunnel-proxy/client.ts';
import { parseMs } from './args.ts';
import { CliError, EXIT, fail, reportAndExit } from './exit.ts';
import { explainConnectError } from './net-errors.ts';

interface TunnelOpts {
  url: string;
  token?: string;
  tpServer?: string;
  tpClient?: string;
  echo?: boolean;
  nonce?: string;
  name: string;
  uuid?: string;
  insecure?: boolean;
  timeout: number;
  verbose?: boolean;
  keepOpen?: boolean;
}

const SCHEMES = ['tcp:', 'tls:', 'ssl:', 'ws:', 'wss:'];

/** After the tunnel ends, how long an unended stdin is watched for more input (truncated or idle?), ms. */
const STDIN_SETTLE_MS = 250;

function checkUrl(url: string): { usingTls: boolean } {
  if (url.startsWith('unix:')) {
    if (url.length <= 5) fail('--url unix: needs a path, e.g. unix:/run/gatehouse.sock', EXIT.usage);
    return { usingTls: false };
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    fail(`--url ${url} is not a URL: give one such as tcp://127.0.0.1:1213 or ws://127.0.0.1:1212`, EXIT.usage);
  }
  if (!SCHEMES.includes(u.protocol)) fail(`--url ${url}: use tcp://, tls://, ssl://, ws://, wss:// or unix:PATH`, EXIT.usage);
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:' && u.port === '') fail(`--url ${url}: give the port, e.g. tcp://127.0.0.1:1213`, EXIT.usage);
  return { usingTls: u.protocol === 'tls:' || u.protocol === 'ssl:' || u.protocol === 'wss:' };
}

function explain(err: unknown, url: string, usingTls: boolean): CliError {
  const why = explainConnectError(err, url, {
    usingTls,
    plain: 'use tcp:// or ws://',
    tls: 'use tls:// or wss://',
    trust: 'use --insecure for a self-signed development certificate',
  });
  if (why !== undefined) return why;
  const message = err instanceof Error ? err.message : String(err);
  if (!usingTls && message.startsWith('relay closed the connection before'))
    return new CliError(`${message}: if ${url} is a TLS listener, use tls:// or wss://`, EXIT.unavailable);
  if (message.startsWith('the server is not a nymea relay')) return new CliError(`${url}: ${message}`, EXIT.unavailable);
  if (/^Unexpected server response/.test(message)) return new CliError(`${url} is not a relay WebSocket listener (${message})`, EXIT.unavailable);
  return new CliError(message, EXIT.failure);
}

export function tunnelCommand(): Command {
  return new Command('tunnel')
    .description('Pair with another client through a relay and pipe stdin/stdout through the tunnel.')
    .requiredOption('--url <url>', 'relay URL: tcp://IP:PORT, tls://, ssl://, ws://, wss://HOST:PORT or unix:PATH')
    .option('--token <token>', 'legacy relay: the shared token (both sides use the same)')
    .option('--tp-server <uuid>', 'tunnel-proxy mode: register as the server (a nymea daemon) with this uuid')
    .option('--tp-client <serverUuid>', 'tunnel-proxy mode: connect as a client (an app) to this server uuid')
    .option('--echo', 'with --tp-server: send each client\'s bytes back to it (instead of stdout/stdin)')
    .option('--nonce <nonce>', 'nonce (both sides use the same)')
    .option('--name <name>', 'name shown to the partner', 'gatehouse-tunnel')
    .option('--uuid <uuid>', 'uuid shown to the partner (random by default)')
    .option('--insecure', 'accept self-signed TLS certificates')
    .option('--timeout <ms>', 'give up if no tunnel within this time (the relay\'s own alone timeout, 8 s by default, usually ends the wait first and is reported as such)', parseMs, 30000)
    .option('--keep-open', 'keep the tunnel open after stdin ends, until the partner ends it (a receiver run with </dev/null)')
    .option('-v, --verbose', 'trace the JSON-RPC handshake on stderr')
    .action(async (opts: TunnelOpts) => {
      let usingTls = false;
      const roles = [opts.token, opts.tpServer, opts.tpClient].filter((r) => r !== undefined).length;
      if (roles !== 1) fail('give exactly one of --token (legacy relay), --tp-server UUID or --tp-client SERVER_UUID', EXIT.usage);
      if (opts.echo === true && opts.tpServer === undefined) fail('--echo goes with --tp-server', EXIT.usage);
      const trace = opts.verbose === true ? { trace: (dir: string, line: string) => process.stderr.write(`${dir === 'send' ? '>>' : '<<'} ${line}\n`) } : {};
      if (opts.tpServer !== undefined) {
        const uuid = opts.tpServer;
        const server = await (async () => {
          usingTls = checkUrl(opts.url).usingTls;
          return registerTpServer({ url: opts.url, serverUuid: uuid, name: opts.name, timeoutMs: opts.timeout, insecure: opts.insecure === true, ...trace }).catch((err: unknown) => {
            throw explain(err, opts.url, usingTls);
          });
        })().catch((err: unknown) => reportAndExit(err, 'tunnel'));
        return serveAsTpServer(server, uuid, opts.echo === true);
      }
      const tunnel: OpenTunnel = await (async () => {
        usingTls = checkUrl(opts.url).usingTls;
        if (opts.tpClient !== undefined)
          return registerTpClient({
            url: opts.url,
            serverUuid: opts.tpClient,
            name: opts.name,
            timeoutMs: opts.timeout,
            insecure: opts.insecure === true,
            ...(opts.uuid === undefined ? {} : { uuid: opts.uuid }),
            ...trace,
          }).catch((err: unknown) => {
            throw explain(err, opts.url, usingTls);
          });
        return openTunnel({
          url: opts.url,
          token: opts.token!,
          name: opts.name,
          timeoutMs: opts.timeout,
          insecure: opts.insecure === true,
          ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }),
          ...(opts.uuid === undefined ? {} : { uuid: opts.uuid }),
          ...(opts.verbose === true ? { trace: (dir: string, line: string) => process.stderr.write(`${dir === 'send' ? '>>' : '<<'} ${line}\n`) } : {}),
          onWaiting: () => process.stderr.write('waiting for partner…\n'),
        }).catch((err: unknown) => {
          throw explain(err, opts.url, usingTls);
        });
      })().catch((err: unknown) => reportAndExit(err, 'tunnel'));
      process.stderr.write(`connected to ${tunnel.partner.name === '' ? '(unnamed)' : tunnel.partner.name}${opts.verbose === true ? ` ${tunnel.partner.uuid}` : ''}\n`);
      let stdinEnded = false;
      tunnel.onData((chunk) => {
        if (!process.stdout.write(chunk)) {
          tunnel.pause();
          process.stdout.once('drain', () => tunnel.resume());
        }
      });
      tunnel.onEnd((reason) => {
        if (opts.verbose === true) process.stderr.write(`tunnel ended: ${reason}\n`);
        const broken = reason.startsWith('connection error');
        const finish = (truncated: boolean) => {
          if (truncated || broken) process.stderr.write(`gatehouse tunnel: the tunnel closed before ${truncated ? 'all of stdin was sent' : 'it ended cleanly'} (${reason})\n`);
          process.stdout.end(() => process.exit(truncated || broken ? EXIT.failure : 0));
        };
        // Input from a file or pipe that still had bytes to send did not all reach the partner: a truncated
        // transfer is a failure. An idle input (a terminal, a pipe nobody writes to) is a conversation the
        // partner may end: whether more input was coming is seen within STDIN_SETTLE_MS.
        if (stdinEnded || process.stdin.isTTY) return finish(false);
        if (process.stdin.isPaused() || process.stdin.readableLength > 0) return finish(true);
        process.stdin.removeAllListeners('data');
        process.stdin.removeAllListeners('end');
        const settle = setTimeout(() => finish(false), STDIN_SETTLE_MS);
        process.stdin.once('data', () => {
          clearTimeout(settle);
          finish(true);
        });
        process.stdin.once('end', () => {
          clearTimeout(settle);
          finish(false);
        });
      });
      tunnel.onDrain(() => process.stdin.resume());
      process.stdin.on('data', (chunk: Buffer) => {
        if (!tunnel.write(chunk)) process.stdin.pause();
      });
      process.stdin.on('end', () => {
        stdinEnded = true;
        if (opts.keepOpen !== true) tunnel.end();
      });
    });
}

/** `--tp-server`: clients come and go (stderr); their bytes go to stdout (or back, with --echo). */
function serveAsTpServer(server: TpServerSession, uuid: string, echo: boolean): void {
  const clients = new Map<number, string>();
  process.stderr.write(`registered as tunnel-proxy server ${uuid}; waiting for clients…\n`);
  server.onClientConnected((c) => {
    clients.set(c.address, c.name);
    process.stderr.write(`client ${c.name === '' ? '(unnamed)' : c.name} ${c.uuid} connected (address ${c.address})\n`);
  });
  server.onClientDisconnected((address) => {
    process.stderr.write(`client ${clients.get(address) ?? ''} (address ${address}) disconnected\n`);
    clients.delete(address);
  });
  server.onEnd((reason) => {
    process.stderr.write(`gatehouse tunnel: the relay ended the server connection (${reason})\n`);
    process.stdout.end(() => process.exit(EXIT.failure));
  });
  server.onData((address, bytes) => {
    if (echo) server.send(address, bytes);
    else process.stdout.write(bytes);
  });
  if (echo) return;
  process.stdin.on('data', (chunk: Buffer) => {
    for (const address of clients.keys()) server.send(address, chunk);
  });
  process.stdin.on('end', () => {
    for (const address of clients.keys()) server.disconnectClient(address);
    server.end();
  });
}
