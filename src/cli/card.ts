/**
 * `gatehouse card`: a terminal client for the card bridge's line protocol.
 *   list | aliases | reset <reader> | apdu <reader> <hex...> | chain <alias> | sign <alias> <file>
 * A reader is named as `card list` prints it (`Foxy USB Gatehouse Sim 00`) or without the listing's
 * prefix (`Gatehouse Sim 00`); the bridge accepts both. The PIN for `sign` comes from an environment
 * variable (default GATEHOUSE_CARD_PIN), never from argv.
 * Exit codes (exit.ts): 0 ok, 1 a C08x error or a failing SW from the card, 64 usage (also: `sign`
 * without the PIN the card needs), 66 the file to sign is missing, 69 the bridge is unreachable,
 * 73 --out cannot be written.
 */
import { Command } from 'commander';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { CardClient, type CardClientOptions } from '../card-bridge/client.ts';
import { parseMs, parsePort, requireInputFile } from './args.ts';
import { CliError, EXIT, fail, reportAndExit } from './exit.ts';
import { explainConnectError } from './net-errors.ts';

interface ConnOpts {
  host: string;
  port: number;
  tls?: boolean;
  insecure?: boolean;
  timeout: number;
}

const C0_MEANING = new Map<string, string>([
  ['C080', 'no card in the reader'],
  ['C081', 'unknown command'],
  ['C082', 'the reader or alias matches more than one card'],
  ['C083', 'reader or alias not found, or the card backend failed (names as `gatehouse card list` prints them)'],
  ['C084', 'bad SIGN data (need a SHA-1 or SHA-256 hash)'],
  ['C085', 'wrong PIN (or a PIN that already failed on this card)'],
  ['C086', 'the card gave no usable answer for SIGN'],
  ['C087', 'malformed APDU'],
  ['C088', 'a protocol limit was exceeded'],
  ['C089', 'the card is busy or did not answer in time'],
  ['C090', 'internal error in the bridge'],
]);

const PIN_HELP = (pinEnv: string) =>
  `the card needs a PIN: put it in the environment variable ${pinEnv} (never on the command line), e.g.\n` +
  `  read -rs ${pinEnv} && export ${pinEnv}\n` +
  `  gatehouse card sign ALIAS FILE\n` +
  'or name another variable with --pin-env VAR';

function withConn(cmd: Command): Command {
  return cmd
    .option('--host <host>', 'card bridge host', '127.0.0.1')
    .option('--port <port>', 'card bridge port', parsePort, 4001)
    .option('--tls', 'connect with TLS')
    .option('--insecure', 'with --tls: accept any server certificate')
    .option('--timeout <ms>', 'answer timeout in ms', parseMs, 60000);
}

/** Runs an action; a CliError or GatewayError becomes its message and exit code, anything else is a bug. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      reportAndExit(err, 'card');
    }
  };
}

function unreachable(err: unknown, o: ConnOpts): CliError {
  const target = `${o.tls === true ? 'tls' : 'tcp'}://${o.host}:${o.port}`;
  return (
    explainConnectError(err, target, {
      usingTls: o.tls === true,
      plain: 'drop --tls',
      tls: 'add --tls',
      trust: 'use --insecure for a self-signed development certificate',
    }) ??
    new CliError(`the card bridge at ${target} did not answer: ${err instanceof Error ? err.message : String(err)}`, EXIT.unavailable)
  );
}

async function run(o: ConnOpts, reader: string, commands: string[]): Promise<{ id: string; result: string }[]> {
  const opts: CardClientOptions = { host: o.host, port: o.port, tls: o.tls === true, insecure: o.insecure === true, timeoutMs: o.timeout };
  let client: CardClient;
  try {
    client = await CardClient.connect(opts);
  } catch (err) {
    throw unreachable(err, o);
  }
  try {
    return await client.request(reader, commands);
  } catch (err) {
    throw unreachable(err, o);
  } finally {
    client.close();
  }
}

/** Fails (exit 1) when the result is a bridge error code; returns the result otherwise. */
function checked(result: string | undefined): string {
  if (result === undefined) fail('the bridge sent no answer for the command', EXIT.failure);
  const meaning = C0_MEANING.get(result);
  if (meaning !== undefined) fail(`${result}: ${meaning}`, EXIT.failure);
  return result;
}

/** The line protocol's reader line ends at `|` and a line break: a name cannot contain them. */
function usableName(name: string, what: string): string {
  if (/[|\r\n]/.test(name)) fail(`${what} cannot contain "|" or a line break`, EXIT.usage);
  if (name.trim() === '') fail(`${what} is empty`, EXIT.usage);
  return name;
}

const listing = (r: string): string[] => (r === '' ? [] : r.split('|').map((x) => Buffer.from(x, 'base64').toString('utf8')));

