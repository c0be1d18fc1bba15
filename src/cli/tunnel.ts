/** `gatehouse tunnel`: netcat through a relay tunnel (stdin → partner, partner → stdout). */
import { Command } from 'commander';
import { openTunnel } from '../relay/client.ts';

export function tunnelCommand(): Command {
  return new Command('tunnel')
    .description('Pair with another client through a relay and pipe stdin/stdout through the tunnel.')
    .requiredOption('--url <url>', 'relay URL: tcp://IP:PORT, tls://, ssl://, ws://, wss://HOST:PORT or unix:PATH')
    .requiredOption('--token <token>', 'shared token (both sides use the same)')
    .option('--nonce <nonce>', 'nonce (both sides use the same)')
    .option('--name <name>', 'name shown to the partner', 'gatehouse-tunnel')
    .option('--uuid <uuid>', 'uuid shown to the partner (random by default)')
    .option('--insecure', 'accept self-signed TLS certificates')
    .option('--timeout <ms>', 'give up if no partner arrives in time', '30000')
    .option('-v, --verbose', 'trace the JSON-RPC handshake on stderr')
    .action(async (opts: { url: string; token: string; nonce?: string; name: string; uuid?: string; insecure?: boolean; timeout: string; verbose?: boolean }) => {
      const tunnel = await openTunnel({
        url: opts.url,
        token: opts.token,
        name: opts.name,
        timeoutMs: Number(opts.timeout),
        insecure: opts.insecure === true,
        ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }),
        ...(opts.uuid === undefined ? {} : { uuid: opts.uuid }),
        ...(opts.verbose === true ? { trace: (dir: string, line: string) => process.stderr.write(`${dir === 'send' ? '>>' : '<<'} ${line}\n`) } : {}),
      }).catch((err: unknown) => {
        process.stderr.write(`gatehouse tunnel: ${(err as Error).message}\n`);
        process.exit(1);
      });
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
