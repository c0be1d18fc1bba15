/**
 * `gatehouse tunnel`: netcat through a relay tunnel (stdin → partner, partner → stdout).
 * stderr says `waiting for partner…` once the token is accepted and `connected to NAME` once paired.
 * Exit codes (exit.ts): 0 the tunnel ended, 1 the relay refused (authentication, no partner in time: the
 * relay's alone timeout or --timeout) or the tunnel closed before stdin (a file or pipe) was sent to its end
 * (a truncated transfer), 64 usage, 69 nothing answers at the URL (or TLS vs plain).
 * Stdin's end half-closes the tunnel (the partner then gets its end) unless --keep-open.
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
    .requiredOption('--token <token>', 'shared token (both sides use the same)')
    .option('--nonce <nonce>', 'nonce (both sides use the same)')
    .option('--name <name>', 'name shown to the partner', 'gatehouse-tunnel')
    .option('--uuid <uuid>', 'uuid shown to the partner (random by default)')
    .option('--insecure', 'accept self-signed TLS certificates')
    .option('--timeout <ms>', 'give up if no tunnel within this time (the relay\'s own alone timeout, 8 s by default, usually ends the wait first and is reported as such)', parseMs, 30000)
    .option('--keep-open', 'keep the tunnel open after stdin ends, until the partner ends it (a receiver run with </dev/null)')
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