export function cardCommand(): Command {
  const card = new Command('card').description('Talk to a card bridge: list readers, reset, send APDUs, sign a file.');

  withConn(card.command('list').description('List every reader (use these names, with or without the "Foxy USB" prefix).')).action(
    action(async (o: ConnOpts) => {
      const [a] = await run(o, '*', ['1:LIST']);
      for (const name of listing(checked(a?.result))) process.stdout.write(`${name}\n`);
    }),
  );

  withConn(card.command('aliases').description('List the certificate subjects of the signing cards.')).action(
    action(async (o: ConnOpts) => {
      const [a] = await run(o, 'all readers', ['1:ALIASES']);
      for (const name of listing(checked(a?.result))) process.stdout.write(`${name}\n`);
    }),
  );

  withConn(card.command('reset').description("Reset a reader's card and print its ATR.").argument('<reader>', 'a name from `card list`')).action(
    action(async (reader: string, o: ConnOpts) => {
      const [a] = await run(o, usableName(reader, 'the reader name'), ['1:RESET']);
      process.stdout.write(`${checked(a?.result)}\n`);
    }),
  );

  withConn(
    card
      .command('apdu')
      .description('Send APDUs (hex) in one request, atomically on the card; prints each response (data + SW).')
      .argument('<reader>', 'a name from `card list`')
      .argument('<apdu...>', 'command APDUs in hex, e.g. 00A4040000'),
  ).action(
    action(async (reader: string, apdus: string[], o: ConnOpts) => {
      const hex = apdus.map((x) => x.replace(/\s+/g, ''));
      for (const x of hex) {
        if (!/^([0-9A-Fa-f]{2}){4,}$/.test(x)) fail(`"${x.slice(0, 40)}" is not an APDU: give at least 4 bytes as hex digits, e.g. 00A4040000`, EXIT.usage);
      }
      const answers = await run(
        o,
        usableName(reader, 'the reader name'),
        hex.map((x, i) => `${i + 1}:APDU:${x}`),
      );
      let failed = false;
      for (const a of answers) {
        const meaning = C0_MEANING.get(a.result);
        if (meaning !== undefined) failed = true;
        process.stdout.write(meaning === undefined ? `${a.result}\n` : `${a.result} (${meaning})\n`);
      }
      if (failed) process.exitCode = EXIT.failure;
    }),
  );

  withConn(card.command('chain').description('Print the certificate chain (PEM) of the card matching an alias.').argument('<alias>')).action(
    action(async (alias: string, o: ConnOpts) => {
      const [a] = await run(o, usableName(alias, 'the alias'), ['1:CHAIN']);
      for (const b64 of checked(a?.result).split(':')) {
        process.stdout.write(`-----BEGIN CERTIFICATE-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`);
      }
    }),
  );

  withConn(
    card
      .command('sign')
      .description('Hash a file (SHA-256, or SHA-1) and sign the hash on the card matching an alias; prints the signature hex.')
      .argument('<alias>', 'part of the certificate subject (`card aliases`) or a reader name')
      .argument('<file>')
      .option('--sha1', 'use SHA-1 instead of SHA-256')
      .option('--pin-env <var>', 'environment variable holding the PIN', 'GATEHOUSE_CARD_PIN')
      .option('--out <file>', 'write the raw signature to this file')
      .addHelpText('after', '\nThe PIN is read from $GATEHOUSE_CARD_PIN (or --pin-env VAR), never from the command line:\n  read -rs GATEHOUSE_CARD_PIN && export GATEHOUSE_CARD_PIN\n'),
  ).action(
    action(async (alias: string, file: string, o: ConnOpts & { sha1?: boolean; pinEnv: string; out?: string }) => {
      usableName(alias, 'the alias');
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(o.pinEnv)) fail(`--pin-env ${o.pinEnv}: not an environment variable name`, EXIT.usage);
      await requireInputFile(file, 'FILE');
      const hash = createHash(o.sha1 === true ? 'sha1' : 'sha256')
        .update(await readFile(file))
        .digest('hex')
        .toUpperCase();
      const pin = process.env[o.pinEnv];
      const hasPin = pin !== undefined && pin !== '';
      const [a] = await run(o, hasPin ? `${alias}:${pin}` : alias, [`1:SIGN:${hash}`]);
      const sig = checked(a?.result);
      if (!/^([0-9A-F]{2}){5,}$/.test(sig)) {
        // 6982: security status not satisfied, the card wants a verified PIN first.
        if (!hasPin && (sig === '6982' || sig === '6985')) fail(PIN_HELP(o.pinEnv), EXIT.usage);
        fail(`the card answered SW ${sig}`, EXIT.failure);
      }
      if (o.out !== undefined) {
        const out = o.out;
        await writeFile(out, Buffer.from(sig, 'hex')).catch((err: unknown) => {
          const code = (err as { code?: unknown }).code;
          fail(`--out ${out}: ${typeof code === 'string' ? code : 'cannot write it'}`, EXIT.cantCreate);
        });
      }
      process.stdout.write(`${sig}\n`);
    }),
  );

  return card;
}
