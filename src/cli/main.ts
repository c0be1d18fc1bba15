/**
 * The `gatehouse` command: argv → library call → exit code. Thin on purpose: every behaviour lives in
 * the library; this file only parses arguments, owns signals and maps errors to exit codes.
 * Only the subcommand that runs is loaded (the others pull in libraries a running gateway would carry
 * for nothing); `--help` loads them all to list them.
 */
import { Command } from 'commander';
import { reportAndExit } from './exit.ts';

const subcommands: Record<string, () => Promise<Command>> = {
  init: async () => (await import('./init.ts')).initCommand(),
  serve: async () => (await import('./serve.ts')).serveCommand(),
  monitor: async () => (await import('./monitor.ts')).monitorCommand(),
  tunnel: async () => (await import('./tunnel.ts')).tunnelCommand(),
  tokens: async () => (await import('./tokens.ts')).tokensCommand(),
  card: async () => (await import('./card.ts')).cardCommand(),
  clients: async () => (await import('./clients.ts')).clientsCommand(),
  call: async () => (await import('./call.ts')).callCommand(),
};

async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('gatehouse')
    .description('Self-hosted secure remote-access gateway: relay tunnels, smartcard bridge, sealed API.')
    .version('0.1.0')
    .showHelpAfterError();
  const wanted = argv[2];
  const names = wanted !== undefined && Object.hasOwn(subcommands, wanted) ? [wanted] : Object.keys(subcommands);
  for (const name of names) program.addCommand(await subcommands[name]!());
  await program.parseAsync(argv);
}

main(process.argv).catch(reportAndExit);
