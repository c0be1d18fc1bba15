/**
 * `gatehouse call URL ACTION [ARGS_JSON] --key client.json [--server server.json]`: one sealed API call
 * with the reference client; prints the result as JSON. Without --server it uses the public key file the
 * local server writes (var/sealed/server-public.json, or the one of --config).
 */
import { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { defaultConfig, loadGatewayConfig } from '../config.ts';
import { sealedPaths } from '../sealed-api/admin.ts';
import { SealedCallError, SealedClient } from '../sealed-api/client.ts';
import { EXIT, reportAndExit } from './exit.ts';

export function callCommand(): Command {
  return new Command('call')
    .description('Call a sealed API action and print its result.')
    .argument('<url>', 'endpoint, e.g. http://127.0.0.1:1214/v1/rpc')
    .argument('<action>', 'action name, e.g. files.read')
    .argument('[args]', 'arguments as a JSON object', '{}')
    .requiredOption('-k, --key <file>', 'client key file (from gatehouse clients keygen)')
    .option('-s, --server <file>', "server public key file (default: the local server's)")
    .option('-c, --config <file>', 'gateway config to find the local server public key file')
    .option('--signed', 'require server-signed responses')
    .option('--ca <file>', 'CA certificate for https')
    .option('--timeout-ms <ms>', 'request timeout', '30000')
    .action(
      async (
        url: string,
        action: string,
        argsJson: string,
        opts: {
          key: string;
          server?: string;
          config?: string;
          signed?: boolean;
          ca?: string;
          timeoutMs: string;
        },
      ) => {
        let args: unknown;
        try {
          args = JSON.parse(argsJson);
        } catch {
          args = undefined;
        }
        if (args === null || typeof args !== 'object' || Array.isArray(args)) {
          process.stderr.write('gatehouse call: ARGS must be a JSON object\n');
          process.exitCode = EXIT.usage;
          return;
        }
        let client: SealedClient | undefined;
        try {
          let server = opts.server;
          if (server === undefined) {
            const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
            server = sealedPaths(
              config.sealedApi,
              opts.config === undefined ? process.cwd() : dirname(resolve(opts.config)),
            ).publicFile;
          }
          client = await SealedClient.fromFiles(url, opts.key, server, {
            requireSigned: opts.signed === true,
            timeoutMs: Number(opts.timeoutMs),
            ...(opts.ca === undefined ? {} : { ca: await readFile(opts.ca) }),
          });
          const result = await client.call(action, args as Record<string, unknown>);
          process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        } catch (err) {
          if (err instanceof SealedCallError) {
            process.stderr.write(`gatehouse call: ${err.status} ${err.code}: ${err.message}\n`);
            process.exitCode = EXIT.failure;
          } else {
            reportAndExit(err);
          }
        } finally {
          client?.close();
        }
      },
    );
}
