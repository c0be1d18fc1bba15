/** `gatehouse serve [--config FILE]`: runs the gateway until SIGINT/SIGTERM, then drains and exits. */
import { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { createLogger } from '../core/log.ts';
import { defaultConfig, loadGatewayConfig } from '../config.ts';
import { createGateway } from '../gateway.ts';
import { reportAndExit } from './exit.ts';

export function serveCommand(): Command {
  return new Command('serve')
    .description('Run the gateway (embedded loopback defaults when no --config is given).')
    .option('-c, --config <file>', 'TOML config file')
    .action(async (opts: { config?: string }) => {
      const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
      const baseDir = opts.config === undefined ? process.cwd() : dirname(resolve(opts.config));
      const log = createLogger({ level: config.log.level });
      if (opts.config === undefined) log.warn('no --config given: running on embedded defaults (loopback only, development credentials)');
      const gateway = await createGateway(config, { log, baseDir });
      try {
        await gateway.start();
      } catch (err) {
        reportAndExit(err, 'serve');
      }
      process.stdout.write(`Gatehouse is running.\n${gateway.describe().join('\n')}\nPress Ctrl-C to stop.\n`);
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) {
          log.warn({ signal }, 'second signal: exiting now');
          process.exit(1);
        }
        stopping = true;
        log.info({ signal, graceMs: config.shutdown.graceMs }, 'shutting down');
        gateway.close({ graceMs: config.shutdown.graceMs }).then(
          () => {
            log.info('stopped');
            log.flush();
            process.exitCode = 0;
            setTimeout(() => process.exit(0), 100).unref();
          },
          (err: unknown) => reportAndExit(err, 'serve'),
        );
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
}
