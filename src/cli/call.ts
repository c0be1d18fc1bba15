/**
 * `gatehouse call URL ACTION [ARGS_JSON] --key client.json [--server server.json]`: one sealed API call
 * with the reference client; prints the result as JSON. Without --server it uses the public key file the
 * local server writes (var/sealed/server-public.json, or the one of --config).
 * Exit codes (exit.ts): 0 ok, 1 the server answered an error, 64 usage, 66 a named file is missing,
 * 69 nothing answers at URL (or http vs https), 78 a bad config or key file.
 */
import { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { defaultConfig, loadGatewayConfig } from '../config.ts';
import { sealedPaths } from '../sealed-api/admin.ts';
import { SealedCallError, SealedClient } from '../sealed-api/client.ts';
import { parseMs, requireInputFile } from './args.ts';
import { CliError, EXIT, fail, reportAndExit } from './exit.ts';
import { explainConnectError } from './net-errors.ts';

interface CallOpts {
  key: string;
  server?: string;
  config?: string;
  signed?: boolean;
  ca?: string;
  timeoutMs: number;
}

function parseUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    fail(`URL ${url} is not a URL: give one such as http://127.0.0.1:1214/v1/rpc`, EXIT.usage);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') fail(`URL ${url}: use http:// or https://`, EXIT.usage);
  return u;
}

function parseArgs(argsJson: string): Record<string, unknown> {
  let args: unknown;
  try {
    args = JSON.parse(argsJson);
  } catch {
    args = undefined;
  }
  if (args === null || typeof args !== 'object' || Array.isArray(args)) fail(`ARGS must be a JSON object, e.g. '{"file":"wg0"}'`, EXIT.usage);
  return args as Record<string, unknown>;
}

async function serverFile(opts: CallOpts): Promise<string> {
  if (opts.server !== undefined) {
    await requireInputFile(opts.server, '--server');
    return opts.server;
  }
  const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
  const file = sealedPaths(config.sealedApi, opts.config === undefined ? process.cwd() : dirname(resolve(opts.config))).publicFile;
  try {
    await requireInputFile(file, 'the server public key file');
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    fail(`${err.message}: pass the server's public key file with --server FILE (from \`gatehouse clients server-key\`), or run this where the server runs`, EXIT.noInput);
  }
  return file;
}

async function callAction(url: string, action: string, argsJson: string, opts: CallOpts): Promise<void> {
  const u = parseUrl(url);
  const args = parseArgs(argsJson);
  await requireInputFile(opts.key, '--key');
  if (opts.ca !== undefined) await requireInputFile(opts.ca, '--ca');
  const server = await serverFile(opts);
  const client = await SealedClient.fromFiles(url, opts.key, server, {
    requireSigned: opts.signed === true,
    timeoutMs: opts.timeoutMs,
    ...(opts.ca === undefined ? {} : { ca: await readFile(opts.ca) }),
  });
  try {
    const result = await client.call(action, args);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (err) {
    if (err instanceof SealedCallError) fail(`${err.status} ${err.code}: ${err.message}`, EXIT.failure);
    const https = u.protocol === 'https:';
    const why = explainConnectError(err, url, {
      usingTls: https,
      plain: 'use http:// instead of https://',
      tls: 'use https:// (and --ca FILE for a self-signed certificate)',
      trust: 'give its CA certificate with --ca FILE',
    });
    if (why !== undefined) throw why;
    if (err instanceof Error && err.message === 'sealed API request timed out')
      fail(`${url} did not answer within ${opts.timeoutMs} ms (--timeout-ms)`, EXIT.unavailable);
    throw err;
  } finally {
    client.close();
  }
}

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
    .option('--timeout-ms <ms>', 'request timeout', parseMs, 30000)
    .action(async (url: string, action: string, argsJson: string, opts: CallOpts) => {
      try {
        await callAction(url, action, argsJson, opts);
      } catch (err) {
        reportAndExit(err, 'call');
      }
    });
}
