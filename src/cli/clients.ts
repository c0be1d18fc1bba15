/**
 * `gatehouse clients …`: key and client management of the sealed API. Changes are atomic rewrites of
 * the registry / key file; a running server applies them without a restart.
 *   keygen --out FILE            generate a client key pair (on the client; 0600 file)
 *   add --name N --key FILE      register a client's public key; prints the server key to pin
 *   list | show NAME | revoke NAME
 *   server-key [--out FILE]      print the server's public keys (what clients pin)
 *   rotate-server-key            new server key; the old one stays valid for --overlap-hours
 */
import { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { defaultConfig, loadGatewayConfig } from '../config.ts';
import {
  addClient,
  clientStatus,
  listClients,
  readPublicJwk,
  revokeClient,
  rotateServerKey,
  sealedPaths,
  serverPublicInfo,
  showClient,
  type SealedPaths,
} from '../sealed-api/admin.ts';
import { generateClientKey, writeClientKeyFile } from '../sealed-api/keys.ts';
import { writeFileAtomic } from '../sealed-api/atomic.ts';
import { parseIsoDate, parseNonNegative, requireInputFile } from './args.ts';
import { EXIT, fail, reportAndExit } from './exit.ts';

interface ConfigOpt {
  config?: string;
}

async function pathsFor(opts: ConfigOpt): Promise<SealedPaths> {
  const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
  const baseDir = opts.config === undefined ? process.cwd() : dirname(resolve(opts.config));
  return sealedPaths(config.sealedApi, baseDir);
}

const list = (s: string | undefined) =>
  s === undefined || s === ''
    ? []
    : s
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== '');
const out = (value: unknown): void =>
  void process.stdout.write(`${typeof value === 'string' ? value : JSON.stringify(value, null, 2)}\n`);

function wrap<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      reportAndExit(err, 'clients');
    }
  };
}

export function clientsCommand(): Command {
  const cmd = new Command('clients').description('Manage sealed API clients and server keys.');
  const withConfig = (c: Command) =>
    c.option('-c, --config <file>', 'gateway config file (default: embedded defaults, var/sealed/)');

  cmd
    .command('keygen')
    .description('Generate a client Ed25519 key pair into a 0600 file (run on the client).')
    .requiredOption('-o, --out <file>', 'client key file to create')
    .option('--name <name>', 'a name stored in the file')
    .option('--force', 'overwrite an existing file')
    .action(
      wrap(async (opts: { out: string; name?: string; force?: boolean }) => {
        if (
          opts.force !== true &&
          (await stat(opts.out).then(
            () => true,
            () => false,
          ))
        ) {
          fail(`keygen: ${opts.out} exists; it is never overwritten without --force`, EXIT.cantCreate);
        }
        const key = await generateClientKey(opts.name);
        await writeClientKeyFile(opts.out, key);
        out({ kid: key.kid, publicJwk: key.publicJwk });
      }),
    );

  withConfig(cmd.command('add'))
    .description("Register a client's public key (a JWK file or a client key file).")
    .requiredOption('--name <name>', 'unique client name')
    .requiredOption(
      '--key <file>',
      'public JWK, or the client key file from keygen (only the public half is used)',
    )
    .option('--allow <actions>', 'comma-separated actions: exact names, prefix.*, or *', '')
    .option('--files <names>', 'comma-separated logical file names, or *', '')
    .option('--expires <iso>', 'expiry time (ISO 8601, e.g. 2027-01-31 or 2027-01-31T12:00:00Z)', parseIsoDate)
    .option('--expires-in-days <n>', 'expiry in days from now', parseNonNegative)
    .action(
      wrap(
        async (
          opts: ConfigOpt & {
            name: string;
            key: string;
            allow: string;
            files: string;
            expires?: string;
            expiresInDays?: number;
          },
        ) => {
          if (opts.expires !== undefined && opts.expiresInDays !== undefined)
            fail('add: give --expires or --expires-in-days, not both', EXIT.usage);
          await requireInputFile(opts.key, '--key');
          const paths = await pathsFor(opts);
          const expiresMs =
            opts.expires !== undefined
              ? Date.parse(opts.expires)
              : opts.expiresInDays === undefined
                ? undefined
                : Date.now() + opts.expiresInDays * 86400000;
          // Beyond the year 275760 a Date is invalid: also a usage error, not a crash.
          if (expiresMs !== undefined && !(Math.abs(expiresMs) <= 8.64e15)) fail('add: the expiry is out of range', EXIT.usage);
          const expires = expiresMs === undefined ? undefined : new Date(expiresMs).toISOString();
          const entry = await addClient(paths, {
            name: opts.name,
            jwk: await readPublicJwk(opts.key),
            allow: list(opts.allow),
            files: list(opts.files),
            ...(expires === undefined ? {} : { expires }),
          });
          const server = await serverPublicInfo(paths);
          out({ client: entry, server, pin: `server key id (RFC 7638 thumbprint): ${server.kid}` });
        },
      ),
    );

  withConfig(cmd.command('list'))
    .description('List registered clients.')
    .option('--json', 'print JSON')
    .action(
      wrap(async (opts: ConfigOpt & { json?: boolean }) => {
        const clients = await listClients(await pathsFor(opts));
        if (opts.json === true) {
          out(clients);
          return;
        }
        if (clients.length === 0) out('no clients');
        for (const c of clients)
          out(
            `${c.name.padEnd(20)} ${clientStatus(c).padEnd(8)} ${c.kid}  allow=${c.allow.join(',') || '-'} files=${c.files.join(',') || '-'}${c.expires === undefined ? '' : ` expires=${c.expires}`}`,
          );
      }),
    );

  withConfig(cmd.command('show'))
    .description('Show one client (by name or kid).')
    .argument('<client>')
    .action(
      wrap(async (client: string, opts: ConfigOpt) => {
        const c = await showClient(await pathsFor(opts), client);
        out({ ...c, status: clientStatus(c) });
      }),
    );

  withConfig(cmd.command('revoke'))
    .description('Revoke one client (by name or kid); a running server refuses it within reloadCheckMs.')
    .argument('<client>')
    .action(
      wrap(async (client: string, opts: ConfigOpt) => {
        out(await revokeClient(await pathsFor(opts), client));
      }),
    );

  withConfig(cmd.command('server-key'))
    .description("Print the server's public keys (creating the key pair on first use).")
    .option('-o, --out <file>', 'also write them to this file')
    .action(
      wrap(async (opts: ConfigOpt & { out?: string }) => {
        const info = await serverPublicInfo(await pathsFor(opts));
        if (opts.out !== undefined)
          await writeFileAtomic(opts.out, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o644 });
        out(info);
      }),
    );

  withConfig(cmd.command('rotate-server-key'))
    .description('Create a new server encryption key; older keys stay valid for the overlap.')
    .option('--overlap-hours <h>', 'how long the previous key keeps working', parseNonNegative, 24)
    .action(
      wrap(async (opts: ConfigOpt & { overlapHours: number }) => {
        out(await rotateServerKey((await pathsFor(opts)).keyFile, opts.overlapHours * 3600000));
      }),
    );
  return cmd;
}
