/**
 * `gatehouse tokens hash <token> [--user NAME]`: prints the line to append to the static authenticator's
 * token file. With `-` as the token it reads the token from stdin (one trailing newline is dropped), so
 * the token stays out of shell history and the process list.
 */
import { Command } from 'commander';
import { hashToken } from '../relay/authenticators/static.ts';
import { EXIT } from './exit.ts';

/** Largest token read from stdin, bytes. */
const MAX_STDIN_TOKEN_BYTES = 64 * 1024;

async function readStdinToken(): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_STDIN_TOKEN_BYTES)
      throw new Error(`the token on stdin is longer than ${MAX_STDIN_TOKEN_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

export function tokensCommand(): Command {
  const tokens = new Command('tokens').description(
    'Manage the token file of the static relay authenticator.',
  );
  tokens
    .command('hash')
    .description('Print the token-file line for a token (use - to read the token from stdin).')
    .argument('<token>', 'the token, or - to read it from stdin')
    .option('--user <name>', 'user name shown by the monitor (one word)')
    .action(async (token: string, opts: { user?: string }) => {
      try {
        const value = token === '-' ? await readStdinToken() : token;
        process.stdout.write(`${hashToken(value, opts.user)}\n`);
      } catch (err) {
        process.stderr.write(`gatehouse tokens hash: ${(err as Error).message}\n`);
        process.exitCode = EXIT.usage;
      }
    });
  return tokens;
}
