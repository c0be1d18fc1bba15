/**
 * `gatehouse tunnel`: netcat through a relay tunnel (stdin → partner, partner → stdout).
 * Exit codes (exit.ts): 0 the tunnel ended, 1 the relay refused (authentication, no partner in time),
 * 64 usage, 69 nothing answers at the URL (or TLS vs plain).
 */
import { Command } from 'commander';
import { openTunnel } from '../relay/client.ts';
import { parseMs } from './args.ts';
import { CliError, EXIT, fail, reportAndExit } from './exit.ts';
import { explainConnectError } from './net-errors.ts';

interface TunnelOpts {
  url: string;
  token: string;
  nonce?: string;
  name: string;
  uuid?: string;
  insecure?: boolean;
  timeout: number;
  verbose?: boolean;
}

const SCHEMES = ['tcp:', 'tls:', 'ssl:', 'ws:', 'wss:'];

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
    .requiredOption('--token <token>', 'shared token (both sides use the same)')
    .option('--nonce <nonce>', 'nonce (both sides use the same)')
    .option('--name <name>', 'name shown to the partner', 'gatehouse-tunnel')
    .option('--uuid <uuid>', 'uuid shown to the partner (random by default)')
    .option('--insecure', 'accept self-signed TLS certificates')
    .option('--timeout <ms>', 'give up if no partner arrives in time', parseMs, 30000)
    .option('-v, --verbose', 'trace the JSON-RPC handshake on stderr')
    .action(async (opts: TunnelOpts) => {
      let usingTls = false;
      const tunnel = await (async () => {
        usingTls = checkUrl(opts.url).usingTls;
        return openTunnel({
          url: opts.url,
          token: opts.token,
          name: opts.name,
          timeoutMs: opts.timeout,
          insecure: opts.insecure === true,
          ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }),
          ...(opts.uuid === undefined ? {} : { uuid: opts.uuid }),
          ...(opts.verbose === true ? { trace: (dir: string, line: string) => process.stderr.write(`${dir === 'send' ? '>>' : '<<'} ${line}\n`) } : {}),
        }).catch((err: unknown) => {
          throw explain(err, opts.url, usingTls);
        });
      })().catch((err: unknown) => reportAndExit(err, 'tunnel'));
      if (opts.verbose === true) process.stderr.write(`tunnel established with ${tunnel.partner.name} ${tunnel.partner.uuid}\n`);
      tunnel.onData((chunk) => {
        if (!process.stdout.write(chunk)) {
          tunnel.pause();
          process.stdout.once('drain', () => tunnel.resume());
        }
      });
      tunnel.onEnd((reason) => {
        if (opts.verbose === true) process.stderr.write(`tunnel ended: ${reason}\n`);
        process.stdout.end(() => process.exit(0));
      });
      tunnel.onDrain(() => process.stdin.resume());
      process.stdin.on('data', (chunk: Buffer) => {
        if (!tunnel.write(chunk)) process.stdin.pause();
      });
      process.stdin.on('end', () => tunnel.end());
    });
}
