/**
 * `gatehouse serve [--config FILE] [--log-level LEVEL] [--log-format FORMAT]`: runs the gateway until
 * SIGINT/SIGTERM, then drains and exits. SIGHUP re-reads the config file and reloads what can change while
 * running (gateway.reload: certificates, token file, sealed API registry, log level); it never stops the
 * process, and a file that no longer validates is logged and ignored.
 * The log level comes from --log-level, else GATEHOUSE_LOG_LEVEL, else the file's [log] level.
 */
import { Command, Option } from 'commander';
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { createLogger, LOG_LEVELS, type LogFormat, type LogLevel } from '../core/log.ts';
import { defaultConfig, loadGatewayConfig, type GatewayConfig } from '../config.ts';
import { createGateway, type Gateway, type GatewayDeps } from '../gateway.ts';
import { EXIT, fail, reportAndExit } from './exit.ts';

interface ServeOpts {
  config?: string;
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  workers?: string;
}

/** --workers, else `[cluster] workers`; `auto` = one per core. @returns the process count, 1 or more. */
function workerCount(opts: ServeOpts, config: GatewayConfig): number {
  const raw = opts.workers ?? (config.cluster.enabled ? String(config.cluster.workers) : '1');
  if (raw === 'auto') return availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) fail(`--workers ${raw}: expected a whole number from 1 to 256, or auto`, EXIT.usage);
  return n;
}

/** --log-level, else GATEHOUSE_LOG_LEVEL (checked: a typo is a usage error, not a silent default). */
function levelOverride(opts: ServeOpts): LogLevel | undefined {
  if (opts.logLevel !== undefined) return opts.logLevel;
  const env = process.env.GATEHOUSE_LOG_LEVEL;
  if (env === undefined || env === '') return undefined;
  const level = LOG_LEVELS.find((l) => l === env.trim().toLowerCase());
  if (level === undefined) fail(`GATEHOUSE_LOG_LEVEL=${env} is not a log level: use one of ${LOG_LEVELS.join(', ')}`, EXIT.usage);
  return level;
}

