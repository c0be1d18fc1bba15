/**
 * The `gatehouse` command: argv → library call → exit code. Thin on purpose: every behaviour lives in
 * the library; this file only parses arguments, owns signals and maps errors to exit codes.
 * The last-resort handler (fatal.ts) is installed before anything else runs.
 * Only the subcommand that runs is loaded (the others pull in libraries a running gateway would carry
 * for nothing); `--help` loads them all to list them.
 */
import { installLastResort } from './fatal.ts';
import { Command, CommanderError } from 'commander';
import { EXIT, EXIT_HELP, reportAndExit } from './exit.ts';

installLastResort();
// A reader that goes away (`gatehouse card list | head -1`) is not a crash: stop quietly, as `cat` does.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
    throw err;
  });
}

const subcommands = new Map<string, () => Promise<Command>>([
  ['init', async () => (await import('./init.ts')).initCommand()],
  ['serve', async () => (await import('./serve.ts')).serveCommand()],
  ['check-config', async () => (await import('./check-config.ts')).checkConfigCommand()],
  ['monitor', async () => (await import('./monitor.ts')).monitorCommand()],
  ['tunnel', async () => (await import('./tunnel.ts')).tunnelCommand()],
  ['tokens', async () => (await import('./tokens.ts')).tokensCommand()],
  ['card', async () => (await import('./card.ts')).cardCommand()],
  ['clients', async () => (await import('./clients.ts')).clientsCommand()],
  ['call', async () => (await import('./call.ts')).callCommand()],
]);

/** Commander's own errors (unknown option, missing or invalid argument) are usage errors: exit 64. */
function usageExits(cmd: Command): void {
  cmd.exitOverride((err: CommanderError) => {
    process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
  });
  for (const sub of cmd.commands) usageExits(sub);
}

/**
 * A test-only crash (GATEHOUSE_TEST_CRASH=exception|rejection, honoured only with GATEHOUSE_TEST=1, which
 * the test runner sets): proves the last-resort handler. Clients cannot reach the environment.
 */
function testCrash(): void {
  if (process.env.GATEHOUSE_TEST !== '1') return;
  const kind = process.env.GATEHOUSE_TEST_CRASH;
  if (kind === undefined) return;
  const err = Object.assign(new Error(`test crash (${kind})`), { code: 'GATEHOUSE_TEST_CRASH' });
  if (kind === 'rejection') {
    // eslint-disable-next-line @typescript-eslint/no-floating-promises -- the unhandled rejection is the point
    Promise.reject(err);
  } else {
    setImmediate(() => {
      throw err;
    });
  }
}

async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('gatehouse')
    .description('Self-hosted secure remote-access gateway: relay tunnels, smartcard bridge, sealed API.')
    .version('0.1.0')
    .showHelpAfterError()
    .addHelpText('after', `\n${EXIT_HELP}\n`);
  const wanted = argv[2];
  const names = wanted !== undefined && subcommands.has(wanted) ? [wanted] : [...subcommands.keys()];
  for (const name of names) program.addCommand(await subcommands.get(name)!());
  usageExits(program);
  testCrash();
  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => reportAndExit(err));
