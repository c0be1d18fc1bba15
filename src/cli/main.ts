/**
 * The `gatehouse` command: argv → library call → exit code. Thin on purpose: every behaviour lives in
 * the library; this file only parses arguments, owns signals and maps errors to exit codes.
 */
import { Command } from 'commander';
import { serveCommand } from './serve.ts';
import { monitorCommand } from './monitor.ts';
import { tunnelCommand } from './tunnel.ts';
import { tokensCommand } from './tokens.ts';
import { initCommand } from './init.ts';
import { reportAndExit } from './exit.ts';

const program = new Command()
  .name('gatehouse')
  .description('Self-hosted secure remote-access gateway: relay tunnels, smartcard bridge, sealed API.')
  .version('0.1.0')
  .showHelpAfterError();

program.addCommand(initCommand());
program.addCommand(serveCommand());
program.addCommand(monitorCommand());
program.addCommand(tunnelCommand());
program.addCommand(tokensCommand());

program.parseAsync(process.argv).catch(reportAndExit);