export function serveCommand(): Command {
  return new Command('serve')
    .description('Run the gateway (embedded loopback defaults when no --config is given). SIGHUP reloads.')
    .option('-c, --config <file>', 'TOML config file')
    .addOption(new Option('--log-level <level>', 'log level (overrides [log] level and GATEHOUSE_LOG_LEVEL)').choices(LOG_LEVELS))
    .addOption(new Option('--log-format <format>', 'log lines: auto (readable on a terminal, JSON otherwise), json or pretty').choices(['auto', 'json', 'pretty']))
    .option('-w, --workers <n>', 'processes accepting on the same ports (a number, or auto = one per core; overrides [cluster] workers)')
    .action(async (opts: ServeOpts) => {
      // A SIGHUP with no handler ends the process (129): from here on one never does. One that comes
      // before the reload handler below is remembered and reloads once the gateway runs.
      let earlyHup = false;
      const onEarlyHup = (): void => {
        earlyHup = true;
      };
      process.on('SIGHUP', onEarlyHup);
      const override = levelOverride(opts);
      const load = (): Promise<GatewayConfig> => (opts.config === undefined ? Promise.resolve(defaultConfig()) : loadGatewayConfig(opts.config));
      const config = await load();
      const baseDir = opts.config === undefined ? process.cwd() : dirname(resolve(opts.config));
      const log = createLogger({ level: override ?? config.log.level, format: opts.logFormat ?? config.log.format });
      if (opts.config === undefined) log.warn('no --config given: running on embedded defaults (loopback only, development credentials)');
      const setLogLevel = (level: LogLevel) => {
        if (override !== undefined) log.info({ level: override, fileLevel: level }, 'log level kept: --log-level or GATEHOUSE_LOG_LEVEL overrides the file');
        else log.level = level;
      };
      const workers = workerCount(opts, config);
      const isWorker = cluster.isWorker && process.env.GATEHOUSE_WORKER === '1';
      // Without Redis the workers pair through the primary's table; with Redis, through Redis.
      const viaPrimary = config.cluster.redisUrl === undefined;
      if (workers > 1 && cluster.isPrimary) {
        const { runPrimary } = await import('./serve-workers.ts');
        // The workers read the file as they start: a SIGHUP before that has nothing to add.
        process.off('SIGHUP', onEarlyHup);
        runPrimary({ workers, maxWaitingPerToken: config.relay.limits.maxWaitingPerToken, hostTable: viaPrimary, acceptBy: config.cluster.acceptBy, graceMs: config.shutdown.graceMs, log: log.child({ role: 'primary' }), views: { ops: config.ops, relay: config.relay, baseDir } });
        return;
      }
      let rendezvous: GatewayDeps['rendezvous'];
      if (isWorker && viaPrimary && config.relay.enabled) {
        const { IpcRendezvous } = await import('../relay/cluster/ipc-rendezvous.ts');
        rendezvous = new IpcRendezvous(process as unknown as import('../relay/cluster/ipc-rendezvous.ts').IpcChannel, config.relay.timeouts.jsonRpcMs);
      }
      // The tunnel-proxy mode's directory of servers too: a client reaches a server in another worker.
      const tpDirectory: GatewayDeps['tpDirectory'] =
        rendezvous !== undefined && config.relay.tunnelProxy.enabled
          ? new (await import('../relay/cluster/tp-directory-ipc.ts')).IpcTpDirectory(process as unknown as import('../relay/cluster/ipc-rendezvous.ts').IpcChannel, config.relay.timeouts.jsonRpcMs)
          : undefined;
      // Without Redis the workers' failed-auth back-off and sealed replay cache are the primary's too.
      const shared: GatewayDeps['shared'] =
        isWorker && viaPrimary ? new (await import('../core/cluster/ipc-shared.ts')).IpcSharedState(process as unknown as import('../core/cluster/ipc-shared.ts').IpcChannel, config.cluster.redisCommandTimeoutMs) : undefined;
      const workerLog = isWorker ? log.child({ worker: cluster.worker?.id }) : log;
      const slot = isWorker ? Number(process.env.GATEHOUSE_WORKER_SLOT ?? '0') : undefined;
      // Workers paired by the primary forward to each other over unix sockets in the primary's private dir.
      const dir = process.env.GATEHOUSE_FORWARD_DIR;
      const key = process.env.GATEHOUSE_FORWARD_KEY;
      // Not for child processes (PC/SC hosts, post-write commands): they have no use for it.
      delete process.env.GATEHOUSE_FORWARD_KEY;
      const forward: GatewayDeps['forward'] =
        rendezvous !== undefined && dir !== undefined && key !== undefined
          ? { listen: { path: `${dir}/w${String(slot)}.sock` }, advertise: (b) => ('path' in b ? b.path : ''), key: Buffer.from(key, 'hex'), handshakeMs: config.cluster.forwardHandshakeMs, node: `worker-${String(cluster.worker?.id ?? 0)}` }
          : undefined;
      const gateway = await createGateway(config, {
        log: workerLog,
        baseDir,
        setLogLevel,
        ...(rendezvous === undefined ? {} : { rendezvous }),
        ...(forward === undefined ? {} : { forward }),
        ...(shared === undefined ? {} : { shared }),
        ...(tpDirectory === undefined ? {} : { tpDirectory }),
        // Plain clients move to their partner's worker instead of being forwarded (relay/cluster/handoff.ts).
        ...(forward !== undefined && config.cluster.moveClients ? { handoff: process as unknown as import('../relay/cluster/handoff.ts').HandoffChannel } : {}),
        // The primary serves /metrics and the monitor socket for every worker; this one answers its questions.
        ...(isWorker ? { primary: process as import('../ops/workers.ts').PrimaryChannel } : {}),
        ...(isWorker ? { nodeIdSuffix: `-w${cluster.worker?.id ?? 0}`, workerSlot: slot ?? 0 } : {}),
      });
      let stopping = false;
      let started = false;

      // SIGHUP from the first moment (a SIGHUP with no handler kills the process, exit 129): reloads run
      // one at a time, a SIGHUP during one runs one more after it, and one during the start waits for it.
      let reloading: Promise<void> | undefined;
      let again = false;
      const reloadOnce = async (g: Gateway): Promise<void> => {
        let next: GatewayConfig;
        try {
          next = await load();
        } catch (err) {
          g.reloadRefused(err);
          return;
        }
        await g.reload(next);
      };
      const reload = (): void => {
        if (stopping) return;
        if (reloading !== undefined || !started) {
          again = true;
          return;
        }
        log.info({ signal: 'SIGHUP', config: opts.config ?? '(embedded defaults)' }, 'reloading');
        reloading = reloadOnce(gateway)
          .catch((err: unknown) => log.error({ err, code: 'CORE_INTERNAL' }, 'reload failed'))
          .finally(() => {
            reloading = undefined;
            if (again) {
              again = false;
              reload();
            }
          });
      };
      process.on('SIGHUP', reload);
      process.off('SIGHUP', onEarlyHup);
      if (earlyHup) again = true;

      // A worker told to drain while it still starts (SIGTERM during a replacement's start) must not lose
      // the word: it is kept, and acted on as soon as the gateway is up.
      let shutdownAsked = false;
      const earlyShutdown = (m: unknown) => {
        if (typeof m === 'object' && m !== null && (m as { gh?: unknown }).gh === 'shutdown') shutdownAsked = true;
      };
      if (isWorker) {
        process.on('message', earlyShutdown);
        process.on('SIGINT', () => undefined);
        process.on('SIGTERM', () => undefined);
      }
      try {
        await gateway.start();
      } catch (err) {
        reportAndExit(err, 'serve');
      }
      process.off('message', earlyShutdown);
      started = true;
      if (isWorker) process.send?.({ gh: 'ready', lines: gateway.describe() });
      else
        process.stdout.write(`Gatehouse is running.\n${gateway.describe().join('\n')}\nPress Ctrl-C to stop; SIGHUP reloads certificates, tokens, clients and the log level.\n`);
      if (again) {
        again = false;
        reload();
      }
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
            process.exitCode = 0;
            // Exit once the asynchronous log destination has written everything (a loaded machine can
            // take longer than any fixed delay), with a backstop should the write never finish.
            log.flush(() => process.exit(0));
            setTimeout(() => process.exit(0), 2000).unref();
          },
          (err: unknown) => reportAndExit(err, 'serve'),
        );
      };
      if (isWorker) {
        // The primary owns the signals (a terminal's Ctrl-C reaches the whole group; ignored from before the
        // start, above): it says when to drain.
        process.on('message', (m: unknown) => {
          if (typeof m === 'object' && m !== null && (m as { gh?: unknown }).gh === 'shutdown') stop('SIGTERM');
        });
        if (shutdownAsked) stop('SIGTERM');
        // The primary is gone: drain as if told to.
        process.on('disconnect', () => {
          if (!stopping) stop('SIGTERM');
        });
      } else {
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      }
    });
}
